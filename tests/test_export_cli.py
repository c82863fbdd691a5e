"""`sta-deploy export / validate / bench` end to end, and the published export recipes (export/*.toml)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import onnx
import pytest

import sta_deploy
from sta_deploy.export.onnx_export import SUPPORTED_OPSETS
from sta_deploy.sta import STA_SCOPE
from sta_deploy.export.recipes import load_recipe, published_recipes
from sta_deploy.models.registry import resolve_config

from test_export_helpers import PAPER_R1, TINY, TINY_ARGS, VIT_PRESETS, error_line, listing, run_cli, sha256_of

EXPORT_DIR = Path(__file__).resolve().parents[1] / "export"
RECIPES = sorted(EXPORT_DIR.glob("*.toml"))
RECIPE_NAME = re.compile(r"^(?P<model>[a-z]+_[a-z]+)_r(?P<r1>\d+)(?P<fp16>_fp16)?$")


# ----------------------------------------------------------------------------- export / validate / bench
@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """The brief's command: sta-deploy export --model vit_s --r1 48 (tiny) -o tmp/x.onnx."""
    folder = tmp_path_factory.mktemp("cli")
    path = folder / "x.onnx"
    code, out, err = run_cli("export", "--model", "vit_s", "--r1", "48", *TINY_ARGS, "-o", path)
    return code, out, err, path


def test_export_exits_0_prints_the_table_and_warns(cli_export):
    code, out, err, path = cli_export
    assert code == 0, err
    assert "static shapes ok" in out
    assert "onnxruntime" in out and "logits max |diff|" in out
    assert out.rstrip().splitlines()[-1] == "PASS"
    assert "warning: no --checkpoint given: vit_s uses random weights" in err
    assert "error" not in err
    assert listing(path.parent) == ["x.manifest.json", "x.onnx"]
    manifest = json.loads((path.parent / "x.manifest.json").read_text())
    assert manifest["model"] == "vit_s" and manifest["r1"] == 48
    assert manifest["weights"] == {"source": "random-init", "seed": 0}
    assert manifest["onnx_sha256"] == sha256_of(path)
    assert {k: manifest["config"][k] for k in TINY} == TINY
    onnx.checker.check_model(str(path), full_check=True)


def test_validate_passes(cli_export):
    *_, path = cli_export
    code, out, err = run_cli("validate", path, "--clips", "2")
    assert code == 0, err
    assert "on 2 clips" in out and out.rstrip().endswith("PASS")


def test_validate_json(cli_export):
    *_, path = cli_export
    code, out, err = run_cli("validate", path, "--clips", "2", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] is True and report["clips"] == 2 and report["failures"] == []


def test_validate_with_a_tiny_atol_fails(cli_export):
    *_, path = cli_export
    code, out, err = run_cli("validate", path, "--clips", "2", "--atol", "1e-12")
    assert code == 1
    line = error_line(err, only_line=True)
    assert line.startswith("sta-deploy: error: validation failed: max |diff|") and "1e-12" in line
    assert "FAIL" in out


def test_bench_json(cli_export):
    *_, path = cli_export
    code, out, err = run_cli("bench", path, "--runs", "2", "--warmup", "0", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["median_ms"] > 0
    assert result["runs"] == 2 and len(result["latencies_ms"]) == 2
    assert result["model"] == "vit_s" and result["r1"] == 48 and result["batch"] == 1
    assert "sta_share" not in result


def test_bench_profile_finds_the_sta_nodes(cli_export):
    *_, path = cli_export
    code, out, err = run_cli("bench", path, "--runs", "2", "--warmup", "0", "--json", "--profile")
    assert code == 0, err
    share = json.loads(out)["sta_share"]
    assert share["sta_us"] > 0, "no node of the pruned model was attributed to the STA stages"
    assert share["other_us"] > 0
    assert 0 < share["sta_fraction"] < 1
    assert share["sta_fraction"] == pytest.approx(share["sta_us"] / (share["sta_us"] + share["other_us"]))


def test_profile_scopes_follow_onnx_runtime_fusions(cli_export):
    """STA's share is measured on the graph ONNX Runtime runs (all optimisations), where fused and
    inserted nodes have names the exporter never gave: each must map back to the right scope."""
    import numpy as np

    from sta_deploy.bench import node_scopes, optimized_scopes, profile_nodes

    *_, path = cli_export
    exported = onnx.load(str(path), load_external_data=False).graph
    shape = [d.dim_value for d in exported.input[0].type.tensor_type.shape.dim]
    video = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    times, optimized = profile_nodes(path, video, runs=1, threads=1, optimization="all", keep_graph=True)
    scopes, original = optimized_scopes(path, optimized), node_scopes(path)
    assert set(times) <= set(scopes)  # every profiled node is a node of the saved optimised graph
    renamed = [node.name for node in optimized.node if node.name not in original]
    assert renamed, "ONNX Runtime fused nothing: this test no longer checks the mapping"
    for node in optimized.node:
        prefix = node.name.split("/")[0]
        if prefix in original:
            assert scopes[node.name] == original[prefix], node.name
        assert scopes[node.name] != "", f"{node.name} ({node.op_type}) got no scope"

    def sta_topk(names, scope_of):
        return sum(1 for name, op in names if op == "TopK" and STA_SCOPE in scope_of[name])

    # TopK is never fused: the optimised graph has exactly the exported graph's STA TopKs.
    assert sta_topk([(n.name, n.op_type) for n in optimized.node], scopes) == sta_topk([(n.name, n.op_type) for n in exported.node], original) > 0


# ----------------------------------------------------------------------------- recipes
def test_recipes_are_published():
    assert RECIPES, f"no recipes in {EXPORT_DIR}"
    assert published_recipes(EXPORT_DIR) == RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.name)
def test_recipe_agrees_with_its_file_name(path):
    recipe = load_recipe(path)
    match = RECIPE_NAME.match(path.stem)
    assert match, f"{path.name} does not read MODEL_rR1[_fp16].toml"
    assert recipe["model"] == match["model"]
    assert recipe["r1"] == int(match["r1"])
    assert recipe.get("dtype", "fp32") == ("fp16" if match["fp16"] else "fp32")
    assert recipe.get("output", path.stem + ".onnx") == path.stem + ".onnx"
    assert recipe.get("opset", 18) in SUPPORTED_OPSETS
    resolve_config(recipe["model"], **recipe.get("overrides", {})).schedule(recipe["r1"])  # a possible r1


def test_recipes_cover_every_vit_preset_r1_and_dtype():
    covered = set()
    for path in RECIPES:
        recipe = load_recipe(path)
        covered.add((recipe["model"], recipe["r1"], recipe.get("dtype", "fp32")))
    wanted = set(itertools.product(VIT_PRESETS, PAPER_R1, ("fp32", "fp16")))
    assert sorted(wanted - covered) == []


def test_recipes_cover_every_swin_preset_at_table3_r1():
    """Table 3 of the paper publishes Video Swin at r1 = 0/192/256/320 (Kinetics-400, fp32)."""
    swin_presets = [name for name in sta_deploy.list_models() if name.startswith("swin_")]
    covered = {(recipe["model"], recipe["r1"], recipe.get("dtype", "fp32")) for recipe in map(load_recipe, RECIPES)}
    wanted = set(itertools.product(swin_presets, (0, 192, 256, 320), ("fp32",)))
    assert swin_presets and sorted(wanted - covered) == []


def test_export_with_a_recipe_uses_its_r1(tmp_path):
    recipe_path = EXPORT_DIR / "vit_b_r64.toml"
    recipe = load_recipe(recipe_path)
    code, out, err = run_cli("export", "--recipe", recipe_path, *TINY_ARGS, "-o", tmp_path / "x.onnx", "--no-validate")
    assert code == 0, err
    assert "PASS" not in out  # --no-validate
    manifest = json.loads((tmp_path / "x.manifest.json").read_text())
    assert (manifest["model"], manifest["r1"], manifest["dtype"]) == (recipe["model"], recipe["r1"], recipe["dtype"]) == ("vit_b", 64, "fp32")
    assert manifest["schedule"]["r1"] == 64
    assert manifest["config"]["depth"] == 3 and manifest["config"]["embed_dim"] == 32
    assert listing(tmp_path) == ["x.manifest.json", "x.onnx"]


def test_command_line_r1_overrides_the_recipe(tmp_path):
    recipe_path = EXPORT_DIR / "vit_l_r48_fp16.toml"
    code, _, err = run_cli("export", "--recipe", recipe_path, *TINY_ARGS, "--r1", "32", "-o", tmp_path / "x.onnx", "--no-validate")
    assert code == 0, err
    manifest = json.loads((tmp_path / "x.manifest.json").read_text())
    assert manifest["r1"] == 32 and manifest["schedule"]["r1"] == 32
    assert manifest["model"] == "vit_l" and manifest["dtype"] == "fp16"  # the rest still comes from the recipe
