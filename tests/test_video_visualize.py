"""``sta-deploy visualize``: the PNG's masked patches are exactly the positions return_kept dropped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("av")
Image = pytest.importorskip("PIL.Image")

from sta_deploy import create_model
from sta_deploy.cli.app import main
from sta_deploy.video.backends import TorchBackend
from sta_deploy.video.predict import protocol_for_backend
from sta_deploy.video.synthetic import moving_shapes, write_video
from sta_deploy.video.visualize import MASK_COLOR, choose_columns, stage_grids, visualize_clip

VIT = dict(embed_dim=32, depth=3, num_heads=2, img_size=64, num_frames=16)
VIT_ARGS = ["--model", "vit_s", "--embed-dim", "32", "--depth", "3", "--num-heads", "2", "--img-size", "64", "--num-frames", "16"]
SWIN = dict(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=(2, 2, 2), img_size=64, num_frames=8)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test in this module runs PyTorch on one thread (fixture in conftest.py)."""


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("vis") / "shapes.mp4", moving_shapes(48, 64, 96, seed=5))


def reference_kept(model, clip):
    """return_kept of the model on the view that was drawn, computed here independently."""
    with torch.no_grad():
        _, kept = model(torch.from_numpy(clip.tensors()[:1]), return_kept=True)
    return [stage[0].numpy() for stage in kept]


def check_picture(image: np.ndarray, figure, clip, kept, config, mask=MASK_COLOR):
    """Patch by patch: masked (solid mask colour) <=> not in kept; kept patches are the input's pixels."""
    grids = stage_grids(config)
    zoom, tile = figure.zoom, figure.tile
    frames = clip.pixels[0].repeat(zoom, axis=1).repeat(zoom, axis=2)
    input_row = figure.rows[0]
    for column, (x, y) in zip(figure.columns, input_row["origin"]):
        assert (image[y : y + tile, x : x + tile] == frames[column * grids[0].frames_per_slice]).all()
    checked = 0
    for row in figure.rows[1:]:
        stage = row["stage"]
        grid = grids[stage]
        cell = grid.cell * zoom
        kept_set = set(kept[stage].tolist())
        masked_seen = kept_seen = 0
        for column, (x, y) in zip(figure.columns, row["origin"]):
            drawn = image[y : y + tile, x : x + tile]
            frame = frames[column * grid.frames_per_slice]
            for r in range(grid.rows):
                for c in range(grid.cols):
                    box = (slice(r * cell, min((r + 1) * cell, tile)), slice(c * cell, min((c + 1) * cell, tile)))
                    if box[0].start >= tile or box[1].start >= tile:
                        continue
                    position = (column * grid.rows + r) * grid.cols + c
                    masked = bool((drawn[box] == np.array(mask, dtype=np.uint8)).all())
                    assert masked == (position not in kept_set), (stage, column, r, c)
                    if masked:
                        masked_seen += 1
                    else:
                        kept_seen += 1
                        assert (drawn[box] == frame[box]).all()
                    checked += 1
        assert masked_seen > 0 and kept_seen > 0  # r1 > 0 drops something in the columns shown
    return checked


def test_vit_png_masks_exactly_the_dropped_positions(tmp_path, clip_path, capsys):
    model = create_model("vit_s", r1=4, seed=0, **VIT)
    backend = TorchBackend(model, source="test", random_weights=True)  # as the CLI's, so the titles agree
    protocol = protocol_for_backend(backend, views="1x1")
    figure, clip = visualize_clip(backend, clip_path, protocol, zoom=2)
    kept = reference_kept(model, clip)
    assert all((a == b).all() for a, b in zip(kept, figure.kept))
    # the CLI writes the same picture
    png, gif = tmp_path / "kept.png", tmp_path / "kept.gif"
    code = main(["visualize", str(clip_path), "-o", str(png), "--gif", str(gif), *VIT_ARGS, "--r1", "4", "--zoom", "2", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[:2] == (figure.image.size[1], figure.image.size[0])
    assert (image == np.asarray(figure.image)).all()
    assert check_picture(image, figure, clip, kept, model.config) == 3 * 8 * 16
    # caption: kept fraction per stage, ViT's over the 128 input tokens
    tokens = [k.size for k in kept]
    assert figure.kept_fraction == [t / 128 for t in tokens]
    assert figure.caption.startswith(f"kept tokens: stage 1 {tokens[0]}/128 ({tokens[0] / 128:.1%})")
    assert json.loads(out)["kept_tokens"] == tokens
    with Image.open(gif) as animation:
        assert animation.n_frames == 8


def test_swin_png_uses_each_stage_grid(tmp_path, clip_path):
    model = create_model("swin_t", r1=16, seed=0, **SWIN)
    backend = TorchBackend(model, source="test")
    protocol = protocol_for_backend(backend, views="1x1")
    figure, clip = visualize_clip(backend, clip_path, protocol, max_columns=0)
    grids = stage_grids(model.config)
    assert [(g.rows, g.cell) for g in grids] == [(8, 8), (4, 16), (2, 32)]  # 64 px input: 16x16 patches, merged 3 times
    kept = reference_kept(model, clip)
    path = tmp_path / "swin.png"
    figure.image.save(path)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert check_picture(image, figure, clip, kept, model.config) == 4 * (64 + 16 + 4)
    assert figure.kept_fraction == [k.size / g.tokens for k, g in zip(kept, grids)]


def test_visualize_refuses_to_overwrite(tmp_path, clip_path, capsys):
    png = tmp_path / "kept.png"
    png.write_bytes(b"old")
    assert main(["visualize", str(clip_path), "-o", str(png), *VIT_ARGS, "--r1", "4"]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err


def test_choose_columns():
    assert choose_columns(8, 8) == list(range(8))
    assert choose_columns(16, 8) == [0, 2, 4, 6, 9, 11, 13, 15]
    assert choose_columns(16, 0) == list(range(16))
