"""What every backbone's checkpoint loading shares, and sta_deploy's own checkpoint files.

* reading a tensor file: ``torch.load(weights_only=True)`` or safetensors, with one-line errors;
* strict loading: a checkpoint that does not fit raises :class:`CheckpointError` listing the missing,
  unexpected and mis-shaped keys, and nothing is loaded;
* :func:`load_into_model`: build a registry entry's model with the checkpoint's config fields and load
  it, given the backbone's reader (:mod:`.vit_checkpoints`, :mod:`.swin_checkpoints`);
* :func:`save_checkpoint` (state dict plus the model's config) and :func:`checkpoint_sha256`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import torch

from .._io import atomic_path, sha256_file
from ..errors import CheckpointError, ConfigError, first_line
from .registry import resolve_config

FORMAT_TAG = "sta_deploy.checkpoint"
FORMAT_VERSION = 1
# Keys that are fixed tables in our models (not parameters) and may appear in some exports.
IGNORED_KEYS = {"pos_embed"}
_SHOW = 4


def _short(keys) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:_SHOW])
    more = f", ... (+{len(keys) - _SHOW})" if len(keys) > _SHOW else ""
    return f"[{shown}{more}]"


def _is_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (or, in its legacy format, a pickle stream): check the first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _torch_load(path: Path):
    if not _is_torch_file(path):
        raise CheckpointError(
            f"{path} is not a readable checkpoint: expected a file written by torch.save (.pth, .pt, .bin), "
            "a .safetensors file or a Hugging Face model folder; download or save it again"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file; all mean the same to the user
        text = first_line(error)
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            raise CheckpointError(
                f"refusing to load {path}: it pickles Python objects beyond tensors ({text[:120]}); "
                "re-save it with torch.save(model.state_dict(), path)"
            ) from None
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(error).__name__}: {text[:120]}); "
            "the file is truncated or not a PyTorch checkpoint: download or save it again"
        ) from None


def _safetensors_load(path: Path):
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - safetensors is a base dependency
        raise CheckpointError(f"{path} is a safetensors file; install safetensors (pip install safetensors)") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:
        raise CheckpointError(
            f"cannot read safetensors file {path} ({type(error).__name__}: {str(error)[:120]}); "
            "the file is truncated or corrupt: download or save it again"
        ) from None


def read_tensor_file(path: Path):
    """A state dict (or whatever the file pickles, tensors only) from a ``.pth``/``.bin`` or ``.safetensors`` file."""
    if path.suffix == ".safetensors":
        return _safetensors_load(path)
    return _torch_load(path)


def fit_report(model_state: dict, state: dict) -> tuple[list, list, list]:
    """Missing, unexpected and mis-shaped keys of ``state`` against ``model_state``."""
    missing = [key for key in model_state if key not in state]
    unexpected = [key for key in state if key not in model_state and key not in IGNORED_KEYS]
    mismatched = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(model_state[key].shape)}"
        for key in model_state
        if key in state and tuple(state[key].shape) != tuple(model_state[key].shape)
    ]
    return missing, unexpected, mismatched


def load_state_strict(model, state: dict, *, source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` or raise :class:`CheckpointError`; never a partial load."""
    model_state = model.state_dict()
    missing, unexpected, mismatched = fit_report(model_state, state)
    if missing or unexpected or mismatched:
        name = getattr(model, "name", type(model).__name__)
        config = getattr(model, "config", None)
        arch = ""
        if config is not None and hasattr(config, "embed_dim"):
            arch = f" (embed_dim={config.embed_dim}, depth={getattr(config, 'depth', getattr(config, 'depths', '?'))})"
        raise CheckpointError(
            f"{source} does not fit {name}{arch}: {len(missing)} missing {_short(missing)}, "
            f"{len(unexpected)} unexpected {_short(unexpected)}, {len(mismatched)} mis-shaped {_short(mismatched)}; "
            "choose the --model preset (or overrides) the checkpoint was trained with",
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )
    filtered = {key: value.to(model_state[key].dtype) for key, value in state.items() if key in model_state}
    model.load_state_dict(filtered, strict=True)


def normalised(value):
    """Lists (from JSON) and tuples compare equal."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def load_into_model(entry, checkpoint, *, r1: int, overrides: dict, read, load=load_state_strict, check_config=None):
    """Build ``entry``'s model with the checkpoint's config fields and load its weights strictly.

    ``read(path) -> (state, config_fields, layout)`` and ``load(model, state, source=...)`` are the
    backbone's; ``check_config(checkpoint, config, layout=..., name=...)`` may refuse a config before the model is
    built (a Hugging Face folder that states another width).
    """
    state, file_overrides, layout = read(checkpoint)
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if layout == "sta_deploy":
        saved = dict(file_overrides)
        saved_name = saved.pop("__model__", entry.name)
        if saved_name != entry.name:
            raise CheckpointError(f"{checkpoint} was saved from {saved_name}, not {entry.name}; use --model {saved_name}")
        file_overrides = saved
    for key, value in file_overrides.items():
        if key in overrides and normalised(overrides[key]) != normalised(value):
            raise ConfigError(f"override {key}={overrides[key]!r} contradicts the checkpoint's {key}={value!r}; drop the override")
    merged = {**file_overrides, **overrides}
    head = state.get("head.weight")
    if "num_classes" not in overrides and head is not None and head.dim() == 2:
        merged["num_classes"] = int(head.shape[0])
    config = resolve_config(entry.name, **merged)
    if check_config is not None:
        check_config(checkpoint, config, layout=layout, name=entry.name)
    model = entry.build(config, r1=r1, name=entry.name)
    load(model, state, source=f"checkpoint {checkpoint} ({layout} layout)")
    model.checkpoint_path = str(checkpoint)
    model.checkpoint_layout = layout
    return model


def save_checkpoint(model, path) -> Path:
    """Write ``model``'s weights and config to ``path`` atomically (readable by ``create_model``)."""
    path = Path(path)
    config = asdict(model.config)
    config["__model__"] = model.name
    payload = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "config": config, "state_dict": model.state_dict()}
    with atomic_path(path) as temp:
        torch.save(payload, temp)
    return path


def checkpoint_sha256(path) -> str:
    """sha256 of a checkpoint file, or of a Hugging Face folder's config and weight files."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for child in sorted(path.iterdir()):
        if child.is_file() and child.suffix in (".json", ".safetensors", ".bin"):
            digest.update(child.name.encode())
            digest.update(sha256_file(child).encode())
    return digest.hexdigest()
