"""``--sta-impl plugin``: export each STA stage's selection as one TensorRT plugin node.

During export the selection step (:func:`sta_deploy.sta.group_kept_indices`) is routed through a
torch custom op, ``sta_deploy::stage_select``, which the ONNX exporter translates into a single
node ``STAStageSelect`` (domain ``sta_deploy``; attributes ``num_groups``, ``r``, ``backward``,
``plugin_version``, ``plugin_namespace``).  TensorRT's ONNX parser hands unknown ops to the plugin
registry by op type, version and namespace, so the node becomes the fused plugin of
``plugins/sta_stage_select``.  The metric normalisation and the semantic score stay ordinary ONNX
ops in front of the node.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from .. import sta
from .names import PLUGIN_DOMAIN, PLUGIN_NAMESPACE, PLUGIN_OP_TYPE, PLUGIN_VERSION, count_plugin_nodes


@torch.library.custom_op("sta_deploy::stage_select", mutates_args=())
def stage_select(metric: Tensor, semantic: Tensor, num_groups: int, r: int, backward: bool) -> Tensor:
    """Kept indices (B, G, n - r) int32 of one stage; eager fallback = the PyTorch reference."""
    return sta.group_kept_indices(metric, semantic, r, backward).to(torch.int32)


@stage_select.register_fake
def _stage_select_shape(metric, semantic, num_groups, r, backward):
    batch, groups, n, _ = metric.shape
    return metric.new_empty((batch, groups, n - r), dtype=torch.int32)


def _plugin_selection(metric_groups: Tensor, semantic: Tensor, r: int, backward: bool) -> Tensor:
    kept = stage_select(metric_groups.float(), semantic.float(), metric_groups.shape[1], r, backward)
    return kept.to(torch.int64)


def plugin_schema():
    """The node's ONNX schema, registered once so that onnxscript, the checker and shape inference know it."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has(PLUGIN_OP_TYPE, PLUGIN_DOMAIN):
        return onnx.defs.get_schema(PLUGIN_OP_TYPE, 1, PLUGIN_DOMAIN)
    schema = OpSchema(
        PLUGIN_OP_TYPE,
        PLUGIN_DOMAIN,
        1,
        doc="One STA stage's token selection (TensorRT plugin STAStageSelect, see plugins/sta_stage_select).",
        inputs=[
            OpSchema.FormalParameter("metric", "T", "(B, G, n, D) L2-normalised metric"),
            OpSchema.FormalParameter("semantic", "tensor(float)", "(B, G, n) min-max normalised semantic score"),
        ],
        outputs=[OpSchema.FormalParameter("kept", "tensor(int32)", "(B, G, n - r) kept indices within each group, reference order")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "metric precision; scores accumulate in fp32")],
        attributes=[
            OpSchema.Attribute("num_groups", OpSchema.AttrType.INT, "G"),
            OpSchema.Attribute("r", OpSchema.AttrType.INT, "tokens dropped per group"),
            OpSchema.Attribute("backward", OpSchema.AttrType.INT, "1: process groups last to first"),
            OpSchema.Attribute("plugin_version", OpSchema.AttrType.STRING, "TensorRT plugin version"),
            OpSchema.Attribute("plugin_namespace", OpSchema.AttrType.STRING, "TensorRT plugin namespace"),
        ],
    )
    onnx.defs.register_schema(schema)
    return schema


def _translation(metric, semantic, num_groups: int, r: int, backward: bool):
    import onnxscript

    plugin_op = onnxscript.values.Op(onnxscript.values.Opset(PLUGIN_DOMAIN, 1), PLUGIN_OP_TYPE, plugin_schema())
    return plugin_op(
        metric,
        semantic,
        num_groups=num_groups,
        r=r,
        backward=int(backward),
        plugin_version=PLUGIN_VERSION,
        plugin_namespace=PLUGIN_NAMESPACE,
    )


@contextlib.contextmanager
def plugin_export_context():
    """Route STA's selection through the custom op while the model is exported."""
    with sta.selection_override(_plugin_selection):
        yield


def custom_translation_table() -> dict:
    plugin_schema()
    return {torch.ops.sta_deploy.stage_select.default: _translation}


def finalize_plugin_graph(proto):
    """Declare the plugin domain's opset and check that every stage became one plugin node."""
    import onnx

    if not any(entry.domain == PLUGIN_DOMAIN for entry in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    if not count_plugin_nodes(proto):
        raise RuntimeError("plugin export produced no STAStageSelect node: is STA enabled (r1 > 0)?")
    return proto
