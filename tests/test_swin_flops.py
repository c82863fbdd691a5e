"""Video Swin FLOPs: the paper's Table 3, the CLI, fvcore on a small model, parameter counts."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from click.testing import CliRunner

import sta_deploy
from sta_deploy.models.flops import count_flops


from sta_deploy.models.swin import SwinConfig, VideoSwin  # noqa: E402
from sta_deploy.models.swin_flops import swin_flops  # noqa: E402

R1 = (0, 192, 256, 320)
# Table 3 of the paper (GFLOPs, 32x224^2); Swin-B SSv2 uses the 16x7x7 window and 174 classes.
TABLE3 = [
    ("swin_t", {}, (88, 68, 61, 54)),
    ("swin_s", {}, (166, 121, 106, 91)),
    ("swin_b", {}, (282, 202, 176, 149)),
    ("swin_b", {"window_size": (16, 7, 7), "num_classes": 174}, (321, 241, 215, 188)),
]
SMALL = dict(embed_dim=6, depths=(2, 2, 2, 2), num_heads=(1, 2, 3, 3), window_size=(2, 3, 3), num_classes=11, num_frames=8, img_size=56)


@pytest.mark.parametrize("name, overrides, paper", TABLE3, ids=["swin_t", "swin_s", "swin_b_k400", "swin_b_ssv2"])
def test_table3(name, overrides, paper):
    for r1, expected in zip(R1, paper):
        report = count_flops(name, r1, **overrides)
        assert abs(report.gflops - expected) < 1.0, (name, r1, report.gflops, expected)
        assert report.r1 == r1 and report.model == name
        assert 0 <= report.sta_gflops < 2.5  # STA's own similarity products, reported apart
        assert (report.sta_gflops == 0) == (r1 == 0)


def test_cli_flops():
    from sta_deploy.cli.app import cli

    result = CliRunner().invoke(cli, ["flops", "--model", "swin_t", "--r1", "256"])
    assert result.exit_code == 0, result.output
    assert "60.8" in result.output and "swin_t" in result.output
    result = CliRunner().invoke(cli, ["flops", "--model", "swin_t", "--r1", "256", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert round(data["gflops"]) == 61 and data["tokens_per_stage"] == [16 * 528, 16 * 100, 16 * 17]
    result = CliRunner().invoke(cli, ["flops", "--model", "swin_t", "--r1", "100"])
    assert result.exit_code != 0 and "multiple of 8" in str(result.exception)


def test_cli_main_reports_impossible_r1(capsys):
    from sta_deploy.cli.app import main

    assert main(["flops", "--model", "swin_t", "--r1", "392"]) == 1
    assert "the largest r1 for this model is 384" in capsys.readouterr().err


def test_parameter_counts_match_torchvision():
    # torchvision's published num_params of swin3d_t/s/b (K400 heads).
    assert count_flops("swin_t").params == 28158070
    assert count_flops("swin_s").params == 49816678
    assert count_flops("swin_b").params == 88048984
    model = VideoSwin(SwinConfig(**SMALL))
    assert swin_flops(model.config, 0).params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("r1", [0, 8, 16])
def test_closed_form_matches_fvcore(r1, one_torch_thread):
    fvcore = pytest.importorskip("fvcore.nn")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    model = VideoSwin(SwinConfig(**SMALL), r1=r1)
    analysis = fvcore.FlopCountAnalysis(model, torch.randn(1, *model.config.input_shape))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    counted = analysis.total()
    report = swin_flops(model.config, r1)
    # fvcore sees the backbone and STA's own products; the closed form reports them apart.
    assert counted == round((report.gflops + report.sta_gflops) * 1e9)
    assert report.tokens_per_block[0] == 4 * 14 * 14
