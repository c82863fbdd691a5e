"""``sta-deploy tune``: a real sweep of a small random-weight ViT on generated clips (ONNX Runtime, and
OpenVINO int8 for the recipe), checked against numpy, the measured table and a re-export."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("av")

from scipy.special import log_softmax as scipy_log_softmax  # noqa: E402

from sta_deploy.cli.app import main  # noqa: E402
from sta_deploy.video.synthetic import moving_shapes, write_video  # noqa: E402

# 16 patches per frame (largest r1 9); wide enough that the blocks' products, not STA, set the latency
SMALL_WIDE = ["--model", "vit_s", "--embed-dim", "256", "--depth", "6", "--num-heads", "4", "--img-size", "64", "--num-classes", "4"]
TINY = ["--model", "vit_s", "--embed-dim", "32", "--depth", "3", "--num-heads", "2", "--img-size", "32", "--num-classes", "4"]
TIMING = ["--rounds", "5", "--runs", "3", "--threads", "1"]
CLASSES, PER_CLASS = 2, 4


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """PyTorch on one thread (fixture in conftest.py)."""


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune_clips") / "by_class"
    for label in range(CLASSES):
        (root / f"class_{label}").mkdir(parents=True)
        for index in range(PER_CLASS):
            frames = moving_shapes(20, 64, 80, seed=10 * label + index, kind=label, shapes=2)
            write_video(root / f"class_{label}" / f"clip{index}.mp4", frames)
    return root


@pytest.fixture(scope="module")
def sweep(clips, tmp_path_factory):
    """One measured sweep (r1 0, 5, 9 at fp32 on ONNX Runtime), shared by the tests that read it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tune") / "run"
    try:
        code = main(["tune", *SMALL_WIDE, "--clips", str(clips), "--r1", "5,9", "--budget-ms", "1000", "-o", str(out), *TIMING])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out


def _report(out):
    return json.loads((out / "tune.json").read_text())


def _rows(out):
    return {row["r1"]: row for row in _report(out)["points"]}


def _log_lines(out):
    return [json.loads(line) for line in (out / "tune.jsonl").read_text().splitlines()]


def test_label_free_measures_equal_numpy_from_the_saved_logits(sweep):
    reference_record = next(item for item in _log_lines(sweep) if item.get("kind") == "reference")
    reference = np.load(sweep / reference_record["logits"])
    labels = np.array(reference_record["labels"])
    assert reference.shape == (CLASSES * PER_CLASS, 4) and sorted(set(labels.tolist())) == [0, 1]
    for row in _report(sweep)["points"]:
        logits = np.load(sweep / "logits" / f"{row['key']}.npy")
        assert logits.shape == reference.shape
        log_p, log_q = scipy_log_softmax(reference, axis=1), scipy_log_softmax(logits, axis=1)
        kl = np.mean([np.dot(np.exp(lp), lp - lq) for lp, lq in zip(log_p, log_q)])
        agreement = np.mean(reference.argmax(1) == logits.argmax(1))
        overlap = np.mean([len(set(np.argsort(-a)[:4]) & set(np.argsort(-b)[:4])) / 4 for a, b in zip(reference, logits)])  # 4 classes: k = 4
        assert row["top1_agreement"] == pytest.approx(agreement)
        assert row["top5_overlap"] == pytest.approx(overlap)
        assert row["mean_kl"] == pytest.approx(kl, rel=1e-6, abs=1e-12)
        assert row["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
        assert row["top5"] == pytest.approx(1.0)  # 4 classes: the label is always among the top 5


def test_agreement_is_total_at_r1_0_fp32(sweep):
    """ONNX Runtime's unpruned fp32 export against the PyTorch reference: same classes, same distributions."""
    row = _rows(sweep)[0]
    assert row["precision"] == "fp32" and row["top1_agreement"] == 1.0 and row["top5_overlap"] == 1.0
    assert row["mean_kl"] < 1e-8
    assert _rows(sweep)[9]["mean_kl"] > 1e-6  # pruning does change the distribution: the measure can tell


def test_latency_ordering_follows_flops(sweep):
    rows = sorted(_rows(sweep).values(), key=lambda row: -row["gflops"])
    assert [row["r1"] for row in rows] == [0, 5, 9]
    latencies = [row["latency_ms"] for row in rows]
    assert latencies[0] > latencies[1] > latencies[2], latencies
    assert all(row["latency_runs"] == 15 for row in rows)  # 5 rounds x 3 runs, interleaved
    lines = [item for item in _log_lines(sweep) if item.get("kind") == "latency"]
    # round-robin: every round has all three points before the next round starts
    assert [item["round"] for item in lines] == sorted(item["round"] for item in lines)


def test_chosen_r1_meets_the_budget_on_the_measured_table(sweep, cli):
    rows = _rows(sweep)
    budget = (rows[0]["latency_ms"] + rows[5]["latency_ms"]) / 2
    log_before = (sweep / "tune.jsonl").read_bytes()
    code, out, _ = cli("tune", *SMALL_WIDE, "--clips", _clips_of(sweep), "--r1", "5,9", "--budget-ms", f"{budget:.4f}", "-o", sweep, *TIMING)
    assert code == 0
    report = _report(sweep)
    meeting = [row for row in report["points"] if row["latency_ms"] <= budget]
    best = max(meeting, key=lambda row: (row["top1_agreement"], -row["mean_kl"]))
    chosen = next(row for row in report["points"] if row["chosen"])
    assert chosen["key"] == best["key"] and chosen["r1"] in (5, 9) and chosen["latency_ms"] <= budget
    answer = out.strip().splitlines()[-1]
    assert answer.startswith(f"r1 = {chosen['r1']}, ONNX Runtime fp32: ") and f"(budget {float(f'{budget:.4f}'):g} ms)" in answer  # the CLI prints the value it was given with :g
    assert f"top-1 agreement {100 * chosen['top1_agreement']:.1f}% on {CLASSES * PER_CLASS} clips" in answer
    assert "<- chosen" in next(line for line in out.splitlines() if line.split()[:1] == [str(chosen["r1"])])
    assert (sweep / "tune.jsonl").read_bytes() == log_before  # a finished sweep is not measured again

    code, out, _ = cli("tune", *SMALL_WIDE, "--clips", _clips_of(sweep), "--r1", "5,9", "--speedup", "1.1", "-o", sweep, *TIMING)
    report = _report(sweep)
    chosen = next(row for row in report["points"] if row["chosen"])
    assert code == 0 and report["baseline_ms"] / chosen["latency_ms"] >= 1.1 and chosen["speedup"] == pytest.approx(report["baseline_ms"] / chosen["latency_ms"])


def _clips_of(out):
    settings = _log_lines(out)[0]["settings"]
    return settings["clips"]["source"]


def test_recipe_reproduces_the_chosen_export(sweep, cli, tmp_path):
    code, _, _ = cli("tune", *SMALL_WIDE, "--clips", _clips_of(sweep), "--r1", "5,9", "--budget-ms", "1000", "-o", sweep, *TIMING)
    assert code == 0
    chosen = next(row for row in _report(sweep)["points"] if row["chosen"])
    code, out, err = cli("export", "--recipe", sweep / "recipe.toml", "-o", tmp_path / "again.onnx", "--no-validate")
    assert code == 0, err
    original = json.loads((sweep / chosen["export"]).with_suffix(".manifest.json").read_text())
    again = json.loads((tmp_path / "again.manifest.json").read_text())
    for key in ("model", "config", "r1", "dtype", "batch_size", "weights", "schedule", "onnx_sha256"):
        assert again[key] == original[key], key


def test_openvino_int8_recipe_quantizes_like_the_sweep(clips, cli, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    out = tmp_path / "ov"
    code, _, err = cli("tune", *TINY, "--clips", clips, "--r1", "0", "--gflops", "1", "--backend", "openvino", "--precision", "fp32,int8",
                       "--calib-size", "4", "-o", out)
    assert code == 0, err
    rows = {row["precision"]: row for row in _report(out)["points"]}
    assert set(rows) == {"fp32", "int8"} and rows["int8"]["latency_ms"] is None  # a GFLOPs budget times nothing
    from sta_deploy.video.tune_choice import PointResult
    from sta_deploy.video.tune_exports import ModelSpec
    from sta_deploy.video.tune_points import Point
    from sta_deploy.video.tune_report import recipe_text

    spec = ModelSpec("vit_s", dict(embed_dim=32, depth=3, num_heads=2, img_size=32, num_classes=4))
    paths = [str(p) for p in sorted(clips.rglob("*.mp4"))]
    text = recipe_text(spec, PointResult(Point(0, "int8", "openvino"), 0.0, rows["int8"]), answer="test",
                       quantize={"calib": paths, "calib_size": 4, "dataset": "k400", "views": "1x1"})
    (tmp_path / "int8.toml").write_text(text)
    code, _, err = cli("export", "--recipe", tmp_path / "int8.toml", "-o", tmp_path / "int8.onnx", "--no-validate")
    assert code == 0, err
    original = json.loads((out / rows["int8"]["export"]).with_suffix(".manifest.json").read_text())
    again = json.loads((tmp_path / "int8.manifest.json").read_text())
    assert again["dtype"] == "int8" and again["config"] == original["config"]
    assert again["quantization"]["source_sha256"] == original["quantization"]["source_sha256"]
    assert again["onnx_sha256"] == original["onnx_sha256"]  # the same calibration gives the same int8 model


def _copy_exports(sweep, out):
    out.mkdir()
    shutil.copytree(sweep / "exports", out / "exports")


def test_a_killed_sweep_resumes_without_redoing_finished_points(sweep, cli, tmp_path, monkeypatch):
    import sta_deploy.export.onnx_export as onnx_export
    import sta_deploy.video.tune_sweep as tune_sweep

    out = tmp_path / "resume"
    _copy_exports(sweep, out)  # exports are reused when their manifest matches: nothing is exported here
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: pytest.fail("a matching export was redone"))
    measured = []
    original = tune_sweep.measure_point

    def interrupted(request, log, cache, point, calibration):
        if len(measured) == 2:
            raise KeyboardInterrupt  # killed between the second and the third point
        measured.append(point.key)
        original(request, log, cache, point, calibration)

    monkeypatch.setattr(tune_sweep, "measure_point", interrupted)
    args = ["tune", *SMALL_WIDE, "--clips", _clips_of(sweep), "--r1", "5,9", "--budget-ms", "1000", "-o", out, *TIMING]
    code, _, err = cli(*args)
    assert code == 130 and "run the same command again to resume" in err
    before = (out / "tune.jsonl").read_bytes()
    first = list(measured)

    measured.clear()
    monkeypatch.setattr(tune_sweep, "measure_point", lambda *a: (measured.append(a[3].key), original(*a)))
    code, out_text, err = cli(*args)
    assert code == 0, err
    assert len(first) == 2 and measured == ["r9_onnxruntime_fp32"]  # only the point that was not finished
    assert (out / "tune.jsonl").read_bytes().startswith(before)
    kinds = [item.get("kind") for item in _log_lines(out)]
    assert kinds.count("reference") == 1 and kinds.count("accuracy") == 3 and kinds.count("latency") == 15


def test_a_sweep_killed_while_timing_finishes_only_the_missing_rounds(sweep, cli, tmp_path, monkeypatch):
    import sta_deploy.video.tune_log as tune_log

    out = tmp_path / "timing"
    out.mkdir()
    lines = _log_lines(sweep)
    kept = [item for item in lines if item.get("kind") != "latency"] + [item for item in lines if item.get("kind") == "latency"][:7]
    (out / "tune.jsonl").write_text("".join(json.dumps(item) + "\n" for item in kept) + '{"kind": "lat')  # torn last line
    for folder in ("exports", "logits"):
        shutil.copytree(sweep / folder, out / folder)
    appended = []
    original = tune_log.TuneLog.append
    monkeypatch.setattr(tune_log.TuneLog, "append", lambda self, item: (appended.append(item), original(self, item)))
    code, _, err = cli("tune", *SMALL_WIDE, "--clips", _clips_of(sweep), "--r1", "5,9", "--budget-ms", "1000", "-o", out, *TIMING)
    assert code == 0, err
    assert [item["kind"] for item in appended] == ["latency"] * 8
    done = {(item["point"]["r1"], item["round"]) for item in _log_lines(out) if item.get("kind") == "latency"}
    assert len(done) == 15 == len([item for item in _log_lines(out) if item.get("kind") == "latency"])


def test_an_impossible_budget_names_the_closest_and_exits_1(sweep, cli):
    code, out, err = cli("tune", *SMALL_WIDE, "--clips", _clips_of(sweep), "--r1", "5,9", "--budget-ms", "0.001", "-o", sweep, *TIMING)
    assert code == 1
    rows = _report(sweep)["points"]
    fastest = min(rows, key=lambda row: row["latency_ms"])
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"sta-deploy: error: no configuration meets the budget; the closest is r1 = {fastest['r1']}, ONNX Runtime fp32: ")
    assert f"{fastest['latency_ms'] - 0.001:.4g} ms" in line and "over the budget of 0.001 ms" in line
    assert not (sweep / "recipe.toml").exists()  # no recipe for a configuration that misses
    assert _report(sweep)["choice"]["met"] is False

    code, _, err = cli("tune", *SMALL_WIDE, "--clips", _clips_of(sweep), "--r1", "5,9", "--gflops", "0.01", "-o", sweep, *TIMING)
    cheapest = min(rows, key=lambda row: row["gflops"])
    assert code == 1 and f"the closest is r1 = {cheapest['r1']}," in err and f"{cheapest['gflops']:.4g} GFLOPs/view" in err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed: this checks the message of a machine without it")
def test_tensorrt_backend_without_tensorrt_is_one_line(clips, cli, tmp_path):
    code, _, err = cli("tune", *TINY, "--clips", clips, "--budget-ms", "10", "--backend", "tensorrt", "-o", tmp_path / "trt")
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("sta-deploy: error: TensorRT is not installed")
    assert not (tmp_path / "trt").exists()  # refused before any work


def test_bad_options_are_one_line(clips, cli, tmp_path):
    code, _, err = cli("tune", *TINY, "--clips", clips, "-o", tmp_path / "x")
    assert code == 2 and "give exactly one budget" in err
    code, _, err = cli("tune", *TINY, "--clips", clips, "--budget-ms", "5", "--precision", "bf16", "-o", tmp_path / "x")
    assert code == 1 and "precision bf16 is not available on onnxruntime; choose from fp32, fp16, int8" in err
    code, _, err = cli("tune", *TINY, "--clips", clips, "--budget-ms", "5", "--r1", "3", "-o", tmp_path / "x")
    assert code == 1 and "the largest r1 for 4 patches per frame is 2" in err


def _tensorrt_gpu() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _tensorrt_gpu(), reason="needs TensorRT and an NVIDIA GPU")
def test_tensorrt_sweep_on_a_gpu(clips, cli, tmp_path):
    out = tmp_path / "trt"
    code, _, err = cli("tune", *TINY, "--clips", clips, "--r1", "2", "--budget-ms", "1000", "--backend", "tensorrt", "--precision", "fp32,fp16",
                       "--rounds", "2", "--runs", "2", "-o", out)
    assert code == 0, err
    rows = {(row["r1"], row["precision"]): row for row in _report(out)["points"]}
    assert set(rows) == {(0, "fp32"), (0, "fp16"), (2, "fp32"), (2, "fp16")}
    assert rows[(0, "fp32")]["top1_agreement"] == 1.0 and all(row["latency_runs"] == 4 for row in rows.values())
    assert sorted(p.name for p in (out / "exports").glob("*.plan"))  # engines built beside the exports


WRAPPER = r"""
import sys, time
import sta_deploy.video.tune_sweep as tune_sweep
from sta_deploy.cli.app import main
original = tune_sweep.measure_point
def slow(*args):
    time.sleep(1.5)
    return original(*args)
tune_sweep.measure_point = slow
sys.exit(main(sys.argv[1:]))
"""


def test_a_sweep_killed_with_sigkill_resumes(sweep, cli, tmp_path, monkeypatch):
    """A real kill (SIGKILL: no handler runs) after the first point: the re-run measures only the rest."""
    import os
    import subprocess
    import sys
    import time

    import sta_deploy.video.tune_sweep as tune_sweep

    out = tmp_path / "killed"
    _copy_exports(sweep, out)
    args = ["tune", *SMALL_WIDE, "--clips", _clips_of(sweep), "--r1", "5,9", "--budget-ms", "1000", "-o", str(out), *TIMING]
    child = subprocess.Popen([sys.executable, "-c", WRAPPER, *args], env=dict(os.environ, OMP_NUM_THREADS="1"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while True:
            log = out / "tune.jsonl"
            if log.exists() and log.read_text().count('"kind":"accuracy"') >= 1:
                break
            assert child.poll() is None, f"finished before it could be killed: {child.communicate()}"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
    finally:
        child.kill()
        child.communicate()
    done = [item["point"]["r1"] for item in _log_lines(out) if item.get("kind") == "accuracy"]
    assert 1 <= len(done) < 3
    measured = []
    original = tune_sweep.measure_point
    monkeypatch.setattr(tune_sweep, "measure_point", lambda *a: (measured.append(a[3].r1), original(*a)))
    code, _, err = cli(*args)
    assert code == 0, err
    assert sorted(measured + done) == [0, 5, 9]  # every point measured exactly once over the two runs


def test_unlabelled_folder_with_a_broken_clip(clips, cli, tmp_path):
    """A flat folder of videos: label-free measures only; an unreadable clip is reported and left out."""
    folder = tmp_path / "flat"
    folder.mkdir()
    for index, source in enumerate(sorted(clips.rglob("*.mp4"))[:3]):
        shutil.copy(source, folder / f"v{index}.mp4")
    (folder / "broken.mp4").write_bytes(b"not a video" * 20)
    code, out, err = cli("tune", *TINY, "--clips", folder, "--r1", "0", "--gflops", "1", "-o", tmp_path / "run")
    assert code == 0, err
    report = _report(tmp_path / "run")
    assert report["labelled"] is False and report["clips"] == 3 and list(report["failed_clips"]) == [str(folder / "broken.mp4")]
    row = report["points"][0]
    assert row["top1"] is None and row["top1_agreement"] == 1.0
    assert np.load(tmp_path / "run" / "logits" / "r0_onnxruntime_fp32.npy").shape == (3, 4)
    assert "on 3 clips" in out.strip().splitlines()[-1]
