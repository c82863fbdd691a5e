"""Reading the checkpoints VideoMAE users have.

Accepted layouts (detected from the contents, not the file name):

* original VideoMAE ``.pth``: a raw state dict, or one nested under ``module`` (fine-tuned
  releases), ``model`` or ``state_dict``;
* a Hugging Face ``VideoMAEForVideoClassification`` directory (``config.json`` plus
  ``model.safetensors``, a sharded ``*.safetensors.index.json`` or ``pytorch_model.bin``), or such a
  state dict on its own; split query/key/value are fused into ``qkv`` with ``q_bias``/``v_bias``;
* files written by :func:`sta_deploy.save_checkpoint` (state dict plus the model's config).

Everything is loaded with ``torch.load(weights_only=True)`` and checked strictly (see
:mod:`.checkpoints`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .._io import read_json_object
from ..errors import CheckpointError
from .checkpoints import FORMAT_TAG, load_into_model, read_tensor_file
from .registry import get_entry, list_models

# ----------------------------------------------------------------------------- Hugging Face layout
def _hf_weights(directory: Path) -> dict:
    candidates = ["model.safetensors", "pytorch_model.bin"]
    for name in candidates:
        if (directory / name).is_file():
            return read_tensor_file(directory / name)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.is_file():
            weight_map = read_json_object(index, what="shard index", fix="copy the whole Hugging Face model folder", error_type=CheckpointError).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
                raise CheckpointError(f"shard index {index} has no weight_map (tensor name -> shard file); copy the whole Hugging Face model folder")
            state = {}
            for shard in sorted(set(weight_map.values())):
                if not (directory / shard).is_file():
                    raise CheckpointError(f"{directory / shard}, a shard {index_name} lists, is missing; copy the whole Hugging Face model folder")
                state.update(read_tensor_file(directory / shard))
            return state
    raise CheckpointError(
        f"{directory} has a config.json but no weights (model.safetensors, pytorch_model.bin or a sharded index); "
        "copy the whole Hugging Face model folder"
    )


def hf_config_overrides(config: dict) -> dict:
    """Architecture fields a Hugging Face ``VideoMAEConfig`` fixes that weight shapes cannot reveal."""
    if config.get("model_type") not in (None, "videomae"):
        raise CheckpointError(f"config.json describes a {config.get('model_type')!r} model, not VideoMAE")
    if not config.get("use_mean_pooling", True):
        raise CheckpointError("this VideoMAE checkpoint uses a final LayerNorm without mean pooling; only the mean-pooling classifiers are supported")
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"this VideoMAE checkpoint uses hidden_act={config.get('hidden_act')!r}; only exact GELU (\"gelu\") is supported")
    mapping = {
        "num_heads": config.get("num_attention_heads"),
        "norm_eps": config.get("layer_norm_eps"),
        "num_frames": config.get("num_frames"),
        "img_size": config.get("image_size"),
        "patch_size": config.get("patch_size"),
        "tubelet_size": config.get("tubelet_size"),
        "in_chans": config.get("num_channels"),
    }
    overrides = {key: value for key, value in mapping.items() if value is not None}
    # transformers builds the classifier's fc_norm with nn.LayerNorm's default eps.
    overrides["fc_norm_eps"] = 1e-5
    return overrides


def is_hf_state_dict(state: dict) -> bool:
    return any(key.startswith("videomae.") for key in state)


def convert_hf_state_dict(state: dict) -> dict:
    """Rename a ``VideoMAEForVideoClassification`` state dict to the original VideoMAE layout."""
    converted = {}
    layers = sorted({int(key.split(".")[3]) for key in state if key.startswith("videomae.encoder.layer.")})
    renames = {
        "videomae.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "videomae.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "fc_norm.weight": "fc_norm.weight",
        "fc_norm.bias": "fc_norm.bias",
        "classifier.weight": "head.weight",
        "classifier.bias": "head.bias",
    }
    used = set()
    for source, target in renames.items():
        if source in state:
            converted[target] = state[source]
            used.add(source)
    for index in layers:
        src = f"videomae.encoder.layer.{index}."
        dst = f"blocks.{index}."
        attention = src + "attention.attention."
        parts = [attention + f"{name}.weight" for name in ("query", "key", "value")]
        if all(part in state for part in parts):
            converted[dst + "attn.qkv.weight"] = torch.cat([state[part] for part in parts], dim=0)
            used.update(parts)
        # transformers 5 stores q/v biases on the Linear layers; 4.x kept separate q_bias/v_bias.
        for ours, candidates in (("q_bias", ("query.bias", "q_bias")), ("v_bias", ("value.bias", "v_bias"))):
            for candidate in candidates:
                if attention + candidate in state:
                    converted[dst + "attn." + ours] = state[attention + candidate]
                    used.add(attention + candidate)
                    break
            else:
                if dst + "attn.qkv.weight" in converted:  # qv_bias=False: the bias is zero
                    converted[dst + "attn." + ours] = torch.zeros(converted[dst + "attn.qkv.weight"].shape[1])
        for ours, theirs in (
            ("attn.proj", "attention.output.dense"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
        ):
            for suffix in ("weight", "bias"):
                key = f"{src}{theirs}.{suffix}"
                if key in state:
                    converted[f"{dst}{ours}.{suffix}"] = state[key]
                    used.add(key)
    # Anything we did not understand is passed through so that the strict check reports it.
    for key, value in state.items():
        if key not in used:
            converted.setdefault(key, value)
    return converted


# ----------------------------------------------------------------------------- reading any layout
def read_checkpoint(path) -> tuple[dict, dict, str]:
    """Return ``(state_dict, config_overrides, layout)`` for any supported checkpoint.

    ``layout`` is one of ``"videomae"``, ``"huggingface"`` or ``"sta_deploy"``.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a .pth file or a Hugging Face model folder")
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{path} is a folder without config.json; pass a Hugging Face model folder or a .pth file")
        config = read_json_object(config_file, what="Hugging Face config", fix="copy the model folder again", error_type=CheckpointError)
        state = _hf_weights(path)
        return convert_hf_state_dict(state), hf_config_overrides(config), "huggingface"

    loaded = read_tensor_file(path)
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict; save model.state_dict() instead")
    if loaded.get("format") == FORMAT_TAG:
        return dict(loaded["state_dict"]), dict(loaded.get("config", {})), "sta_deploy"
    for nest in ("module", "model", "state_dict"):
        if isinstance(loaded.get(nest), dict):
            loaded = loaded[nest]
            break
    state = {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path} contains no tensors; is it a VideoMAE checkpoint?")
    if any(key.startswith(("encoder.", "decoder.")) for key in state) and "head.weight" not in state:
        raise CheckpointError(
            f"{path} is a VideoMAE pre-training checkpoint (encoder./decoder. keys, no classifier); "
            "STA runs on a fine-tuned classifier: use the fine-tuned .pth"
        )
    if is_hf_state_dict(state):
        return convert_hf_state_dict(state), {"fc_norm_eps": 1e-5}, "huggingface"
    return state, {}, "videomae"


def _check_hf_architecture(checkpoint, config, *, layout: str, name: str) -> None:
    """A Hugging Face config states width and depth: name the right preset instead of a key dump."""
    if layout != "huggingface":
        return
    config_file = Path(checkpoint) / "config.json"
    if not config_file.is_file():
        return
    hf = json.loads(config_file.read_text())
    stated = {"embed_dim": hf.get("hidden_size"), "depth": hf.get("num_hidden_layers")}
    ours = {"embed_dim": config.embed_dim, "depth": config.depth}
    if any(value is not None and value != ours[key] for key, value in stated.items()):
        match = [
            other for other in list_models()
            if getattr(get_entry(other).config, "embed_dim", None) == stated["embed_dim"]
            and getattr(get_entry(other).config, "depth", None) == stated["depth"]
        ]
        fix = f"use --model {match[0]}" if match else f"pass --embed-dim {stated['embed_dim']} --depth {stated['depth']}"
        raise CheckpointError(
            f"checkpoint {checkpoint} is a VideoMAE with hidden_size={stated['embed_dim']}, num_hidden_layers={stated['depth']}, "
            f"but {name} here has embed_dim={config.embed_dim}, depth={config.depth}; {fix}"
        )


def load_vit_checkpoint(entry, checkpoint, *, r1: int, overrides: dict):
    """The registry's ``load`` for ViT presets: any layout above, loaded strictly."""
    return load_into_model(entry, checkpoint, r1=r1, overrides=overrides, read=read_checkpoint, check_config=_check_hf_architecture)
