"""``validate --save-inputs/--save-outputs``: Polygraphy's own formats, checked by Polygraphy itself.

``polygraphy run X.onnx --onnxrt --load-inputs in.json --load-outputs ref.json`` must pass on a
correct pure-ONNX export and fail on a broken one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import sta_deploy
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.runtime.polygraphy_io import RUNNER_NAME
from sta_deploy.validate import seeded_clips

from test_export_helpers import TINY, error_line, run_cli
from test_validate_mutations import mutated, score_topks

pytest.importorskip("polygraphy")
from polygraphy.comparator import RunResults  # noqa: E402
from polygraphy.json import load_json  # noqa: E402

# What the README recommends: logits at validate's fp32 bound; kept positions (int64) exactly (default tolerances).
TOLERANCES = ["--atol", "logits:1e-4", "--rtol", "logits:0"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one PyTorch thread is faster on the shared 2-core machine (conftest.py)."""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A static batch-2 export and `validate --clips 3 --save-inputs --save-outputs` of it."""
    folder = tmp_path_factory.mktemp("polygraphy")
    model = sta_deploy.create_model("vit_s", r1=48, seed=0, **TINY)
    path = export_onnx(model, folder / "vit.onnx", with_kept=True, batch_size=2).path
    code, out, err = run_cli("validate", path, "--clips", 3, "--save-inputs", folder / "in.json", "--save-outputs", folder / "ref.json")
    assert code == 0, err
    return model, path, folder / "in.json", folder / "ref.json"


def polygraphy(*args, timeout=300) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("polygraphy")
    command = [str(executable if executable.exists() else shutil.which("polygraphy")), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_inputs_are_polygraphy_feeds_of_the_exported_batch(saved):
    model, _, inputs, _ = saved
    feeds = load_json(str(inputs))
    clips = seeded_clips(3, model.config.input_shape, seed=0)
    assert [list(feed) for feed in feeds] == [["video"], ["video"]]
    np.testing.assert_array_equal(feeds[0]["video"], clips[:2])
    np.testing.assert_array_equal(feeds[1]["video"], clips[[2, 2]])  # the last batch padded with its last clip


def test_outputs_are_the_plain_reference_as_run_results(saved):
    model, _, _, outputs = saved
    results = RunResults.load(str(outputs))
    assert list(results.keys()) == [RUNNER_NAME]
    iterations = results[RUNNER_NAME]
    clips = seeded_clips(3, model.config.input_shape, seed=0)
    assert len(iterations) == 2
    for iteration, rows in zip(iterations, ([0, 1], [2, 2])):
        assert list(iteration.keys()) == ["logits", "kept_stage0", "kept_stage1", "kept_stage2"]
        for position, row in enumerate(rows):
            with torch.no_grad():
                logits, kept = model(torch.from_numpy(clips[row : row + 1]), return_kept=True)
            np.testing.assert_array_equal(iteration["logits"][position], logits[0].numpy())
            for stage in range(3):
                assert iteration[f"kept_stage{stage}"].dtype == np.int64
                np.testing.assert_array_equal(iteration[f"kept_stage{stage}"][position], kept[stage][0].numpy())


def test_polygraphy_run_passes_on_the_correct_export(saved):
    _, path, inputs, outputs = saved
    result = polygraphy("run", path, "--onnxrt", "--load-inputs", inputs, "--load-outputs", outputs, *TOLERANCES)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "PASSED | Output: 'logits'" in result.stdout + result.stderr


def test_polygraphy_run_fails_on_a_broken_export(saved, tmp_path):
    _, path, inputs, outputs = saved
    name = score_topks(onnx.load(str(path)), 1)[0].name

    def largest(model):
        node = next(n for n in model.graph.node if n.name == name)
        next(a for a in node.attribute if a.name == "largest").i = 1

    broken = mutated(path, tmp_path, largest)
    result = polygraphy("run", broken, "--onnxrt", "--load-inputs", inputs, "--load-outputs", outputs, *TOLERANCES)
    assert result.returncode != 0
    assert "FAILED | Output: 'kept_stage1'" in result.stdout + result.stderr


def test_save_files_need_no_engine(saved, tmp_path):
    _, path, _, _ = saved
    code, _, err = run_cli("validate", path, "--engine", tmp_path / "x.plan", "--save-inputs", tmp_path / "in.json")
    assert code == 2
    assert "run them without --engine" in error_line(err, only_line=True)
