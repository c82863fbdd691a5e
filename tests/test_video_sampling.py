"""Test-time sampling: frame indices, resize sizes, crops and views against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sta_deploy import ConfigError
from sta_deploy.video.clips import load_views
from sta_deploy.video.sampling import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    checkpoint_normalisation,
    crop_offsets,
    denormalise,
    mmaction_indices,
    normalise,
    parse_views,
    protocol_for,
    short_side_size,
    videomae_dense_indices,
    videomae_segment_indices,
)
from sta_deploy.video.synthetic import write_frame_folder


# ----------------------------------------------------------------------------- temporal indices
def test_videomae_k400_five_windows_of_sixteen_at_stride_four():
    # 300 frames at stride 4: 75 samples 0, 4, ..., 296; 5 windows of 16 start at int(k * 59 / 4) = 0, 14, 29, 44, 59.
    indices = videomae_dense_indices(300, 16, 4, 5)
    assert indices.shape == (5, 16)
    for view, start in enumerate([0, 14, 29, 44, 59]):
        assert indices[view].tolist() == [4 * (start + j) for j in range(16)]
    assert indices[0].tolist() == list(range(0, 64, 4))
    assert indices[4].tolist() == list(range(236, 300, 4))


def test_videomae_dense_one_window_is_the_centre_one():
    # 100 frames: 25 samples, 9 spare, centre window starts at sample 4 (frame 16).
    assert videomae_dense_indices(100, 16, 4, 1).tolist() == [list(range(16, 80, 4))]


def test_videomae_dense_short_clip_repeats_the_last_sample():
    # 30 frames at stride 4: samples 0..28 (8 of them), padded with 28 up to 16 entries.
    expected = [0, 4, 8, 12, 16, 20, 24, 28] + [28] * 8
    assert videomae_dense_indices(30, 16, 4, 3).tolist() == [expected] * 3


def test_videomae_ssv2_segments_two_views():
    # 50 frames, 16 segments: tick 3.125; view 0 takes int(3.125 x), view 1 int(3.125 x + 1.5625).
    indices = videomae_segment_indices(50, 16, 2)
    assert indices[0].tolist() == [0, 3, 6, 9, 12, 15, 18, 21, 25, 28, 31, 34, 37, 40, 43, 46]
    assert indices[1].tolist() == [1, 4, 7, 10, 14, 17, 20, 23, 26, 29, 32, 35, 39, 42, 45, 48]
    # the reference builds both lists, sorts them together and takes [0::2] and [1::2]
    tick = 50 / 16
    both = sorted([int(tick / 2 + tick * x) for x in range(16)] + [int(tick * x) for x in range(16)])
    assert indices[0].tolist() == both[0::2] and indices[1].tolist() == both[1::2]


def test_videomae_ssv2_one_view_takes_segment_middles():
    assert videomae_segment_indices(32, 16, 1).tolist() == [[2 * x + 1 for x in range(16)]]


def test_mmaction_four_clips_of_32_at_interval_2():
    # avg interval (300 - 64 + 1) / 4 = 59.25; offsets int(k * 59.25 + 29.625) = 29, 88, 148, 207.
    indices = mmaction_indices(300, 32, 2, 4)
    for view, offset in enumerate([29, 88, 148, 207]):
        assert indices[view].tolist() == [offset + 2 * j for j in range(32)]


def test_mmaction_short_clip_loops():
    # 50 frames < 64: offset 0, indices 0, 2, ..., 62 wrap around modulo 50.
    assert mmaction_indices(50, 32, 2, 1).tolist() == [[(2 * j) % 50 for j in range(32)]]


# ----------------------------------------------------------------------------- spatial
def test_short_side_resize_sizes():
    assert short_side_size(240, 320, 224, "floor") == (224, 298)  # 224 * 320 / 240 = 298.67
    assert short_side_size(240, 320, 224, "round") == (224, 299)
    assert short_side_size(320, 240, 224, "floor") == (298, 224)
    assert short_side_size(224, 224, 224) == (224, 224)


def test_crop_offsets():
    assert crop_offsets(298, 224, 3, "videomae") == [0, 37, 74]
    assert crop_offsets(299, 224, 3, "videomae") == [0, 37, 75]  # int(j * 75 / 2)
    assert crop_offsets(299, 224, 3, "mmaction") == [0, 37, 74]  # 2 * (75 // 2)
    assert crop_offsets(299, 224, 1) == [37]
    assert crop_offsets(224, 224, 3) == [0, 0, 0]
    assert crop_offsets(300, 224, 5) == [0, 19, 38, 57, 76]


def test_crop_boxes_follow_the_long_side():
    protocol = protocol_for("vit", num_frames=16, img_size=224, views="1x3")
    assert protocol.crop_boxes(224, 298) == [(0, 0), (0, 37), (0, 74)]
    assert protocol.crop_boxes(298, 224) == [(0, 0), (37, 0), (74, 0)]


def test_normalise_uses_imagenet_statistics():
    pixels = np.array([[[round(255 * m) for m in IMAGENET_MEAN]]], dtype=np.uint8)
    assert np.abs(normalise(pixels, IMAGENET_MEAN, IMAGENET_STD)).max() < 0.01
    values = np.arange(256, dtype=np.uint8).repeat(3).reshape(256, 1, 3)
    assert (denormalise(normalise(values, IMAGENET_MEAN, IMAGENET_STD), IMAGENET_MEAN, IMAGENET_STD) == values).all()
    # mmaction2 writes the same statistics in 0-255 scale
    assert np.allclose(np.array(IMAGENET_MEAN) * 255, [123.675, 116.28, 103.53])
    assert np.allclose(np.array(IMAGENET_STD) * 255, [58.395, 57.12, 57.375])


# ----------------------------------------------------------------------------- presets
def test_protocol_presets():
    vit_k400 = protocol_for("vit", num_frames=16, img_size=224)
    assert (vit_k400.temporal, vit_k400.stride, vit_k400.views, vit_k400.average) == ("dense", 4, "5x3", "logits")
    vit_ssv2 = protocol_for("vit", num_frames=16, img_size=224, dataset="ssv2")
    assert (vit_ssv2.temporal, vit_ssv2.views) == ("segment", "2x3")
    assert protocol_for("vit", num_frames=16, img_size=224, dataset="ssv2", stride=2).temporal == "dense"
    swin = protocol_for("swin", num_frames=32, img_size=224)
    assert (swin.temporal, swin.stride, swin.views, swin.average, swin.crop_style) == ("mmaction", 2, "4x3", "prob", "mmaction")
    assert protocol_for("swin", num_frames=32, img_size=224, dataset="ssv2").views == "1x3"
    assert protocol_for("vit", num_frames=16, img_size=224, views="1x1").num_views == 1
    assert vit_k400.min_frames == 16 and protocol_for("vit", num_frames=16, img_size=224, min_frames=1).min_frames == 1


@pytest.mark.parametrize("bad", ["3", "0x1", "2x", "axb", "40x1"])
def test_bad_views_are_refused(bad):
    with pytest.raises(ConfigError, match="views"):
        parse_views(bad)


def test_checkpoint_normalisation_from_preprocessor_config(tmp_path):
    assert checkpoint_normalisation(tmp_path) is None
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    assert checkpoint_normalisation(tmp_path) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


# ----------------------------------------------------------------------------- whole views, exactly
def _coded_frames(count, height, width):
    """R = 3 * frame index, G = 3 * x, B = 4 * y: every pixel says where it came from."""
    frames = np.zeros((count, height, width, 3), dtype=np.uint8)
    frames[..., 0] = (3 * np.arange(count))[:, None, None]
    frames[..., 1] = (3 * np.arange(width))[None, None, :]
    frames[..., 2] = (4 * np.arange(height))[None, :, None]
    return frames


def test_views_are_the_right_frames_and_crops(tmp_path):
    folder = write_frame_folder(tmp_path / "clip", _coded_frames(40, 32, 48))
    protocol = protocol_for("vit", num_frames=16, img_size=32, views="2x3")
    clip = load_views(folder, protocol)
    # 40 frames at stride 4: 10 samples, padded to 16 with 36; both windows start at 0 (no spare samples)
    expected_frames = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36] + [36] * 6
    assert clip.indices.tolist() == [expected_frames, expected_frames]
    assert clip.resized_size == (32, 48) and clip.crops == [(0, 0), (0, 8), (0, 16)]
    assert clip.pixels.shape == (6, 16, 32, 32, 3)
    for view in range(6):
        left = [0, 8, 16][view % 3]
        pixels = clip.pixels[view]
        assert pixels[..., 0][:, 0, 0].tolist() == [3 * f for f in expected_frames]
        assert (pixels[..., 1] == (3 * (left + np.arange(32)))[None, None, :]).all()
        assert (pixels[..., 2] == (4 * np.arange(32))[None, :, None]).all()
    tensors = clip.tensors()
    assert tensors.shape == (6, 3, 16, 32, 32) and tensors.dtype == np.float32
    assert np.allclose(tensors[0, 0, 1, 0, 0], (12 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0])


def test_views_of_a_portrait_clip_with_resize(tmp_path):
    folder = write_frame_folder(tmp_path / "clip", _coded_frames(20, 60, 40))
    protocol = protocol_for("swin", num_frames=8, img_size=32, views="1x3")
    clip = load_views(folder, protocol)
    assert clip.resized_size == (48, 32)  # 32 * 60 / 40
    assert clip.crops == [(0, 0), (8, 0), (16, 0)]
    # mmaction: avg (20 - 16 + 1) / 1 = 5, offset int(2.5) = 2; frames 2, 4, ..., 16
    assert clip.indices.tolist() == [[2 + 2 * j for j in range(8)]]
    assert clip.pixels.shape == (3, 8, 32, 32, 3)
    assert clip.pixels[0][..., 0][:, 5, 5].tolist() == [3 * (2 + 2 * j) for j in range(8)]


def test_resize_frame_does_not_depend_on_the_thread_count():
    """PyTorch resizes 3-channel images with another kernel when it has more threads (a few pixels per
    million round the other way); resize_frame gives the one-thread answer on any thread count, so
    views do not depend on --threads (and examples/classify can match them bit for bit)."""
    import torch
    import torch.nn.functional as F

    from sta_deploy.video.sampling import resize_frame

    frame = np.random.default_rng(1).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        tensor = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
        one_thread = F.interpolate(tensor, size=(224, 398), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).round().to(torch.uint8).numpy()
        for count in (1, 2, 4):
            torch.set_num_threads(count)
            assert np.array_equal(resize_frame(frame, 224, 398), one_thread), count
    finally:
        torch.set_num_threads(threads)
