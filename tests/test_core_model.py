"""VideoMAE ViT with STA: kept-token invariants, stage placement, precision and batch independence."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import sta_deploy
from sta_deploy import create_model, list_models
from sta_deploy.models.registry import get_entry

from _helpers import SMALL, SMALL_NUM_SPATIAL, SMALL_NUM_TEMPORAL, expected_tokens_per_stage, random_video

N_TOKENS = SMALL_NUM_TEMPORAL * SMALL_NUM_SPATIAL  # 128


def _small(r1, seed=0, **extra):
    torch.manual_seed(seed)
    return create_model("vit_s", r1=r1, **{**SMALL, **extra})


def _plain_forward(model, video, keep_after=None):
    """The backbone without STA; ``keep_after`` {block: positions} keeps only those tokens after that block."""
    x = model.patch_embed(video) + model.pos_embed
    positions = torch.arange(x.shape[1])
    for index, block in enumerate(model.blocks):
        x, _ = block(x)
        if keep_after and index in keep_after:
            mask = torch.isin(positions, keep_after[index])
            x, positions = x[:, mask], positions[mask]
    return model.head(model.fc_norm(x.mean(dim=1)))


# ----------------------------------------------------------------------------- presets
def test_presets_match_the_reference_table():
    expected = {"vit_s": (384, 12, 6), "vit_b": (768, 12, 12), "vit_l": (1024, 24, 16), "vit_h": (1280, 32, 16)}
    for name, (dim, depth, heads) in expected.items():
        config = get_entry(name).config
        assert (config.embed_dim, config.depth, config.num_heads) == (dim, depth, heads), name
        assert (config.num_frames, config.img_size, config.patch_size, config.tubelet_size) == (16, 224, 16, 2)
        assert config.norm_eps == 1e-6
    assert set(expected) <= set(list_models())


# ----------------------------------------------------------------------------- kept tokens
@pytest.mark.parametrize("r1", [1, 5, 9])  # 9 is the largest r1 for 16 patches per slice
def test_kept_token_invariants(r1):
    model = _small(r1, seed=r1)
    video = random_video(2, seed=r1)
    with torch.no_grad():
        logits, kept = model(video, return_kept=True)
    assert logits.shape == (2, 400)
    assert torch.isfinite(logits).all()
    hand = expected_tokens_per_stage(SMALL_NUM_TEMPORAL, SMALL_NUM_SPATIAL, r1)
    assert list(model.schedule.tokens_per_stage) == hand
    assert len(kept) == 3
    previous = set(range(N_TOKENS))
    for stage, (positions, count) in enumerate(zip(kept, hand)):
        assert positions.shape == (2, count)
        assert positions.dtype == torch.int64
        for row in positions.tolist():
            assert row == sorted(row)
            assert len(set(row)) == len(row)
            assert all(0 <= p < N_TOKENS for p in row)
            # Dropping is per group: every group of 2**stage consecutive slices keeps the same count.
            slices_per_group = 2**stage
            per_group = {}
            for p in row:
                group = (p // SMALL_NUM_SPATIAL) // slices_per_group
                per_group[group] = per_group.get(group, 0) + 1
            groups = SMALL_NUM_TEMPORAL // slices_per_group
            assert per_group == {g: count // groups for g in range(groups)}
        for b in range(2):
            current = set(positions[b].tolist())
            assert current <= (previous if stage == 0 else set(kept[stage - 1][b].tolist()))
    assert [k.shape[1] for k in kept] == list(model.schedule.tokens_per_stage)


def test_token_counts_by_hand_for_the_paper_geometry():
    # ViT-B, r1 = 48: 8 x (196 - 48) = 1184; groups of 2 x 148 = 296 -> 4 x 248 = 992;
    # groups of 2 x 248 = 496 -> 2 x 448 = 896.  Dropped 8x48, 4x48, 2x48 = the paper's {8x48, 8x24, 8x12}.
    model = create_model("vit_b", r1=48, depth=3, embed_dim=48)  # the schedule is geometry only
    schedule = model.schedule
    assert schedule.tokens_per_stage == (1184, 992, 896)
    assert schedule.group_sizes == (196, 296, 496)
    assert schedule.groups == (8, 4, 2)
    assert schedule.dropped_per_stage == (8 * 48, 8 * 24, 8 * 12)
    assert schedule.describe() == "{8x48, 4x48, 2x48}"
    assert schedule.directions == ("forward", "backward", "forward")
    assert create_model("vit_b", r1=32, depth=3, embed_dim=48).schedule.describe() == "{8x32, 4x32, 2x32}"


def test_logits_come_from_the_kept_tokens():
    """The pruned model equals the plain backbone that keeps exactly the reported positions.

    Attention and mean pooling are order-invariant, so this pins down that ``kept`` names the
    tokens the model really used, at the blocks the schedule names.
    """
    model = _small(4, seed=3)
    video = random_video(1, seed=3)
    with torch.no_grad():
        logits, kept = model(video, return_kept=True)
        replay = _plain_forward(model, video, dict(zip(model.schedule.stage_blocks, [k[0] for k in kept])))
        unpruned = _plain_forward(model, video)
    torch.testing.assert_close(logits, replay, rtol=0, atol=1e-5)
    assert (logits - unpruned).abs().max() > 1e-4  # pruning changed something


def test_r1_zero_is_the_plain_backbone():
    model = _small(0, seed=1)
    video = random_video(2, seed=1)
    with torch.no_grad():
        logits, kept = model(video, return_kept=True)
        plain = _plain_forward(model, video)
        assert torch.equal(model(video), logits)
    torch.testing.assert_close(logits, plain, rtol=0, atol=1e-6)
    assert not model.schedule.enabled
    assert len(kept) == 3
    for positions in kept:
        assert torch.equal(positions, torch.arange(N_TOKENS).expand(2, -1))


def test_same_weights_different_r1():
    """Loading one state dict into r1 = 0 and r1 > 0 models: r1 = 0 is unpruned, r1 > 0 differs."""
    pruned = _small(3, seed=2)
    unpruned = _small(0, seed=99)
    unpruned.load_state_dict(pruned.state_dict())
    video = random_video(1, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(unpruned(video), _plain_forward(pruned, video), rtol=0, atol=1e-6)
        assert not torch.allclose(unpruned(video), pruned(video), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_selects_the_same_tokens(seed):
    model = _small(5, seed=seed)
    video = random_video(2, seed=100 + seed)
    with torch.no_grad():
        logits, kept = model(video, return_kept=True)
        model64 = copy.deepcopy(model).double()
        logits64, kept64 = model64(video.double(), return_kept=True)
    assert logits64.dtype == torch.float64
    for a, b in zip(kept, kept64):
        assert torch.equal(a, b)
    torch.testing.assert_close(logits.double(), logits64, rtol=0, atol=1e-5)


def test_batch_independence():
    model = _small(5, seed=4)
    video = random_video(3, seed=4)
    with torch.no_grad():
        logits, kept = model(video, return_kept=True)
        for i in range(3):
            alone, kept_alone = model(video[i : i + 1], return_kept=True)
            torch.testing.assert_close(logits[i : i + 1], alone, rtol=0, atol=1e-5)
            for stage in range(3):
                assert torch.equal(kept[stage][i : i + 1], kept_alone[stage])
    # The samples really are different (so the check above is not vacuous).
    assert not torch.equal(kept[0][0], kept[0][1])


# ----------------------------------------------------------------------------- stage placement
@pytest.mark.parametrize("name,depth,blocks", [("vit_s", 12, (0, 4, 8)), ("vit_b", 12, (0, 4, 8)), ("vit_l", 24, (0, 8, 16)), ("vit_h", 32, (0, 10, 21))])
def test_stage_blocks(name, depth, blocks):
    model = create_model(name, r1=8, embed_dim=32, num_heads=2, img_size=64)
    assert model.config.depth == depth
    assert model.schedule.stage_blocks == blocks
    assert blocks == (0, depth // 3, 2 * depth // 3)


def test_blocks_see_the_scheduled_token_counts():
    """Forward hooks: every block's input has the token count the stage placement implies."""
    model = _small(3, seed=5, depth=12)
    seen = []
    hooks = [block.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1])) for block in model.blocks]
    with torch.no_grad():
        model(random_video(1, seed=5))
    for hook in hooks:
        hook.remove()
    after = expected_tokens_per_stage(SMALL_NUM_TEMPORAL, SMALL_NUM_SPATIAL, 3)  # [104, 92, 86]
    assert after == [104, 92, 86]
    expected = [N_TOKENS] + [after[0]] * 4 + [after[1]] * 4 + [after[2]] * 3  # stages after blocks 0, 4, 8
    assert seen == expected
    assert [model.schedule.tokens_at_block(i) for i in range(12)] == expected


# ----------------------------------------------------------------------------- every registered model
# Small geometries per backbone family; a family registered later needs its entry here.
SMOKE_OVERRIDES = {
    "vit": dict(embed_dim=32, depth=3, num_heads=2, img_size=64, num_frames=8, num_classes=11),
    "swin": dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(2, 3, 3), img_size=56, num_frames=8, num_classes=11),
}
# (r1, expected kept tokens per stage), counted by hand:
SMOKE_EXPECTED = {
    # 4 slices x 16 patches, r1 = 2: 4 x 14 = 56; groups of 28 -> 2 x 26 = 52; one group of 52 -> 50.
    "vit": (2, [56, 52, 50], (2, 3, 8, 64, 64)),
    # 4 slices; grids 7x7, 4x4, 2x2 after the mergings; drops r1, 3*r1/8, r1/8 per slice with r1 = 8:
    # 4 x (49 - 8) = 164; 4 x (16 - 3) = 52; 4 x (4 - 1) = 12.
    "swin": (8, [164, 52, 12], (2, 3, 8, 56, 56)),
}


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_smoke(name):
    entry = get_entry(name)
    family = entry.config.family
    if family not in SMOKE_OVERRIDES:
        pytest.fail(f"no small geometry for family {family!r} in test_core_model.SMOKE_OVERRIDES: add one")
    overrides = SMOKE_OVERRIDES[family]
    r1, expected_kept, video_shape = SMOKE_EXPECTED[family]
    fields = {f.name for f in dataclasses.fields(entry.config)}
    assert set(overrides) <= fields
    torch.manual_seed(0)
    model = create_model(name, r1=r1, **overrides)
    assert not model.training
    config = model.config
    for key, value in overrides.items():
        assert getattr(config, key) == value
    video = torch.randn(2, *config.input_shape)
    assert video.shape == video_shape
    with torch.no_grad():
        logits, kept = model(video, return_kept=True)
    assert logits.shape == (2, 11)
    assert torch.isfinite(logits).all()
    assert [k.shape[1] for k in kept] == expected_kept
    assert all(k.shape[0] == 2 for k in kept)
    assert [k.shape[1] for k in kept] == list(model.schedule.tokens_per_stage)


def test_count_flops_is_lazy_attribute():
    assert callable(sta_deploy.count_flops)
    with pytest.raises(AttributeError):
        sta_deploy.no_such_thing  # noqa: B018
