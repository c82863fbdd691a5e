"""``sta-deploy triton-repo``: every variant's config.pbtxt parses against Triton's own model-config
schema (the ModelConfig protobuf tritonclient ships), with the manifest's exact tensor names, dtypes
and dims.  tensorrt_plan and onnxruntime_onnx models load only in NVIDIA's Triton container
(nvidia-pytriton's tritonserver ships only the Python backend), so for them this schema check, the
files and run_triton.sh are what is tested here."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import numpy as np
import pytest

from _serve import TINY, needs_schema

pytestmark = needs_schema


def _configs(root):
    from sta_deploy.serve.pbtxt import read_config

    return {path.parent.name: read_config(path) for path in sorted(root.glob("*/config.pbtxt"))}


def _params(config):
    return {key: value["stringValue"] for key, value in config.get("parameters", {}).items()}


def _copy_export(source, folder, name, **manifest_changes):
    """A copy of an export (ONNX + manifest) under another name, its manifest edited."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx = folder / f"{name}.onnx"
    shutil.copyfile(source, onnx)
    manifest = json.loads(source.with_name(source.stem + ".manifest.json").read_text())
    manifest.update(manifest_changes)
    onnx.with_name(f"{name}.manifest.json").write_text(json.dumps(manifest))
    return onnx


def _dims(spec, batched):
    return [str(d) for d in (spec["shape"][1:] if batched else spec["shape"])]


def test_python_repository_with_preprocess_matches_the_manifest(cli, tiny_exports, tmp_path):
    export = tiny_exports.get("tiny")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"action {i}" for i in range(TINY["num_classes"])) + "\n")
    code, out, err = cli("triton-repo", export, "-o", tmp_path / "repo", "--platform", "python", "--with-preprocess", "--labels", labels,
                         "--views", "2x3", "--max-batch", "4", "--instances", "2", "--top", "3")
    assert code == 0, err
    assert "checked against Triton's schema" in out and "sta-deploy serve" in out
    configs = _configs(tmp_path / "repo")
    assert sorted(configs) == ["tiny", "tiny_classify", "tiny_preprocess", "tiny_video"]
    manifest_file = export.with_name("tiny.manifest.json")
    manifest = json.loads(manifest_file.read_text())
    backbone = configs["tiny"]
    assert backbone["backend"] == "python" and backbone["maxBatchSize"] == 4 and "dynamicBatching" in backbone
    assert [(i["name"], i["dataType"], i["dims"]) for i in backbone["input"]] == [(s["name"], "TYPE_FP32", _dims(s, True)) for s in manifest["inputs"]]
    assert [(o["name"], o["dims"]) for o in backbone["output"]] == [(s["name"], _dims(s, True)) for s in manifest["outputs"]]
    assert [o["dataType"] for o in backbone["output"]] == ["TYPE_FP32"] + ["TYPE_INT64"] * 3
    assert backbone["output"][0]["labelFilename"] == "labels.txt"
    assert backbone["instanceGroup"] == [{"kind": "KIND_CPU", "count": 2}] and backbone["modelWarmup"][0]["inputs"]["video"]["randomData"]
    params = _params(backbone)
    assert params["manifest_sha256"] == hashlib.sha256(manifest_file.read_bytes()).hexdigest()
    assert (params["sta_r1"], params["sta_model"], json.loads(params["sta_schedule"])) == ("4", "vit_s", manifest["schedule"])
    repo = tmp_path / "repo"
    assert (repo / "tiny" / "1" / "model.onnx").read_bytes() == export.read_bytes() and (repo / "tiny" / "1" / "model.py").is_file()
    assert json.loads((repo / "tiny_preprocess" / "1" / "protocol.json").read_text())["temporal_views"] == 2
    steps = configs["tiny_video"]["ensembleScheduling"]["step"]
    assert [s["modelName"] for s in steps] == ["tiny_preprocess", "tiny_classify"]
    assert json.loads(_params(configs["tiny_classify"])["labels"])[1] == "action 1"
    assert [o["dims"] for o in configs["tiny_video"]["output"]][:3] == [["6"], ["3"], ["3"]]
    assert (repo / "run_triton.sh").stat().st_mode & 0o111 and "sta-deploy serve" in (repo / "README.md").read_text()


def test_static_batch_export_gets_max_batch_size_0_and_the_reason(cli, tiny_exports, tmp_path):
    code, out, _ = cli("triton-repo", tiny_exports.get("tiny_b2"), "-o", tmp_path / "repo", "--max-batch", "8")
    assert code == 0
    assert "static batch 2 export: max_batch_size 0" in out and "--max-batch 8 ignored" in out
    assert "loads in NVIDIA's Triton container" in out
    config = _configs(tmp_path / "repo")["tiny_b2"]
    assert config["platform"] == "onnxruntime_onnx" and "maxBatchSize" not in config and "dynamicBatching" not in config
    assert config["input"][0]["dims"] == ["2", "3", "16", "64", "64"] and config["output"][0]["dims"] == ["2", "6"]
    assert (tmp_path / "repo" / "tiny_b2" / "1" / "model.onnx").is_file()


@pytest.mark.parametrize("kind, extra, group", [("cpu", ["--openvino"], "KIND_CPU"), ("gpu", ["--max-batch", "16"], "KIND_GPU")])
def test_onnxruntime_variants(cli, tiny_exports, tmp_path, kind, extra, group):
    code, _, err = cli("triton-repo", tiny_exports.get("tiny"), "-o", tmp_path / "repo", "--kind", kind, *extra)
    assert code == 0, err
    config = _configs(tmp_path / "repo")["tiny"]
    assert config["platform"] == "onnxruntime_onnx" and config["instanceGroup"][0]["kind"] == group
    if kind == "cpu":
        assert config["optimization"]["executionAccelerators"]["cpuExecutionAccelerator"] == [{"name": "openvino"}]
    else:
        assert config["maxBatchSize"] == 16


def test_external_data_model_is_a_model_onnx_folder(cli, tiny_exports, tmp_path):
    import onnx

    onnx_path = _copy_export(tiny_exports.get("tiny"), tmp_path / "big", "big", external_data="big.onnx.data")
    model = onnx.load(str(onnx_path))
    onnx.save_model(model, str(onnx_path), save_as_external_data=True, all_tensors_to_one_file=True, location="big.onnx.data")
    for platform, layout in (("onnxruntime", ["model.onnx/big.onnx.data", "model.onnx/model.onnx"]), ("python", ["big.onnx.data", "model.manifest.json", "model.onnx", "model.py"])):
        code, _, err = cli("triton-repo", onnx_path, "-o", tmp_path / platform, "--platform", platform)
        assert code == 0, err
        version = tmp_path / platform / "big" / "1"
        assert sorted(str(p.relative_to(version)) for p in version.rglob("*") if p.is_file()) == layout
    import onnxruntime

    onnxruntime.InferenceSession(str(tmp_path / "onnxruntime" / "big" / "1" / "model.onnx" / "model.onnx"))  # the data is found


def test_tensorrt_plan_variants(cli, tiny_exports, tmp_path):
    onnx_path = _copy_export(tiny_exports.get("tiny"), tmp_path / "trt", "engine", sta_impl="plugin")
    plan = onnx_path.with_suffix(".plan")
    plan.write_bytes(b"not a real engine: only the repository is checked here")
    plugin = tmp_path / "libsta_stage_select_trt.so"
    plugin.write_bytes(b"\x7fELF")
    code, _, err = cli("triton-repo", plan, "-o", tmp_path / "a", "--kind", "gpu")
    assert code == 1 and "pass --plugin-lib" in err
    code, _, err = cli("triton-repo", plan, "-o", tmp_path / "a")
    assert code == 1 and "runs on a GPU: pass --kind gpu" in err
    code, out, err = cli("triton-repo", plan, "-o", tmp_path / "a", "--kind", "gpu", "--plugin-lib", plugin, "--with-preprocess", "--views", "1x1")
    assert code == 0, err
    assert "max_batch_size 8: it must not exceed the engine's profile" in out
    configs = _configs(tmp_path / "a")
    engine = configs["engine"]
    assert engine["platform"] == "tensorrt_plan" and engine["instanceGroup"][0]["kind"] == "KIND_GPU" and engine["maxBatchSize"] == 8
    assert (tmp_path / "a" / "engine" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert configs["engine_classify"]["backend"] == "python" and configs["engine_video"]["platform"] == "ensemble"
    script = (tmp_path / "a" / "run_triton.sh").read_text()
    assert '--backend-config=tensorrt,plugins=\\"$PLUGIN\\"' in script and "/models/libsta_stage_select_trt.so" in script and "--gpus all" in script
    assert (tmp_path / "a" / "libsta_stage_select_trt.so").read_bytes() == plugin.read_bytes()  # travels with the repository
    readme = (tmp_path / "a" / "README.md").read_text()
    assert "LD_PRELOAD=/models/libsta_stage_select_trt.so" in readme and "loads only in NVIDIA's Triton container" in readme


def test_plan_needs_its_onnx(cli, tmp_path):
    plan = tmp_path / "lonely.plan"
    plan.write_bytes(b"x")
    code, _, err = cli("triton-repo", plan, "-o", tmp_path / "repo", "--kind", "gpu")
    assert code == 1 and "pass --onnx MODEL.onnx" in err and len(err.strip().splitlines()) == 1


def test_plugin_mode_onnx(cli, tiny_exports, tmp_path):
    onnx_path = _copy_export(tiny_exports.get("tiny"), tmp_path / "plugin", "plug", sta_impl="plugin")
    code, _, err = cli("triton-repo", onnx_path, "-o", tmp_path / "gpu", "--kind", "gpu")
    assert code == 1 and "build --plugin-lib" in err
    code, _, err = cli("triton-repo", onnx_path, "-o", tmp_path / "ort", "--platform", "onnxruntime")
    assert code == 1 and "cannot load the STAStageSelect custom op" in err
    reference = tmp_path / "libsta_stage_select_ref.so"
    reference.write_bytes(b"\x7fELF")
    code, out, err = cli("triton-repo", onnx_path, "-o", tmp_path / "cpu", "--plugin-lib", reference)
    assert code == 0, err
    assert _configs(tmp_path / "cpu")["plug"]["backend"] == "python"
    assert (tmp_path / "cpu" / "plug" / "1" / "libsta_stage_select_ref.so").read_bytes() == b"\x7fELF"


def test_existing_repository_needs_force(cli, tiny_exports, tmp_path):
    (tmp_path / "repo").mkdir()
    code, _, err = cli("triton-repo", tiny_exports.get("tiny"), "-o", tmp_path / "repo")
    assert code == 1 and "pass --force" in err
    code, _, _ = cli("triton-repo", tiny_exports.get("tiny"), "-o", tmp_path / "repo", "--force")
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no staging folder left


def test_pbtxt_writer_and_schema_errors():
    from sta_deploy.serve.pbtxt import Enum, check_config, parameters, to_pbtxt

    text = to_pbtxt({"name": 'a "quoted" name', "max_batch_size": 0, "input": [{"name": "x", "data_type": Enum("TYPE_FP32"), "dims": [1, 2]}],
                     "parameters": parameters({"json": '{"k": [1, 2]}'})})
    message = check_config(text)
    assert message.name == 'a "quoted" name' and message.parameters["json"].string_value == '{"k": [1, 2]}'
    with pytest.raises(ValueError, match=r"x/config.pbtxt does not parse as Triton's ModelConfig: .*max_batch"):
        check_config("name: 'x' max_batch: 3", "x/config.pbtxt")


# ----------------------------------------------------------------------------- safeguards without a server
def test_numpy_2_is_refused_before_starting(monkeypatch):
    from sta_deploy.serve.server import ServeError, check_numpy

    monkeypatch.setattr(np, "__version__", "2.1.0")
    with pytest.raises(ServeError, match=r"numpy 2\.1\.0 .* answers empty tensors .*pip install 'numpy<2'"):
        check_numpy()


def test_a_stub_that_loses_tensors_refuses_to_load():
    from sta_deploy.serve.triton_models.common import check_nonempty, check_tensor_round_trip

    class Lossy:
        class Tensor:
            def __init__(self, name, array):
                pass

            def as_numpy(self):
                return np.empty((0,), np.float32)

    with pytest.raises(RuntimeError, match="do not round-trip with numpy"):
        check_tensor_round_trip(Lossy)
    with pytest.raises(RuntimeError, match="refusing to send an empty answer"):
        check_nonempty({"logits": np.zeros((0, 6))})


def test_a_stub_with_numpy_2_refuses_to_load(monkeypatch):
    """Reproduced by hand with nvidia-pytriton 0.7: numpy 2 in the stub's environment gives empty answers."""
    from sta_deploy.serve.triton_models.common import check_tensor_round_trip

    monkeypatch.setattr(np, "__version__", "2.2.6")
    with pytest.raises(RuntimeError, match=r"numpy 2\.2\.6 in the Python backend's environment .* answers empty tensors"):
        check_tensor_round_trip(object())


def test_client_refuses_an_empty_answer(monkeypatch):
    pytest.importorskip("tritonclient.http")
    from sta_deploy.serve.client import Connection, RemoteError

    connection = Connection("http://127.0.0.1:9", timeout=1)

    class Empty:
        def as_numpy(self, name):
            return np.zeros((0,), np.float32)

    class Unshapeable:  # what tritonclient does with an empty buffer: reshaping it fails
        def as_numpy(self, name):
            return np.zeros((0,), np.float32).reshape(1, 6)

    for answer in (Empty(), Unshapeable()):
        monkeypatch.setattr(connection.client, "infer", lambda *a, answer=answer, **k: answer)
        with pytest.raises(RemoteError, match="answered an empty 'logits'"):
            connection.infer("tiny", {"video": np.zeros((1, 3), np.float32)}, ["logits"])


def test_unreachable_server_is_one_line(cli, tmp_path):
    pytest.importorskip("tritonclient.http")
    from sta_deploy.serve.server import free_port

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    code, _, err = cli("predict", clip, "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "listing models at http://127.0.0.1:" in err


def test_without_the_serve_extra_commands_say_what_to_install(cli, monkeypatch, tiny_exports, tmp_path):
    for module in ("pytriton", "tritonclient", "tritonclient.http", "tritonclient.grpc"):
        monkeypatch.setitem(sys.modules, module, None)
    code, _, err = cli("serve", tiny_exports.get("tiny"))
    assert code == 1 and err.strip().splitlines()[-1].endswith("pip install 'sta-deploy[serve]'")
    code, _, err = cli("predict", tmp_path / "clip.mp4", "--url", "http://127.0.0.1:8000")
    assert code == 1 and err.strip() == "sta-deploy: error: --url needs tritonclient: pip install 'sta-deploy[serve]'"
    code, out, _ = cli("triton-repo", tiny_exports.get("tiny"), "-o", tmp_path / "repo")
    assert code == 0 and "NOT schema-checked (pip install 'sta-deploy[serve]')" in out


@pytest.mark.skip(reason="tensorrt_plan and onnxruntime_onnx models load only in NVIDIA's Triton container (nvidia-pytriton's "
                  "tritonserver ships only the Python backend); their config.pbtxt is schema-checked above")
def test_gpu_and_onnxruntime_models_load_in_nvidia_container():
    """Run by hand: ./run_triton.sh in a generated repository on a GPU machine with Docker (docs/serving.md)."""


def test_preferred_batch_sizes_and_queue_delay_in_the_dynamic_batcher(cli, tiny_exports, tmp_path):
    code, _, err = cli("triton-repo", tiny_exports.get("tiny"), "-o", tmp_path / "repo", "--platform", "python", "--max-batch", "4",
                       "--preferred-batch", "2,1", "--queue-delay-us", "500")
    assert code == 0, err
    batching = _configs(tmp_path / "repo")["tiny"]["dynamicBatching"]  # parsed by Triton's schema: the fields exist there
    assert batching == {"preferredBatchSize": [1, 2], "maxQueueDelayMicroseconds": "500"}
    code, _, _ = cli("triton-repo", tiny_exports.get("tiny"), "-o", tmp_path / "default")
    assert code == 0 and _configs(tmp_path / "default")["tiny"]["dynamicBatching"] == {"maxQueueDelayMicroseconds": "2000"}
    code, _, err = cli("triton-repo", tiny_exports.get("tiny"), "-o", tmp_path / "big", "--max-batch", "4", "--preferred-batch", "8")
    assert code == 1 and "--preferred-batch 8: every size must be 1..4" in err and "\n" not in err.strip() and not (tmp_path / "big").exists()
    code, out, _ = cli("triton-repo", tiny_exports.get("tiny_b2"), "-o", tmp_path / "static", "--preferred-batch", "2")
    assert code == 0 and "--preferred-batch/--queue-delay-us ignored" in out and "dynamicBatching" not in _configs(tmp_path / "static")["tiny_b2"]
