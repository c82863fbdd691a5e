"""Model registry: ``create_model(name, *, r1=0, checkpoint=None, **overrides)`` and ``list_models()``."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    config: object  # a frozen config dataclass (VitConfig, ...)
    build: Callable[..., nn.Module]  # build(config, r1=..., name=...) -> nn.Module
    paper_r1: tuple[int, ...]  # the r1 values the paper publishes for this model


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
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
        name: a preset from :func:`list_models` (``vit_s``, ``vit_b``, ``vit_l``, ``vit_h``).
        r1: tokens STA drops per group at every stage (0 = unpruned).
        checkpoint: optional path to weights: an original VideoMAE ``.pth`` (raw, or nested under
            ``module``/``model``), a Hugging Face ``VideoMAEForVideoClassification`` directory, or a
            file written by :func:`sta_deploy.save_checkpoint`.  ``num_classes`` (and for Hugging
            Face the head count and LayerNorm eps) come from the checkpoint.
        seed: without a checkpoint, initialise the random weights from this seed (recorded as
            ``model.init_seed`` so that exports can rebuild the same reference); ``None`` uses the
            global RNG.
        **overrides: config fields, e.g. ``embed_dim``, ``depth``, ``num_heads``, ``num_classes``,
            ``num_frames``, ``img_size``.
    """
    entry = get_entry(name)
    if checkpoint is None:
        config = resolve_config(name, **overrides)
        if seed is None:
            model = entry.build(config, r1=r1, name=name)
        else:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model = entry.build(config, r1=r1, name=name)
        model.init_seed = seed
        return model.eval()
    if entry.config.family == "swin":
        from .swin_checkpoints import load_swin_into_model as load_into_model
    else:
        from .checkpoints import load_into_model

    return load_into_model(entry, checkpoint, r1=r1, overrides=overrides).eval()


def _register_builtin():
    from .models.vit import VideoViT, VitConfig

    def build_vit(config, *, r1=0, name=None):
        return VideoViT(config, r1=r1, name=name)

    presets = [
        ("vit_s", "VideoMAE ViT-S/16, 16x224^2", VitConfig(embed_dim=384, depth=12, num_heads=6)),
        ("vit_b", "VideoMAE ViT-B/16, 16x224^2", VitConfig(embed_dim=768, depth=12, num_heads=12)),
        ("vit_l", "VideoMAE ViT-L/16, 16x224^2", VitConfig(embed_dim=1024, depth=24, num_heads=16)),
        ("vit_h", "VideoMAE ViT-H/16, 16x224^2", VitConfig(embed_dim=1280, depth=32, num_heads=16)),
    ]
    for name, description, config in presets:
        register_model(ModelEntry(name, description, config, build_vit, paper_r1=(0, 32, 48, 64)))

    from .models.swin import register as register_swin

    register_swin()


_register_builtin()
