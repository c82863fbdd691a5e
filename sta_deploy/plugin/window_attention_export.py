"""``--window-attention kernel``: export each Video Swin block's window attention as one node.

During export :func:`sta_deploy.models.swin_attention.kept_window_attention` is routed through a
torch custom op, ``sta_deploy::kept_window_attention``, which the ONNX exporter translates into one
``KeptWindowAttention`` node (domain ``sta_deploy``) per block: window gathers, attention and the
gather back to the kept tokens in one step that computes the kept queries only.  ONNX Runtime CPU
runs it with the kernel of ``plugins/kept_window_attention`` (see :mod:`sta_deploy.plugin.onnxrt`).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from ..models.swin_attention import attend_kept, kept_attention_override
from .names import PLUGIN_DOMAIN, WINDOW_ATTENTION_OP_TYPE, count_window_attention_nodes


@torch.library.custom_op("sta_deploy::kept_window_attention", mutates_args=())
def kept_window_attention_op(
    q: Tensor, k: Tensor, v: Tensor, window_index: Tensor, back_index: Tensor, additive: Tensor, window_type: Tensor, scale: float
) -> Tensor:
    """(B, heads, K, hd); eager fallback = :func:`attend_kept`, the definition."""
    windows_per_type = torch.bincount(window_type, minlength=additive.shape[0]).tolist()
    return attend_kept(q, k, v, window_index, back_index, additive, windows_per_type, scale).contiguous()


@kept_window_attention_op.register_fake
def _kept_window_attention_shape(q, k, v, window_index, back_index, additive, window_type, scale):
    return q.new_empty((q.shape[0], q.shape[1], back_index.shape[-1], q.shape[3]))


def _kernel_attention(q, k, v, window_index, back_index, additive, windows_per_type, window_type, scale):
    if window_index.dim() == 1:
        # An unpruned stage (one constant index for every sample): every query is kept, so the
        # kernel would skip nothing; the plain graph's attention is as fast and needs no cut.
        return attend_kept(q, k, v, window_index, back_index, additive, windows_per_type, scale)
    return kept_window_attention_op(q, k, v, window_index, back_index, additive.to(q.dtype), window_type, float(scale))


def window_attention_schema():
    """The node's ONNX schema, registered once so that onnxscript, the checker and shape inference know it."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has(WINDOW_ATTENTION_OP_TYPE, PLUGIN_DOMAIN):
        return onnx.defs.get_schema(WINDOW_ATTENTION_OP_TYPE, 1, PLUGIN_DOMAIN)
    parameter = OpSchema.FormalParameter
    schema = OpSchema(
        WINDOW_ATTENTION_OP_TYPE,
        PLUGIN_DOMAIN,
        1,
        doc="Video Swin window attention for the kept queries only (see plugins/kept_window_attention).",
        inputs=[
            parameter("q", "tensor(float)", "(B, heads, rows, hd) queries of the stage's tokens (+ padding row)"),
            parameter("k", "tensor(float)", "(B, heads, rows, hd) keys"),
            parameter("v", "tensor(float)", "(B, heads, rows, hd) values"),
            parameter("window_index", "tensor(int64)", "(L,) or (B, L) the row filling each window slot"),
            parameter("back_index", "tensor(int64)", "(K,) or (B, K) the slot of every kept token"),
            parameter("additive", "tensor(float)", "(types, heads, V, V) relative position bias + shift mask"),
            parameter("window_type", "tensor(int64)", "(L / V,) each window's mask type, ascending"),
        ],
        outputs=[parameter("attended", "tensor(float)", "(B, heads, K, hd) attention output of every kept token")],
        attributes=[OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "query scale, head_dim ** -0.5")],
    )
    onnx.defs.register_schema(schema)
    return schema


def _translation(q, k, v, window_index, back_index, additive, window_type, scale: float):
    import onnxscript

    op = onnxscript.values.Op(onnxscript.values.Opset(PLUGIN_DOMAIN, 1), WINDOW_ATTENTION_OP_TYPE, window_attention_schema())
    return op(q, k, v, window_index, back_index, additive, window_type, scale=scale)


@contextlib.contextmanager
def window_attention_export_context():
    """Route every Swin block's window attention through the custom op while the model is exported."""
    with kept_attention_override(_kernel_attention):
        yield


def custom_translation_table() -> dict:
    window_attention_schema()
    return {torch.ops.sta_deploy.kept_window_attention.default: _translation}


def finalize_window_attention_graph(proto, expected_nodes: int):
    """Declare the domain's opset and check that every block became one KeptWindowAttention node."""
    import onnx

    if not any(entry.domain == PLUGIN_DOMAIN for entry in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    found = count_window_attention_nodes(proto)
    if found != expected_nodes:
        raise RuntimeError(f"--window-attention kernel export produced {found} KeptWindowAttention nodes for {expected_nodes} Swin blocks")
    return proto
