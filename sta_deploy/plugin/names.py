"""Identity of the TensorRT plugin that fuses one STA stage's selection (see plugins/sta_stage_select),
and the one way to count its nodes in a graph."""

from __future__ import annotations

PLUGIN_OP_TYPE = "STAStageSelect"
PLUGIN_VERSION = "1"
# TensorRT looks the creator up by (op type, version, namespace); the ONNX node's domain is a separate
# name that happens to be spelled the same.
PLUGIN_NAMESPACE = "sta_deploy"
PLUGIN_DOMAIN = "sta_deploy"


def count_plugin_nodes(model) -> int:
    """STAStageSelect nodes in ``model``: an ``onnx.ModelProto`` or the path of an ONNX file (read
    without its external weights)."""
    import onnx

    from .._io import read_onnx

    if not isinstance(model, onnx.ModelProto):
        model = read_onnx(model)
    return sum(1 for node in model.graph.node if node.op_type == PLUGIN_OP_TYPE and node.domain == PLUGIN_DOMAIN)


# --window-attention kernel: one node per Video Swin block (plugins/kept_window_attention); served on
# ONNX Runtime CPU by the kernel as an onnxruntime-extensions custom op; no TensorRT plugin yet.
WINDOW_ATTENTION_OP_TYPE = "KeptWindowAttention"


def count_window_attention_nodes(model) -> int:
    """KeptWindowAttention nodes in ``model`` (an ``onnx.ModelProto`` or the path of an ONNX file)."""
    import onnx

    from .._io import read_onnx

    if not isinstance(model, onnx.ModelProto):
        model = read_onnx(model)
    return sum(1 for node in model.graph.node if is_window_attention_node(node))


def is_window_attention_node(node) -> bool:
    return node.op_type == WINDOW_ATTENTION_OP_TYPE and node.domain == PLUGIN_DOMAIN
