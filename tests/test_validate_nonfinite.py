"""NaN and inf never pass: not in validate (API and CLI), not in export's own validation, not in predict.

The weights come from checkpoints with one NaN planted, so that the reference rebuilt from the
manifest is as broken as the export: the failure must then blame the checkpoint.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sta_deploy
from sta_deploy.validate import compare_outputs, validate_onnx

from test_export_helpers import TINY, error_line, run_cli


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one PyTorch thread is faster on the shared 2-core machine (conftest.py)."""


def nan_checkpoint(path, where: str, r1: int = 48, **overrides):
    model = sta_deploy.create_model("vit_s", r1=r1, seed=0, **{**TINY, **overrides})
    with torch.no_grad():
        if where == "head":  # one logit of every clip: NaN, the other logits (and top-1) unchanged
            model.head.weight[3, 5] = float("nan")
        else:  # block 0's output: NaN everywhere from STA's first stage on
            model.blocks[0].mlp.fc2.bias[0] = float("nan")
    return sta_deploy.save_checkpoint(model, path)


# ----------------------------------------------------------------------------- compare_outputs
def test_one_nan_logit_with_the_same_top1_fails():
    reference = np.array([[0.1, 0.9, 0.2], [0.5, 0.1, 0.2]], dtype=np.float32)
    backend = reference.copy()
    backend[1, 2] = np.nan
    report = compare_outputs(reference, backend)
    assert report.top1 == 1.0
    assert report.failures[0] == "backend logits are not finite (1 NaN/inf values, clip 1)"
    assert not report.passed


def test_inf_logits_fail_and_nan_fails_every_threshold():
    reference = np.ones((2, 4), dtype=np.float32)
    report = compare_outputs(reference, np.full((2, 4), np.inf, dtype=np.float32))
    assert "backend logits are not finite (8 NaN/inf values, clips 0, 1)" in report.failures
    report = compare_outputs(reference, np.full((2, 4), np.nan, dtype=np.float32))
    assert any(f.startswith("max |diff| nan") for f in report.failures)
    assert any(f.startswith("cosine nan") for f in report.failures)


def test_a_non_finite_reference_blames_the_checkpoint():
    reference = np.array([[np.nan, 1.0]], dtype=np.float32)
    report = compare_outputs(reference, np.array([[0.0, 1.0]], dtype=np.float32))
    assert report.failures[0].startswith("the PyTorch reference's logits are not finite (1 NaN/inf values, clip 0)")
    assert "fix or replace the checkpoint" in report.failures[0]


# ----------------------------------------------------------------------------- export and validate
@pytest.fixture(scope="module")
def head_nan_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nan")
    checkpoint = nan_checkpoint(folder / "nan.pt", "head")
    path = folder / "nan.onnx"
    code, out, err = run_cli("export", "--model", "vit_s", "--r1", 48, "--checkpoint", checkpoint, "--clips", 1, "-o", path)
    return path, code, out, err


def test_export_of_a_nan_checkpoint_exits_1_with_one_line(head_nan_export):
    path, code, out, err = head_nan_export
    assert code == 1
    line = error_line(err, only_line=True)
    assert line.startswith("sta-deploy: error: validation failed (the PyTorch reference's logits are not finite (1 NaN/inf values, clip 0)")
    assert "backend logits are not finite (1 NaN/inf values, clip 0)" in line
    assert f"the exported file is kept at {path}" in line
    assert "PASS" not in out


def test_validate_of_a_nan_checkpoint_exits_1_with_one_line(head_nan_export):
    path = head_nan_export[0]
    code, out, err = run_cli("validate", path, "--clips", 2, "--json")
    assert code == 1
    line = error_line(err, only_line=True)
    assert "the PyTorch reference's logits are not finite (2 NaN/inf values, clips 0, 1)" in line and "checkpoint" in line
    # Valid JSON: non-finite numbers become null (json.loads would otherwise meet NaN constants).
    data = json.loads(out, parse_constant=lambda constant: pytest.fail(f"{constant} in --json output"))
    assert data["passed"] is False and data["max_abs"] is None


def test_nan_inside_the_blocks_names_the_sta_stage(tmp_path):
    checkpoint = nan_checkpoint(tmp_path / "nan.pt", "block")
    model = sta_deploy.create_model("vit_s", r1=48, checkpoint=checkpoint)
    from sta_deploy.export.onnx_export import export_onnx

    path = export_onnx(model, tmp_path / "nan.onnx").path
    report = validate_onnx(path, clips=1)
    assert not report.passed
    assert "stage 0 (forward): the PyTorch reference's STA scores are not finite (clip 0)" in " ".join(report.failures)
    assert report.stages[0]["not_finite"] == 1


# ----------------------------------------------------------------------------- predict
def test_predict_refuses_non_finite_scores(tmp_path):
    pytest.importorskip("av")
    from sta_deploy.video.synthetic import moving_shapes, write_video

    write_video(tmp_path / "clip.mp4", moving_shapes(40, 64, 64, seed=1))
    checkpoint = nan_checkpoint(tmp_path / "nan.pt", "head", r1=4, img_size=64, num_classes=7)
    code, out, err = run_cli("predict", tmp_path / "clip.mp4", "--model", "vit_s", "--r1", 4, "--checkpoint", checkpoint, "--views", "1x1")
    assert code == 1
    line = error_line(err, only_line=True)
    assert "clip.mp4: the model returned non-finite scores (1 of 7 logits are NaN/inf)" in line
    assert "sta-deploy validate" in line
    assert not [row for row in out.splitlines() if row.startswith("  1. ")]  # no ranking of NaN scores printed
