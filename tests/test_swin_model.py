"""Video Swin backbone: presets, parity with torchvision's swin3d and the mmaction2 layout, strict loading.

The fixture (tests/fixtures/swin/) was made by tests/fixtures/make_swin_fixture.py with torchvision
0.29.1 in a scratch environment: a small random SwinTransformer3d whose geometry exercises window
padding, shifts on all axes, patch-merging padding and a window clamped to a smaller grid.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sta_deploy
from sta_deploy import CheckpointError, ConfigError
from sta_deploy.models.registry import get_entry


from sta_deploy.models.swin import SwinConfig, VideoSwin  # noqa: E402
from sta_deploy.models.swin_checkpoints import (  # noqa: E402
    implied_architecture,
    load_swin_checkpoint,
    read_swin_checkpoint,
)

FIXTURES = Path(__file__).parent / "fixtures" / "swin"
TV_FILE = FIXTURES / "tv_swin3d_small.pt"
MM_FILE = FIXTURES / "mmaction_swin3d_small.pth"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test in this module runs PyTorch on one thread (fixture in conftest.py)."""


@pytest.fixture(scope="module")
def io():
    data = torch.load(FIXTURES / "swin3d_small_io.pt", weights_only=True)
    data["overrides"] = {k: tuple(v) if isinstance(v, list) else v for k, v in data["arch"].items()}
    return data


def _forward(model, video):
    with torch.no_grad():
        return model(video)


def test_presets_and_family():
    names = sta_deploy.list_models()
    for name in ("swin_t", "swin_s", "swin_b"):
        assert name in names
        entry = get_entry(name)
        assert entry.paper_r1 == (0, 192, 256, 320)
        assert entry.config.family == "swin"
        assert entry.config.input_shape == (3, 32, 224, 224)
        assert entry.config.patch_size == (2, 4, 4) and entry.config.window_size == (8, 7, 7)
        assert entry.config.num_classes == 400
    assert get_entry("swin_b").config.embed_dim == 128
    assert get_entry("swin_s").config.depths == (2, 2, 18, 2)
    assert SwinConfig().grids == ((16, 56, 56), (16, 28, 28), (16, 14, 14), (16, 7, 7))


def test_create_model_overrides_and_attributes():
    model = sta_deploy.create_model("swin_t", r1=8, embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=[2, 3, 3], num_frames=8, img_size=56, num_classes=7)
    assert model.name == "swin_t" and model.r1 == 8 and model.schedule.r1 == 8
    assert model.config.window_size == (2, 3, 3) and model.config.depths == (2, 2, 2, 2)
    assert model.config.as_dict()["num_classes"] == 7
    assert not model.training
    logits = _forward(model, torch.randn(1, *model.config.input_shape))
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()
    with pytest.raises(ConfigError, match="expects input of shape"):
        model(torch.randn(1, 3, 8, 64, 64))
    with pytest.raises(ConfigError, match="not divisible by num_heads"):
        SwinConfig(embed_dim=10, num_heads=(3, 6, 12, 24))
    with pytest.raises(ConfigError, match="window_size needs 3 values"):
        SwinConfig(window_size=(7, 7))


def test_torchvision_parity(io):
    model = VideoSwin(SwinConfig(**io["overrides"]))
    model.load_state_dict(torch.load(TV_FILE, weights_only=True), strict=True)
    logits = _forward(model, io["video"].float())
    assert io["logits32"].abs().max() > 1.0  # logits of a visible size: 1e-4 is a real bound
    torch.testing.assert_close(logits, io["logits32"], atol=1e-4, rtol=0)
    logits64 = _forward(model.double(), io["video"].double())
    torch.testing.assert_close(logits64, io["logits64"], atol=1e-10, rtol=0)


def test_create_model_loads_torchvision_checkpoint(io):
    model = sta_deploy.create_model("swin_t", checkpoint=str(TV_FILE), **io["overrides"])
    torch.testing.assert_close(_forward(model, io["video"].float()), io["logits32"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("path, layout", [(TV_FILE, "torchvision"), (MM_FILE, "mmaction")])
def test_loader_parity_both_layouts(io, path, layout):
    overrides = {k: v for k, v in io["overrides"].items() if k != "num_classes"}  # comes from the head
    model = load_swin_checkpoint(get_entry("swin_t"), path, r1=0, overrides=overrides)
    assert model.checkpoint_layout == layout
    assert model.config.num_classes == io["overrides"]["num_classes"]
    torch.testing.assert_close(_forward(model, io["video"].float()), io["logits32"], atol=1e-4, rtol=0)


def test_mmaction_keys_convert_to_torchvision_names():
    tv = torch.load(TV_FILE, weights_only=True)
    converted, _, layout = read_swin_checkpoint(MM_FILE)
    assert layout == "mmaction"
    assert sorted(converted) == sorted(tv)
    for key, value in tv.items():
        assert torch.equal(converted[key], value), key
    raw = torch.load(MM_FILE, weights_only=True)["state_dict"]
    assert "cls_head.fc_cls.weight" in raw and "backbone.layers.0.downsample.reduction.weight" in raw
    assert "backbone.layers.3.blocks.1.mlp.fc2.weight" in raw


def test_implied_architecture(io):
    arch = implied_architecture(torch.load(TV_FILE, weights_only=True))
    for key in ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "num_classes"):
        assert arch[key] == io["overrides"][key], key
    assert arch["window_size"] == (2, 3, 3) and arch["depths"] == (2, 2, 2, 2) and arch["mlp_ratio"] == 4.0


def test_strict_errors(io, tmp_path):
    entry = get_entry("swin_t")
    overrides = dict(io["overrides"])
    state = torch.load(TV_FILE, weights_only=True)
    broken = dict(state)
    del broken["features.2.1.mlp.3.bias"]
    broken["features.2.1.extra"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as info:
        load_swin_checkpoint(entry, tmp_path / "broken.pt", r1=0, overrides=overrides)
    assert info.value.missing == ["features.2.1.mlp.3.bias"]
    assert info.value.unexpected == ["features.2.1.extra"]
    # The wrong window (the preset's 8x7x7) is named in the message.
    wrong = {**overrides, "window_size": (8, 7, 7)}
    with pytest.raises(CheckpointError, match=r"window_size=\(2, 3, 3\)") as info:
        load_swin_checkpoint(entry, TV_FILE, r1=0, overrides=wrong)
    assert info.value.mismatched
    with pytest.raises(CheckpointError, match=r"embed_dim=6"):
        load_swin_checkpoint(entry, MM_FILE, r1=0, overrides={**overrides, "embed_dim": 12, "num_heads": (1, 2, 2, 4)})
    torch.save({"blocks.0.norm1.weight": torch.ones(3), "head.weight": torch.ones(2, 3)}, tmp_path / "vit.pt")
    with pytest.raises(CheckpointError, match="not a Video Swin checkpoint"):
        load_swin_checkpoint(entry, tmp_path / "vit.pt", r1=0, overrides=overrides)


def test_index_buffers_filled_or_refused(io, tmp_path):
    entry = get_entry("swin_t")
    state = torch.load(TV_FILE, weights_only=True)
    without = {k: v for k, v in state.items() if not k.endswith("relative_position_index")}
    torch.save(without, tmp_path / "noindex.pt")
    model = load_swin_checkpoint(entry, tmp_path / "noindex.pt", r1=0, overrides=io["overrides"])
    torch.testing.assert_close(_forward(model, io["video"].float()), io["logits32"], atol=1e-4, rtol=0)
    odd = dict(state)
    odd["features.0.0.attn.relative_position_index"] = state["features.0.0.attn.relative_position_index"].flip(0)
    torch.save(odd, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="relative-position convention"):
        load_swin_checkpoint(entry, tmp_path / "odd.pt", r1=0, overrides=io["overrides"])


def test_save_checkpoint_round_trip(io, tmp_path):
    model = load_swin_checkpoint(get_entry("swin_t"), TV_FILE, r1=8, overrides=io["overrides"])
    path = sta_deploy.save_checkpoint(model, tmp_path / "ours.pt")
    again = load_swin_checkpoint(get_entry("swin_t"), path, r1=8, overrides={})
    assert again.checkpoint_layout == "sta_deploy" and again.config == model.config
    video = io["video"].float()
    torch.testing.assert_close(_forward(again, video), _forward(model, video), atol=0, rtol=0)
    with pytest.raises(CheckpointError, match="saved from swin_t"):
        load_swin_checkpoint(get_entry("swin_s"), path, r1=0, overrides={})


def test_pruned_model_exports_to_onnx(io, tmp_path):
    """Static shapes for a fixed r1, computed index tensors: the TorchScript exporter and ORT agree."""
    ort = pytest.importorskip("onnxruntime")
    import warnings

    model = load_swin_checkpoint(get_entry("swin_t"), TV_FILE, r1=16, overrides=io["overrides"])
    video = io["video"].float()
    path = tmp_path / "swin_small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (video,), str(path), dynamo=False, opset_version=18, input_names=["video"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"video": video.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), _forward(model, video), atol=1e-4, rtol=1e-4)


def test_mmaction2_v1_final_norm_name(io, tmp_path):
    """mmaction2 1.x calls the final LayerNorm ``backbone.norm3``; both names load."""
    checkpoint = torch.load(MM_FILE, weights_only=True)
    state = checkpoint["state_dict"]
    state["backbone.norm3.weight"] = state.pop("backbone.norm.weight")
    state["backbone.norm3.bias"] = state.pop("backbone.norm.bias")
    torch.save(checkpoint, tmp_path / "mmaction2_v1.pth")
    model = load_swin_checkpoint(get_entry("swin_t"), tmp_path / "mmaction2_v1.pth", r1=0, overrides=io["overrides"])
    torch.testing.assert_close(_forward(model, io["video"].float()), io["logits32"], atol=1e-4, rtol=0)
