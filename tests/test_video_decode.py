"""Decoding generated clips in every container (mp4, webm, avi, mkv, frame folders) and the errors for bad ones."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("av")

from sta_deploy.video.decode import frame_count, is_clip_path, list_frame_files, read_clip
from sta_deploy.video.errors import EmptyVideoError, UnreadableVideoError, VideoError, VideoTooShortError
from sta_deploy.video.synthetic import moving_shapes, write_frame_folder, write_video

FRAMES = moving_shapes(24, 48, 64, seed=1)


def _all(total):
    return np.arange(total)


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi", ".mkv"])
def test_containers_decode_every_frame(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", FRAMES)
    assert is_clip_path(path)
    clip = read_clip(path, _all)
    assert clip.total_frames == 24 == frame_count(path)
    assert clip.source_size == (48, 64)
    decoded = clip.stack()
    assert decoded.shape == (24, 48, 64, 3) and decoded.dtype == np.uint8
    # lossy codecs: close to the source, and frame t is closer to source t than to its neighbours
    error = np.abs(decoded.astype(int) - FRAMES.astype(int)).mean(axis=(1, 2, 3))
    assert error.max() < 16, error
    shifted = np.abs(decoded[1:].astype(int) - FRAMES[:-1].astype(int)).mean(axis=(1, 2, 3))
    assert (error[1:] < shifted).all()


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_planned_subset_matches_full_decode(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", FRAMES)
    full = read_clip(path, _all).stack()
    plan = np.array([[0, 5, 23], [23, 23, 1]])
    clip = read_clip(path, lambda total: plan)
    assert clip.indices.tolist() == plan.tolist()
    assert sorted(clip.frames) == [0, 1, 5, 23]  # repeats decoded once
    assert (clip.stack() == full[plan]).all()


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_frame_folder(tmp_path, suffix):
    folder = write_frame_folder(tmp_path / "frames", FRAMES, suffix=suffix)
    (folder / "notes.txt").write_text("not a frame")
    assert len(list_frame_files(folder)) == 24 and is_clip_path(folder)
    clip = read_clip(folder, _all)
    assert clip.total_frames == 24 == frame_count(folder)
    error = np.abs(clip.stack().astype(int) - FRAMES.astype(int))
    assert error.max() == 0 if suffix == ".png" else error.mean() < 8


def test_frame_folder_natural_order(tmp_path):
    folder = tmp_path / "frames"
    write_frame_folder(folder, FRAMES[:12], pattern="img_{}")  # img_0 .. img_11: img_10 sorts after img_9
    names = [p.stem for p in list_frame_files(folder)]
    assert names == [f"img_{i}" for i in range(12)]


# ----------------------------------------------------------------------------- errors name the file
def test_missing_file(tmp_path):
    with pytest.raises(UnreadableVideoError, match="nothere.mp4: no such file"):
        read_clip(tmp_path / "nothere.mp4", _all)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(EmptyVideoError, match="empty.mp4: the file is empty"):
        read_clip(path, _all)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"this is not a video " * 200)
    with pytest.raises(UnreadableVideoError) as info:
        read_clip(path, _all)
    assert "garbage.mp4: not a readable video" in str(info.value)
    assert isinstance(info.value, ValueError) and info.value.path == str(path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av

    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(UnreadableVideoError, match="tone.wav: the file has no video stream"):
        read_clip(path, _all)


def test_folder_without_frames(tmp_path):
    (tmp_path / "frames").mkdir()
    with pytest.raises(EmptyVideoError, match="frames: the clip has no frames"):
        read_clip(tmp_path / "frames", _all)


def test_unreadable_frame_image_is_named(tmp_path):
    folder = write_frame_folder(tmp_path / "frames", FRAMES[:4])
    (folder / "frame_00002.png").write_bytes(b"broken")
    with pytest.raises(UnreadableVideoError, match="frame_00002.png: cannot read frame image"):
        read_clip(folder, _all)


def test_too_short(tmp_path):
    path = write_video(tmp_path / "short.mp4", FRAMES[:6])
    with pytest.raises(VideoTooShortError, match=r"short.mp4: too short: 6 frame\(s\), .* at least 16"):
        read_clip(path, _all, min_frames=16)
    assert read_clip(path, lambda total: np.zeros(16, dtype=int), min_frames=1).total_frames == 6


def test_truncated_file_is_an_error_or_shorter(tmp_path):
    path = write_video(tmp_path / "clip.avi", FRAMES)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    try:
        clip = read_clip(cut, _all)
    except VideoError as error:
        assert "cut.avi" in str(error)
    else:
        assert 0 < clip.total_frames <= 24


def test_missing_pyav_names_the_install(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.mp4", FRAMES[:4])
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r"reading video files needs av: pip install av"):
        read_clip(path, _all)
