"""Reading Video Swin checkpoints: torchvision ``swin3d_*``, original Video Swin / mmaction2, ours.

Layouts (detected from the keys, not the file name):

* ``torchvision``: the state dict of ``torchvision.models.video.swin3d_t/s/b`` (raw, or nested the
  way :func:`.vit_checkpoints.read_checkpoint` unwraps).  Our module names are torchvision's,
  so nothing is renamed;
* ``mmaction``: the original Video Swin release (mmaction2 recognizer): ``{"state_dict": ...}``
  with ``backbone.`` keys (``layers.{s}.blocks.{j}``, ``layers.{s}.downsample``, ``mlp.fc1/fc2``)
  and an ``I3DHead`` under ``cls_head.fc_cls``; mmaction2 1.x's ``backbone.norm3`` (its name for
  the final norm) is accepted as well as the original ``backbone.norm``;
* ``sta_deploy``: a file written by :func:`sta_deploy.save_checkpoint` from a Swin model.

Loading is strict exactly like the ViT loader (:func:`.checkpoints.load_state_strict`):
missing, unexpected or mis-shaped keys raise :class:`CheckpointError` and nothing is loaded.  On
such an error the message also names the architecture the checkpoint's shapes imply (e.g. the
SSv2 Swin-B's ``window_size=(16, 7, 7)``), so the user knows which override to pass.  Only
``num_classes`` is taken from the file by itself, as for ViT.  ``relative_position_index``
buffers are a function of the window size: a checkpoint without them gets ours, one whose
buffers differ from ours is refused.
"""

from __future__ import annotations

import itertools
import re

import torch

from ..errors import CheckpointError
from .checkpoints import load_into_model, load_state_strict, normalised
from .swin_geometry import relative_position_index
# The file-level reader is VideoMAE's: it also recognises our own files and unwraps nested state
# dicts, and it tells a VideoMAE checkpoint given for a Swin apart so the error can say so.
from .vit_checkpoints import read_checkpoint

_MMACTION_BLOCK = re.compile(r"^backbone\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_MMACTION_MERGE = re.compile(r"^backbone\.layers\.(\d+)\.downsample\.(.+)$")
_MMACTION_LAST_NORM = re.compile(r"^backbone\.norm\d+\.(weight|bias)$")
_TV_BLOCK = re.compile(r"^features\.(\d+)\.(\d+)\.")


def is_mmaction_state_dict(state: dict) -> bool:
    return any(key.startswith(("backbone.", "cls_head.")) for key in state)


def is_torchvision_swin_state_dict(state: dict) -> bool:
    return any(key.startswith("features.") for key in state) and "patch_embed.proj.weight" in state


def convert_mmaction_state_dict(state: dict) -> dict:
    """Rename an original Video Swin / mmaction2 recognizer state dict to torchvision's names.

    Keys that are not understood pass through unchanged, so the strict check reports them.
    """
    converted = {}
    for key, value in state.items():
        block = _MMACTION_BLOCK.match(key)
        merge = _MMACTION_MERGE.match(key)
        if block:
            stage, index, rest = int(block[1]), block[2], block[3]
            rest = re.sub(r"^mlp\.fc1\.", "mlp.0.", rest)
            rest = re.sub(r"^mlp\.fc2\.", "mlp.3.", rest)
            new = f"features.{2 * stage}.{index}.{rest}"
        elif merge:
            new = f"features.{2 * int(merge[1]) + 1}.{merge[2]}"
        elif _MMACTION_LAST_NORM.match(key):  # mmaction2 1.x names the final norm after its stage
            new = "norm." + key.rsplit(".", 1)[1]
        elif key.startswith("cls_head.fc_cls."):
            new = "head." + key[len("cls_head.fc_cls.") :]
        elif key.startswith("backbone."):
            new = key[len("backbone.") :]
        else:
            new = key
        if new in converted:
            raise CheckpointError(f"checkpoint keys {key!r} and another both map to {new!r}; the file mixes two layouts")
        converted[new] = value
    return converted


def read_swin_checkpoint(path) -> tuple[dict, dict, str]:
    """``(state_dict in our names, config overrides from the file, layout)``.

    ``layout`` is ``"torchvision"``, ``"mmaction"`` or ``"sta_deploy"``.
    """
    state, overrides, layout = read_checkpoint(path)
    if layout == "sta_deploy":
        return state, overrides, layout
    if layout != "videomae":  # a Hugging Face VideoMAE folder or state dict
        raise CheckpointError(f"{path} is a {layout} VideoMAE checkpoint, not a Video Swin one; use a vit_* model")
    if is_mmaction_state_dict(state):
        return convert_mmaction_state_dict(state), {}, "mmaction"
    if is_torchvision_swin_state_dict(state):
        return state, {}, "torchvision"
    raise CheckpointError(
        f"{path} is not a Video Swin checkpoint (no features.* keys as in torchvision's swin3d, "
        "no backbone.* keys as in the original Video Swin / mmaction2 release)"
    )


def _window_candidates(table_length: int, volume: int):
    for wt in range(1, volume + 1):
        if volume % wt:
            continue
        for wh in range(1, volume // wt + 1):
            if (volume // wt) % wh:
                continue
            ww = volume // (wt * wh)
            if (2 * wt - 1) * (2 * wh - 1) * (2 * ww - 1) == table_length:
                yield (wt, wh, ww)


def implied_architecture(state: dict) -> dict:
    """Architecture fields the shapes of a (torchvision-named) Swin state dict reveal."""
    arch: dict = {}
    proj = state.get("patch_embed.proj.weight")
    if proj is not None and proj.dim() == 5:
        arch["embed_dim"] = int(proj.shape[0])
        arch["in_chans"] = int(proj.shape[1])
        arch["patch_size"] = tuple(int(s) for s in proj.shape[2:])
    depths, heads = [], []
    for stage in itertools.count():
        blocks = {int(m[2]) for key in state if (m := _TV_BLOCK.match(key)) and int(m[1]) == 2 * stage}
        if not blocks:
            break
        depths.append(max(blocks) + 1)
        table = state.get(f"features.{2 * stage}.0.attn.relative_position_bias_table")
        if table is not None and table.dim() == 2:
            heads.append(int(table.shape[1]))
    if depths:
        arch["depths"] = tuple(depths)
    if heads and len(heads) == len(depths):
        arch["num_heads"] = tuple(heads)
    table = state.get("features.0.0.attn.relative_position_bias_table")
    index = state.get("features.0.0.attn.relative_position_index")
    if table is not None and index is not None and index.dim() == 2:
        for window in _window_candidates(int(table.shape[0]), int(index.shape[0])):
            if torch.equal(relative_position_index(window), index.to(torch.long)):
                arch["window_size"] = window
                break
    fc1 = state.get("features.0.0.mlp.0.weight")
    if fc1 is not None and "embed_dim" in arch:
        arch["mlp_ratio"] = fc1.shape[0] / arch["embed_dim"]
    head = state.get("head.weight")
    if head is not None and head.dim() == 2:
        arch["num_classes"] = int(head.shape[0])
    return arch


def _complete_index_buffers(model, state: dict, source: str) -> dict:
    """Add missing relative_position_index buffers; refuse ones that differ from the model's."""
    state = dict(state)
    for key, buffer in model.state_dict().items():
        if not key.endswith("relative_position_index"):
            continue
        if key not in state:
            state[key] = buffer.clone()
        elif tuple(state[key].shape) == tuple(buffer.shape) and not torch.equal(state[key].to(buffer.dtype), buffer):
            raise CheckpointError(
                f"{source}: {key} differs from the index Video Swin computes for window {model.config.window_size}; "
                "the checkpoint uses another relative-position convention"
            )
    return state


def load_swin_state(model, state: dict, *, source: str = "checkpoint") -> None:
    """Strictly load a torchvision-named state dict into a :class:`VideoSwin` (hint on failure)."""
    state = _complete_index_buffers(model, state, source)
    try:
        load_state_strict(model, state, source=source)
    except CheckpointError as error:
        implied = implied_architecture(state)
        current = model.config.as_dict()
        differs = {k: v for k, v in implied.items() if k in current and normalised(current[k]) != normalised(v)}
        if not differs:
            raise
        hint = ", ".join(f"{k}={v!r}" for k, v in differs.items())
        raise CheckpointError(
            f"{error} (the checkpoint's shapes imply {hint})",
            missing=error.missing,
            unexpected=error.unexpected,
            mismatched=error.mismatched,
        ) from None


def load_swin_checkpoint(entry, checkpoint, *, r1: int, overrides: dict):
    """The registry's ``load`` for Swin presets: build with the checkpoint's ``num_classes`` and load strictly."""
    return load_into_model(entry, checkpoint, r1=r1, overrides=overrides, read=read_swin_checkpoint, load=load_swin_state)
