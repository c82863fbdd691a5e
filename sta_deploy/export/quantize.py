"""``--dtype int8``: ONNX Runtime dynamic int8 quantization of an exported graph, STA kept in float32."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..sta import STA_SCOPE


def sta_node_names(proto) -> list[str]:
    """Nodes the exporter placed in a backbone's STA stages (their module scope names ``STA_SCOPE``)."""
    return [node.name for node in proto.graph.node if any(p.key == "namespace" and STA_SCOPE in p.value for p in node.metadata_props)]


# Weight-only ops the exporter leaves between an initializer and a MatMul (Swin's q/k/v linears take
# row slices of the qkv weight, exported as Slice -> Transpose); the quantizer only sees initializers.
_WEIGHT_OPS = ("Slice", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Cast")


def fold_weight_chains(proto) -> int:
    """Replace every MatMul/Gemm weight computed from initializers alone (through ``_WEIGHT_OPS``) by
    an initializer holding its value, in place, so that int8 quantization finds it; returns how many.
    The chains' nodes are removed when nothing else reads them.  Initializer data must be loaded."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    initializers = {t.name: t for t in proto.graph.initializer}
    producer = {output: node for node in proto.graph.node for output in node.output}
    folded = 0
    for node in [n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm")]:
        chain, name = [], node.input[1]
        while name not in initializers and name in producer and producer[name].op_type in _WEIGHT_OPS:
            chain.append(producer[name])
            name = producer[name].input[0]
        if not chain or name not in initializers or any(i and i not in initializers for n in chain for i in n.input[1:]):
            continue
        chain.reverse()
        made = {o for n in chain for o in n.output}
        needed = {i for n in chain for i in n.input if i and i not in made}
        graph = onnx.helper.make_graph(
            chain, "weight", [], [onnx.helper.make_tensor_value_info(node.input[1], onnx.TensorProto.UNDEFINED, None)],
            [initializers[i] for i in needed],
        )
        model = onnx.helper.make_model(graph, opset_imports=proto.opset_import)
        value = ReferenceEvaluator(model).run(None, {})[0]
        tensor = numpy_helper.from_array(value, f"{node.input[1]}_folded")
        proto.graph.initializer.append(tensor)
        initializers[tensor.name] = tensor
        node.input[1] = tensor.name
        folded += 1
    _drop_unread(proto)
    return folded


def _drop_unread(proto) -> None:
    """Remove nodes and initializers that no node or graph output reads (repeated until none is left)."""
    while True:
        read = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
        dead = [n for n in proto.graph.node if n.output and not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            proto.graph.node.remove(node)
    read = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    unused = [t for t in proto.graph.initializer if t.name not in read]
    for tensor in unused:
        proto.graph.initializer.remove(tensor)


def quantize_dynamic_int8(staged: Path, use_external: bool):
    """Quantize the blocks' MatMul/Gemm of ``staged`` in place (weights int8, activations per run).

    STA's own nodes stay float32 so the token selection keeps full precision.  For ONNX Runtime on
    CPUs (VNNI); TensorRT wants fp16/fp32 graphs instead.  Returns the quantized model's proto.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(str(staged), load_external_data=False)
    if not use_external and fold_weight_chains(proto):  # > 2 GB models (external data) have no such chains today
        onnx.save(proto, str(staged))
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
