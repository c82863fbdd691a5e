"""``--sta-impl plugin``: one STAStageSelect node per STA stage, validated on ONNX Runtime CPU through
the plugin's compiled CPU reference (an onnxruntime-extensions custom op)."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import onnx
import pytest
import torch

import sta_deploy
from sta_deploy.cli import main
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.plugin.names import PLUGIN_NAMESPACE, PLUGIN_OP_TYPE, PLUGIN_VERSION
from sta_deploy.validate import validate_onnx

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("onnxruntime_extensions") is None, reason="onnxruntime-extensions is not installed"),
    pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is needed to build the plugin's CPU reference"),
]


@pytest.fixture(scope="module")
def vit_s_r48_plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin") / "vit_s_r48_plugin.onnx"
    model = sta_deploy.create_model("vit_s", r1=48, seed=0)
    export_onnx(model, path, with_kept=True, sta_impl="plugin")
    return path, model


def test_one_plugin_node_per_stage_with_documented_identity(vit_s_r48_plugin):
    path, model = vit_s_r48_plugin
    graph = onnx.load(str(path)).graph
    nodes = [node for node in graph.node if node.op_type == PLUGIN_OP_TYPE]
    assert len(nodes) == 3
    attributes = [{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute} for node in nodes]
    assert [a["num_groups"] for a in attributes] == [8, 4, 2]
    assert [a["r"] for a in attributes] == [48, 48, 48]
    assert [a["backward"] for a in attributes] == [0, 1, 0]
    assert all(a["plugin_version"] == PLUGIN_VERSION.encode() and a["plugin_namespace"] == PLUGIN_NAMESPACE.encode() for a in attributes)
    assert all(node.domain == "sta_deploy" for node in nodes)
    # No pure-ONNX selection is left: TopK only remains for the kept-position outputs' sorting, if at all.
    assert sum(node.op_type == "TopK" for node in graph.node) < 3 * 2


def test_plugin_graph_validates_on_onnxruntime_cpu(vit_s_r48_plugin):
    path, _ = vit_s_r48_plugin
    report = validate_onnx(path, clips=2)
    assert report.passed, report.table()
    assert report.max_abs <= 1e-4
    assert report.kept == [1.0, 1.0, 1.0] and report.kept_exact == [1.0, 1.0, 1.0]


def test_onnx_session_runs_plugin_graph_and_matches_return_kept(vit_s_r48_plugin):
    path, model = vit_s_r48_plugin
    session = sta_deploy.onnx_session(path)
    video = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(5))
    logits, k0, k1, k2 = session.run(None, {"video": video.numpy()})
    with torch.no_grad():
        ref_logits, ref_kept = model(video, return_kept=True)
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4)
    for got, want in zip((k0, k1, k2), ref_kept):
        assert np.array_equal(got, want.numpy())


def test_plugin_export_cli_small(tmp_path, capsys):
    out = tmp_path / "small_plugin.onnx"
    argv = ["export", "--model", "vit_b", "--r1", "16", "--embed-dim", "32", "--num-heads", "2", "--depth", "3", "--img-size", "112", "--sta-impl", "plugin", "--with-kept", "-o", str(out)]
    assert main(argv) == 0
    assert "PASS" in capsys.readouterr().out


def test_an_error_inside_the_op_is_raised_in_one_line_not_an_abort(vit_s_r48_plugin, tmp_path):
    """onnxruntime-extensions aborts the process on a Python exception inside an op; a plugin node
    whose attributes do not match its input (a hand-edited file) must raise instead, and the process
    carries on (a good export runs after it, through the same registered op).  Run in a child process,
    so that a regression fails this test alone."""
    import subprocess
    import sys

    path, _ = vit_s_r48_plugin
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == PLUGIN_OP_TYPE:
            next(a for a in node.attribute if a.name == "num_groups").i = 3  # the input has 8, 4, 2 groups
    bad = tmp_path / "bad_num_groups.onnx"
    onnx.save(model, str(bad))
    script = f"""
import numpy as np, sta_deploy
video = np.zeros((1, 3, 16, 224, 224), np.float32)
for path in ({str(bad)!r}, {str(path)!r}):
    session = sta_deploy.onnx_session(path)
    name = session.get_inputs()[0].name
    try:
        session.run(None, {{name: video}})
        print("ran", path)
    except RuntimeError as error:
        print("error:", error)
"""
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    lines = child.stdout.splitlines()
    assert len(lines) == 2, child.stdout
    assert lines[0].startswith("error: STAStageSelect failed (ValueError: ") and "num_groups=3" in lines[0] and "--sta-impl plugin" in lines[0]
    assert lines[1] == f"ran {path}"
