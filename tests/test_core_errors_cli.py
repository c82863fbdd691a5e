"""User errors (ConfigError with a message that names the fix) and the sta-deploy CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sta_deploy import ConfigError, StaDeployError, count_flops, create_model, list_models
from sta_deploy.cli import main
from sta_deploy.models.registry import get_entry
from sta_deploy.cli.app import COMMANDS

TINY = dict(embed_dim=32, depth=3, num_heads=2, img_size=64)  # 16 patches per slice


def largest_r1(num_spatial: int) -> int:
    """By hand: after stage 1 a slice keeps s - r; stage 2 groups of 2(s - r) keep 2s - 3r; stage 3
    groups of 2(2s - 3r) keep 4s - 7r.  All must stay >= 1."""
    return max(r for r in range(num_spatial) if min(num_spatial - r, 2 * num_spatial - 3 * r, 4 * num_spatial - 7 * r) >= 1)


# ----------------------------------------------------------------------------- configuration errors
def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ConfigError) as info:
        create_model("vit_xl")
    message = str(info.value)
    assert "vit_xl" in message
    for name in list_models():
        assert name in message
    with pytest.raises(ConfigError, match="unknown model"):
        count_flops("resnet50")


def test_negative_r1():
    with pytest.raises(ConfigError, match=r"r1 must be >= 0, got -1"):
        create_model("vit_s", r1=-1, **TINY)


@pytest.mark.parametrize("bad", [2.5, True, "8"])
def test_non_integer_r1(bad):
    with pytest.raises(ConfigError, match="r1 must be an integer"):
        create_model("vit_s", r1=bad, **TINY)


def test_r1_too_large_for_the_group_names_the_limit():
    assert largest_r1(196) == 111
    with pytest.raises(ConfigError) as info:
        count_flops("vit_s", 196)
    message = str(info.value)
    assert "stage 1" in message and "group of 196 tokens" in message
    assert "largest r1 for 196 patches per frame is 111" in message


def test_r1_fine_at_stage_one_but_empty_at_stage_three():
    limit = largest_r1(196)
    r1 = limit + 1  # 112: stage 1 keeps 84 per slice, stage 2 keeps 2*84-112 = 56, stage 3 keeps 2*56-112 = 0
    assert 196 - r1 >= 1 and 2 * (196 - r1) - r1 >= 1 and 2 * (2 * (196 - r1) - r1) - r1 < 1
    with pytest.raises(ConfigError) as info:
        count_flops("vit_s", r1)
    message = str(info.value)
    assert f"r1={r1}" in message and "stage 3" in message and "is 111" in message
    # The limit itself works and leaves tokens at every stage: 8*85, 4*(170-111), 2*(118-111).
    assert count_flops("vit_s", limit).tokens_per_stage == [680, 236, 14]


def test_r1_limit_on_a_small_geometry_and_the_model_runs_at_it():
    limit = largest_r1(16)
    assert limit == 9
    with pytest.raises(ConfigError, match="stage 3.*largest r1 for 16 patches per frame is 9"):
        create_model("vit_s", r1=limit + 1, **TINY)
    torch.manual_seed(0)
    model = create_model("vit_s", r1=limit, **TINY)
    with torch.no_grad():
        _, kept = model(torch.randn(1, 3, 16, 64, 64), return_kept=True)
    assert [k.shape[1] for k in kept] == [8 * 7, 4 * 5, 2 * 1]


def test_num_frames_that_cannot_halve_twice():
    with pytest.raises(ConfigError) as info:
        create_model("vit_s", r1=4, num_frames=12, **TINY)
    message = str(info.value)
    assert "multiple of 4" in message and "6" in message and "num_frames" in message


def test_num_frames_not_a_multiple_of_the_tubelet():
    with pytest.raises(ConfigError, match="num_frames=15 is not a multiple of tubelet_size=2"):
        create_model("vit_s", num_frames=15, **TINY)


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match="embed_dim=32 is not divisible by num_heads=3"):
        create_model("vit_s", embed_dim=32, num_heads=3, depth=3, img_size=64)


@pytest.mark.parametrize(
    "shape",
    [(1, 3, 8, 64, 64), (1, 3, 16, 32, 32), (1, 1, 16, 64, 64), (3, 16, 64, 64), (1, 16, 3, 64, 64)],
)
def test_wrong_input_shape_names_the_expected_shape(shape):
    torch.manual_seed(0)
    model = create_model("vit_s", r1=2, **TINY)
    with pytest.raises(ConfigError) as info:
        model(torch.randn(*shape))
    message = str(info.value)
    assert "(B, 3, 16, 64, 64)" in message
    assert str(tuple(shape)) in message


def test_unknown_override():
    with pytest.raises(ConfigError) as info:
        create_model("vit_s", embed_dimension=32)
    message = str(info.value)
    assert "embed_dimension" in message and "embed_dim" in message and "num_heads" in message
    with pytest.raises(ConfigError, match="unknown override"):
        count_flops("vit_b", 0, heads=4)


def test_error_hierarchy():
    assert issubclass(ConfigError, StaDeployError) and issubclass(StaDeployError, ValueError)


# ----------------------------------------------------------------------------- CLI (in process)
def test_models_table_matches_count_flops(capsys):
    assert main(["models"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    rows = {}
    for line in captured.out.splitlines():
        fields = line.split()
        if fields and fields[0] in list_models():
            rows[fields[0]] = fields
    assert set(rows) == set(list_models())
    assert {"vit_s", "vit_b", "vit_l", "vit_h"} <= set(rows)
    for name, fields in rows.items():
        report = count_flops(name)
        assert fields[1] == f"{report.params / 1e6:.1f}M"
        numbers = [float(value) for value in fields[2:6]]
        paper_r1 = get_entry(name).paper_r1
        if name.startswith("vit_"):
            assert paper_r1 == (0, 32, 48, 64)
        for r1, shown in zip(paper_r1, numbers):
            assert abs(shown - count_flops(name, r1).gflops) <= 0.051, (name, r1)


def test_models_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list_models()
    vit_b = next(row for row in rows if row["name"] == "vit_b")
    assert abs(vit_b["gflops"]["48"] - 116) <= 1


def test_flops_json(capsys):
    assert main(["flops", "--model", "vit_b", "--r1", "48", "--json"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    assert {"model", "r1", "gflops", "sta_gflops"} <= set(data)
    assert data["model"] == "vit_b" and data["r1"] == 48
    assert abs(data["gflops"] - 116) <= 1
    assert data["gflops"] == pytest.approx(count_flops("vit_b", 48).gflops)
    assert 0 < data["sta_gflops"] < 1


def test_flops_text_with_overrides(capsys):
    assert main(["flops", "--model", "vit_s", "--r1", "3", "--embed-dim", "64", "--depth", "6", "--num-heads", "4", "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    report = count_flops("vit_s", 3, embed_dim=64, depth=6, num_heads=4, img_size=64)
    assert f"{report.gflops:.2f}" in out
    assert "128 -> 104 -> 92 -> 86" in out


def _one_error_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("sta-deploy: error:")
    return lines[0]


def test_unknown_model_exit_code_1(capsys):
    assert main(["flops", "--model", "vit_q"]) == 1
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert "vit_q" in line and "vit_s" in line
    assert captured.out == ""


def test_impossible_r1_exit_code_1(capsys):
    assert main(["flops", "--model", "vit_s", "--r1", "112"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "stage 3" in line and "111" in line


def test_unknown_option_exit_code_2(capsys):
    assert main(["flops", "--bogus"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--bogus" in line


def test_bad_option_value_exit_code_2(capsys):
    assert main(["flops", "--r1", "many"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--r1" in line


def test_unknown_command_exit_code_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "frobnicate" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_of_every_command(command, capsys):
    assert main([command, "--help"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"Usage: sta-deploy {command}")
    assert "--help" in captured.out
    assert captured.err == ""


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"  {command}" in out


def test_version(capsys):
    import sta_deploy

    assert main(["--version"]) == 0
    assert sta_deploy.__version__ in capsys.readouterr().out


def test_no_arguments_prints_readable_help(capsys):
    code = main([])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code in (0, 2)
    assert "error" not in text.lower().split("usage")[0]
    assert any(line.strip().startswith("flops") for line in text.splitlines())


# ----------------------------------------------------------------------------- the console script
def _console_script() -> str:
    script = Path(sys.executable).with_name("sta-deploy")
    if not script.exists():  # pragma: no cover - editable install always provides it
        pytest.skip("sta-deploy console script not installed next to the interpreter")
    return str(script)


def test_console_script_flops_json():
    result = subprocess.run(
        [_console_script(), "flops", "--model", "vit_b", "--r1", "48", "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert abs(data["gflops"] - 116) <= 1


def test_console_script_error_exit_code():
    result = subprocess.run([_console_script(), "flops", "--model", "nope"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
