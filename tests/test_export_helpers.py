"""Helpers shared by the tests/test_export_*.py files (this module holds no tests itself).

The static-shape check here is written independently of :mod:`sta_deploy.export.graph_checks`: it runs
ONNX shape inference itself and looks at every node output, the forbidden control-flow / dynamic
ops and TopK's ``k`` directly, so the exporter's own checker is not the only judge of "static".
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

import sta_deploy
from sta_deploy.cli import main

# Narrow and shallow, but the real clip geometry (16 x 224^2: 8 slices x 196 patches), since
# r1 = 64 needs 196 patches per slice.  Exports of these take a few seconds.
TINY = dict(embed_dim=32, depth=3, num_heads=2)
TINY_ARGS = ("--depth", "3", "--embed-dim", "32", "--num-heads", "2")  # TINY as CLI options
PAPER_R1 = (0, 32, 48, 64)
VIT_PRESETS = [name for name in sta_deploy.list_models() if name.startswith("vit_")]
CLIP_SHAPE = (3, 16, 224, 224)
FORBIDDEN_OPS = ("NonZero", "Loop", "Scan", "If")
ARTIFACT_SUFFIXES = (".onnx", ".partial", ".manifest.json", ".onnx.data")


def tiny_overrides(preset: str) -> dict:
    """A small model per preset: vit_s/vit_b at TINY-like widths, vit_l/vit_h deeper and with 4 heads.

    vit_l and vit_h get a depth of 4 and 6 so that the STA stages do not all sit on consecutive
    blocks (depth 6 -> stages after blocks 0, 2, 4).  Any other vit_* preset gets TINY.
    """
    return {
        "vit_s": dict(embed_dim=32, depth=3, num_heads=2),
        "vit_b": dict(embed_dim=64, depth=3, num_heads=2),
        "vit_l": dict(embed_dim=64, depth=4, num_heads=4),
        "vit_h": dict(embed_dim=64, depth=6, num_heads=4),
    }.get(preset, dict(TINY))


# ----------------------------------------------------------------------------- files
def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(folder) -> list[str]:
    """Everything in ``folder`` (hidden entries included: the exporter stages in a hidden temp folder)."""
    return sorted(p.name for p in Path(folder).iterdir())


def artifacts(folder) -> list[str]:
    """Export artifacts or temp leftovers in ``folder``: *.onnx, *.partial, *.manifest.json, *.onnx.data."""
    return [name for name in listing(folder) if name.endswith(ARTIFACT_SUFFIXES) or ".partial" in name]


# ----------------------------------------------------------------------------- CLI
def run_cli(*args) -> tuple[int, str, str]:
    """``sta-deploy ARGS`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    return code, out.getvalue(), err.getvalue()


def error_line(stderr: str, *, only_line: bool = False) -> str:
    """The one ``sta-deploy: error:`` line of a failed command.

    Other stderr lines may only be warnings (export prints the random-weights warning before it
    starts); with ``only_line`` the error must be the whole of stderr.
    """
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("sta-deploy: error:")]
    assert len(errors) == 1, f"expected exactly one error line, got:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    if only_line:
        assert lines == errors, f"expected only the error line on stderr, got:\n{stderr}"
    else:
        assert all(line.startswith("warning:") for line in lines if line not in errors), stderr
    return errors[0]


# ----------------------------------------------------------------------------- graphs
def constant_names(graph) -> set[str]:
    """Tensors that are constants: initializers that are not graph inputs, and Constant nodes' outputs."""
    overridable = {value.name for value in graph.input}
    names = {init.name for init in graph.initializer if init.name not in overridable}
    return names | {node.output[0] for node in graph.node if node.op_type == "Constant"}


def constant_values(graph) -> dict[str, np.ndarray]:
    """Values of every constant (reads every initializer: not for models with external data)."""
    return {name: constant_value(graph, name) for name in constant_names(graph)}


def constant_value(graph, name: str) -> np.ndarray:
    """The value of constant ``name`` (reads only that tensor, so external weights stay unread)."""
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            attribute = node.attribute[0]
            if attribute.name == "value":
                return numpy_helper.to_array(attribute.t)
            if attribute.name == "value_int":
                return np.array(attribute.i)
            if attribute.name == "value_ints":
                return np.array(list(attribute.ints))
            raise AssertionError(f"Constant {name} holds a {attribute.name}, not an integer tensor")
    raise KeyError(name)


def inferred_graph(model: onnx.ModelProto):
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True).graph


def _dims(value_info):
    return list(value_info.type.tensor_type.shape.dim)


def static_shape_problems(model: onnx.ModelProto, *, batch_symbol: str | None = None) -> list[str]:
    """Everything that keeps ``model`` from being static-shape, as readable strings (empty = static).

    * after shape inference every node output (and every graph input/output) is a tensor whose dims
      are all known positive numbers; only ``batch_symbol`` (when given) may appear as a symbol;
    * no NonZero/Loop/Scan/If, and no node carries a subgraph;
    * every TopK's ``k`` is a constant (an initializer or a Constant node's output).
    """
    graph = inferred_graph(model)
    typed = {value.name: value for value in [*graph.input, *graph.value_info, *graph.output]}
    constants = constant_names(graph)
    problems = []

    def check(name):
        info = typed.get(name)
        if info is None or not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
            problems.append(f"{name}: no inferred tensor shape")
            return
        for index, dim in enumerate(_dims(info)):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if batch_symbol is not None and dim.HasField("dim_param") and dim.dim_param == batch_symbol:
                continue
            problems.append(f"{name}: dim {index} is {dim.dim_param or dim.dim_value or 'unknown'!r}")

    for node in graph.node:
        label = f"{node.op_type} {node.name or node.output[0]}"
        if node.op_type in FORBIDDEN_OPS:
            problems.append(f"forbidden op {label}")
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            problems.append(f"subgraph in {label}")
        if node.op_type == "TopK" and node.input[1] not in constants:
            problems.append(f"{label}: k ({node.input[1]}) is computed, not a constant")
        for output in node.output:
            if output:
                check(output)
    for value in [*graph.input, *graph.output]:
        check(value.name)
    return problems


def symbolic_dims(model: onnx.ModelProto) -> set[str]:
    """Every dim_param left after shape inference (inputs, outputs and intermediate tensors)."""
    graph = inferred_graph(model)
    return {
        dim.dim_param
        for value in [*graph.input, *graph.value_info, *graph.output]
        if value.type.HasField("tensor_type")
        for dim in _dims(value)
        if dim.HasField("dim_param")
    }


def topk_ks(model: onnx.ModelProto) -> list[int]:
    """TopK's k values (each must be a constant)."""
    graph = model.graph
    constants = constant_names(graph)
    ks = []
    for node in graph.node:
        if node.op_type == "TopK":
            assert node.input[1] in constants, f"TopK {node.name}: k is not a constant"
            value = constant_value(graph, node.input[1])
            assert value.size == 1, f"TopK {node.name} has k of shape {value.shape}"
            ks.append(int(value.reshape(-1)[0]))
    return ks


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(node.op_type for node in model.graph.node))


def elem_type_name(elem_type: int) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name


def io_specs(model: onnx.ModelProto, which: str) -> list[dict]:
    """The graph's inputs or outputs as the manifest writes them: name, shape (int or symbol), dtype."""
    specs = []
    for value in getattr(model.graph, which):
        tensor_type = value.type.tensor_type
        shape = [dim.dim_value if dim.HasField("dim_value") else dim.dim_param for dim in tensor_type.shape.dim]
        specs.append({"name": value.name, "shape": shape, "dtype": elem_type_name(tensor_type.elem_type)})
    return specs


def random_clips(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *CLIP_SHAPE), dtype=np.float32)


def static_video_clip(seed: int) -> np.ndarray:
    """One clip whose 16 frames are identical: the temporal redundancy STA exploits (near-tied scores)."""
    frame = np.random.default_rng(seed).standard_normal((1, 3, 1, 224, 224), dtype=np.float32)
    return np.repeat(frame, 16, axis=2)
