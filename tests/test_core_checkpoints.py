"""Checkpoint loading: parity with Hugging Face transformers' VideoMAE, the original .pth layout,
sta_deploy's own format, and the errors for files that do not fit."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

import sta_deploy
from sta_deploy import CheckpointError, ConfigError, create_model

transformers = pytest.importorskip("transformers")
from transformers import VideoMAEConfig, VideoMAEForVideoClassification  # noqa: E402

HIDDEN, LAYERS, HEADS, LABELS = 64, 3, 4, 7


# ----------------------------------------------------------------------------- building blocks
def make_hf_model(*, image_size=64, num_frames=16, layer_norm_eps=1e-6, num_labels=LABELS, seed=0):
    """A small random VideoMAEForVideoClassification with every parameter clearly non-default."""
    config = VideoMAEConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=4 * HIDDEN,
        num_frames=num_frames,
        image_size=image_size,
        patch_size=16,
        tubelet_size=2,
        num_labels=num_labels,
        use_mean_pooling=True,
        layer_norm_eps=layer_norm_eps,
    )
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = VideoMAEForVideoClassification(config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "layernorm" in name or "fc_norm" in name:
                value = 1.0 + 0.5 * noise if name.endswith("weight") else 0.5 * noise
            elif name.endswith("bias"):
                value = 0.5 * noise
            else:
                fan_in = parameter[0].numel()
                value = 1.5 * noise / math.sqrt(fan_in)
            parameter.copy_(value)
    return model.eval()


def hf_logits(model, video):
    """video (B, C, T, H, W) -> HF logits (HF takes (B, T, C, H, W))."""
    with torch.no_grad():
        return model(pixel_values=video.permute(0, 2, 1, 3, 4)).logits


def to_videomae_pth_state(hf_model) -> dict:
    """The same weights in the ORIGINAL VideoMAE layout, written out key by key here."""
    sd = hf_model.state_dict()
    out = {
        "patch_embed.proj.weight": sd["videomae.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["videomae.embeddings.patch_embeddings.projection.bias"],
        "fc_norm.weight": sd["fc_norm.weight"],
        "fc_norm.bias": sd["fc_norm.bias"],
        "head.weight": sd["classifier.weight"],
        "head.bias": sd["classifier.bias"],
    }
    for i in range(hf_model.config.num_hidden_layers):
        src = f"videomae.encoder.layer.{i}."
        att = src + "attention.attention."
        dst = f"blocks.{i}."
        out[dst + "norm1.weight"] = sd[src + "layernorm_before.weight"]
        out[dst + "norm1.bias"] = sd[src + "layernorm_before.bias"]
        out[dst + "attn.qkv.weight"] = torch.cat([sd[att + "query.weight"], sd[att + "key.weight"], sd[att + "value.weight"]], dim=0)
        out[dst + "attn.q_bias"] = sd[att + "query.bias"]
        out[dst + "attn.v_bias"] = sd[att + "value.bias"]
        out[dst + "attn.proj.weight"] = sd[src + "attention.output.dense.weight"]
        out[dst + "attn.proj.bias"] = sd[src + "attention.output.dense.bias"]
        out[dst + "norm2.weight"] = sd[src + "layernorm_after.weight"]
        out[dst + "norm2.bias"] = sd[src + "layernorm_after.bias"]
        out[dst + "mlp.fc1.weight"] = sd[src + "intermediate.dense.weight"]
        out[dst + "mlp.fc1.bias"] = sd[src + "intermediate.dense.bias"]
        out[dst + "mlp.fc2.weight"] = sd[src + "output.dense.weight"]
        out[dst + "mlp.fc2.bias"] = sd[src + "output.dense.bias"]
    return {key: value.clone() for key, value in out.items()}


def video_for(image_size=64, num_frames=16, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, num_frames, image_size, image_size, generator=generator)


def run(model, video):
    with torch.no_grad():
        return model(video)


@pytest.fixture(scope="module")
def hf_small():
    return make_hf_model(image_size=64, layer_norm_eps=1e-6, seed=0)


# ----------------------------------------------------------------------------- Hugging Face parity
@pytest.mark.parametrize("layer_norm_eps,image_size", [(1e-6, 64), (1e-12, 32), (0.1, 64)])
def test_hf_safetensors_folder_parity(tmp_path, layer_norm_eps, image_size):
    hf = make_hf_model(image_size=image_size, layer_norm_eps=layer_norm_eps, seed=1)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    model = create_model("vit_s", checkpoint=tmp_path, embed_dim=HIDDEN, depth=LAYERS)
    assert model.config.num_heads == HEADS  # from config.json, not the vit_s preset's 6
    assert model.config.num_classes == LABELS  # inferred from the classifier
    assert model.config.norm_eps == layer_norm_eps
    assert model.config.fc_norm_eps == 1e-5  # transformers' fc_norm is a default nn.LayerNorm
    assert model.config.img_size == image_size
    assert model.checkpoint_layout == "huggingface"
    video = video_for(image_size, seed=2)
    expected = hf_logits(hf, video)
    assert expected.abs().max() > 0.5  # not a degenerate model
    torch.testing.assert_close(run(model, video), expected, rtol=0, atol=1e-4)


def test_hf_pytorch_model_bin_folder_parity(tmp_path, hf_small):
    # transformers 5 writes safetensors even with safe_serialization=False, so write the .bin by hand.
    hf_small.config.save_pretrained(tmp_path)
    torch.save(hf_small.state_dict(), tmp_path / "pytorch_model.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "pytorch_model.bin"]
    model = create_model("vit_s", checkpoint=tmp_path, embed_dim=HIDDEN, depth=LAYERS)
    video = video_for(seed=3)
    torch.testing.assert_close(run(model, video), hf_logits(hf_small, video), rtol=0, atol=1e-4)


def test_hf_sharded_safetensors_parity(tmp_path, hf_small):
    hf_small.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    model = create_model("vit_s", checkpoint=tmp_path, embed_dim=HIDDEN, depth=LAYERS)
    video = video_for(seed=4)
    torch.testing.assert_close(run(model, video), hf_logits(hf_small, video), rtol=0, atol=1e-4)


def test_hf_state_dict_file_without_folder(tmp_path, hf_small):
    """A bare transformers state dict (no config.json): renamed on the fly; heads come from the user."""
    path = tmp_path / "hf_state.bin"
    torch.save(hf_small.state_dict(), path)
    model = create_model("vit_s", checkpoint=path, embed_dim=HIDDEN, depth=LAYERS, num_heads=HEADS, img_size=64)
    assert model.checkpoint_layout == "huggingface"
    assert model.config.fc_norm_eps == 1e-5
    video = video_for(seed=8)
    torch.testing.assert_close(run(model, video), hf_logits(hf_small, video), rtol=0, atol=1e-4)


def test_hf_checkpoint_contradicting_override_is_refused(tmp_path, hf_small):
    hf_small.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"num_heads=2.*contradicts.*num_heads=4"):
        create_model("vit_s", checkpoint=tmp_path, embed_dim=HIDDEN, depth=LAYERS, num_heads=2)


# ----------------------------------------------------------------------------- original .pth layout
@pytest.mark.parametrize("nesting", ["raw", "module", "model"])
def test_original_videomae_pth_parity(tmp_path, hf_small, nesting):
    state = to_videomae_pth_state(hf_small)
    payload = {"raw": state, "module": {"module": state}, "model": {"model": state, "epoch": 29}}[nesting]
    path = tmp_path / "checkpoint.pth"
    torch.save(payload, path)
    video = video_for(seed=5)
    expected = hf_logits(hf_small, video)

    # Original VideoMAE uses eps 1e-6 everywhere, also for fc_norm: that is the default here.
    model = create_model("vit_s", checkpoint=path, embed_dim=HIDDEN, depth=LAYERS, num_heads=HEADS, img_size=64)
    assert model.checkpoint_layout == "videomae"
    assert model.config.num_classes == LABELS
    assert model.config.norm_eps == 1e-6 and model.config.fc_norm_eps == 1e-6
    assert model.fc_norm.eps == 1e-6
    # transformers' fc_norm uses eps 1e-5: with it overridden the logits are exactly HF's.
    model_hf_eps = create_model(
        "vit_s", checkpoint=path, embed_dim=HIDDEN, depth=LAYERS, num_heads=HEADS, img_size=64, fc_norm_eps=1e-5
    )
    torch.testing.assert_close(run(model_hf_eps, video), expected, rtol=0, atol=1e-4)
    # With the original eps 1e-6 only fc_norm's eps differs from HF; on these O(1)-variance
    # features that moves the logits by ~1e-5 at most (measured ~2e-6), far below their scale (~4).
    difference = (run(model, video) - expected).abs().max().item()
    assert difference < 1e-3


def test_head_of_174_classes_is_inferred(tmp_path):
    hf = make_hf_model(image_size=32, num_labels=174, seed=6)
    path = tmp_path / "ssv2.pth"
    torch.save({"module": to_videomae_pth_state(hf)}, path)
    model = create_model("vit_s", checkpoint=path, embed_dim=HIDDEN, depth=LAYERS, num_heads=HEADS, img_size=32, fc_norm_eps=1e-5)
    assert model.config.num_classes == 174
    video = video_for(32, seed=6, batch=1)
    logits = run(model, video)
    assert logits.shape == (1, 174)
    torch.testing.assert_close(logits, hf_logits(hf, video), rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- sta_deploy's own format
def test_save_checkpoint_round_trip(tmp_path, hf_small):
    hf_small.save_pretrained(tmp_path / "hf")
    model = create_model("vit_s", checkpoint=tmp_path / "hf", embed_dim=HIDDEN, depth=LAYERS)
    path = sta_deploy.save_checkpoint(model, tmp_path / "saved.pt")
    assert Path(path) == tmp_path / "saved.pt"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []

    reloaded = create_model("vit_s", checkpoint=path)  # no overrides: everything comes from the file
    assert reloaded.checkpoint_layout == "sta_deploy"
    assert reloaded.config == model.config
    video = video_for(seed=7)
    assert torch.equal(run(reloaded, video), run(model, video))

    # Pruned: loading the file at r1 = 3 equals the same weights pruned in memory.
    in_memory = create_model("vit_s", r1=3, **{k: v for k, v in model.config.as_dict().items()})
    in_memory.load_state_dict(model.state_dict())
    pruned = create_model("vit_s", r1=3, checkpoint=path)
    with torch.no_grad():
        logits_a, kept_a = in_memory(video, return_kept=True)
        logits_b, kept_b = pruned(video, return_kept=True)
    assert torch.equal(logits_a, logits_b)
    assert all(torch.equal(a, b) for a, b in zip(kept_a, kept_b))
    assert not torch.allclose(logits_a, run(model, video), atol=1e-4)  # pruning did something

    # A pruned model saved and reloaded at the same r1 is the same pruned model.
    path2 = sta_deploy.save_checkpoint(pruned, tmp_path / "pruned.pt")
    assert torch.equal(run(create_model("vit_s", r1=3, checkpoint=path2), video), logits_b)


def test_sta_deploy_file_for_another_preset_is_refused(tmp_path):
    torch.manual_seed(0)
    model = create_model("vit_s", embed_dim=32, depth=3, num_heads=2, img_size=32)
    path = sta_deploy.save_checkpoint(model, tmp_path / "s.pt")
    with pytest.raises(CheckpointError, match=r"saved from vit_s.*--model vit_s"):
        create_model("vit_b", checkpoint=path)


# ----------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def small_pth(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("vit_s", embed_dim=64, depth=3, num_heads=4, img_size=32)
    path = tmp_path_factory.mktemp("pth") / "small.pth"
    torch.save(model.state_dict(), path)
    return path


def test_wrong_width_lists_mis_shaped_keys(small_pth):
    with pytest.raises(CheckpointError) as info:
        create_model("vit_s", checkpoint=small_pth, embed_dim=128, depth=3, num_heads=4, img_size=32)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.missing == [] and error.unexpected == []
    assert "patch_embed.proj.weight: checkpoint (64, 3, 2, 16, 16) vs model (128, 3, 2, 16, 16)" in error.mismatched
    # Every key but head.bias (400 classes either way) has the wrong width.
    expected = [key for key in create_model("vit_s", embed_dim=128, depth=3, num_heads=4, img_size=32).state_dict() if key != "head.bias"]
    assert [entry.split(":")[0] for entry in error.mismatched] == expected
    message = str(error)
    assert "mis-shaped" in message and "patch_embed.proj.weight" in message and "embed_dim=128" in message


def test_wrong_depth_lists_missing_and_unexpected_keys(small_pth):
    with pytest.raises(CheckpointError) as info:
        create_model("vit_s", checkpoint=small_pth, embed_dim=64, depth=4, num_heads=4, img_size=32)
    assert "blocks.3.attn.qkv.weight" in info.value.missing
    assert len(info.value.missing) == 13  # one block's parameters
    assert info.value.unexpected == [] and info.value.mismatched == []
    assert "13 missing" in str(info.value) and "blocks.3." in str(info.value)

    # Keys the model does not have are reported as unexpected.
    state = torch.load(small_pth, weights_only=True)
    state["blocks.3.norm1.weight"] = torch.ones(64)
    state["extra.bias"] = torch.ones(3)
    path = small_pth.with_name("extra.pth")
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        create_model("vit_s", checkpoint=path, embed_dim=64, depth=3, num_heads=4, img_size=32)
    assert sorted(info.value.unexpected) == ["blocks.3.norm1.weight", "extra.bias"]
    assert "2 unexpected" in str(info.value) and "extra.bias" in str(info.value)


def test_truncated_pth(tmp_path, small_pth):
    data = small_pth.read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        create_model("vit_s", checkpoint=path, embed_dim=64, depth=3, num_heads=4, img_size=32)
    assert str(path) in str(info.value)


def test_truncated_safetensors_in_hf_folder(tmp_path, hf_small):
    hf_small.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        create_model("vit_s", checkpoint=tmp_path, embed_dim=HIDDEN, depth=LAYERS)


def test_missing_path(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        create_model("vit_s", checkpoint=path)
    assert "nope.pth" in str(info.value)


def _side_effect(path):
    Path(path).write_text("executed")
    return {}


class _Trap:
    """Unpickling this (outside weights_only) would call _side_effect and write a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_side_effect, (self.path,))


def test_pickle_with_python_object_is_refused(tmp_path, small_pth):
    marker = tmp_path / "marker.txt"
    state = torch.load(small_pth, weights_only=True)
    path = tmp_path / "evil.pth"
    torch.save({"model": state, "trap": _Trap(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing to load") as info:
        create_model("vit_s", checkpoint=path, embed_dim=64, depth=3, num_heads=4, img_size=32)
    assert "state_dict" in str(info.value)  # names the fix
    assert not marker.exists()


def test_pretraining_checkpoint_is_refused(tmp_path):
    state = {
        "encoder.patch_embed.proj.weight": torch.zeros(64, 3, 2, 16, 16),
        "encoder.blocks.0.norm1.weight": torch.ones(64),
        "decoder.blocks.0.norm1.weight": torch.ones(32),
        "encoder_to_decoder.weight": torch.zeros(32, 64),
    }
    path = tmp_path / "pretrain.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="pre-training") as info:
        create_model("vit_s", checkpoint=path, embed_dim=64, depth=3, num_heads=4, img_size=32)
    assert "fine-tuned" in str(info.value)


def test_folder_without_config_json(tmp_path, hf_small):
    hf_small.save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="without config.json"):
        create_model("vit_s", checkpoint=tmp_path, embed_dim=HIDDEN, depth=LAYERS)


def test_folder_with_config_but_no_weights(tmp_path, hf_small):
    hf_small.config.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no weights"):
        create_model("vit_s", checkpoint=tmp_path, embed_dim=HIDDEN, depth=LAYERS)


def test_folder_with_broken_config_json(tmp_path, hf_small):
    hf_small.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        create_model("vit_s", checkpoint=tmp_path, embed_dim=HIDDEN, depth=LAYERS)


def test_hf_config_of_another_model_type(tmp_path, hf_small):
    hf_small.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "vit"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not VideoMAE"):
        create_model("vit_s", checkpoint=tmp_path, embed_dim=HIDDEN, depth=LAYERS)


def test_file_holding_a_tensor_not_a_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        create_model("vit_s", checkpoint=path)


def test_error_types_are_value_errors():
    assert issubclass(CheckpointError, ValueError)
    assert issubclass(ConfigError, ValueError)


def test_hf_folder_of_another_width_names_the_fix(tmp_path, hf_small):
    """config.json states hidden_size/num_hidden_layers: the error says which flags (or preset) fit."""
    hf_small.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as info:
        create_model("vit_b", checkpoint=tmp_path)
    message = str(info.value)
    assert f"hidden_size={HIDDEN}" in message and f"num_hidden_layers={LAYERS}" in message
    assert f"--embed-dim {HIDDEN} --depth {LAYERS}" in message
    assert "\n" not in message


def test_hf_folder_with_unsupported_activation(tmp_path, hf_small):
    hf_small.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hidden_act"] = "relu"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="hidden_act='relu'"):
        create_model("vit_s", checkpoint=tmp_path, embed_dim=HIDDEN, depth=LAYERS)
