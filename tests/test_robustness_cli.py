"""Bad input on the command line (issue 12): exit code, one error line naming the file and the fix,
no traceback, and no file created, changed or left behind."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from sta_deploy import create_model
from sta_deploy.export.onnx_export import export_onnx

from _native import HAS_RTX, NO_RTX
from _unwritable import unwritable
from test_export_helpers import TINY, TINY_ARGS, run_cli

EXPORT = ("export", "--model", "vit_s", "--r1", "32", *TINY_ARGS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny finished export: x.onnx and x.manifest.json."""
    folder = tmp_path_factory.mktemp("robust")
    export_onnx(create_model("vit_s", r1=32, seed=0, **TINY), folder / "x.onnx")
    return folder


# ----------------------------------------------------------------------------- the broken files
def copy_export(source: Path, work: Path, name: str = "x") -> Path:
    shutil.copy(source / "x.onnx", work / f"{name}.onnx")
    shutil.copy(source / "x.manifest.json", work / f"{name}.manifest.json")
    return work / f"{name}.onnx"


def truncated(source, work) -> Path:
    """The model cut to 5000 bytes; its manifest still names the old sha256."""
    model = copy_export(source, work)
    model.write_bytes(model.read_bytes()[:5000])
    return model


def truncated_matching(source, work) -> Path:
    """The model cut to 5000 bytes and the manifest's sha256 edited to match."""
    model = truncated(source, work)
    edit_manifest(model, onnx_sha256=hashlib.sha256(model.read_bytes()).hexdigest())
    return model


def edit_manifest(model: Path, **changes) -> None:
    path = model.with_name(model.stem + ".manifest.json")
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DROP:
            manifest.pop(key)
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest))


_DROP = object()


def with_manifest(**changes):
    def make(source, work) -> Path:
        model = copy_export(source, work)
        edit_manifest(model, **changes)
        return model

    return make


def with_manifest_text(text: str):
    def make(source, work) -> Path:
        model = copy_export(source, work)
        model.with_name("x.manifest.json").write_text(text)
        return model

    return make


def without_manifest(source, work) -> Path:
    model = copy_export(source, work)
    model.with_name("x.manifest.json").unlink()
    return model


def random_bytes_checkpoint(source, work) -> Path:
    path = work / "weights.pth"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).tolist()))
    return path


def hf_folder(config, index=None):
    def make(source, work) -> Path:
        folder = work / "hf"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        if index is not None:
            (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        else:
            (folder / "model.safetensors").write_bytes(b"\0" * 64)
        return folder

    return make


def manifest_only(source, work) -> Path:
    model = copy_export(source, work)
    model.unlink()
    return model


def a_file(source, work) -> Path:
    (work / "plain").write_text("a file where a folder is expected")
    return work / "plain"


def nothing(source, work) -> Path:
    return work


# ----------------------------------------------------------------------------- the table
@dataclass
class Case:
    id: str
    make: Callable  # (exported folder, work folder) -> the path the command is given
    args: Callable  # path -> the command line
    code: int
    expect: tuple  # substrings of the error line
    absent: tuple = ()  # must not be in it
    before_work: bool = False  # must fail before a model is built
    marks: list = field(default_factory=list)


CASES = [
    # a truncated or corrupt .onnx
    Case("bench-corrupt-onnx", truncated, lambda p: ["bench", p, "--runs", 1], 1, ("x.onnx does not match its manifest (sha256 ", "re-export it")),
    Case("predict-corrupt-onnx", truncated, lambda p: ["predict", "clip.mp4", "--onnx", p], 1, ("x.onnx does not match its manifest (sha256 ", "re-export it")),
    Case("validate-corrupt-onnx", truncated, lambda p: ["validate", p], 1, ("x.onnx does not match its manifest (sha256 ", "re-export it")),
    Case("bench-corrupt-onnx-sha-edited", truncated_matching, lambda p: ["bench", p, "--runs", 1], 1, ("x.onnx is not a readable ONNX model", "truncated or corrupt", "re-export")),
    Case("predict-corrupt-onnx-sha-edited", truncated_matching, lambda p: ["predict", "clip.mp4", "--onnx", p], 1, ("x.onnx is not a readable ONNX model", "re-export")),
    Case("validate-corrupt-onnx-sha-edited", truncated_matching, lambda p: ["validate", p, "--clips", 1], 1, ("x.onnx is not a readable ONNX model", "re-export")),
    Case("build-parse-only-corrupt-onnx", truncated_matching, lambda p: ["build", p, "--parse-only"], 1, ("x.onnx is not a readable ONNX model", "re-export"),
         marks=[pytest.mark.skipif(not HAS_RTX, reason=NO_RTX)]),
    # manifests: missing, not JSON, not an object, a field missing or edited; the message names the command
    Case("bench-no-manifest", without_manifest, lambda p: ["bench", p], 1, ("no manifest x.manifest.json", "bench needs the manifest", "re-export"), ("validate",)),
    Case("predict-no-manifest", without_manifest, lambda p: ["predict", "clip.mp4", "--onnx", p], 1, ("predict --onnx needs the manifest",), ("validate",)),
    Case("evaluate-no-manifest", without_manifest, lambda p: ["evaluate", ".", "--onnx", p], 1, ("evaluate --onnx needs the manifest",), ("validate",)),
    Case("validate-no-manifest", without_manifest, lambda p: ["validate", p], 1, ("validate needs the manifest",)),
    Case("manifest-not-json", with_manifest_text("{not json"), lambda p: ["bench", p], 1, ("x.manifest.json is not valid JSON", "re-export")),
    Case("manifest-is-a-list", with_manifest_text("[1, 2]"), lambda p: ["validate", p], 1, ("x.manifest.json holds a JSON list", "re-export")),
    Case("manifest-without-weights", with_manifest(weights=_DROP), lambda p: ["validate", p], 1, ("no 'weights' field", "re-export")),
    Case("manifest-without-weights-bench", with_manifest(weights=_DROP), lambda p: ["bench", p], 1, ("no 'weights' field",)),
    Case("manifest-unknown-dtype", with_manifest(dtype="bf16"), lambda p: ["validate", p], 1, ("field 'dtype' is \"bf16\"", "fp32, fp16, int8")),
    Case("manifest-edited-batch", with_manifest(batch_size=3), lambda p: ["validate", p, "--clips", 1], 1, ("field 'batch_size' (3", "[1, 3, 16, 224, 224]")),
    Case("manifest-edited-batch-bench", with_manifest(batch_size=3), lambda p: ["bench", p], 1, ("field 'batch_size' (3",)),
    Case("manifest-edited-batch-predict", with_manifest(batch_size=3), lambda p: ["predict", "clip.mp4", "--onnx", p], 1, ("field 'batch_size' (3",)),
    # checkpoints
    Case("checkpoint-random-bytes", random_bytes_checkpoint, lambda p: [*EXPORT, "--checkpoint", p], 1,
         ("weights.pth is not a readable checkpoint", "torch.save", ".safetensors", "Hugging Face"), ("pickles", "re-save")),
    Case("checkpoint-hf-index-without-weight-map", hf_folder({"model_type": "videomae"}, index={"metadata": {}}), lambda p: [*EXPORT, "--checkpoint", p], 1,
         ("model.safetensors.index.json has no weight_map", "copy the whole Hugging Face model folder")),
    Case("checkpoint-hf-index-missing-shard", hf_folder({"model_type": "videomae"}, index={"weight_map": {"a": "part-1.safetensors"}}),
         lambda p: [*EXPORT, "--checkpoint", p], 1, ("part-1.safetensors", "is missing")),
    Case("checkpoint-hf-config-is-a-list", hf_folder([1, 2]), lambda p: [*EXPORT, "--checkpoint", p], 1, ("config.json holds a JSON list", "copy the model folder again")),
    # numbers out of range are usage errors naming the option and the value
    Case("validate-negative-clips", copy_export, lambda p: ["validate", p, "--clips", -3], 2, ("--clips", "-3")),
    Case("bench-negative-runs", copy_export, lambda p: ["bench", p, "--runs", -3], 2, ("--runs", "-3")),
    Case("export-zero-clips", nothing, lambda p: [*EXPORT, "--clips", 0], 2, ("--clips", "0"), before_work=True),
    # export: every option checked before the model is built
    Case("export-bad-opset", nothing, lambda p: [*EXPORT, "--opset", 11], 1, ("opset 11 is not supported", "18..23"), before_work=True),
    Case("export-bad-batch", nothing, lambda p: [*EXPORT, "--batch", 0], 1, ("batch size must be an integer >= 1",), before_work=True),
    Case("export-bad-suffix", nothing, lambda p: [*EXPORT, "-o", "x.bin"], 1, ("must end in .onnx",), before_work=True),
    Case("export-folder-is-a-file", a_file, lambda p: [*EXPORT, "-o", p / "x.onnx"], 1, ("plain is a file", "choose another -o path"), before_work=True),
    Case("export-existing-output", copy_export, lambda p: [*EXPORT, "-o", p], 1, ("x.onnx already exists", "--force"), before_work=True),
    Case("export-existing-manifest", manifest_only, lambda p: [*EXPORT, "-o", p], 1, ("x.manifest.json already exists", "--force"), before_work=True),
    # other writers follow the same folder rule
    Case("visualize-folder-is-a-file", a_file, lambda p: ["visualize", "clip.mp4", "-o", p / "k.png", *TINY_ARGS], 1, ("plain is a file",), before_work=True),
    Case("evaluate-folder-is-a-file", a_file, lambda p: ["evaluate", ".", "--r1", 1, "-o", p / "run", *TINY_ARGS], 1, ("plain is a file",), before_work=True),
]


def tree(folder: Path) -> dict:
    """Every file and folder under ``folder`` (hidden ones included) with a digest of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(folder.rglob("*"))
    }


def refuse_to_build(*args, **kwargs):
    raise AssertionError("a model was built before the options were checked")


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id, marks=case.marks) for case in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(case, exported, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default outputs would land here
    target = case.make(exported, tmp_path)
    before = tree(tmp_path)
    if case.before_work:
        import sta_deploy.models.registry

        monkeypatch.setattr(sta_deploy.models.registry, "create_model", refuse_to_build)
    code, out, err = run_cli(*case.args(target))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == case.code, err
    assert len(lines) == 1 and lines[0].startswith("sta-deploy: error: "), err
    assert "Traceback" not in err and out == ""
    for text in case.expect:
        assert text in lines[0], lines[0]
    for text in case.absent:
        assert text not in lines[0], lines[0]
    assert tree(tmp_path) == before


def test_unwritable_output_folders_are_refused_before_work(tmp_path, monkeypatch):
    import sta_deploy.models.registry

    monkeypatch.setattr(sta_deploy.models.registry, "create_model", refuse_to_build)
    locked = tmp_path / "locked"
    locked.mkdir()
    with unwritable(locked):
        for args in ([*EXPORT, "-o", locked / "x.onnx"], [*EXPORT, "-o", locked / "new" / "x.onnx"],
                     ["visualize", "clip.mp4", "-o", locked / "k.png"], ["evaluate", tmp_path, "--r1", 1, "-o", locked / "run"]):
            code, out, err = run_cli(*args)
            assert code == 1 and out == "", err
            assert err.count("\n") == 1 and "locked is not writable; choose another -o path" in err, err
        assert list(locked.iterdir()) == []


def test_unsafe_pickle_keeps_its_own_advice(tmp_path):
    """A real torch file that pickles Python objects: still "refusing to load ... re-save it"."""
    path = tmp_path / "unsafe.pth"
    torch.save({"model": {}, "extra": Path("x")}, path)
    code, _, err = run_cli(*EXPORT, "--checkpoint", path, "-o", tmp_path / "x.onnx")
    assert code == 1 and err.count("\n") == 1
    assert "refusing to load" in err and "torch.save(model.state_dict(), path)" in err and "not a readable checkpoint" not in err


def test_unexpected_errors_are_one_line_too(monkeypatch):
    """An exception nobody mapped (a bug) is still one line, with the way to see the traceback."""
    import sta_deploy.models.flops

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(sta_deploy.models.flops, "count_flops", broken)
    code, out, err = run_cli("flops", "--model", "vit_s")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "unexpected KeyError" in err and "STA_DEPLOY_DEBUG=1" in err and "Traceback" not in err


def test_plugin_export_at_r1_0_exports_the_unpruned_graph_and_says_why(tmp_path):
    """A loop over r1 = 0/32/48/64 with --sta-impl plugin needs no special case for r1 = 0."""
    import onnx

    from sta_deploy.plugin.names import PLUGIN_OP_TYPE

    code, out, err = run_cli("export", "--model", "vit_s", "--r1", "0", *TINY_ARGS, "--sta-impl", "plugin", "--clips", 1, "-o", tmp_path / "x.onnx")
    assert code == 0, err
    assert "r1 = 0 prunes no token, so there is nothing for the STA plugin to replace" in out and out.rstrip().endswith("PASS")
    manifest = json.loads((tmp_path / "x.manifest.json").read_text())
    assert manifest["sta_impl"] == "onnx" and manifest["r1"] == 0  # what the graph is
    proto = onnx.load(str(tmp_path / "x.onnx"))
    assert not any(node.op_type == PLUGIN_OP_TYPE for node in proto.graph.node)
