"""Export + ONNX Runtime parity for every ViT preset at the paper's r1 values, checked on the graph.

Each small export is made once (module-scoped cache) and reused by every check.  The static-shape
property is checked with our own shape-inference pass (tests/test_export_helpers.py), not taken
from the exporter's report.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import sta_deploy
from sta_deploy import create_model
from sta_deploy.export.graph_checks import check_static_shapes
from sta_deploy.export.onnx_export import DEFAULT_OPSET, export_onnx
from sta_deploy.replay import replay_clip
from sta_deploy.export.selection_graph import write_selection_model
from sta_deploy.validate import TOLERANCES, validate_onnx

from test_export_helpers import (
    CLIP_SHAPE,
    PAPER_R1,
    TINY,
    TINY_ARGS,
    VIT_PRESETS,
    error_line,
    io_specs,
    op_counts,
    random_clips,
    run_cli,
    sha256_of,
    static_shape_problems,
    static_video_clip,
    symbolic_dims,
    tiny_overrides,
    topk_ks,
)

CASES = [(preset, r1) for preset in VIT_PRESETS for r1 in PAPER_R1]
IDS = [f"{preset}-r{r1}" for preset, r1 in CASES]


@dataclass
class Exported:
    model: torch.nn.Module
    path: Path
    manifest: dict

    @property
    def proto(self) -> onnx.ModelProto:
        return onnx.load(str(self.path))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """``exports(preset, r1)``: a tiny model of that preset exported once with its kept outputs."""
    folder = tmp_path_factory.mktemp("presets")
    cache: dict[tuple[str, int], Exported] = {}

    def get(preset: str, r1: int) -> Exported:
        if (preset, r1) not in cache:
            model = create_model(preset, r1=r1, seed=0, **tiny_overrides(preset))
            result = export_onnx(model, folder / f"{preset}_r{r1}.onnx", with_kept=True)
            cache[preset, r1] = Exported(model, result.path, result.manifest)
        return cache[preset, r1]

    return get


def test_every_vit_preset_is_covered():
    assert VIT_PRESETS, "the registry lists no vit_* preset"
    assert {"vit_s", "vit_b", "vit_l", "vit_h"} <= set(VIT_PRESETS)


@pytest.mark.parametrize("preset, r1", CASES, ids=IDS)
def test_graph_is_static_on_the_graph(exports, preset, r1):
    exported = exports(preset, r1)
    proto = exported.proto
    assert static_shape_problems(proto) == []
    assert symbolic_dims(proto) == set()
    # The exporter's checker agrees, and its op counts describe this very graph.
    report = check_static_shapes(proto)
    assert report.ok, report.summary()
    assert exported.manifest["op_counts"] == dict(sorted(op_counts(proto).items()))
    if r1 > 0:
        # Selection is TopK with r1 baked in: every stage keeps n - r1 tokens of each group.
        schedule = exported.model.schedule
        keeps = {n - r1 for n in schedule.group_sizes}
        assert keeps <= set(topk_ks(proto)), (keeps, topk_ks(proto))


@pytest.mark.parametrize("preset, r1", CASES, ids=IDS)
def test_onnx_checker_full_check(exports, preset, r1):
    onnx.checker.check_model(str(exports(preset, r1).path), full_check=True)


@pytest.mark.parametrize("preset, r1", CASES, ids=IDS)
def test_onnxruntime_validation_passes(exports, preset, r1):
    report = validate_onnx(exports(preset, r1).path, clips=2)
    assert report.passed, report.table()
    assert report.tolerances == TOLERANCES["fp32"]
    assert report.max_abs <= 1e-4
    assert report.kept_exact == [1.0, 1.0, 1.0], report.table()


# Near-ties: two kept tokens whose STA scores differ by ~1e-6 (relative) can swap places when ONNX
# Runtime rounds differently from PyTorch, and the next stage then splits A/B differently (on the
# development machine: vit_l r1=64 clip 0, 2 positions at stage 2, logits 2.4e-3 apart against the
# plain reference).  That is float rounding, not a logic error: the comparison below replays ONNX
# Runtime's choices in the reference (sta_deploy.replay), which must find only near-ties, and then
# requires the kept tokens and logits to match the replayed reference exactly / within 1e-4.
CLIP_CASES = [(preset, r1, clip) for preset, r1 in CASES for clip in range(4)]
CLIP_IDS = [f"{preset}-r{r1}-clip{clip}" for preset, r1 in CASES for clip in range(4)]


def kept_test_clip(r1: int, clip: int) -> np.ndarray:
    """Clips 0-2: random; clip 3: a static video (16 identical frames), one (1, 3, 16, 224, 224) batch each."""
    if clip == 3:
        return static_video_clip(seed=7)
    return random_clips(3, seed=100 + r1)[clip : clip + 1]


def onnxruntime_with_selections(path, video):
    """ONNX Runtime's outputs and, per stage, its kept tokens in its own order (sta_deploy.export.selection_graph)."""
    manifest = json.loads(path.with_name(path.stem + ".manifest.json").read_text())
    with tempfile.TemporaryDirectory() as scratch:
        copy, names = write_selection_model(path, manifest["schedule"], scratch)
        session = ort.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"video": video})))
    return outputs, [outputs[name][0] for name in names] if manifest["r1"] > 0 else None


@pytest.mark.parametrize("preset, r1, clip", CLIP_CASES, ids=CLIP_IDS)
def test_kept_outputs_equal_pytorch_up_to_near_ties(exports, preset, r1, clip):
    exported = exports(preset, r1)
    video = kept_test_clip(r1, clip)
    outputs, selections = onnxruntime_with_selections(exported.path, video)
    assert [name for name in outputs if not name.startswith("sta_selection")] == ["logits", "kept_stage0", "kept_stage1", "kept_stage2"]
    kept = [outputs[f"kept_stage{stage}"] for stage in range(3)]
    with torch.no_grad():
        ref_logits, ref_kept = exported.model(torch.from_numpy(video), return_kept=True)
    # Stage 1 is the backward (last group first) stage of the F-B-F order.
    assert exported.manifest["schedule"]["directions"] == ["forward", "backward", "forward"]
    kinds = ["identical"] * 3
    if selections is not None:
        replay = replay_clip(exported.model, torch.from_numpy(video), selections, ordered=True, limit=TOLERANCES["fp32"]["margin"])
        kinds = [stage.kind for stage in replay.stages]
        assert set(kinds) <= {"identical", "near-tie"}, [(s.stage, s.kind, s.group, s.detail) for s in replay.stages]
        ref_logits, ref_kept = replay.logits[None], [k[None] for k in replay.kept]
    for stage, (got, want) in enumerate(zip(kept, ref_kept)):
        assert got.dtype == np.int64 and got.shape == tuple(want.shape)
        different = sorted(set(got[0].tolist()) ^ set(want[0].tolist()))
        assert np.array_equal(got, want.numpy()), (
            f"stage {stage} ({exported.model.schedule.directions[stage]}, {kinds[stage]}): positions kept by only one side: {different}"
        )
    np.testing.assert_allclose(outputs["logits"], ref_logits.numpy(), atol=1e-4, rtol=0)


def test_fp32_validation_of_a_correct_export_passes_on_more_clips(exports):
    """`validate --clips 3` on the same correct fp32 export that passes with 2 clips (seeded clip 2 has a near-tie)."""
    report = validate_onnx(exports("vit_s", 64).path, clips=3)
    assert report.passed, report.table()


@pytest.mark.parametrize("preset, r1", CASES, ids=IDS)
def test_manifest(exports, preset, r1):
    exported = exports(preset, r1)
    path, model = exported.path, exported.model
    on_disk = json.loads(path.with_name(f"{preset}_r{r1}.manifest.json").read_text())
    assert on_disk == exported.manifest
    manifest = on_disk
    assert manifest["model"] == preset
    assert manifest["config"] == model.config.as_dict()
    assert manifest["config"]["embed_dim"] == tiny_overrides(preset)["embed_dim"]
    assert manifest["r1"] == r1
    assert manifest["schedule"] == model.schedule.as_dict()
    assert manifest["schedule"]["tokens_per_stage"] == list(model.schedule.tokens_per_stage)
    if r1 > 0:
        # By hand: 8 groups of 196 drop r1 each, then 4 groups, then 2.
        first = 8 * (196 - r1)
        second = 4 * (2 * (196 - r1) - r1)
        third = 2 * (2 * (2 * (196 - r1) - r1) - r1)
        assert manifest["schedule"]["tokens_per_stage"] == [first, second, third]
    assert manifest["opset"] == DEFAULT_OPSET
    assert [o.version for o in exported.proto.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    kept = list(model.schedule.tokens_per_stage)
    assert manifest["inputs"] == [{"name": "video", "shape": [1, *CLIP_SHAPE], "dtype": "float32"}]
    assert manifest["outputs"] == [
        {"name": "logits", "shape": [1, 400], "dtype": "float32"},
        *({"name": f"kept_stage{i}", "shape": [1, kept[i]], "dtype": "int64"} for i in range(3)),
    ]
    assert manifest["inputs"] == io_specs(exported.proto, "input")
    assert manifest["outputs"] == io_specs(exported.proto, "output")
    assert manifest["onnx_file"] == path.name
    assert manifest["onnx_sha256"] == sha256_of(path)
    assert manifest["weights"] == {"source": "random-init", "seed": 0}
    assert manifest["dtype"] == "fp32" and manifest["batch_size"] == 1 and manifest["dynamic_batch"] is False
    assert manifest["external_data"] is None
    versions = manifest["versions"]
    assert versions["sta_deploy"] == sta_deploy.__version__
    assert versions["torch"] == torch.__version__
    assert versions["onnx"] == onnx.__version__


# ----------------------------------------------------------------------------- dynamic batch
@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory):
    """`sta-deploy export --dynamic-batch --with-kept` of a tiny vit_s at r1 = 48 (validation on)."""
    path = tmp_path_factory.mktemp("dynamic") / "dyn.onnx"
    code, out, err = run_cli(
        "export", "--model", "vit_s", "--r1", 48, *TINY_ARGS, "--dynamic-batch", "--with-kept", "-o", path,
    )
    assert code == 0, err
    assert out.rstrip().splitlines()[-1] == "PASS", out
    return path, json.loads(path.with_name("dyn.manifest.json").read_text())


def test_dynamic_batch_symbol_is_the_only_symbolic_dim(dynamic_export):
    path, manifest = dynamic_export
    proto = onnx.load(str(path))
    symbol = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert symbol, "the batch dimension of the input is not symbolic"
    assert manifest["dynamic_batch"] is True
    assert manifest["inputs"] == [{"name": "video", "shape": [symbol, *CLIP_SHAPE], "dtype": "float32"}]
    assert [o["shape"][0] for o in manifest["outputs"]] == [symbol] * 4
    assert all(isinstance(d, int) for o in manifest["outputs"] for d in o["shape"][1:])
    assert symbolic_dims(proto) == {symbol}
    # Every tensor static but the batch, no forbidden op.  (TopK's k: see the next test.)
    problems = static_shape_problems(proto, batch_symbol=symbol)
    assert [p for p in problems if not p.startswith("TopK ")] == []
    # Without the batch symbol allowed, the same graph is (correctly) not static.
    assert static_shape_problems(proto) != []
    assert check_static_shapes(proto, dynamic_batch=True).ok
    assert not check_static_shapes(proto, dynamic_batch=False).ok
    onnx.checker.check_model(str(path), full_check=True)


def test_dynamic_batch_topk_k_are_constants(dynamic_export):
    path, _ = dynamic_export
    proto = onnx.load(str(path))
    symbol = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert [p for p in static_shape_problems(proto, batch_symbol=symbol) if p.startswith("TopK ")] == []


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_runs_and_matches_pytorch(dynamic_export, batch):
    path, manifest = dynamic_export
    model = create_model("vit_s", r1=48, seed=manifest["weights"]["seed"], **TINY)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    video = random_clips(batch, seed=batch)
    logits, *kept = session.run(None, {"video": video})
    with torch.no_grad():
        ref_logits, ref_kept = model(torch.from_numpy(video), return_kept=True)
    assert logits.shape == (batch, 400)
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4, rtol=0)
    for got, want in zip(kept, ref_kept):
        assert got.shape == tuple(want.shape) and got.shape[0] == batch
        assert np.array_equal(got, want.numpy())


def test_batch_and_dynamic_batch_are_exclusive(tmp_path):
    code, _, err = run_cli("export", "--model", "vit_s", "--r1", 48, *TINY_ARGS, "--batch", 2, "--dynamic-batch", "-o", tmp_path / "x.onnx")
    assert code == 2
    assert "exclusive" in error_line(err, only_line=True)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- full size
@pytest.mark.slow
def test_full_size_vit_b_r48(tmp_path):
    model = create_model("vit_b", r1=48, seed=0)
    result = export_onnx(model, tmp_path / "vit_b_r48.onnx", with_kept=True)
    manifest = result.manifest
    assert manifest["config"]["embed_dim"] == 768 and manifest["config"]["depth"] == 12
    assert manifest["schedule"]["stage_blocks"] == [0, 4, 8]
    assert manifest["schedule"]["drop_schedule"] == "{8x48, 4x48, 2x48}"
    assert manifest["schedule"]["tokens_per_stage"] == [8 * 148, 4 * 248, 2 * 448]
    assert manifest["onnx_sha256"] == sha256_of(result.path)
    proto = onnx.load(str(result.path))
    assert static_shape_problems(proto) == []
    assert {148, 248, 448} <= set(topk_ks(proto))
    onnx.checker.check_model(str(result.path), full_check=True)
    report = validate_onnx(result.path, clips=2)
    assert report.passed, report.table()
    assert report.kept_exact == [1.0, 1.0, 1.0]
