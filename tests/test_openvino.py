"""OpenVINO as a validated backend: fp32 exports run directly, bf16 (where the CPU has it), NNCF int8
with STA in float32, the CLI's --backend openvino, and one-line errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest

pytest.importorskip("openvino")

import sta_deploy
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.runtime import openvino as ov_runtime
from sta_deploy.sta import STA_SCOPE
from sta_deploy.validate import TOLERANCES, seeded_clips, validate_openvino

TINY = dict(embed_dim=64, depth=6, num_heads=4, img_size=64, num_frames=16, num_classes=10)
R1 = 4
INSTALL = "pip install 'sta-deploy[openvino]'"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread, tmp_path, monkeypatch):
    """PyTorch on one thread (conftest.py); a private OpenVINO model cache per test."""
    monkeypatch.setenv(ov_runtime.CACHE_ENV, str(tmp_path / "ov_cache"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openvino")
    path = folder / "tiny.onnx"
    export_onnx(sta_deploy.create_model("vit_s", r1=R1, seed=0, **TINY), path, with_kept=True)
    return path


@pytest.fixture(scope="module")
def int8_source(tmp_path_factory):
    """The model the ONNX Runtime int8 test quantizes (test_export_int8.py): at 64 px and 10 classes a
    random-weight model's top-1 is a near-tie that any int8 rounding flips."""
    path = tmp_path_factory.mktemp("openvino_int8") / "int8_source.onnx"
    export_onnx(sta_deploy.create_model("vit_s", r1=32, seed=0, embed_dim=64, depth=3, num_heads=2), path, with_kept=True)
    return path


@pytest.fixture(scope="module")
def quantized(int8_source):
    pytest.importorskip("nncf")
    from sta_deploy.export.quantize_openvino import quantize_openvino

    calibration = seeded_clips(8, (3, 16, 224, 224), seed=1)
    return quantize_openvino(int8_source, calibration=calibration, calibration_source="8 seeded random clips")


def _has_bf16() -> bool:
    import openvino

    return ov_runtime.cpu_has_bf16(openvino.Core())


def _one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], err


def test_openvino_validates_an_fp32_export(exported):
    report = validate_openvino(exported, clips=3)
    assert report.passed, report.table()
    assert report.backend == "openvino (CPU, f32)"
    assert report.tolerances == TOLERANCES["fp32"]
    assert report.max_abs < 1e-4 and len(report.kept) == 3
    assert report.kept_exact == [1.0, 1.0, 1.0]  # identical kept sets at every stage
    # OpenVINO's choices were replayed stage by stage (its selection outputs read from a graph copy).
    assert [(s["stage"], s["direction"], s["clips"], s["identical"]) for s in report.stages] == [
        (0, "forward", 3, 3), (1, "backward", 3, 3), (2, "forward", 3, 3)
    ]


def test_openvino_validates_a_swin_export_with_its_replay(tmp_path):
    """Video Swin's export (window gathers, nearest-kept fill as MatMul + ArgMin) runs on OpenVINO as it
    is, and its STA selections are replayed stage by stage like ViT's."""
    swin = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(2, 7, 7), num_frames=8, img_size=112, num_classes=10)
    path = tmp_path / "swin.onnx"
    export_onnx(sta_deploy.create_model("swin_t", r1=16, seed=0, **swin), path, with_kept=True)
    report = validate_openvino(path, clips=2)
    assert report.passed, report.table()
    assert report.max_abs < 1e-4 and report.kept_exact == [1.0, 1.0, 1.0]
    assert [(s["stage"], s["direction"], s["identical"]) for s in report.stages] == [
        (0, "forward", 2), (1, "backward", 2), (2, "forward", 2)
    ]


def test_an_unpruned_export_is_validated_without_a_replay(tmp_path):
    """r1 = 0: no selection to replay; the file itself is compiled (through the model cache) and the
    kept outputs (every position) are compared as sets."""
    path = tmp_path / "unpruned.onnx"
    export_onnx(sta_deploy.create_model("vit_s", r1=0, seed=0, **TINY), path, with_kept=True)
    cache = tmp_path / "cache"
    report = validate_openvino(path, clips=2, cache_dir=cache)
    assert report.passed, report.table()
    assert report.stages == [] and report.kept_exact == [1.0, 1.0, 1.0]
    assert any(cache.iterdir())  # compiled from the export itself, so it was cached


def test_compiled_model_cache_is_written_and_reused(exported, tmp_path):
    cache = tmp_path / "cache"
    first = ov_runtime.openvino_model(exported, cache_dir=cache)
    assert any(cache.iterdir()), "OpenVINO wrote no cache blob"
    second = ov_runtime.openvino_model(exported, cache_dir=cache)
    video = seeded_clips(1, (3, 16, 64, 64))
    np.testing.assert_array_equal(first.run(video)["logits"], second.run(video)["logits"])


@pytest.mark.skipif(not _has_bf16(), reason="this CPU has no bf16 instructions (OPTIMIZATION_CAPABILITIES lacks BF16)")
def test_bf16_runs_in_bf16_and_validates_at_the_bf16_thresholds(exported):
    model = ov_runtime.openvino_model(exported, precision="bf16", cache_dir=False)
    assert model.precision == "bf16"
    assert str(model.compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'bfloat16'>"
    report = validate_openvino(exported, precision="bf16", clips=3)
    assert report.tolerances == TOLERANCES["bf16"]
    assert report.tolerances["margin"] == 8 * 2.0**-7  # 8 x bf16's epsilon
    assert report.passed, report.table()
    assert report.max_abs > 0  # it really computed in bf16
    # bf16 scores reorder near-tied tokens on this model; the replay counts them within the margin.
    assert sum(s["near_tie"] for s in report.stages) > 0, report.table()
    margins = [s["largest_near_tie"] for s in report.stages if s["near_tie"]]
    assert all(0 < margin <= report.tolerances["margin"] for margin in margins), report.table()


def test_bf16_without_cpu_support_falls_back_to_f32_with_a_warning(exported, monkeypatch):
    monkeypatch.setattr(ov_runtime, "cpu_has_bf16", lambda core, device="CPU": False)
    with pytest.warns(ov_runtime.PrecisionFallbackWarning, match="no bf16"):
        report = validate_openvino(exported, precision="bf16", clips=2)
    assert report.backend == "openvino (CPU, f32, bf16 not supported here)"
    assert report.tolerances == TOLERANCES["fp32"] and report.passed


def test_quantized_model_keeps_sta_in_float32_and_validates_at_int8_thresholds(quantized):
    manifest = quantized.manifest
    assert manifest["dtype"] == "int8" and manifest["quantization"]["ignored_scope"] == STA_SCOPE
    assert manifest["quantization"]["source"] == "int8_source.onnx" and quantized.ignored_nodes > 0
    assert quantized.path.name == "int8_source_int8.onnx"
    graph = onnx.load(str(quantized.path)).graph
    scope = {n.name: next((p.value for p in n.metadata_props if p.key == "namespace"), "") for n in graph.node}
    produced_by = {output: node for node in graph.node for output in node.output}
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 3 * 4  # every block's products
    sta_products = [n for n in graph.node if STA_SCOPE in scope.get(n.name, "") and n.op_type == "MatMul"]
    assert sta_products
    for node in sta_products:  # no STA product reads a dequantized tensor
        assert all(produced_by[name].op_type != "DequantizeLinear" for name in node.input if name in produced_by), node.name
    # On OpenVINO the STA products run in f32 while the blocks' run in int8.
    model = ov_runtime.openvino_model(quantized.path, cache_dir=False)
    precisions = {}
    for op in model.compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in ("MatMul", "FullyConnected"):
            names = info["originalLayersNames"].astype(str).split(",")
            is_sta = any(STA_SCOPE in scope.get(name, "") for name in names)
            precisions.setdefault(is_sta, set()).add(info["runtimePrecision"].astype(str))
    assert precisions[True] == {"f32"}
    assert precisions[False] & {"i8", "u8"}
    report = validate_openvino(quantized.path, clips=4)
    assert report.tolerances == TOLERANCES["int8"]
    assert report.passed, report.table()
    assert report.cosine > 0.99


def test_cli_validate_and_bench_on_openvino(cli, exported):
    code, out, err = cli("validate", exported, "--backend", "openvino", "--clips", "2")
    assert code == 0, err
    assert "openvino (CPU, f32) vs PyTorch" in out and "PASS" in out
    for stage, direction in enumerate(["forward", "backward", "forward"]):  # the replay's per-stage report
        assert f"kept tokens stage {stage} ({direction})" in out and "2 identical, 0 near-tie, 0 mismatch" in out
    code, out, err = cli("bench", exported, "--backend", "openvino", "--runs", "2", "--warmup", "1", "--threads", "1", "--profile", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["provider"] == "openvino (CPU, f32)" and result["runs"] == 2 and result["r1"] == R1
    assert result["compile_s"] > 0 and 0 < result["sta_share"]["sta_fraction"] < 1


def test_cli_quantize_from_npy_writes_a_validated_int8_model(cli, int8_source, tmp_path):
    pytest.importorskip("nncf")
    clips = tmp_path / "calib.npy"
    np.save(clips, seeded_clips(3, (3, 16, 224, 224), seed=2))
    code, out, err = cli("quantize", int8_source, "--calib", clips, "-o", tmp_path / "q", "--clips", "3")
    assert code == 0, err
    assert (tmp_path / "q.onnx").is_file() and (tmp_path / "q.manifest.json").is_file()
    assert "3 clips from 1 .npy file(s)" in out and "openvino (CPU, f32) vs PyTorch on 3 clips" in out and "PASS" in out
    assert "warning" not in err
    manifest = json.loads((tmp_path / "q.manifest.json").read_text())
    assert manifest["quantization"]["calibration"] == {"clips": 3, "source": "3 clips from 1 .npy file(s)"}


def test_cli_quantize_without_calibration_warns(cli, exported, tmp_path):
    pytest.importorskip("nncf")
    code, out, err = cli("quantize", exported, "-o", tmp_path / "r.onnx", "--calib-size", "2", "--no-validate", "--json")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]  # (NNCF's progress bars go to stderr too)
    assert len(warnings) == 1 and warnings[0].startswith("warning: no --calib given: calibrating on 2 seeded random clips"), err
    assert json.loads(out)["calibration"] == "2 seeded random clips (seed 0)"


def test_cli_predict_on_openvino_matches_onnxruntime(cli, exported, tmp_path):
    pytest.importorskip("av")
    from sta_deploy.video.synthetic import moving_shapes, write_video

    clip = tmp_path / "clip.mp4"
    write_video(clip, moving_shapes(36, 48, 72, seed=3, kind=1))
    common = ["predict", clip, "--onnx", exported, "--views", "1x1", "--json"]
    code, out, err = cli(*common, "--backend", "openvino")
    assert code == 0, err
    openvino_run = json.loads(out)
    code, out, _ = cli(*common)
    ort_run = json.loads(out)
    assert openvino_run["backend"] == "openvino" and ort_run["backend"] == "onnxruntime"
    assert [t["class"] for t in openvino_run["results"][0]["top"]] == [t["class"] for t in ort_run["results"][0]["top"]]


def test_cli_evaluate_on_openvino_matches_onnxruntime(cli, exported, tmp_path):
    pytest.importorskip("av")
    from sta_deploy.video.synthetic import moving_shapes, write_video

    for label in range(2):
        (tmp_path / "clips" / f"class{label}").mkdir(parents=True)
        write_video(tmp_path / "clips" / f"class{label}" / "a.mp4", moving_shapes(36, 48, 72, seed=label, kind=label))
    common = ["evaluate", tmp_path / "clips", "--views", "1x1", "--no-progress", "--no-plot", "--no-baseline", "--json", "--onnx", exported]
    code, out, err = cli(*common, "--backend", "openvino", "-o", tmp_path / "ov")
    assert code == 0, err
    openvino_run = json.loads(out)["results"]
    code, out, err = cli(*common, "-o", tmp_path / "ort")
    ort_run = json.loads(out)["results"]
    assert [(r["r1"], r["backend"]) for r in openvino_run] == [(R1, "openvino")]
    assert [(r["top1"], r["top5"], r["clips"]) for r in openvino_run] == [(r["top1"], r["top5"], r["clips"]) for r in ort_run]


def test_cli_quantize_from_videos(cli, exported, tmp_path):
    pytest.importorskip("nncf")
    pytest.importorskip("av")
    from sta_deploy.video.synthetic import moving_shapes, write_video

    videos = []
    for index in range(2):
        videos.append(tmp_path / f"v{index}.mp4")
        write_video(videos[-1], moving_shapes(36, 48, 72, seed=index, kind=index))
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    code, out, err = cli("quantize", exported, "--calib", tmp_path / "broken.mp4", videos[0], videos[1], "--views", "1x3", "--calib-size", "4",
                         "-o", tmp_path / "v_int8", "--no-validate")
    assert code == 0, err
    assert "4 clips from 3 video(s)" in out
    assert "calibration clip" in err and "broken.mp4" in err and "seeded random" not in err


@pytest.fixture(scope="module")
def plugin_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("ov_plugin") / "plugin.onnx"
    export_onnx(sta_deploy.create_model("vit_s", r1=R1, seed=0, **TINY), path, sta_impl="plugin")
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "{plugin}", "--backend", "openvino"],
        ["bench", "{plugin}", "--backend", "openvino"],
        ["predict", "clip.mp4", "--onnx", "{plugin}", "--backend", "openvino"],
        ["quantize", "{plugin}", "--no-validate"],
    ],
)
def test_plugin_export_on_openvino_is_refused_in_one_line(cli, plugin_export, argv):
    code, _, err = cli(*[a.format(plugin=plugin_export) for a in argv])
    assert code == 1
    _one_line_error(err, "plugin-mode export", "--sta-impl onnx")


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["validate", "{model}", "--backend", "openvino", "--precision", "fp8"], 2, "'fp8' is not one of 'f32', 'bf16'"),
        (["bench", "{model}", "--precision", "bf16"], 2, "add --backend openvino"),
        (["predict", "clip.mp4", "--backend", "openvino"], 2, "give --onnx"),
        (["quantize", "{model}", "--backend", "onnxruntime"], 2, "export --dtype int8"),
    ],
)
def test_option_errors_are_one_line(cli, exported, argv, code, needle):
    got, _, err = cli(*[a.format(model=exported) for a in argv])
    assert got == code
    _one_line_error(err, needle)


def test_unknown_precision_in_the_api_is_a_config_error(exported):
    with pytest.raises(sta_deploy.ConfigError, match="not one of f32, bf16"):
        validate_openvino(exported, precision="fp16")


@pytest.mark.parametrize("argv", [["validate", "{model}", "--backend", "openvino"], ["bench", "{model}", "--backend", "openvino"], ["quantize", "{model}"]])
def test_missing_openvino_says_what_to_install(cli, exported, monkeypatch, argv):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    monkeypatch.setitem(sys.modules, "nncf", None)
    code, _, err = cli(*[a.format(model=exported) for a in argv])
    assert code == 1
    _one_line_error(err, "is not installed", INSTALL)

