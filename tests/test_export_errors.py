"""Export and validate errors: one line on stderr, exit 1, and never a partial file left behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import sta_deploy.export.graph_checks
from sta_deploy import create_model
from sta_deploy.export.graph_checks import StaticShapeReport
from sta_deploy.export.onnx_export import export_onnx

from _unwritable import unwritable
from test_export_helpers import CLIP_SHAPE, TINY, TINY_ARGS, artifacts, error_line, listing, run_cli

EXPORT = ("export", "--model", "vit_s", "--r1", "32", *TINY_ARGS)


@pytest.fixture(scope="module")
def model():
    return create_model("vit_s", r1=32, seed=0, **TINY)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model):
    """A finished tiny export: (folder, path) with x.onnx and x.manifest.json."""
    folder = tmp_path_factory.mktemp("exported")
    result = export_onnx(model, folder / "x.onnx")
    return folder, result.path


def snapshot(folder):
    return {name: (folder / name).read_bytes() for name in listing(folder) if (folder / name).is_file()}


# ----------------------------------------------------------------------------- existing output
@pytest.mark.parametrize("existing", ["x.onnx", "x.manifest.json"])
def test_existing_output_without_force_cli(tmp_path, existing):
    (tmp_path / existing).write_bytes(b"precious")
    code, out, err = run_cli(*EXPORT, "-o", tmp_path / "x.onnx")
    assert code == 1
    line = error_line(err, only_line=True)  # refused before any work: not even the random-weights warning
    assert existing in line and "--force" in line
    assert (tmp_path / existing).read_bytes() == b"precious"
    assert listing(tmp_path) == [existing]
    assert out == ""


def test_existing_output_without_force_api(tmp_path, model):
    (tmp_path / "x.onnx").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        export_onnx(model, tmp_path / "x.onnx", force=False)
    assert (tmp_path / "x.onnx").read_bytes() == b"precious"
    assert listing(tmp_path) == ["x.onnx"]


# ----------------------------------------------------------------------------- output folder
def test_unwritable_output_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    with unwritable(folder):  # chmod, or as root chattr +i / a read-only tmpfs (tests/_unwritable.py)
        code, _, err = run_cli(*EXPORT, "-o", folder / "x.onnx")
        assert code == 1
        assert "not writable" in error_line(err)
        assert listing(folder) == []


def test_unwritable_output_folder_as_reported_by_the_os(tmp_path, monkeypatch):
    """The same path for any user (root included): the OS says the folder is not writable."""
    folder = tmp_path / "locked"
    folder.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    code, _, err = run_cli(*EXPORT, "-o", folder / "x.onnx")
    assert code == 1
    line = error_line(err)
    assert "not writable" in line and "locked" in line
    assert listing(folder) == []


def test_missing_output_folder_is_created_and_removed_again_on_failure(tmp_path, model, monkeypatch):
    """One rule for every writer (README, issue 12): a missing output folder is created, like most
    CLIs do; the folders a failed export created are removed again."""
    monkeypatch.setattr(
        sta_deploy.export.graph_checks, "check_static_shapes", lambda proto, **kwargs: StaticShapeReport(ok=False, dynamic_tensors=["t"])
    )
    with pytest.raises(RuntimeError, match="not static"):
        export_onnx(model, tmp_path / "missing" / "deeper" / "x.onnx")
    assert listing(tmp_path) == []
    monkeypatch.undo()
    code, _, err = run_cli(*EXPORT, "--no-validate", "-o", tmp_path / "missing" / "x.onnx")
    assert code == 0, err
    assert listing(tmp_path) == ["missing"]
    assert listing(tmp_path / "missing") == ["x.manifest.json", "x.onnx"]


def test_output_folder_under_a_file_is_refused(tmp_path):
    (tmp_path / "plain").write_text("a file, not a folder")
    code, _, err = run_cli(*EXPORT, "-o", tmp_path / "plain" / "x.onnx")
    assert code == 1
    line = error_line(err, only_line=True)
    assert "plain is a file" in line and "-o" in line
    assert listing(tmp_path) == ["plain"]


def test_output_must_end_in_onnx(tmp_path):
    code, _, err = run_cli(*EXPORT, "-o", tmp_path / "x.bin")
    assert code == 1
    assert "must end in .onnx" in error_line(err)
    assert listing(tmp_path) == []


# ----------------------------------------------------------------------------- opset
@pytest.mark.parametrize("opset", [11, 17, 24])
def test_unsupported_opset_api(tmp_path, model, opset):
    with pytest.raises(ValueError, match=rf"opset {opset} is not supported; use one of 18\.\.23"):
        export_onnx(model, tmp_path / "x.onnx", opset=opset)
    assert listing(tmp_path) == []


def test_unsupported_opset_cli(tmp_path):
    code, out, err = run_cli(*EXPORT, "--opset", "11", "-o", tmp_path / "x.onnx")
    assert code == 1
    line = error_line(err)
    assert "opset 11" in line and "18..23" in line
    assert listing(tmp_path) == []


def test_highest_supported_opset_exports_and_validates(tmp_path, model):
    from sta_deploy.validate import validate_onnx

    result = export_onnx(model, tmp_path / "x.onnx", opset=23)
    assert result.manifest["opset"] == 23
    proto = onnx.load(str(result.path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [23]
    onnx.checker.check_model(str(result.path), full_check=True)
    assert validate_onnx(result.path, clips=1).passed


# ----------------------------------------------------------------------------- validate --inputs
def test_validate_inputs_with_the_wrong_shape(exported, tmp_path):
    folder, path = exported
    before = snapshot(folder)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 3, 8, 224, 224), np.float32))
    code, _, err = run_cli("validate", path, "--clips", "1", "--inputs", bad)
    assert code == 1
    line = error_line(err, only_line=True)
    assert "expected (N, 3, 16, 224, 224)" in line
    assert "(2, 3, 8, 224, 224)" in line
    assert snapshot(folder) == before
    assert listing(tmp_path) == ["bad.npy"]


def test_validate_accepts_a_single_clip_file(exported, tmp_path):
    _, path = exported
    one = tmp_path / "one.npy"
    np.save(one, np.random.default_rng(3).standard_normal(CLIP_SHAPE, dtype=np.float32))
    code, out, err = run_cli("validate", path, "--clips", "0", "--inputs", one)
    assert code == 0, err
    assert "on 1 clips" in out and out.rstrip().endswith("PASS")


def test_validate_single_clip_with_the_wrong_shape_names_the_file_shape(exported, tmp_path):
    _, path = exported
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 16, 224, 225), np.float32))
    code, _, err = run_cli("validate", path, "--clips", "0", "--inputs", bad)
    assert code == 1
    line = error_line(err, only_line=True)
    assert "expected (N, 3, 16, 224, 224)" in line
    assert "has shape (3, 16, 224, 225)" in line


# ----------------------------------------------------------------------------- failures during export
def test_failed_static_check_leaves_nothing(tmp_path, model, monkeypatch):
    def not_static(proto, **kwargs):
        return StaticShapeReport(ok=False, data_dependent=["NonZero:injected"])

    monkeypatch.setattr(sta_deploy.export.graph_checks, "check_static_shapes", not_static)
    with pytest.raises(RuntimeError, match="exported graph is not static: .*NonZero:injected"):
        export_onnx(model, tmp_path / "x.onnx")
    assert listing(tmp_path) == []  # no model, no manifest, no hidden temp folder


def test_failed_static_check_cli_keeps_the_previous_export(exported, tmp_path, monkeypatch):
    folder, _ = exported
    for name in ("x.onnx", "x.manifest.json"):
        shutil.copy(folder / name, tmp_path / name)
    before = snapshot(tmp_path)
    monkeypatch.setattr(
        sta_deploy.export.graph_checks, "check_static_shapes", lambda proto, **kwargs: StaticShapeReport(ok=False, dynamic_tensors=["t"])
    )
    code, _, err = run_cli(*EXPORT, "--force", "-o", tmp_path / "x.onnx")
    assert code == 1
    assert "not static" in error_line(err)
    assert snapshot(tmp_path) == before  # --force replaces files only after a successful export
    assert listing(tmp_path) == ["x.manifest.json", "x.onnx"]


def test_onnx_checker_failure_leaves_nothing(tmp_path, model, monkeypatch):
    def reject(*args, **kwargs):
        raise onnx.checker.ValidationError("injected checker failure")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    # surfaced as a one-line RuntimeError (the CLI prints it as one line, exit 1)
    with pytest.raises(RuntimeError, match="onnx.checker rejected the exported graph: injected"):
        export_onnx(model, tmp_path / "x.onnx")
    assert listing(tmp_path) == []
    assert artifacts(tmp_path) == []


def test_failure_while_moving_the_manifest_leaves_nothing(tmp_path, model, monkeypatch):
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".manifest.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        export_onnx(model, tmp_path / "x.onnx")
    monkeypatch.undo()
    assert listing(tmp_path) == []
