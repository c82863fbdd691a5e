"""STA on Video Swin: schedule, nearest-kept fill, window gathers and the pruned-block equivalence.

The reference here is written the classic way (pad, torch.roll, reshape-partition, attention,
reverse) so that it shares nothing with the model's gather-based windows.  Its unpruned forward is
first checked against torchvision's logits, then the pruned model is checked against it:
"fill the grid with the nearest kept tokens, run the unmodified block, keep the kept positions".
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import sta_deploy
from sta_deploy import ConfigError


from sta_deploy.models.swin import SwinConfig, VideoSwin, stage_drops  # noqa: E402
from sta_deploy.models.swin_geometry import nearest_kept, shift_mask, window_geometry, window_slot_tables, windows_by_mask_type  # noqa: E402
from sta_deploy.sta import group_kept_indices, normalise_metric, semantic_score  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "swin"
SMALL = dict(embed_dim=6, depths=(2, 2, 2, 2), num_heads=(1, 2, 3, 3), window_size=(2, 3, 3), num_classes=11, num_frames=8, img_size=56)
# Grids: (4, 14, 14) -> (4, 7, 7) -> (4, 4, 4) -> (4, 2, 2); STA groups of 49, 16 and 4 tokens.


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test in this module runs PyTorch on one thread (fixture in conftest.py)."""


@pytest.fixture(scope="module")
def io():
    return torch.load(FIXTURES / "swin3d_small_io.pt", weights_only=True)


def _small_model(r1: int, dtype=torch.float64) -> VideoSwin:
    model = VideoSwin(SwinConfig(**SMALL), r1=r1, name="swin_small")
    model.load_state_dict(torch.load(FIXTURES / "tv_swin3d_small.pt", weights_only=True))
    return model.to(dtype)


# ----------------------------------------------------------------------------- classic reference
def reference_block(block, x):
    """The unmodified Swin block on a full grid x (B, T, H, W, C), classic formulation."""
    batch, t, h, w, c = x.shape
    window, shift = block.geometry.window, block.geometry.shift
    heads = block.attn.num_heads
    shortcut = x
    x = block.norm1(x)
    pads = [(window[i] - s % window[i]) % window[i] for i, s in enumerate((t, h, w))]
    x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
    tp, hp, wp = x.shape[1:4]
    if sum(shift):
        x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    counts = (tp // window[0], hp // window[1], wp // window[2])
    volume = math.prod(window)
    x = x.view(batch, counts[0], window[0], counts[1], window[1], counts[2], window[2], c)
    x = x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, volume, c)
    qkv = block.attn.qkv(x).reshape(x.shape[0], volume, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    index = block.attn.relative_position_index[:volume, :volume].reshape(-1)
    bias = block.attn.relative_position_bias_table[index].view(volume, volume, heads).permute(2, 0, 1)
    attn = attn + bias.unsqueeze(0)
    if sum(shift):
        regions = torch.zeros(tp, hp, wp)
        label = 0
        for ds in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
            for hs in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
                for ws in ((0, -window[2]), (-window[2], -shift[2]), (-shift[2], None)):
                    regions[ds[0] : ds[1], hs[0] : hs[1], ws[0] : ws[1]] = label
                    label += 1
        regions = regions.view(counts[0], window[0], counts[1], window[1], counts[2], window[2]).permute(0, 2, 4, 1, 3, 5).reshape(-1, volume)
        mask = (regions.unsqueeze(1) - regions.unsqueeze(2)).ne(0).to(attn.dtype) * -100.0
        attn = attn.view(batch, -1, heads, volume, volume) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, volume, volume)
    x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, volume, c)
    x = block.attn.proj(x)
    x = x.view(batch, counts[0], counts[1], counts[2], window[0], window[1], window[2], c)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(batch, tp, hp, wp, c)
    if sum(shift):
        x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
    x = shortcut + x[:, :t, :h, :w]
    return x + block.mlp(block.norm2(x))


def reference_forward(model, video):
    """The model's forward with full-grid reference blocks; pruned stages fill, run, keep."""
    config = model.config
    x = model.patch_embed(video)
    batch = x.shape[0]
    kept = fill = None
    for stage in range(config.num_stages):
        grid = config.grids[stage]
        for block in model.features[2 * stage]:
            full = x if fill is None else torch.stack([x[b, fill[b]] for b in range(batch)])
            full = reference_block(block, full.view(batch, *grid, -1)).flatten(1, 3)
            x = full if kept is None else torch.stack([full[b, kept[b]] for b in range(batch)])
        if stage == config.num_stages - 1:
            break
        if fill is not None:
            x = torch.stack([x[b, fill[b]] for b in range(batch)])
        x = model.features[2 * stage + 1](x, grid)
        if model.schedule.enabled:
            kept, fill, x = model.sta_stages[stage](x)
    return model.head(model.norm(x).mean(1))


# ----------------------------------------------------------------------------- schedule
def test_schedule_paper_geometry():
    config = SwinConfig()
    schedule = config.schedule(256)
    assert schedule.describe() == "{16x256, 16x96, 16x32}"  # the paper's STA^256-VideoSwin-S example
    assert schedule.group_sizes == (784, 196, 49) and schedule.groups == (16, 16, 16)
    assert schedule.directions == ("forward", "backward", "forward")
    assert schedule.tokens_per_stage == (16 * 528, 16 * 100, 16 * 17)
    assert schedule.stage_blocks == (1, 3, 9)
    assert [schedule.tokens_at_block(b) for b in (0, 1, 2, 3, 4, 9, 10, 11)] == [50176, 50176, 8448, 8448, 1600, 1600, 272, 272]
    assert stage_drops(320) == (320, 120, 40)
    assert config.schedule(0).tokens_per_stage == (16 * 784, 16 * 196, 16 * 49)
    assert config.schedule(384).rs == (384, 144, 48)


@pytest.mark.parametrize("r1, message", [(100, "not a multiple of 8"), (392, "largest r1 for this model is 384"), (-8, ">= 0"), (8.0, "integer")])
def test_impossible_r1(r1, message):
    with pytest.raises(ConfigError, match=message):
        sta_deploy.create_model("swin_t", r1=r1)


def test_r1_needs_four_stages():
    with pytest.raises(ConfigError, match="stages 2, 3 and 4"):
        SwinConfig(depths=(2, 2, 2), num_heads=(1, 2, 4), embed_dim=8).schedule(8)
    assert SwinConfig(depths=(2, 2, 2), num_heads=(1, 2, 4), embed_dim=8).schedule(0).r1 == 0


# ----------------------------------------------------------------------------- index arithmetic
def test_nearest_kept_brute_force():
    generator = torch.Generator().manual_seed(0)
    height, width, keep = 5, 7, 9
    kept = torch.stack([torch.randperm(height * width, generator=generator)[:keep].sort().values for _ in range(6)]).view(2, 3, keep)
    fill = nearest_kept(kept, height, width)
    for b in range(2):
        for g in range(3):
            for p in range(height * width):
                distances = [((p // width - q // width) ** 2 + (p % width - q % width) ** 2, q) for q in kept[b, g].tolist()]
                best = min(distances)[1]  # smallest distance, then lowest raster position
                assert kept[b, g, fill[b, g, p]].item() == best


@pytest.mark.parametrize("height, width, keep", [(28, 28, 528), (14, 14, 100), (7, 7, 32), (9, 4, 1)])
def test_nearest_kept_key_equals_argmin(height, width, keep, monkeypatch):
    """The encoded-key min-reduction picks what the plain ArgMin picks, ties included, on swin_t's
    224-pixel stage grids (the largest key there, 3 * 528 * 1458 + 528, is far below 2**24)."""
    import sta_deploy.models.swin_geometry as geometry

    assert geometry._index_key_is_exact(keep, height, width)
    generator = torch.Generator().manual_seed(height * keep)
    kept = torch.stack([torch.randperm(height * width, generator=generator)[:keep].sort().values for _ in range(4)]).view(2, 2, keep)
    fill = nearest_kept(kept, height, width)
    monkeypatch.setattr(geometry, "_index_key_is_exact", lambda *_: False)
    assert torch.equal(fill, nearest_kept(kept, height, width))
    rows, cols = torch.arange(height * width) // width, torch.arange(height * width) % width
    nearest = kept.gather(-1, fill)
    distance = (rows - nearest // width) ** 2 + (cols - nearest % width) ** 2
    every = (rows.view(-1, 1) - (kept // width).unsqueeze(-2)) ** 2 + (cols.view(-1, 1) - (kept % width).unsqueeze(-2)) ** 2
    assert torch.equal(distance, every.amin(-1))


def test_nearest_kept_key_falls_back_when_inexact():
    """Past 2**24 the float32 key would round: a 448-pixel input's first stage (56x56 grid, 2880
    kept) takes the ArgMin path, and the key's bound is what decides."""
    from sta_deploy.models.swin_geometry import _index_key_is_exact

    assert not _index_key_is_exact(2880, 56, 56)  # 3 * 2880 * 6050 + 2880 = 52.3e6
    assert _index_key_is_exact(3834, 28, 28) and not _index_key_is_exact(3835, 28, 28)  # 2**24 / 4375 = 3834.8
    grid = torch.arange(56 * 56).view(1, 1, -1)
    kept = grid[..., ::3].contiguous()  # every third position: many equidistant pairs
    fill = nearest_kept(kept, 56, 56)
    assert torch.equal(kept.gather(-1, fill)[..., ::3], kept)  # a kept position maps to itself


@pytest.mark.parametrize(
    "grid, window, shift",
    [((4, 14, 14), (2, 3, 3), (1, 1, 1)), ((4, 7, 7), (2, 3, 3), (0, 0, 0)), ((4, 2, 2), (2, 3, 3), (1, 1, 1)), ((3, 5, 6), (2, 4, 4), (1, 2, 2))],
)
def test_window_slots_match_roll_and_partition(grid, window, shift):
    geometry = window_geometry(grid, window, shift)
    slot_to_token, token_to_slot, _ = window_slot_tables(geometry)
    n = math.prod(grid)
    ids = torch.arange(n).view(1, *grid, 1)
    w, s = geometry.window, geometry.shift
    pads = [(w[i] - grid[i] % w[i]) % w[i] for i in range(3)]
    padded = F.pad(ids, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]), value=n)
    rolled = torch.roll(padded, shifts=tuple(-v for v in s), dims=(1, 2, 3))
    tp, hp, wp = rolled.shape[1:4]
    parts = rolled.view(tp // w[0], w[0], hp // w[1], w[1], wp // w[2], w[2]).permute(0, 2, 4, 1, 3, 5).reshape(-1)
    assert torch.equal(slot_to_token, parts)
    assert torch.equal(slot_to_token[token_to_slot], torch.arange(n))


@pytest.mark.parametrize(
    "grid, window, shift, types",
    [((4, 14, 14), (2, 3, 3), (1, 1, 1), 8), ((4, 7, 7), (2, 3, 3), (0, 0, 0), 1), ((4, 2, 2), (2, 3, 3), (1, 1, 1), 2), ((16, 56, 56), (8, 7, 7), (4, 3, 3), 8)],
)
def test_windows_grouped_by_mask_type(grid, window, shift, types):
    """The reordered windows are the same windows; every window's own mask is its group's mask."""
    geometry = window_geometry(grid, window, shift)
    slot_to_token, _, slot_region = window_slot_tables(geometry)
    ordered, token_to_slot, type_region, windows_per_type = windows_by_mask_type(geometry, slot_to_token, slot_region)
    volume, n = geometry.window_volume, geometry.num_tokens
    windows = slot_to_token.view(-1, volume)
    ordered_windows = ordered.view(-1, volume)
    # Each window of the new order is exactly one window of the raster order, each used once.
    matches = (ordered_windows.unsqueeze(1) == windows.unsqueeze(0)).all(-1)
    assert torch.equal(matches.sum(0), torch.ones(len(windows), dtype=torch.long)) and torch.equal(matches.sum(1), matches.sum(0))
    source = matches.to(torch.long).argmax(1)
    assert torch.equal(ordered[token_to_slot], torch.arange(n))
    assert len(windows_per_type) == types == len(type_region) and sum(windows_per_type) == len(windows)
    kinds = torch.repeat_interleave(torch.arange(types), torch.tensor(windows_per_type))
    assert torch.equal(shift_mask(slot_region[source]), shift_mask(type_region)[kinds])
    assert not shift_mask(type_region[:1]).any()  # the unmasked interior comes first


# ----------------------------------------------------------------------------- equivalences
def test_reference_matches_torchvision(io):
    model = _small_model(0)
    with torch.no_grad():
        logits = reference_forward(model, io["video"].double())
    torch.testing.assert_close(logits, io["logits64"], atol=1e-10, rtol=0)


@pytest.mark.parametrize("stage, block_index", [(0, 0), (0, 1), (1, 0), (1, 1), (3, 1)])
def test_pruned_block_equals_fill_run_keep(stage, block_index):
    """One block, random kept sets per slice: gathers == fill + unmodified block + keep."""
    model = _small_model(0)
    block = model.features[2 * stage][block_index]
    t, h, w = block.geometry.grid
    n = h * w
    keep = max(1, n // 3)
    generator = torch.Generator().manual_seed(stage * 10 + block_index)
    batch = 2
    kept_in_slice = torch.stack([torch.randperm(n, generator=generator)[:keep].sort().values for _ in range(batch * t)]).view(batch, t, keep)
    offsets = torch.arange(t).view(1, t, 1)
    kept = (kept_in_slice + offsets * n).view(batch, -1)
    fill = (nearest_kept(kept_in_slice, h, w) + offsets * keep).view(batch, -1)
    channels = block.norm1.normalized_shape[0]
    x_kept = torch.randn(batch, t * keep, channels, generator=generator, dtype=torch.float64)

    padded_fill = torch.cat([fill, fill.new_full((batch, 1), x_kept.shape[1])], dim=1)
    with torch.no_grad():
        ours = block(x_kept, padded_fill[:, block.slot_to_token], block.token_to_slot[kept])
        full = torch.stack([x_kept[b, fill[b]] for b in range(batch)]).view(batch, t, h, w, channels)
        reference = reference_block(block, full).flatten(1, 3)
        reference = torch.stack([reference[b, kept[b]] for b in range(batch)])
    assert block.geometry.shifted == (block_index == 1)  # stage 4: temporal shift only (2x2 < 3x3)
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=0)


@pytest.mark.parametrize("r1", [8, 24])
def test_pruned_model_equals_reference(io, r1):
    model = _small_model(r1)
    video = io["video"].double()
    with torch.no_grad():
        logits = model(video)
        reference = reference_forward(model, video)
    torch.testing.assert_close(logits, reference, atol=1e-10, rtol=0)


def test_selection_is_sta_on_merged_tokens(io):
    """The kept set of every stage is STA's on the merged tokens (metric = normalised merged tokens)."""
    model = _small_model(16)
    merged = []
    for index in (1, 3, 5):
        model.features[index].register_forward_hook(lambda module, args, output: merged.append(output))
    with torch.no_grad():
        _, kept = model(io["video"].double(), return_kept=True)
    schedule = model.schedule
    for stage, x in enumerate(merged):
        batch, _, channels = x.shape
        groups, n, r = schedule.groups[stage], schedule.group_sizes[stage], schedule.rs[stage]
        xg = x.reshape(batch, groups, n, channels)
        expected = group_kept_indices(normalise_metric(xg), semantic_score(xg), r, backward=stage == 1)
        expected = (expected.sort(-1).values + torch.arange(groups).view(1, groups, 1) * n).view(batch, -1)
        assert torch.equal(kept[stage], expected)


def test_return_kept_and_batch_independence(io):
    model = _small_model(16, torch.float32)
    video = io["video"].float()
    with torch.no_grad():
        logits, kept = model(video, return_kept=True)
        singles = [model(video[i : i + 1], return_kept=True) for i in range(2)]
    assert [k.shape for k in kept] == [(2, 4 * (49 - 16)), (2, 4 * (16 - 6)), (2, 4 * (4 - 2))]
    for stage, positions in enumerate(kept):
        n = model.schedule.group_sizes[stage]
        assert positions.dtype == torch.int64
        assert torch.equal(positions, positions.sort(-1).values)
        assert positions.unique(dim=-1).shape == positions.shape and int(positions.max()) < 4 * n
        per_slice = torch.bincount(positions[0] // n, minlength=4)
        assert per_slice.tolist() == [n - model.schedule.rs[stage]] * 4
    for i, (single_logits, single_kept) in enumerate(singles):
        torch.testing.assert_close(single_logits[0], logits[i], atol=1e-5, rtol=1e-5)
        for stage in range(3):
            assert torch.equal(single_kept[stage][0], kept[stage][i])
    with torch.no_grad():
        _, full = _small_model(0, torch.float32)(video, return_kept=True)
    assert [k.shape[1] for k in full] == [4 * 49, 4 * 16, 4 * 4]
    assert torch.equal(full[0][1], torch.arange(4 * 49))


def test_pruning_changes_logits_moderately(io):
    model0, model8 = _small_model(0, torch.float32), _small_model(8, torch.float32)
    video = io["video"].float()
    with torch.no_grad():
        full, pruned = model0(video), model8(video)
    assert not torch.allclose(full, pruned)
    assert torch.isfinite(pruned).all()
