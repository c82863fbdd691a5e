"""Expose every STA stage's token selection, in the backend's own order, as outputs of a graph copy.

Validation replays the backend's choices in the reference (:mod:`sta_deploy.replay`), so it needs
them in the order the backend made them.  The ``kept_stage*`` outputs of ``--with-kept`` exports
are sorted (and absent otherwise), so they cannot serve: ViT's next stage splits its A/B sets by the
order within each group.  What can is the index with which each stage takes its kept tokens out of
the block output: ``x.gather(1, index)`` with ``index`` (B, K) holding, group after group in
temporal order, each group's kept tokens as positions in the stage's input, in the backend's order.
Both backbones export it; the gather takes one of two forms (:func:`sta_deploy.sta.gather_tokens`):

* static batch (``sta.sta_stage``'s ``flat_indices`` for ViT, in pure-ONNX and plugin graphs alike, and
  ``kept`` in Swin's ``SwinStaStage.forward``): one
  ``Gather`` of rows, axis 0, of the block output reshaped to (B * N, C), at ``Reshape(index + offsets)``
  where ``offsets`` (B, 1) are the batch rows' starts ``b * N``.  The reader walks back from the Gather
  through the Reshape to the Add and takes the operand of the sum's own shape, (B, K): the per-clip
  positions, the same form as the other pattern gives.
* dynamic batch (``--dynamic-batch``): a GatherElements
  whose index is ``Expand(Unsqueeze(index))``.

It is found by shape, not by name or constant values (so that a graph with a wrong group offset is
still read, and then caught): among such gathers, the one whose data has the stage's input token
count (G x n) and whose index has its kept count (G x (n - r)), earliest in data flow (Swin's blocks
gather with an index computed from it, of the same size).  The selection step's own gathers of a
group's metric have a group's token count, n, and are not taken for the stage's.

The copy lives in memory and in a scratch folder; the user's file is never touched.
"""

from __future__ import annotations

import contextlib
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


def _static_index(name: str, shapes: dict):
    """(name, dims) of ``name`` if it is a rank-2 int64 tensor with a static token count, else None
    (the batch may be symbolic: a ``--dynamic-batch`` export)."""
    import onnx

    index_type, dims = shapes.get(name, (None, None))
    if index_type != onnx.TensorProto.INT64 or not dims or len(dims) != 2 or not isinstance(dims[1], int):
        return None
    return name, dims


def _element_gather(node, shapes: dict, producer: dict):
    """``GatherElements(x (B, N, C), Expand(Unsqueeze(index (B, K))))``: (N, index, K), or None."""
    index = node.input[1]
    while index in producer and producer[index].op_type in _PASS_THROUGH:
        index = producer[index].input[0]
    _, data_dims = shapes.get(node.input[0], (None, None))
    found = _static_index(index, shapes)
    if index == node.input[1] or found is None or not data_dims or len(data_dims) != 3 or not isinstance(data_dims[1], int):
        return None
    return data_dims[1], index, found[1][1]


def _row_source(name: str, shapes: dict, producer: dict):
    """The (B, K) index behind a row Gather's flat index: back through ``Reshape`` to the ``Add`` of the
    per-batch row offsets (the broadcast operand, (B, 1)); the index is the operand of the sum's own
    shape.  None if the flat index is not made so."""
    while name in producer and producer[name].op_type in ("Reshape", "Flatten"):
        name = producer[name].input[0]
    node = producer.get(name)
    if node is None or node.op_type != "Add":
        return None
    _, sum_dims = shapes.get(name, (None, None))
    operand_dims = [shapes.get(source, (None, None))[1] for source in node.input]
    for index, offsets in ((0, 1), (1, 0)):
        if operand_dims[index] == sum_dims and operand_dims[offsets] is not None and operand_dims[offsets] != sum_dims:
            return _static_index(node.input[index], shapes)
    return None


def _row_gather(node, shapes: dict, producer: dict):
    """``Gather(x (B * N, C), Reshape(index (B, K) + batch offsets), axis=0)`` (sta.gather_tokens with a
    static batch): (N, index, K), or None."""
    axis = next((attribute.i for attribute in node.attribute if attribute.name == "axis"), 0)
    _, data_dims = shapes.get(node.input[0], (None, None))
    _, flat_dims = shapes.get(node.input[1], (None, None))
    if axis != 0 or not data_dims or len(data_dims) != 2 or not isinstance(data_dims[0], int) or not flat_dims or len(flat_dims) != 1:
        return None
    found = _row_source(node.input[1], shapes, producer)
    if found is None:
        return None
    index, (batch, count) = found
    if not isinstance(batch, int) or batch <= 0 or data_dims[0] % batch or flat_dims[0] != batch * count:
        return None
    return data_dims[0] // batch, index, count


def _token_gathers(proto, shapes: dict, producer: dict) -> list[tuple[int, str, int]]:
    """(data token count, index tensor, index token count) of every gather that takes tokens by a
    rank-2 int64 index with static sizes, in either form :func:`sta_deploy.sta.gather_tokens` exports."""
    readers = {"GatherElements": _element_gather, "Gather": _row_gather}
    gathers = []
    for node in proto.graph.node:
        reader = readers.get(node.op_type)
        found = reader(node, shapes, producer) if reader else None
        if found is not None:
            gathers.append(found)
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


@contextlib.contextmanager
def selection_copy(path, manifest: dict, *, folder=None):
    """Yield ``(model path, selection output names)`` for a backend that validation runs.

    A pruned model (``r1`` > 0) is run from a scratch copy with the selection outputs added
    (:func:`write_selection_model`), made in a temporary folder inside ``folder`` (default: the
    system's) and removed on exit; an unpruned one is run as it is, with names None.
    """
    import tempfile

    if manifest["r1"] <= 0:
        yield Path(path), None
        return
    with tempfile.TemporaryDirectory(prefix=".sta_selection_", dir=folder) as scratch:
        yield write_selection_model(path, manifest["schedule"], scratch)
