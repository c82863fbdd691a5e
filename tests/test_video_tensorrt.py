"""predict / evaluate with --backend tensorrt: the engine `sta-deploy build` wrote beside each --onnx.

TensorRT engines only run on an NVIDIA GPU.  Here the one-line errors are checked for real, and the
backend's handling of an engine's outputs (static batch padding, kept outputs, close) with ONNX
Runtime standing in for the engine runner over the same graph: that checks the plumbing, not
TensorRT.  The real engine test skips without TensorRT and a GPU.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from test_video_onnx import R1, TINY, dataset, exported  # noqa: F401  (module fixtures reused)

HAS_TRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one PyTorch thread (conftest.py)."""


@pytest.mark.skipif(HAS_TRT, reason="TensorRT and a GPU are here: the commands run instead of failing")
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_tensorrt_backend_without_tensorrt_is_one_line(cli, exported, dataset, command):  # noqa: F811
    target = str(next(dataset.rglob("clip*"))) if command == "predict" else str(dataset)
    code, _, err = cli(command, target, "--onnx", exported, "--backend", "tensorrt", "--views", "1x1")
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "TensorRT is not installed" in lines[0], err


def test_plugin_lib_needs_the_tensorrt_backend(cli, exported, dataset, tmp_path):  # noqa: F811
    library = tmp_path / "libsta_stage_select_trt.so"
    library.write_bytes(b"")
    code, _, err = cli("predict", str(next(dataset.rglob("clip*"))), "--onnx", exported, "--plugin-lib", library)
    assert code == 2 and "--plugin-lib loads TensorRT plugins: add --backend tensorrt" in err


def test_engine_backend_runs_the_plan_beside_the_export(exported, monkeypatch):  # noqa: F811
    from _helpers import onnxruntime_engine_class
    from sta_deploy.errors import ConfigError
    from sta_deploy.runtime import trt
    from sta_deploy.video.backends import exported_backend

    engine_class = onnxruntime_engine_class()
    monkeypatch.setattr(trt, "import_tensorrt", lambda prefer=(): None)
    monkeypatch.setattr(trt, "require_gpu", lambda: None)
    monkeypatch.setattr(trt, "EngineRunner", engine_class)
    plan = exported.with_suffix(".plan")
    plan.unlink(missing_ok=True)
    with pytest.raises(ConfigError, match=f"no TensorRT engine {plan} .* build it with sta-deploy build {exported} -o {plan}"):
        exported_backend(exported, backend="tensorrt")
    plan.write_text(json.dumps({"onnx": str(exported)}))
    try:
        engine = exported_backend(exported, backend="tensorrt")
        onnx = exported_backend(exported, backend="onnxruntime")
        clips = np.random.default_rng(0).standard_normal((3, *onnx.manifest["inputs"][0]["shape"][1:])).astype(np.float32)
        (got, got_kept), (want, want_kept) = engine.run(clips, with_kept=True), onnx.run(clips, with_kept=True)
        assert engine.kind == "tensorrt" and engine.r1 == R1 and str(plan) in engine.describe()
        np.testing.assert_array_equal(got, want)
        for a, b in zip(got_kept, want_kept):
            np.testing.assert_array_equal(a, b)
        assert engine_class.batches == [2, 2]  # the export's static batch: the last chunk padded
        engine.close()
        assert engine_class.closed == 1
    finally:
        plan.unlink()


@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and an NVIDIA GPU")
def test_evaluate_on_a_real_engine_matches_onnxruntime(cli, exported, dataset, tmp_path):  # noqa: F811
    from sta_deploy.runtime.trt import build_engine

    build_engine(exported, exported.with_suffix(".plan"))
    runs = {}
    for backend in ("onnxruntime", "tensorrt"):
        code, out, err = cli("evaluate", dataset, "--onnx", exported, "--backend", backend, "--views", "1x1", "--no-baseline", "--no-plot",
                             "--no-progress", "-o", tmp_path / backend, "--json")
        assert code == 0, err
        runs[backend] = json.loads(out)["results"]
    assert [r["backend"] for r in runs["tensorrt"]] == ["tensorrt"]
    assert [(r["r1"], r["top1"], r["top5"], r["clips"]) for r in runs["tensorrt"]] == [(r["r1"], r["top1"], r["top5"], r["clips"]) for r in runs["onnxruntime"]]
