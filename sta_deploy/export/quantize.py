"""``--dtype int8``: ONNX Runtime dynamic int8 quantization of an exported graph, STA kept in float32."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..sta import STA_SCOPE


def sta_node_names(proto) -> list[str]:
    """Nodes the exporter placed in a backbone's STA stages (their module scope names ``STA_SCOPE``)."""
    return [node.name for node in proto.graph.node if any(p.key == "namespace" and STA_SCOPE in p.value for p in node.metadata_props)]


def quantize_dynamic_int8(staged: Path, use_external: bool):
    """Quantize the blocks' MatMul/Gemm of ``staged`` in place (weights int8, activations per run).

    STA's own nodes stay float32 so the token selection keeps full precision.  For ONNX Runtime on
    CPUs (VNNI); TensorRT wants fp16/fp32 graphs instead.  Returns the quantized model's proto.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(str(staged), load_external_data=False)
    quantized = staged.with_name("int8_" + staged.name)
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice (pre-processing, shape inference) at WARNING
    try:
        quantize_dynamic(
            str(staged),
            str(quantized),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=sta_node_names(proto),
            use_external_data_format=use_external,
        )
    finally:
        root.setLevel(previous)
    for leftover in staged.parent.iterdir():
        if leftover != quantized and not leftover.name.startswith("int8_"):
            leftover.unlink()
    os.replace(quantized, staged)
    proto = onnx.load(str(staged), load_external_data=False)
    onnx.save(proto, str(staged))
    return proto
