"""Expose every STA stage's token selection, in the backend's own order, as outputs of a graph copy.

Validation replays the backend's choices in the reference (:mod:`sta_deploy.replay`), so it needs
them in the order the backend made them.  The ``kept_stage*`` outputs of ``--with-kept`` exports
are sorted (and absent otherwise), so they cannot serve: ViT's next stage splits its A/B sets by the
order within each group.  What can is the index with which each stage takes its kept tokens out of
the block output: ``x.gather(1, index)`` with ``index`` (B, K) holding, group after group in
temporal order, each group's kept tokens as positions in the stage's input, in the backend's order.
Both backbones export it the same way (ViT: ``sta.sta_stage``'s ``flat_indices``, in pure-ONNX and
plugin graphs alike; Swin: ``kept`` in ``VideoSwin.sta_select``), as a GatherElements whose index
is ``Expand(Unsqueeze(index))``.  It is found by shape, not by name or constant values (so that a
graph with a wrong group offset is still read, and then caught): among such gathers, the one whose
data has the stage's input token count (G x n) and whose index has its kept count (G x (n - r)),
earliest in data flow (Swin's blocks gather with an index computed from it, of the same size).

The copy lives in memory and in a scratch folder; the user's file is never touched.
"""

from __future__ import annotations

import os
from pathlib import Path

SELECTION_OUTPUT = "sta_selection_stage{}"
_PASS_THROUGH = ("Expand", "Unsqueeze")


def _tensor_shapes(proto) -> dict:
    """name -> (elem_type, dims) for every tensor shape inference can type (dims: int, str or None)."""
    import onnx

    if any(node.domain == "sta_deploy" for node in proto.graph.node):
        from .plugin_export import plugin_schema

        plugin_schema()  # so that shape inference knows the plugin node's output type
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor_type = value.type.tensor_type
        dims = None
        if tensor_type.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]
        shapes[value.name] = (tensor_type.elem_type, dims)
    return shapes


def _ancestors(name: str, producer: dict) -> set:
    seen, stack = set(), [name]
    while stack:
        node = producer.get(stack.pop())
        if node is None:
            continue
        for source in node.input:
            if source and source not in seen:
                seen.add(source)
                stack.append(source)
    return seen


def find_stage_selections(proto, schedule: dict) -> list[str]:
    """Name of the selection index tensor of every STA stage (see the module docstring).

    ``schedule`` is the manifest's: ``groups``, ``group_sizes`` and ``tokens_per_stage``.
    Raises ValueError naming the stage when a stage's index cannot be told apart.
    """
    import onnx

    shapes = _tensor_shapes(proto)
    producer = {output: node for node in proto.graph.node for output in node.output}
    stage_inputs = [g * n for g, n in zip(schedule["groups"], schedule["group_sizes"])]
    candidates: list[set] = [set() for _ in stage_inputs]
    for node in proto.graph.node:
        if node.op_type != "GatherElements":
            continue
        index = node.input[1]
        while index in producer and producer[index].op_type in _PASS_THROUGH:
            index = producer[index].input[0]
        data_type, data_dims = shapes.get(node.input[0], (None, None))
        index_type, index_dims = shapes.get(index, (None, None))
        if index == node.input[1] or not data_dims or not index_dims or len(data_dims) != 3 or len(index_dims) != 2:
            continue
        if index_type != onnx.TensorProto.INT64:
            continue
        for stage, (tokens_in, kept) in enumerate(zip(stage_inputs, schedule["tokens_per_stage"])):
            if data_dims[1] == tokens_in and index_dims[1] == kept:
                candidates[stage].add(index)
    names = []
    for stage, found in enumerate(candidates):
        roots = [name for name in found if not (_ancestors(name, producer) & (found - {name}))]
        if len(roots) != 1:
            raise ValueError(
                f"cannot find STA stage {stage}'s token selection in the graph ({len(roots)} candidates for a "
                f"{stage_inputs[stage]} -> {schedule['tokens_per_stage'][stage]} token gather); re-export the model with sta-deploy export"
            )
        names.append(roots[0])
    return names


def add_selection_outputs(proto, schedule: dict) -> list[str]:
    """Make every stage's selection a graph output of ``proto`` (in place); returns the output names."""
    import onnx

    existing = {output.name for output in proto.graph.output}
    names = []
    for stage, tensor in enumerate(find_stage_selections(proto, schedule)):
        if tensor not in existing:  # Swin's kept_stage outputs are the selection itself
            alias = SELECTION_OUTPUT.format(stage)
            proto.graph.node.append(onnx.helper.make_node("Identity", [tensor], [alias], name=f"{alias}_identity"))
            proto.graph.output.append(onnx.helper.make_tensor_value_info(alias, onnx.TensorProto.INT64, None))
            tensor = alias
        names.append(tensor)
    return names


def write_selection_model(path, schedule: dict, folder) -> tuple[Path, list[str]]:
    """A copy of the ONNX model at ``path`` with the selection outputs, written into ``folder``.

    External weight files are linked (not copied) into ``folder`` so the copy reads the same data.
    Returns the copy's path and the selection output names, stage by stage.
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    path, folder = Path(path), Path(folder)
    proto = onnx.load(str(path), load_external_data=False)
    names = add_selection_outputs(proto, schedule)
    for tensor in proto.graph.initializer:
        if uses_external_data(tensor):
            location = next(entry.value for entry in tensor.external_data if entry.key == "location")
            link = folder / location
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink((path.parent / location).resolve(), link)
    copy = folder / path.name
    onnx.save(proto, str(copy))
    return copy, names
