"""``--window-attention kernel``: Video Swin window attention for the kept queries only.

The kernel (plugins/kept_window_attention) is checked against the definition run in float64
(:func:`attend_kept`: fill full windows, attend, take the kept tokens back) on the real inputs of
small pruned models (padded and shifted windows, one index per sample, head dims 8/16/32 that take
the kernel's scalar and vector paths); the export is checked for one node per block, for outputs
equal to PyTorch and to the plain export through the segmented ONNX Runtime session, and every
backend that cannot run the node refuses it in one line.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import sta_deploy
from sta_deploy.errors import ConfigError
from sta_deploy.export.manifest import read_manifest
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.models import swin as swin_module
from sta_deploy.models.swin_attention import attend_kept
from sta_deploy.plugin.names import WINDOW_ATTENTION_OP_TYPE, count_window_attention_nodes
from sta_deploy.plugin.window_attention import WindowAttentionKernelError, kept_window_attention_cpu, load_kernel_library
from sta_deploy.runtime.onnxrt import onnx_session
from sta_deploy.validate import TOLERANCES

from test_export_helpers import error_line, run_cli

# 2x3x3 windows pad 14 -> 15 and 7 -> 9 and shift on every axis; head dims 8 and 16.
SMALL = dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(2, 3, 3), num_frames=8, img_size=56, num_classes=10)
# head dim 32 (every real Swin) and a window spanning all slices
WIDE = dict(embed_dim=64, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16), window_size=(4, 3, 3), num_frames=8, img_size=64, num_classes=10)


@pytest.fixture(scope="session")
def kernel_library():
    try:
        return load_kernel_library()
    except WindowAttentionKernelError as error:  # pragma: no cover - cmake and a C++ compiler are CI requirements
        pytest.fail(str(error))


def block_inputs(preset: str, r1: int, config: dict, batch: int, dtype=torch.float64):
    """Every block's attention inputs of one forward pass, in ``dtype``."""
    model = sta_deploy.create_model(preset, r1=r1, seed=0, **config).to(dtype)
    captured, original = [], swin_module.SwinBlock.forward

    def capture(block, x, window_index, back_index):
        q, k, v = block.attn.head_major_qkv(block.norm1(x), block.geometry.has_padding)
        captured.append((block, q, k, v, window_index, back_index, block.additive_terms()))
        return original(block, x, window_index, back_index)

    swin_module.SwinBlock.forward = capture
    try:
        with torch.no_grad():
            model(torch.randn(batch, *model.config.input_shape, generator=torch.Generator().manual_seed(1), dtype=dtype))
    finally:
        swin_module.SwinBlock.forward = original
    return captured


@pytest.mark.parametrize(
    "preset, r1, config, batch",
    [("swin_t", 8, SMALL, 2), ("swin_t", 24, SMALL, 1), ("swin_t", 0, SMALL, 1), ("swin_b", 16, WIDE, 2)],  # r1 = 0: the kernel
    # is never exported for unpruned stages, but it must compute them right too (shared indices)
    ids=["small-r8-batch2", "small-r24", "small-unpruned", "hd32-r16-batch2"],
)
def test_kernel_equals_the_float64_definition(kernel_library, preset, r1, config, batch):
    blocks = block_inputs(preset, r1, config, batch)
    assert len(blocks) == sum(config["depths"])
    for block, q, k, v, window_index, back_index, additive in blocks:
        with torch.no_grad():
            expected = attend_kept(q, k, v, window_index, back_index, additive, block.windows_per_type, block.attn.scale).numpy()
        got = kept_window_attention_cpu(q.float(), k.float(), v.float(), window_index, back_index, additive.float(), block.window_type, block.attn.scale)
        assert got.shape == expected.shape
        scale = np.abs(expected).max()
        assert np.abs(got - expected).max() <= 2e-6 * max(scale, 1.0), (block.geometry, np.abs(got - expected).max())
        for threads in (1, 3):  # the split of (sample, window, head) tasks over threads changes nothing
            again = kept_window_attention_cpu(q.float(), k.float(), v.float(), window_index, back_index, additive.float(), block.window_type, block.attn.scale, threads=threads)
            np.testing.assert_array_equal(again, got)


def test_kernel_rejects_bad_input(kernel_library):
    block, q, k, v, window_index, back_index, additive = block_inputs("swin_t", 8, SMALL, 1, torch.float32)[2]
    args = [q, k, v, window_index, back_index, additive, block.window_type, block.attn.scale]
    bad_index = window_index.clone()
    bad_index[..., 0] = q.shape[2]  # one past the last row
    with pytest.raises(WindowAttentionKernelError, match="out of range"):
        kept_window_attention_cpu(*args[:3], bad_index, *args[4:])
    with pytest.raises(ValueError, match="slots"):
        kept_window_attention_cpu(*args[:3], window_index[..., :-1], *args[4:])
    with pytest.raises(ValueError, match="one shape"):
        kept_window_attention_cpu(q, k[:, :, :-1], *args[2:])
    with pytest.raises(ValueError, match="additive"):
        kept_window_attention_cpu(*args[:5], additive[:, :1], *args[6:])


# ----------------------------------------------------------------------------- exports
@pytest.fixture(scope="module")
def exports(tmp_path_factory, kernel_library):
    folder = tmp_path_factory.mktemp("window_attention")
    made = {}
    for name, r1, batch, dynamic in (("r8-batch2", 8, 2, False), ("r24-dynamic", 24, 1, True)):
        model = sta_deploy.create_model("swin_t", r1=r1, seed=0, **SMALL)
        paths = {}
        for impl in ("kernel", "onnx"):
            paths[impl] = folder / f"{name}-{impl}.onnx"
            export_onnx(model, paths[impl], batch_size=batch, dynamic_batch=dynamic, with_kept=True, window_attention=impl)
        made[name] = (model, paths, batch)
    return made


@pytest.mark.parametrize("name", ["r8-batch2", "r24-dynamic"])
def test_kernel_export_matches_pytorch_and_the_plain_export(exports, name):
    model, paths, batch = exports[name]
    proto = onnx.load(str(paths["kernel"]))
    # one node per block of the pruned stages; stage 0 (unpruned, every query kept) keeps plain attention
    assert count_window_attention_nodes(proto) == sum(SMALL["depths"][1:])
    softmax_scopes = [" ".join(prop.value for prop in node.metadata_props) for node in proto.graph.node if node.op_type == "Softmax"]
    attention_softmax = [scope for scope in softmax_scopes if "sta_stages" not in scope]
    assert attention_softmax and all("features.0." in scope for scope in attention_softmax), attention_softmax  # one per mask type
    assert read_manifest(paths["kernel"])["window_attention"] == "kernel"
    assert "window_attention" not in read_manifest(paths["onnx"])
    clips = np.random.default_rng(3).standard_normal((3 if name.endswith("dynamic") else batch, *model.config.input_shape), dtype=np.float32)
    kernel_session, plain_session = onnx_session(paths["kernel"], threads=2), onnx_session(paths["onnx"], threads=2)
    assert [i.name for i in kernel_session.get_inputs()] == [i.name for i in plain_session.get_inputs()]
    assert [o.name for o in kernel_session.get_outputs()] == [o.name for o in plain_session.get_outputs()]
    feed = {kernel_session.get_inputs()[0].name: clips}
    kernel_out, plain_out = kernel_session.run(None, feed), plain_session.run(None, feed)
    with torch.no_grad():
        logits, kept = model(torch.from_numpy(clips), return_kept=True)
    tolerance = TOLERANCES["fp32"]["max_abs"]
    assert np.abs(kernel_out[0] - logits.numpy()).max() <= tolerance
    assert np.abs(kernel_out[0] - plain_out[0]).max() <= tolerance
    for stage, positions in enumerate(kept):
        np.testing.assert_array_equal(kernel_out[1 + stage], positions.numpy())


def test_segmented_session_results_survive_the_next_run(exports):
    """Buffers are reused from run to run: what a run returned must not change with the next one."""
    model, paths, batch = exports["r8-batch2"]
    session = onnx_session(paths["kernel"], threads=2)
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(5)
    first_clips, second_clips = (rng.standard_normal((batch, *model.config.input_shape), dtype=np.float32) for _ in range(2))
    first = session.run(None, {name: first_clips})
    kept_copy = [array.copy() for array in first]
    second = session.run(None, {name: second_clips})
    for before, after in zip(kept_copy, first):
        np.testing.assert_array_equal(before, after)
    assert not np.allclose(first[0], second[0])
    np.testing.assert_array_equal(session.run(None, {name: first_clips})[0], first[0])


def test_unpruned_kernel_export_is_the_plain_graph(tmp_path, capsys):
    model = sta_deploy.create_model("swin_t", r1=0, seed=0, **SMALL)
    result = export_onnx(model, tmp_path / "r0.onnx", window_attention="kernel")
    assert count_window_attention_nodes(result.path) == 0
    assert "window_attention" not in result.manifest


def test_cli_export_validates_a_kernel_export(tmp_path, kernel_library):
    path = tmp_path / "swin.onnx"
    args = ["export", "--model", "swin_t", "--r1", 8, *_arch_args(SMALL), "--window-attention", "kernel", "--clips", 1, "-o", path]
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert out.rstrip().splitlines()[-1] == "PASS", out
    code, out, err = run_cli("validate", path, "--clips", 1)
    assert code == 0, err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "vit_s", "--depth", 2], "Video Swin models only"),
        (["--model", "swin_t", "--dtype", "fp16"], "float32"),
        (["--model", "swin_t", "--sta-impl", "plugin", "--r1", 8], "cannot be combined"),
    ],
    ids=["vit", "fp16", "plugin"],
)
def test_cli_refuses_what_the_kernel_cannot_do(tmp_path, extra, message):
    code, _, err = run_cli("export", *extra, "--window-attention", "kernel", "--no-validate", "-o", tmp_path / "m.onnx")
    assert code != 0
    assert message in error_line(err)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_other_backends_refuse_kernel_exports_in_one_line(exports):
    from sta_deploy.runtime.openvino import check_openvino_model_file
    from sta_deploy.runtime.trt import check_plugin_libs

    path = exports["r8-batch2"][1]["kernel"]
    with pytest.raises(ConfigError, match="--window-attention onnx"):
        check_openvino_model_file(path)
    with pytest.raises(ValueError, match="no TensorRT plugin yet"):
        check_plugin_libs(path, ())
    assert WINDOW_ATTENTION_OP_TYPE == "KeptWindowAttention"


def test_profiler_sees_every_node_of_a_kernel_export(exports, tmp_path):
    """The segments' ONNX Runtime profiles and the kernel's timings merge into one trace: with
    optimisations off every exported node is in it, the kernel nodes under their own names."""
    from sta_deploy.bench import node_times, sta_time_share

    path = exports["r8-batch2"][1]["kernel"]
    video = np.random.default_rng(0).standard_normal((2, 3, 8, 56, 56), dtype=np.float32)
    graph = onnx.load(str(path)).graph
    times = node_times(path, video, runs=2, threads=1)
    assert set(times) == {node.name for node in graph.node}
    kernel_nodes = {node.name for node in graph.node if node.op_type == WINDOW_ATTENTION_OP_TYPE}
    assert {name for name, (op_type, _) in times.items() if op_type == WINDOW_ATTENTION_OP_TYPE} == kernel_nodes
    assert all(times[name][1] > 0 for name in kernel_nodes)
    share = sta_time_share(path, video, runs=2, threads=1)  # the optimised segments, merged
    assert share["sta_us"] > 0 and share["other_us"] > 0 and 0 < share["sta_fraction"] < 1
    code, out, err = run_cli("bench", path, "--profile", "--runs", "1", "--warmup", "0", "--threads", "1")
    assert code == 0, err
    assert "STA nodes:" in out


def _arch_args(config: dict) -> list:
    args = []
    for key, value in config.items():
        args += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, tuple) else value]
    return args


def test_swin_recipe_with_kernel_attention_on_the_command_line(tmp_path):
    """A published Swin recipe (export/swin_t_r256.toml) takes --window-attention kernel from the
    command line; small architecture overrides keep the export quick."""
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "export" / "swin_t_r256.toml"
    out = tmp_path / "swin.onnx"
    code, _, err = run_cli("export", "--recipe", recipe, *_arch_args(SMALL), "--r1", "8", "--window-attention", "kernel", "-o", out, "--no-validate")
    assert code == 0, err
    manifest = read_manifest(out)
    assert manifest["model"] == "swin_t" and manifest["r1"] == 8
    assert count_window_attention_nodes(out) == sum(SMALL["depths"][1:])
