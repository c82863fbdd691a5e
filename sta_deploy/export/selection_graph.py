"""Expose every STA stage's token selection, in the backend's own order, as outputs of a graph copy.

Validation replays the backend's choices in the reference (:mod:`sta_deploy.replay`), so it needs
them in the order the backend made them.  The ``kept_stage*`` outputs of ``--with-kept`` exports
are sorted (and absent otherwise), so they cannot serve: ViT's next stage splits its A/B sets by the
order within each group.  What can is the index with which each stage takes its kept tokens out of
the block output: ``x.gather(1, index)`` with ``index`` (B, K) holding, group after group in
temporal order, each group's kept tokens as positions in the stage's input, in the backend's order.
Both backbones export it the same way (ViT: ``sta.sta_stage``'s ``flat_indices``, in pure-ONNX and
plugin graphs alike; Swin: ``kept`` in ``SwinStaStage.forward``), as a GatherElements whose index
is ``Expand(Unsqueeze(index))``.  It is found by shape, not by name or constant values (so that a
graph with a wrong group offset is still read, and then caught): among such gathers, the one whose
data has the stage's input token count (G x n) and whose index has its kept count (G x (n - r)),
earliest in data flow (Swin's blocks gather with an index computed from it, of the same size).

The copy lives in memory and in a scratch folder; the user's file is never touched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SELECTION_OUTPUT = "sta_selection_stage{}"
_PASS_THROUGH = ("Expand", "Unsqueeze")


def _tensor_shapes(proto) -> dict:
    """name -> (elem_type, dims) for every tensor shape inference can type (dims: int, str or None)."""
    import onnx

    if any(node.domain == "sta_deploy" for node in proto.graph.node):
        from ..plugin.export import plugin_schema

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


def _token_gathers(proto, shapes: dict, producer: dict) -> list[tuple[int, str, int]]:
    """(data token count, index tensor, index token count) of every GatherElements that takes tokens
    (rank-3 data) with an ``Expand(Unsqueeze(index))`` of a rank-2 int64 index with static sizes."""
    import onnx

    gathers = []
    for node in proto.graph.node:
        if node.op_type != "GatherElements":
            continue
        index = node.input[1]
        while index in producer and producer[index].op_type in _PASS_THROUGH:
            index = producer[index].input[0]
        _, data_dims = shapes.get(node.input[0], (None, None))
        index_type, index_dims = shapes.get(index, (None, None))
        if index == node.input[1] or not data_dims or not index_dims or len(data_dims) != 3 or len(index_dims) != 2:
            continue
        if index_type == onnx.TensorProto.INT64 and isinstance(data_dims[1], int) and isinstance(index_dims[1], int):
            gathers.append((data_dims[1], index, index_dims[1]))
    return gathers


def _roots(found: set, producer: dict) -> list[str]:
    """The candidates not computed from another candidate (Swin's blocks gather with indices derived from the selection)."""
    return sorted(name for name in found if not (_ancestors(name, producer) & (found - {name})))


def find_stage_selections(proto, schedule: dict) -> list:
    """Name of the selection index tensor of every STA stage (see the module docstring), None where absent.

    ``schedule`` is the manifest's (``groups``, ``group_sizes``, ``tokens_per_stage``).  A stage's
    gather is matched on its input and kept token counts; failing that, on its input count alone,
    so that a graph keeping a wrong number of tokens is still read (and then failed by the replay);
    the stages after such a stage, whose input counts differ, come back None.
    Raises ValueError if a stage has several exact candidates (a graph this reader does not understand).
    """
    shapes = _tensor_shapes(proto)
    producer = {output: node for node in proto.graph.node for output in node.output}
    gathers = _token_gathers(proto, shapes, producer)
    names = []
    for stage, (groups, n, kept) in enumerate(zip(schedule["groups"], schedule["group_sizes"], schedule["tokens_per_stage"])):
        exact = _roots({index for tokens, index, count in gathers if tokens == groups * n and count == kept}, producer)
        if len(exact) > 1:
            raise ValueError(
                f"cannot tell STA stage {stage}'s token selection from {len(exact) - 1} other gather(s) of {groups * n} -> {kept} tokens "
                "in the graph; re-export the model with sta-deploy export"
            )
        # A selection takes fewer tokens than it sees; more than one such gather: cannot say which.
        fewer = _roots({index for tokens, index, count in gathers if tokens == groups * n and count < tokens}, producer)
        names.append(exact[0] if exact else (fewer[0] if len(fewer) == 1 else None))
    return names


def add_selection_outputs(proto, schedule: dict) -> list:
    """Add output ``sta_selection_stage{i}`` (an Identity of stage i's selection) to ``proto``, in place.

    Returns the output names stage by stage, None where a stage's selection is not in the graph.
    """
    import onnx

    names = []
    for stage, tensor in enumerate(find_stage_selections(proto, schedule)):
        if tensor is None:
            names.append(None)
            continue
        alias = SELECTION_OUTPUT.format(stage)
        proto.graph.node.append(onnx.helper.make_node("Identity", [tensor], [alias], name=f"{alias}_identity"))
        proto.graph.output.append(onnx.helper.make_tensor_value_info(alias, onnx.TensorProto.INT64, None))
        names.append(alias)
    return names


def _place_beside(source: Path, target: Path) -> None:
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)


def write_selection_model(path, schedule: dict, folder) -> tuple[Path, list[str]]:
    """A copy of the ONNX model at ``path`` with the selection outputs, written into ``folder``.

    External weight files are hard-linked (copied across file systems) into ``folder``: ONNX Runtime
    refuses data paths that leave the model's folder, symbolic links included.
    Returns the copy's path and the selection output names, stage by stage.
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    from .._io import read_onnx

    path, folder = Path(path), Path(folder)
    proto = read_onnx(path)
    names = add_selection_outputs(proto, schedule)
    for tensor in proto.graph.initializer:
        if uses_external_data(tensor):
            location = next(entry.value for entry in tensor.external_data if entry.key == "location")
            _place_beside(path.parent / location, folder / location)
    copy = folder / path.name
    onnx.save(proto, str(copy))
    return copy, names
