"""Export variants: fp16, external data, and weights from a checkpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

import sta_deploy
import sta_deploy.export.onnx_export
from sta_deploy import create_model
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.validate import TOLERANCES, validate_onnx

from test_export_helpers import (
    TINY,
    error_line,
    listing,
    random_clips,
    run_cli,
    sha256_of,
    static_shape_problems,
)


# ----------------------------------------------------------------------------- fp16
@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp16")
    model = create_model("vit_s", r1=48, seed=0, **TINY)
    return export_onnx(model, folder / "half.onnx", dtype="fp16", with_kept=True)


def test_fp16_graph_has_half_weights_and_float_io(fp16_export):
    proto = onnx.load(str(fp16_export.path))
    initializers = {init.name: init for init in proto.graph.initializer}
    assert any(init.data_type == TensorProto.FLOAT16 for init in initializers.values())
    # The weights themselves are half: the patch-embedding Conv's kernel and every MatMul/Gemm weight.
    conv = next(node for node in proto.graph.node if node.op_type == "Conv")
    assert initializers[conv.input[1]].data_type == TensorProto.FLOAT16
    weights = [initializers[i] for node in proto.graph.node if node.op_type in ("MatMul", "Gemm") for i in node.input if i in initializers]
    assert weights and all(w.data_type == TensorProto.FLOAT16 for w in weights)
    elem = {value.name: value.type.tensor_type.elem_type for value in [*proto.graph.input, *proto.graph.output]}
    assert elem == {
        "video": TensorProto.FLOAT,
        "logits": TensorProto.FLOAT,
        "kept_stage0": TensorProto.INT64,
        "kept_stage1": TensorProto.INT64,
        "kept_stage2": TensorProto.INT64,
    }
    manifest = fp16_export.manifest
    assert manifest["dtype"] == "fp16"
    assert manifest["inputs"][0]["dtype"] == "float32" and manifest["outputs"][0]["dtype"] == "float32"
    assert static_shape_problems(proto) == []
    onnx.checker.check_model(str(fp16_export.path), full_check=True)


def test_fp16_validates_with_fp16_tolerances(fp16_export):
    report = validate_onnx(fp16_export.path, clips=4)
    assert report.tolerances == TOLERANCES["fp16"]
    assert report.passed, report.table()
    code, out, err = run_cli("validate", fp16_export.path, "--clips", "2")
    assert code == 0, err
    assert "<= 5e-02" in out and out.rstrip().endswith("PASS")


# ----------------------------------------------------------------------------- external data
@pytest.fixture(scope="module")
def external_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("external")
    model = create_model("vit_s", r1=32, seed=0, **TINY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sta_deploy.export.onnx_export, "EXTERNAL_DATA_THRESHOLD", 1024)
        result = export_onnx(model, folder / "x.onnx")
    return model, result


def test_external_data_files(external_export):
    _, result = external_export
    folder = result.path.parent
    assert listing(folder) == ["x.manifest.json", "x.onnx", "x.onnx.data"]
    data = folder / "x.onnx.data"
    assert result.manifest["external_data"] == "x.onnx.data"
    assert json.loads(result.manifest_path.read_text())["external_data"] == "x.onnx.data"
    assert result.manifest["onnx_sha256"] == sha256_of(result.path)
    assert data.stat().st_size > result.path.stat().st_size
    # Every weight stored outside points at the data file by bare name, so the pair can be moved together.
    proto = onnx.load(str(result.path), load_external_data=False)
    external = [init for init in proto.graph.initializer if init.data_location == TensorProto.EXTERNAL]
    assert external
    locations = {entry.value for init in external for entry in init.external_data if entry.key == "location"}
    assert locations == {"x.onnx.data"}


def test_external_data_model_loads_checks_and_validates(external_export):
    _, result = external_export
    loaded = onnx.load(str(result.path))  # with its external data
    assert all(init.data_location != TensorProto.EXTERNAL for init in loaded.graph.initializer)
    onnx.checker.check_model(str(result.path), full_check=True)
    assert static_shape_problems(onnx.load(str(result.path), load_external_data=False)) == []
    report = validate_onnx(result.path, clips=2)
    assert report.passed, report.table()


def test_external_data_moves_with_its_model(external_export, tmp_path):
    _, result = external_export
    for name in listing(result.path.parent):
        shutil.copy(result.path.parent / name, tmp_path / name)
    report = validate_onnx(tmp_path / "x.onnx", clips=1)
    assert report.passed, report.table()


def test_reexport_without_external_data_removes_the_stale_data_file(external_export, tmp_path):
    model, result = external_export
    for name in listing(result.path.parent):
        shutil.copy(result.path.parent / name, tmp_path / name)
    again = export_onnx(model, tmp_path / "x.onnx", force=True)
    assert again.manifest["external_data"] is None
    assert listing(tmp_path) == ["x.manifest.json", "x.onnx"]
    assert validate_onnx(again.path, clips=1).passed


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoint_export(tmp_path_factory):
    """Two checkpoints (seeds 1 and 2) and a CLI export from the first one."""
    folder = tmp_path_factory.mktemp("checkpoint")
    weights = create_model("vit_s", r1=32, seed=1, **TINY)
    sta_deploy.save_checkpoint(weights, folder / "a.pt")
    sta_deploy.save_checkpoint(create_model("vit_s", r1=32, seed=2, **TINY), folder / "b.pt")
    path = folder / "x.onnx"
    code, out, err = run_cli("export", "--model", "vit_s", "--r1", 32, "--checkpoint", folder / "a.pt", "-o", path)
    assert code == 0, err
    return folder, path, weights, out, err


def test_checkpoint_export_records_the_checkpoint(checkpoint_export):
    folder, path, _, out, err = checkpoint_export
    assert "random weights" not in err
    assert out.rstrip().endswith("PASS")
    manifest = json.loads((folder / "x.manifest.json").read_text())
    weights = manifest["weights"]
    assert weights["source"] == "checkpoint"
    assert weights["sha256"] == sha256_of(folder / "a.pt")
    assert weights["path"] == str((folder / "a.pt").resolve())
    assert manifest["config"]["embed_dim"] == TINY["embed_dim"] and manifest["config"]["depth"] == TINY["depth"]
    assert manifest["onnx_sha256"] == sha256_of(path)


def test_checkpoint_export_carries_the_checkpoint_weights(checkpoint_export):
    _, path, weights, _, _ = checkpoint_export
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    video = random_clips(1, seed=11)
    with torch.no_grad():
        expected = weights(torch.from_numpy(video)).numpy()
    np.testing.assert_allclose(session.run(None, {"video": video})[0], expected, atol=1e-4, rtol=0)


def test_validate_with_a_different_checkpoint_names_the_sha_mismatch(checkpoint_export):
    folder, path, _, _, _ = checkpoint_export
    assert validate_onnx(path, clips=1).passed
    assert validate_onnx(path, clips=1, checkpoint=folder / "a.pt").passed
    with pytest.raises(ValueError, match="sha256") as info:
        validate_onnx(path, clips=1, checkpoint=folder / "b.pt")
    message = str(info.value)
    assert sha256_of(folder / "a.pt")[:12] in message and sha256_of(folder / "b.pt")[:12] in message
    assert "not the one the model was exported from" in message
    code, out, err = run_cli("validate", path, "--clips", "1", "--checkpoint", folder / "b.pt")
    assert code == 1
    line = error_line(err, only_line=True)
    assert "sha256" in line and "b.pt" in line and sha256_of(folder / "a.pt")[:12] in line


def test_validate_after_the_checkpoint_moved(checkpoint_export, tmp_path):
    folder, path, _, _, _ = checkpoint_export
    for name in ("x.onnx", "x.manifest.json"):
        shutil.copy(folder / name, tmp_path / name)
    # The manifest records the absolute path; a moved checkpoint must be passed explicitly.
    moved = tmp_path / "moved.pt"
    shutil.copy(folder / "a.pt", moved)
    manifest = json.loads((tmp_path / "x.manifest.json").read_text())
    manifest["weights"]["path"] = str(tmp_path / "gone.pt")
    (tmp_path / "x.manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli("validate", tmp_path / "x.onnx", "--clips", "1")
    assert code == 1
    assert "--checkpoint" in error_line(err, only_line=True)
    code, out, err = run_cli("validate", tmp_path / "x.onnx", "--clips", "1", "--checkpoint", moved)
    assert code == 0, err
    assert out.rstrip().endswith("PASS")
