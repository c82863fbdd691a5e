"""The model table: ``create_model(name, *, r1=0, checkpoint=None, **overrides)`` and ``list_models()``.

A leaf: it knows nothing of any backbone.  Each backbone module (:mod:`.vit`, :mod:`.swin`) adds its
presets when it is imported, with the three functions that make a model of that family (``build``),
load a checkpoint into one (``load``) and count its FLOPs (``flops``); importing
:mod:`sta_deploy.models` imports them all.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    config: object  # a frozen config dataclass (VitConfig, SwinConfig)
    build: Callable[..., nn.Module]  # build(config, r1=..., name=...) -> nn.Module
    load: Callable[..., nn.Module]  # load(entry, checkpoint, r1=..., overrides=...) -> nn.Module with the weights
    flops: Callable[..., object]  # flops(config, r1, name=...) -> FlopsReport
    paper_r1: tuple[int, ...]  # the r1 values the paper publishes for this model


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add ``entry``; registering the same preset again (a module re-imported) is a no-op."""
    existing = _REGISTRY.get(entry.name)
    if existing is not None and existing != entry:
        raise ValueError(f"model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, in registration order."""
    return list(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint}; choose one of: {', '.join(_REGISTRY)}") from None


def resolve_config(name: str, **overrides):
    """The preset's config with ``overrides`` applied (``None`` values are ignored)."""
    entry = get_entry(name)
    overrides = {key: value for key, value in overrides.items() if value is not None}
    allowed = {field.name for field in dataclasses.fields(entry.config)}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ConfigError(f"unknown override(s) {', '.join(unknown)} for {name}; allowed: {', '.join(sorted(allowed))}")
    return dataclasses.replace(entry.config, **overrides)


def create_model(name: str, *, r1: int = 0, checkpoint=None, seed: int | None = None, **overrides) -> nn.Module:
    """Build a model from the registry in eval mode.

    Args:
        name: a preset from :func:`list_models` (``vit_s/b/l/h``, ``swin_t/s/b``).
        r1: tokens STA drops per group at the first stage (0 = unpruned).
        checkpoint: optional path to weights.  ViT: an original VideoMAE ``.pth`` (raw, or nested
            under ``module``/``model``), a Hugging Face ``VideoMAEForVideoClassification`` directory.
            Swin: a torchvision ``swin3d_*`` state dict or an original Video Swin / mmaction2
            checkpoint.  Both: a file written by :func:`sta_deploy.save_checkpoint`.
            ``num_classes`` (and for Hugging Face the head count and LayerNorm eps) come from the
            checkpoint.
        seed: without a checkpoint, initialise the random weights from this seed (recorded as
            ``model.init_seed`` so that exports can rebuild the same reference); ``None`` uses the
            global RNG.
        **overrides: config fields, e.g. ``embed_dim``, ``depth``/``depths``, ``num_heads``,
            ``num_classes``, ``num_frames``, ``img_size``, ``window_size``.
    """
    entry = get_entry(name)
    if checkpoint is not None:
        return entry.load(entry, checkpoint, r1=r1, overrides=overrides).eval()
    config = resolve_config(name, **overrides)
    if seed is None:
        model = entry.build(config, r1=r1, name=name)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = entry.build(config, r1=r1, name=name)
    model.init_seed = seed
    return model.eval()
