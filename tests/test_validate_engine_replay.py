"""``validate --engine`` replays the engine's own token choices, as ``validate`` does for ONNX Runtime.

An engine built with ``sta-deploy build --selection-outputs`` also outputs every STA stage's
selection (``sta_selection_stage*``), which the replay forces into the PyTorch reference.  The
build side runs here against TensorRT-RTX (builder and parser need no GPU); the engine itself only
runs on a GPU (those tests skip).  ``validate_engine``'s handling of the engine's outputs is tested
with ONNX Runtime standing in for the engine runner over the same selection graph: that checks the
validator's plumbing, not TensorRT's numerics.
"""

from __future__ import annotations

import ast
import importlib.util
import json

import pytest
import torch

import sta_deploy
from sta_deploy.cli import main
from sta_deploy.export.onnx_export import export_onnx

from _native import HAS_RTX, NO_RTX
from test_export_helpers import TINY

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_GPU = torch.cuda.is_available()
R1 = 48


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one PyTorch thread is faster on the shared 2-core machine (conftest.py)."""


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    model = sta_deploy.create_model("vit_s", r1=R1, seed=0, **TINY)
    return export_onnx(model, tmp_path_factory.mktemp("engine") / "vit.onnx").path


def _schedule(onnx_path) -> dict:
    return json.loads(onnx_path.with_suffix(".manifest.json").read_text())["schedule"]


@pytest.mark.skipif(not HAS_RTX, reason=NO_RTX)
@pytest.mark.filterwarnings("ignore:.*Timing cache operations are no-ops:DeprecationWarning")
def test_build_with_selection_outputs_adds_one_output_per_stage(tiny_export, capsys):
    assert main(["build", str(tiny_export), "--parse-only", "--selection-outputs"]) == 0
    out = capsys.readouterr().out
    report = out[out.index("outputs ") + len("outputs "):].splitlines()[0]
    outputs = {o["name"]: o["shape"] for o in ast.literal_eval(report)}  # the parser's list of dicts
    kept = _schedule(tiny_export)["tokens_per_stage"]
    assert outputs == {"logits": [1, 400], **{f"sta_selection_stage{i}": [1, k] for i, k in enumerate(kept)}}
    # The scratch copy is gone; the user's export is untouched.
    assert sorted(p.name for p in tiny_export.parent.iterdir()) == ["vit.manifest.json", "vit.onnx"]


@pytest.mark.skipif(not HAS_RTX, reason=NO_RTX)
@pytest.mark.filterwarnings("ignore:.*Timing cache operations are no-ops:DeprecationWarning")
def test_build_with_selection_outputs_writes_the_engine_atomically(tiny_export, tmp_path, monkeypatch, capsys):
    import tensorrt_rtx

    from sta_deploy.runtime import trt as tensorrt_backend

    monkeypatch.setattr(tensorrt_backend, "import_tensorrt", lambda prefer=(): tensorrt_rtx)
    monkeypatch.setattr(tensorrt_backend, "require_gpu", lambda: None)
    plan = tmp_path / "vit.plan"
    assert main(["build", str(tiny_export), "-o", str(plan), "--selection-outputs"]) == 0
    assert plan.stat().st_size > 1_000_000
    assert [p.name for p in tmp_path.iterdir()] == ["vit.plan"]  # no scratch copy left beside it


def test_selection_outputs_of_an_unpruned_export_are_refused(tmp_path, capsys):
    path = export_onnx(sta_deploy.create_model("vit_s", r1=0, seed=0, **TINY), tmp_path / "r0.onnx").path
    assert main(["build", str(path), "--parse-only", "--selection-outputs"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unpruned (r1 = 0)" in err and "drop --selection-outputs" in err


# ----------------------------------------------------------------------------- validate_engine's replay
@pytest.fixture
def onnxruntime_engines(monkeypatch, tmp_path):
    """``plan(onnx_path)``: a stand-in 'engine' of that graph (the TensorRT runner replaced by ONNX Runtime)."""
    from _helpers import onnxruntime_engine_class
    from sta_deploy.runtime import trt

    monkeypatch.setattr(trt, "EngineRunner", onnxruntime_engine_class())

    def plan(onnx_path, name="engine.plan"):
        path = tmp_path / name
        path.write_text(json.dumps({"onnx": str(onnx_path)}))
        return path

    return plan


def _selection_copy(onnx_path, folder):
    from sta_deploy.export.selection_graph import write_selection_model

    folder.mkdir(exist_ok=True)
    return write_selection_model(onnx_path, _schedule(onnx_path), folder)[0]


def test_engine_with_selection_outputs_is_replayed(tiny_export, onnxruntime_engines, tmp_path):
    from sta_deploy.validate import validate_engine, validate_onnx

    report = validate_engine(tiny_export, onnxruntime_engines(_selection_copy(tiny_export, tmp_path / "copy")), clips=2)
    assert report.passed, report.table()
    assert report.backend == "tensorrt" and not report.notes
    assert [s["stage"] for s in report.stages] == [0, 1, 2] and all(s["mismatch"] == 0 for s in report.stages)
    # The same verdict, stage by stage, as ONNX Runtime's own validation of the export.
    assert report.stages == validate_onnx(tiny_export, clips=2).stages


def test_engine_replay_catches_a_mutated_stage(tiny_export, onnxruntime_engines, tmp_path):
    import onnx

    from sta_deploy.validate import validate_engine
    from test_validate_mutations import score_topks

    copy = _selection_copy(tiny_export, tmp_path / "copy")
    proto = onnx.load(str(copy))
    topk = score_topks(proto, 1)[0]
    next(a for a in topk.attribute if a.name == "largest").i = 1  # keeps the highest scores: a real bug
    onnx.save(proto, str(copy))
    report = validate_engine(tiny_export, onnxruntime_engines(copy), clips=2)
    assert not report.passed
    assert report.stages[0]["mismatch"] == 0 and report.stages[1]["mismatch"] > 0, report.table()
    assert any(f.startswith("stage 1 ") for f in report.failures)


def test_engine_without_selection_outputs_says_it_was_not_replayed(tiny_export, onnxruntime_engines):
    from sta_deploy.validate import NO_ENGINE_REPLAY, validate_engine

    report = validate_engine(tiny_export, onnxruntime_engines(tiny_export), clips=2)
    assert report.passed and report.stages == [] and report.notes == [NO_ENGINE_REPLAY]
    assert f"note: {NO_ENGINE_REPLAY}" in report.table()


@pytest.mark.skipif(not (HAS_TRT and HAS_GPU), reason="needs TensorRT and an NVIDIA GPU")
def test_real_engine_with_selection_outputs_is_replayed(tiny_export, tmp_path, capsys):
    plan = tmp_path / "vit.plan"
    assert main(["build", str(tiny_export), "-o", str(plan), "--selection-outputs"]) == 0
    capsys.readouterr()
    assert main(["validate", str(tiny_export), "--engine", str(plan), "--clips", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and [s["stage"] for s in report["stages"]] == [0, 1, 2] and not report["notes"]
