"""Static-shape checks on an exported ONNX graph: the property TensorRT and fixed-r pruning rely on.

Two independent checks:

* after ONNX shape inference every tensor has a fully known shape (the batch dimension may be
  symbolic when exported with ``dynamic_batch``);
* no operator's output *shape* depends on tensor *data*: no NonZero/Loop/Scan/If/Unique/Compress,
  and every shape-like input (Reshape/Expand/Tile shapes, TopK's k, Slice bounds, ...) is computed
  from constants and ``Shape`` of tensors only, never from values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from ..errors import first_line

FORBIDDEN_OPS = {"NonZero", "Loop", "Scan", "If", "Unique", "Compress", "NonMaxSuppression", "SequenceConstruct"}
# op_type -> indices of inputs that determine output shapes
SHAPE_INPUTS = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "TopK": (1,),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "Slice": (1, 2, 3, 4),
    "Pad": (1,),
    "Resize": (2, 3),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Split": (1,),
    "OneHot": (1,),
}
SHAPE_SOURCES = {"Shape", "Size", "Constant"}


@dataclass
class StaticShapeReport:
    ok: bool
    dynamic_tensors: list[str] = field(default_factory=list)  # tensors with unknown dims
    data_dependent: list[str] = field(default_factory=list)  # nodes whose output shape depends on data
    op_counts: dict = field(default_factory=dict)

    def summary(self) -> str:
        if self.ok:
            return "static shapes: ok"
        parts = []
        if self.dynamic_tensors:
            parts.append(f"{len(self.dynamic_tensors)} tensors with unknown dims (e.g. {', '.join(self.dynamic_tensors[:3])})")
        if self.data_dependent:
            parts.append(f"data-dependent shapes at {', '.join(self.data_dependent[:3])}")
        return "static shapes: FAILED: " + "; ".join(parts)


def _dims(value_info) -> list:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return [None]
    return [dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None) for dim in tensor_type.shape.dim]


def check_static_shapes(model: onnx.ModelProto, *, dynamic_batch: bool = False, batch_dim_name: str | None = None) -> StaticShapeReport:
    """Run shape inference on ``model`` (without external data) and report anything not static."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as error:
        raise RuntimeError(f"ONNX shape inference failed on the exported graph: {first_line(error)}") from None
    graph = inferred.graph
    initializers = {init.name for init in graph.initializer}
    report = StaticShapeReport(ok=True)
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    report.op_counts = dict(sorted(counts.items()))

    if dynamic_batch and batch_dim_name is None:
        # The batch symbol is whatever the exporter named the first input's leading dimension.
        batch_dim_name = _dims(graph.input[0])[0] if graph.input else None
    allowed_symbols = {batch_dim_name} if dynamic_batch and isinstance(batch_dim_name, str) else set()

    def dim_ok(index, dim):
        # The batch may move (e.g. q/k/v stacked in front), so the symbol may sit at any index.
        return (isinstance(dim, int) and dim > 0) or dim in allowed_symbols

    typed = {}
    for value_info in list(graph.value_info) + list(graph.output) + list(graph.input):
        typed[value_info.name] = value_info
    produced = [output for node in graph.node for output in node.output if output]
    for name in [*produced, *[o.name for o in graph.output]]:
        info = typed.get(name)
        dims = _dims(info) if info is not None else [None]
        if not all(dim_ok(i, d) for i, d in enumerate(dims)) and name not in report.dynamic_tensors:
            # A scalar (rank 0) has no dims and is static.
            if info is not None and info.type.tensor_type.HasField("shape") and len(dims) == 0:
                continue
            report.dynamic_tensors.append(name)

    # Which tensors are computed from constants and shapes only (never from data values)?
    # An initializer that is also a graph input can be overridden at run time: it is data.
    shape_only = set(initializers) - {value.name for value in graph.input}
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type in SHAPE_SOURCES or (inputs and all(i in shape_only for i in inputs)) or not inputs:
            shape_only.update(o for o in node.output if o)
    for node in graph.node:
        label = f"{node.op_type}:{node.name or node.output[0]}"
        if node.op_type in FORBIDDEN_OPS:
            report.data_dependent.append(label)
            continue
        for index in SHAPE_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] and node.input[index] not in shape_only:
                report.data_dependent.append(label)
                break
    report.ok = not report.dynamic_tensors and not report.data_dependent
    return report
