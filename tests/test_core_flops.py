"""GFLOPs: the paper's Table 2, fvcore on the real module, parameter counts."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

import sta_deploy
from sta_deploy import count_flops, create_model

# Table 2 of Ding et al. (ICCV 2023), ViT 16x224^2, GFLOPs at r1 = 0 / 32 / 48 / 64.
TABLE_2 = {
    "vit_s": (57, 42, 35, 29),
    "vit_b": (180, 136, 116, 96),
    "vit_l": (597, 446, 376, 308),
    "vit_h": (1192, 890, 748, 611),
}
R1_VALUES = (0, 32, 48, 64)


@pytest.mark.parametrize("name", list(TABLE_2))
@pytest.mark.parametrize("column", range(4))
def test_paper_table_2(name, column):
    r1 = R1_VALUES[column]
    report = count_flops(name, r1)
    assert abs(report.gflops - TABLE_2[name][column]) <= 1.0, (name, r1, report.gflops)
    assert report.r1 == r1 and report.model == name


def test_closed_form_by_hand_vit_b():
    """12 N d^2 + 2 N^2 d per block plus the patch embedding (the reference's own recipe)."""
    d = 768  # 12 blocks: one entry of `tokens` each
    patch = 1568 * d * 3 * 2 * 16 * 16
    tokens = [1568] + [1184] * 4 + [992] * 4 + [896] * 3  # r1 = 48, stages after blocks 0, 4, 8
    blocks = sum(12 * n * d * d + 2 * n * n * d for n in tokens)
    approx = (patch + blocks) / 1e9
    report = count_flops("vit_b", 48)
    assert report.tokens_per_block == tokens
    # The recipe omits LayerNorms and the head (~0.1 GFLOPs).
    assert abs(report.gflops - approx) < 0.5
    assert report.gflops > approx


def _fvcore_gflops(model, video):
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, video)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        return analysis.total() / 1e9


# fvcore traces with torch.jit, which recent torch marks deprecated.
IGNORE_JIT_DEPRECATION = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.slow
@IGNORE_JIT_DEPRECATION
@pytest.mark.parametrize("r1", [0, 48])
def test_fvcore_on_the_real_vit_s(r1):
    pytest.importorskip("fvcore")
    torch.manual_seed(0)
    model = create_model("vit_s", r1=r1)
    video = torch.randn(1, 3, 16, 224, 224)
    measured = _fvcore_gflops(model, video)
    report = count_flops("vit_s", r1)
    assert abs(measured - report.total_gflops) <= 0.01 * report.total_gflops, (measured, report.total_gflops)
    assert abs(measured - TABLE_2["vit_s"][R1_VALUES.index(r1)]) <= 1.0
    if r1 == 0:
        assert report.sta_gflops == 0
    else:
        assert report.sta_gflops > 0


@IGNORE_JIT_DEPRECATION
def test_fvcore_on_a_small_pruned_model():
    pytest.importorskip("fvcore")
    torch.manual_seed(0)
    overrides = dict(embed_dim=64, depth=6, num_heads=4, img_size=64)
    model = create_model("vit_b", r1=5, **overrides)
    measured = _fvcore_gflops(model, torch.randn(1, 3, 16, 64, 64))
    report = count_flops("vit_b", 5, **overrides)
    assert abs(measured - report.total_gflops) <= 0.01 * report.total_gflops


def test_params_equal_the_instantiated_vit_s():
    torch.manual_seed(0)
    model = create_model("vit_s")
    assert count_flops("vit_s").params == sum(p.numel() for p in model.parameters())
    assert count_flops("vit_s", 48).params == count_flops("vit_s").params  # pruning removes no weight


def test_params_equal_a_small_override_model():
    overrides = dict(embed_dim=48, depth=5, num_heads=3, num_classes=17, img_size=32, num_frames=8)
    model = create_model("vit_l", **overrides)
    assert count_flops("vit_l", **overrides).params == sum(p.numel() for p in model.parameters())


def test_flops_decrease_with_r1_and_report_shapes():
    reports = [count_flops("vit_s", r1) for r1 in R1_VALUES]
    values = [report.gflops for report in reports]
    assert values == sorted(values, reverse=True)
    assert reports[2].tokens_per_stage == [1184, 992, 896]
    data = reports[2].as_dict()
    assert data["total_gflops"] == pytest.approx(data["gflops"] + data["sta_gflops"])
    assert sum(data["breakdown"][k] for k in ("patch_embed", "blocks", "head")) == pytest.approx(data["gflops"])


def test_lazy_exports():
    assert sta_deploy.FlopsReport is type(count_flops("vit_s"))
