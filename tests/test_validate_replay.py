"""The replay behind ``validate``: judging and forcing a backend's token choices (sta_deploy.replay) and
reading them, in the backend's order, out of exported graphs (sta_deploy.export.selection_graph).

Expectations come from the PyTorch reference itself (its own selections, recorded through
``sta.selection_override``) and from hand-made score vectors, never from the code under test.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np
import pytest
import torch

import sta_deploy
from sta_deploy import sta
from sta_deploy.export.manifest import read_manifest, rebuild_reference
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.replay import IDENTICAL, MISMATCH, NEAR_TIE, NOT_FINITE, SKIPPED, judge_choice, replay_clip
from sta_deploy.runtime.onnxrt import onnx_session
from sta_deploy.export.selection_graph import write_selection_model
from sta_deploy.runtime.onnxrt import run_session
from sta_deploy.validate import seeded_clips, validate_onnx

from test_export_helpers import TINY

SWIN_TINY = dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(2, 3, 3), num_frames=8, img_size=56, num_classes=10)
MODELS = {"vit": ("vit_s", 48, TINY), "swin": ("swin_t", 8, SWIN_TINY)}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one PyTorch thread is faster on the shared 2-core machine (conftest.py)."""


def own_selections(model, clip):
    """The reference's own selections per stage, as flat indices into the stage input (groups in order)."""
    flats = []

    def record(metric_groups, semantic, r, backward):
        kept = sta.group_kept_indices(metric_groups, semantic, r, backward)
        groups, n = metric_groups.shape[1:3]
        flats.append((kept + (torch.arange(groups) * n).view(1, -1, 1)).reshape(kept.shape[0], -1))
        return kept

    with torch.no_grad(), sta.selection_override(record):
        logits, kept = model(clip, return_kept=True)
    return logits, kept, flats


# ----------------------------------------------------------------------------- judging one group
def test_identical_choice():
    values = torch.tensor([0.1, 0.2, 0.3, 0.4])
    check = judge_choice(values, [0, 1, 2, 3], [0, 1], [0, 1], ordered=True, limit=1e-5)
    assert (check.kind, check.margin) == (IDENTICAL, 0.0)


def test_order_swap_margin_is_the_score_gap_over_the_groups_largest_value():
    values = torch.tensor([0.1, 0.1 + 2e-7, 0.3, 0.5], dtype=torch.float64)
    near = judge_choice(values, [0, 1, 2, 3], [1, 0, 2], [0, 1, 2], ordered=True, limit=1e-5)
    assert near.kind == NEAR_TIE
    assert near.margin == pytest.approx(2e-7 / 0.5, rel=1e-6)
    far = judge_choice(values, [0, 1, 2, 3], [2, 0, 1], [0, 1, 2], ordered=True, limit=1e-5)
    assert far.kind == MISMATCH
    assert far.margin == pytest.approx((0.3 - 0.1) / 0.5)
    assert "token 2" in far.detail and "placed before" in far.detail


def test_set_swap_margin_is_kept_over_dropped():
    values = torch.tensor([0.1, 0.2, 0.3, 0.30000001, 1.0], dtype=torch.float64)
    near = judge_choice(values, list(range(5)), [0, 1, 3], [0, 1, 2], ordered=False, limit=1e-5)
    assert near.kind == NEAR_TIE and near.margin == pytest.approx(1e-8, rel=1e-3)
    far = judge_choice(values, list(range(5)), [0, 1, 4], [0, 1, 2], ordered=False, limit=1e-5)
    assert far.kind == MISMATCH and far.margin == pytest.approx(0.7)
    assert "kept token 4" in far.detail and "dropped token 2" in far.detail


def test_unordered_choice_ignores_order_but_ordered_does_not():
    values = torch.tensor([0.1, 0.2, 0.3, 0.9])
    assert judge_choice(values, [0, 1, 2, 3], [2, 0, 1], [0, 1, 2], ordered=False, limit=1e-5).kind == IDENTICAL
    assert judge_choice(values, [0, 1, 2, 3], [2, 0, 1], [0, 1, 2], ordered=True, limit=1e-5).kind == MISMATCH


@pytest.mark.parametrize(
    "backend, words",
    [([0, 0, 1], "kept twice"), ([0, 1, 7], "not one of the group's candidates")],
)
def test_invalid_choices_cannot_be_forced(backend, words):
    check = judge_choice(torch.arange(4.0), [0, 1, 2, 3], backend, [0, 1, 2], ordered=True, limit=1e-5)
    assert check.kind == MISMATCH and math.isinf(check.margin) and not check.forceable
    assert words in check.detail


def test_non_finite_reference_scores_are_not_judged():
    values = torch.tensor([0.1, float("nan"), 0.3])
    assert judge_choice(values, [0, 1, 2], [0, 1], [0, 2], ordered=True, limit=1e-5).kind == NOT_FINITE


# ----------------------------------------------------------------------------- forcing in the model
@pytest.mark.parametrize("family", ["vit", "swin"])
def test_forcing_the_references_own_choices_reproduces_it_bit_for_bit(family):
    name, r1, overrides = MODELS[family]
    model = sta_deploy.create_model(name, r1=r1, seed=0, **overrides)
    clip = torch.randn(1, *model.config.input_shape, generator=torch.Generator().manual_seed(3))
    logits, kept, flats = own_selections(model, clip)
    replay = replay_clip(model, clip, [f[0] for f in flats], ordered=family == "vit", limit=1e-5)
    assert torch.equal(replay.logits, logits[0])
    assert all(torch.equal(a, b[0]) for a, b in zip(replay.kept, kept))
    assert [(s.kind, s.agreement) for s in replay.stages] == [(IDENTICAL, 1.0)] * 3


def test_a_foreign_order_is_forced_into_the_next_stage():
    """Reversing one group's order at stage 0 is a mismatch there, and stage 1 then starts from that order."""
    name, r1, overrides = MODELS["vit"]
    model = sta_deploy.create_model(name, r1=r1, seed=0, **overrides)
    clip = torch.randn(1, *model.config.input_shape, generator=torch.Generator().manual_seed(4))
    _, _, flats = own_selections(model, clip)
    keep = 196 - r1
    reordered = flats[0][0].clone()
    reordered[5 * keep : 6 * keep] = reordered[5 * keep : 6 * keep].flip(0)  # group 5, not the first processed
    replay = replay_clip(model, clip, [reordered, flats[1][0], flats[2][0]], ordered=True, limit=1e-5)
    assert replay.stages[0].kind == MISMATCH and replay.stages[0].group == 5
    assert replay.stages[0].agreement == 1.0  # same set, other order
    # The reference continued from the reversed order, so its positions at stage 0 are the backend's.
    assert torch.equal(replay.kept[0], torch.sort(reordered).values)


def test_a_wrong_token_count_stops_the_replay_of_later_stages():
    name, r1, overrides = MODELS["vit"]
    model = sta_deploy.create_model(name, r1=r1, seed=0, **overrides)
    clip = torch.randn(1, *model.config.input_shape, generator=torch.Generator().manual_seed(5))
    _, _, flats = own_selections(model, clip)
    replay = replay_clip(model, clip, [flats[0][0], flats[1][0][:-4], flats[2][0]], ordered=True, limit=1e-5)
    assert [s.kind for s in replay.stages] == [IDENTICAL, MISMATCH, SKIPPED]
    assert "keeps 988 tokens" in replay.stages[1].detail and "4 groups x 248 = 992" in replay.stages[1].detail


# ----------------------------------------------------------------------------- selections read from graphs
@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Tiny exports: ViT with kept outputs (static batch 1), ViT without (dynamic batch), Swin with (static batch 2)."""
    folder = tmp_path_factory.mktemp("selection")
    made = {}
    vit = sta_deploy.create_model("vit_s", r1=48, seed=0, **TINY)
    made["vit_kept"] = export_onnx(vit, folder / "vit_kept.onnx", with_kept=True).path
    made["vit_dynamic"] = export_onnx(vit, folder / "vit_dynamic.onnx", dynamic_batch=True).path
    swin = sta_deploy.create_model("swin_t", r1=8, seed=0, **SWIN_TINY)
    made["swin_kept"] = export_onnx(swin, folder / "swin_kept.onnx", with_kept=True, batch_size=2).path
    return made


def run_with_selections(path, clips):
    manifest = read_manifest(path)
    with tempfile.TemporaryDirectory() as scratch:
        copy, names = write_selection_model(path, manifest["schedule"], scratch)
        outputs = run_session(onnx_session(copy, providers=["CPUExecutionProvider"]), manifest, clips)
    return manifest, outputs, [outputs[name] for name in names]


@pytest.mark.parametrize("export, clips", [("vit_kept", 2), ("vit_dynamic", 3), ("swin_kept", 2)])
def test_graph_selections_are_the_references_in_its_order(exports, export, clips):
    manifest = read_manifest(exports[export])
    model = rebuild_reference(manifest)
    data = seeded_clips(clips, model.config.input_shape, seed=11)
    _, outputs, selections = run_with_selections(exports[export], data)
    for index in range(clips):
        _, kept, flats = own_selections(model, torch.from_numpy(data[index : index + 1]))
        for stage, groups in enumerate(manifest["schedule"]["groups"]):
            want = flats[stage][0].numpy()
            if manifest["family"] == "swin":  # Swin re-sorts every slice's kept tokens into raster order
                want = np.sort(want.reshape(groups, -1), axis=-1).reshape(-1)
            # The reference's tokens in its order (these clips have no near-ties).
            np.testing.assert_array_equal(selections[stage][index], want)
            if "kept_stage0" in outputs:
                np.testing.assert_array_equal(outputs[f"kept_stage{stage}"][index], kept[stage][0].numpy())


def test_vit_selections_compose_to_the_kept_outputs(exports):
    """ViT: stage i's selection indexes stage i-1's kept tokens; composed, they are the sorted kept_stage outputs."""
    path = exports["vit_kept"]
    data = seeded_clips(2, (3, 16, 224, 224), seed=12)
    _, outputs, selections = run_with_selections(path, data)
    for index in range(2):
        positions = np.arange(8 * 196)
        for stage, selection in enumerate(selections):
            positions = positions[selection[index]]
            np.testing.assert_array_equal(np.sort(positions), outputs[f"kept_stage{stage}"][index])


def test_a_session_without_selection_outputs_is_refused(exports):
    session = onnx_session(exports["vit_kept"], providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="selection outputs"):
        validate_onnx(exports["vit_kept"], clips=1, session=session)


# ----------------------------------------------------------------------------- near-ties for real: fp16
@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    model = sta_deploy.create_model("vit_s", r1=48, seed=0, **TINY)
    return export_onnx(model, tmp_path_factory.mktemp("fp16") / "vit_fp16.onnx", dtype="fp16").path


def test_fp16_near_ties_are_counted_and_pass(fp16_export):
    report = validate_onnx(fp16_export, clips=3)
    assert report.passed, report.table()
    near = [stage["near_tie"] for stage in report.stages]
    assert sum(near) > 0, report.table()  # fp16 activations reorder near-tied tokens on this model
    margins = [stage["largest_near_tie"] for stage in report.stages if stage["near_tie"]]
    assert all(0 < margin <= report.tolerances["margin"] for margin in margins)
    assert "largest near-tie margin" in report.table()


def test_a_clips_verdict_does_not_depend_on_the_clip_count(fp16_export):
    """Clip 0 is the same seeded clip whatever --clips is; the reference runs it alone each time."""
    alone = validate_onnx(fp16_export, clips=1)
    among = validate_onnx(fp16_export, clips=3)
    for one, many in zip(alone.stages, among.stages):
        assert (0 in one["near_tie_clips"]) == (0 in many["near_tie_clips"])
        assert (0 in one["mismatch_clips"]) == (0 in many["mismatch_clips"])
    assert alone.passed and among.passed
