"""sta_deploy.export.graph_checks.check_static_shapes can fail: hand-built non-static graphs are flagged.

Every graph is also run through the tests' own static-shape check (test_export_helpers), so both
checkers are shown to tell static graphs from non-static ones.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sta_deploy.export.graph_checks import check_static_shapes

from test_export_helpers import static_shape_problems

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])


def untyped_output(name, elem_type=TensorProto.FLOAT):
    """A graph output with a type but no shape: shape inference must find it."""
    value = onnx.ValueInfoProto()
    value.name = name
    value.type.tensor_type.elem_type = elem_type
    return value


def const(name, values):
    return numpy_helper.from_array(np.asarray(values), name)


def make(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "hand_built", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    # The checker wants every output's shape spelled out; these leave it to shape inference.
    checkable = onnx.ModelProto()
    checkable.CopyFrom(model)
    for output in checkable.graph.output:
        output.type.tensor_type.shape.SetInParent()
        output.type.tensor_type.shape.dim.add()
    onnx.checker.check_model(checkable)
    return model


def static_reshape():
    return make(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [X],
        [untyped_output("y")],
        [const("shape", np.array([3, 4], np.int64))],
    )


def nonzero():
    return make([helper.make_node("NonZero", ["x"], ["y"])], [X], [untyped_output("y", TensorProto.INT64)])


def reshape_shape_from_data():
    # shape = [int(max(x)), -1]: the output shape depends on the values in x.
    return make(
        [
            helper.make_node("ReduceMax", ["x"], ["peak"], keepdims=0),
            helper.make_node("Cast", ["peak"], ["rows"], to=TensorProto.INT64),
            helper.make_node("Unsqueeze", ["rows", "axis0"], ["rows1"]),
            helper.make_node("Concat", ["rows1", "minus_one"], ["shape"], axis=0),
            helper.make_node("Reshape", ["x", "shape"], ["y"]),
        ],
        [X],
        [untyped_output("y")],
        [const("axis0", np.array([0], np.int64)), const("minus_one", np.array([-1], np.int64))],
    )


def reshape_shape_from_input():
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
    return make([helper.make_node("Reshape", ["x", "shape"], ["y"])], [X, shape], [untyped_output("y")])


def topk_k_from_data():
    return make(
        [
            helper.make_node("ReduceMax", ["x"], ["peak"], keepdims=0),
            helper.make_node("Cast", ["peak"], ["k_scalar"], to=TensorProto.INT64),
            helper.make_node("Reshape", ["k_scalar", "one"], ["k"]),
            helper.make_node("TopK", ["x", "k"], ["values", "indices"]),
        ],
        [X],
        [untyped_output("values"), untyped_output("indices", TensorProto.INT64)],
        [const("one", np.array([1], np.int64))],
    )


def loop():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [2, 6]),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2, 6])],
    )
    return make(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
        [X],
        [untyped_output("y")],
        [const("trips", np.array(3, np.int64)), const("cond", np.array(True))],
    )


def symbolic_input(*dims):
    def build():
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))
        return make([helper.make_node("Relu", ["x"], ["y"])], [x], [untyped_output("y")])

    build.__name__ = "input_" + "x".join(map(str, dims))
    return build


NON_STATIC = [nonzero, reshape_shape_from_data, reshape_shape_from_input, topk_k_from_data, loop]


def test_a_static_graph_passes_both_checkers():
    model = static_reshape()
    report = check_static_shapes(model)
    assert report.ok, report.summary()
    assert report.summary() == "static shapes: ok"
    assert static_shape_problems(model) == []


@pytest.mark.parametrize("build", NON_STATIC, ids=lambda build: build.__name__)
def test_non_static_graph_is_flagged(build):
    model = build()
    report = check_static_shapes(model)
    assert not report.ok
    assert report.data_dependent, report.summary()
    assert report.summary().startswith("static shapes: FAILED")
    assert static_shape_problems(model), "the tests' own checker missed it too"


def test_flagged_nodes_are_named():
    assert any(entry.startswith("NonZero") for entry in check_static_shapes(nonzero()).data_dependent)
    assert any(entry.startswith("Reshape") for entry in check_static_shapes(reshape_shape_from_data()).data_dependent)
    assert any(entry.startswith("TopK") for entry in check_static_shapes(topk_k_from_data()).data_dependent)
    assert any(entry.startswith("Loop") for entry in check_static_shapes(loop()).data_dependent)
    assert "y" in check_static_shapes(nonzero()).dynamic_tensors


def test_only_the_batch_symbol_is_allowed():
    batch_only = symbolic_input("batch", 6)()
    assert check_static_shapes(batch_only, dynamic_batch=True).ok
    assert not check_static_shapes(batch_only).ok  # a static export must not have a symbol at all
    assert static_shape_problems(batch_only, batch_symbol="batch") == []
    assert static_shape_problems(batch_only) != []
    second_symbol = symbolic_input("batch", "width")()
    report = check_static_shapes(second_symbol, dynamic_batch=True)
    assert not report.ok and report.dynamic_tensors == ["y"]
    assert static_shape_problems(second_symbol, batch_symbol="batch") != []


def test_overridable_initializer_used_as_a_shape_is_flagged():
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
    model = make(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [X, shape],
        [untyped_output("y")],
        [const("shape", np.array([3, 4], np.int64))],
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fed = session.run(None, {"x": np.zeros((2, 6), np.float32), "shape": np.array([12, 1], np.int64)})[0]
    assert fed.shape == (12, 1)  # the output shape follows the fed value: not static
    # (Shape inference itself takes the default [3, 4], so only the provenance check can catch this.)
    assert not check_static_shapes(model).ok
