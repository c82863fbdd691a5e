"""``sta-deploy evaluate``: 50+ generated clips, a table and a plot, failures skipped, kill and resume."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("av")

from sta_deploy import ConfigError
from sta_deploy.video.backends import torch_backends
from sta_deploy.video.dataset import read_labelled_list
from sta_deploy.video.evaluate import ABORT_AFTER, evaluate
from sta_deploy.video.predict import protocol_for_backend
from sta_deploy.video.results import ResultsFile
from sta_deploy.video.synthetic import moving_shapes, write_video

# 4 patches per frame: r1 can be 1 or 2
TINY = dict(embed_dim=32, depth=3, num_heads=2, img_size=32, num_frames=16, num_classes=4)
TINY_ARGS = ["--model", "vit_s", "--embed-dim", "32", "--depth", "3", "--num-heads", "2", "--img-size", "32", "--num-classes", "4"]
CLASSES, PER_CLASS = 4, 13  # 52 readable clips, plus one broken file

# Runs the CLI in a subprocess, counting (and optionally slowing) clip loads.
WRAPPER = r"""
import atexit, os, sys, time
import sta_deploy.video.evaluate as evaluate_module
from sta_deploy.cli.app import main
delay = float(os.environ.get("EVAL_TEST_DELAY", "0"))
loads = []
original = evaluate_module.load_views
def counting(path, protocol):
    loads.append(str(path))
    time.sleep(delay)
    return original(path, protocol)
evaluate_module.load_views = counting
atexit.register(lambda: print(f"LOADS={len(loads)}", file=sys.stderr, flush=True))
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test in this module runs PyTorch on one thread (fixture in conftest.py)."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval") / "by_class"
    suffixes = [".avi", ".mp4", ".webm"]
    for label in range(CLASSES):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for index in range(PER_CLASS):
            frames = moving_shapes(20, 32, 40, seed=100 * label + index, kind=label, shapes=2)
            write_video(folder / f"clip{index:02d}{suffixes[index % 3]}", frames)
    (root / "class_2" / "zz_broken.mp4").write_bytes(b"definitely not a video" * 50)
    return root


def _records(path):
    records = []
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if "clip" in item:
            records.append(item)
    return records


def _complete_prefix(path) -> bytes:
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def test_evaluate_fifty_clips_killed_halfway_resumes(dataset, tmp_path):
    prefix = tmp_path / "run"
    results = tmp_path / "run.jsonl"
    command = [sys.executable, "-c", WRAPPER, "evaluate", str(dataset), *TINY_ARGS, "--r1", "1,2", "--views", "1x3",
               "-o", str(prefix), "--threads", "1", "--no-progress"]
    env = dict(os.environ, EVAL_TEST_DELAY="0.15", OMP_NUM_THREADS="1")
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while True:
            if results.exists() and len(_complete_prefix(results).splitlines()) >= 1 + 15:
                break
            assert first.poll() is None, f"finished before it could be interrupted: {first.communicate()}"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
    finally:
        first.kill()
        first.communicate()
    before = _complete_prefix(results)
    done_before = {json.loads(line)["clip"] for line in before.decode().splitlines() if '"clip"' in line}
    assert 15 <= len(done_before) < 53

    second = subprocess.run(command, env=dict(env, EVAL_TEST_DELAY="0"), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resuming from {results}: {len(done_before)} of 53 clips already done" in second.stderr
    loads = int(re.search(r"LOADS=(\d+)", second.stderr).group(1))
    assert loads == 53 - len(done_before)  # finished clips were not decoded (nor run) again
    assert results.read_bytes().startswith(before)  # and their lines are untouched
    records = _records(results)
    keys = [r["clip"] for r in records]
    assert len(keys) == len(set(keys)) == 53
    failed = [r for r in records if "error" in r]
    assert [r["clip"] for r in failed] == [os.path.join("class_2", "zz_broken.mp4")]
    assert "not a readable video" in failed[0]["error"]
    assert all(set(r["results"]) == {"0", "1", "2"} for r in records if "error" not in r)

    # the table: every r1 next to r1 = 0, GFLOPs, clips/s
    out = second.stdout
    assert "52 clips evaluated, 1 failed" in out
    header = next(line for line in out.splitlines() if "GFLOPs/view" in line)
    assert all(column in header for column in ("r1", "top-1", "top-5", "Δtop-1", "clips/s"))
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+[0-2]\s+\d", line)]
    assert [row[0] for row in rows] == ["0", "1", "2"] and all(row[-2] == "52" for row in rows)
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["clips_total"] == 53 and summary["clips_failed"] == 1 and summary["clips_pending"] == 0
    by_r1 = {r["r1"]: r for r in summary["results"]}
    assert by_r1[0]["gflops"] > by_r1[1]["gflops"] > by_r1[2]["gflops"]
    top1 = np.mean([r["results"]["2"]["top5"][0] == r["label"] for r in records if "error" not in r])
    assert by_r1[2]["top1"] == pytest.approx(top1)
    assert (tmp_path / "run.csv").read_text().startswith("r1,backend,gflops")
    from PIL import Image

    with Image.open(tmp_path / "run.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 300

    # a third run has nothing left to do
    third = subprocess.run(command, env=dict(env, EVAL_TEST_DELAY="0"), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "LOADS=0" in third.stderr and "53 of 53 clips already done" in third.stderr


# ----------------------------------------------------------------------------- in-process details
def _setup(dataset, r1_values, views="1x1"):
    backends = torch_backends("vit_s", r1_values, overrides=TINY, seed=0)
    protocol = protocol_for_backend(backends[0], views=views)
    labelled = read_labelled_list(dataset)
    labelled.clips = [c for c in labelled.clips if "broken" not in c.key][:5]
    return backends, protocol, labelled


def test_new_r1_values_run_only_what_is_missing(dataset, tmp_path):
    backends, protocol, labelled = _setup(dataset, [0, 1])
    evaluate(backends, labelled, protocol, results_path=tmp_path / "r.jsonl", progress=False, log=lambda _: None)
    assert [b.calls for b in backends] == [5, 5]
    more, protocol, _ = _setup(dataset, [0, 1, 2])
    summary = evaluate(more, labelled, protocol, results_path=tmp_path / "r.jsonl", progress=False, log=lambda _: None)
    assert [b.calls for b in more] == [0, 0, 5]
    assert [row.clips for row in summary.rows] == [5, 5, 5]


def test_other_settings_are_refused_unless_restarted(dataset, tmp_path):
    backends, protocol, labelled = _setup(dataset, [0, 1])
    evaluate(backends, labelled, protocol, results_path=tmp_path / "r.jsonl", progress=False, log=lambda _: None)
    backends, protocol, labelled = _setup(dataset, [0, 1], views="1x3")
    with pytest.raises(ConfigError, match="holds results of another setup \\(protocol differs"):
        evaluate(backends, labelled, protocol, results_path=tmp_path / "r.jsonl", progress=False, log=lambda _: None)
    evaluate(backends, labelled, protocol, results_path=tmp_path / "r.jsonl", restart=True, progress=False, log=lambda _: None)
    assert [b.calls for b in backends] == [15, 15]


def test_torn_last_line_is_dropped_and_redone(dataset, tmp_path):
    backends, protocol, labelled = _setup(dataset, [0])
    path = tmp_path / "r.jsonl"
    evaluate(backends, labelled, protocol, results_path=path, progress=False, log=lambda _: None)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # killed while writing the last record
    messages = []
    backends, protocol, _ = _setup(dataset, [0])
    evaluate(backends, labelled, protocol, results_path=path, progress=False, log=messages.append)
    assert backends[0].calls == 1 and any("half-written" in m for m in messages)
    assert len(_records(path)) == 5


def test_a_clip_that_breaks_the_model_is_skipped(dataset, tmp_path):
    backends, protocol, labelled = _setup(dataset, [0])
    original = backends[0]._run
    bad = labelled.clips[2].key
    current = {}

    def flaky(clips, with_kept):
        if current.get("key") == bad:
            raise RuntimeError("simulated failure")
        return original(clips, with_kept)

    import sta_deploy.video.evaluate as module

    loader = module.load_views

    def tracking(path, protocol):
        current["key"] = next(c.key for c in labelled.clips if c.path == path)
        return loader(path, protocol)

    backends[0]._run = flaky
    module.load_views = tracking
    try:
        summary = evaluate(backends, labelled, protocol, results_path=tmp_path / "r.jsonl", progress=False, log=lambda _: None)
    finally:
        module.load_views = loader
    assert summary.failed == [(bad, "RuntimeError: simulated failure")]
    assert summary.rows[0].clips == 4


def test_a_broken_setup_stops_after_repeated_failures(dataset, tmp_path):
    backends, protocol, labelled = _setup(dataset, [0])
    labelled.clips = read_labelled_list(dataset).clips[: ABORT_AFTER + 2]

    def broken(clips, with_kept):
        raise RuntimeError("no memory")

    backends[0]._run = broken
    with pytest.raises(RuntimeError, match=f"{ABORT_AFTER} clips in a row failed"):
        evaluate(backends, labelled, protocol, results_path=tmp_path / "r.jsonl", progress=False, log=lambda _: None)
    assert len(_records(tmp_path / "r.jsonl")) == ABORT_AFTER
    # once the cause is fixed, a re-run tries those clips again (they were not the clips' fault)
    fixed, protocol, _ = _setup(dataset, [0])
    summary = evaluate(fixed, labelled, protocol, results_path=tmp_path / "r.jsonl", progress=False, log=lambda _: None)
    assert fixed[0].calls == ABORT_AFTER + 2 and summary.rows[0].clips == ABORT_AFTER + 2 and not summary.failed


# ----------------------------------------------------------------------------- labelled lists
def test_path_label_file(tmp_path):
    listing = tmp_path / "val.txt"
    listing.write_text("# comment\nvideos/a.mp4 3\n/abs/b.mp4 0\nwith space.mp4\t2\n")
    labelled = read_labelled_list(listing)
    assert [(c.key, c.label) for c in labelled.clips] == [("videos/a.mp4", 3), ("/abs/b.mp4", 0), ("with space.mp4", 2)]
    assert labelled.clips[0].path == tmp_path / "videos" / "a.mp4"
    assert read_labelled_list(listing, root="/data").clips[0].path.as_posix() == "/data/videos/a.mp4"


def test_path_label_file_with_class_names(tmp_path):
    listing = tmp_path / "val.csv"
    listing.write_text("path,label\na.mp4,Playing_Guitar\nb.mp4,abseiling\n")
    labelled = read_labelled_list(listing, class_names=["abseiling", "playing guitar"])
    assert [c.label for c in labelled.clips] == [1, 0]
    with pytest.raises(ConfigError, match="'juggling' is not one of the model's class names"):
        listing.write_text("a.mp4 juggling\n")
        read_labelled_list(listing, class_names=["abseiling"])
    listing.write_text("a.mp4 zebra\nb.mp4 ant\n")
    labelled = read_labelled_list(listing)
    assert [c.label for c in labelled.clips] == [1, 0] and "sorted order" in labelled.note


def test_folder_per_class(dataset):
    labelled = read_labelled_list(dataset)
    assert len(labelled.clips) == CLASSES * PER_CLASS + 1
    assert labelled.class_names == [f"class_{i}" for i in range(CLASSES)]
    assert {c.label for c in labelled.clips if c.key.startswith("class_3")} == {3}
    named = read_labelled_list(dataset, class_names=["class 3", "class 2", "class 1", "class 0"])
    assert {c.label for c in named.clips if c.key.startswith("class_3")} == {0}


def test_label_outside_the_model_is_refused(dataset, tmp_path):
    backends, protocol, _ = _setup(dataset, [0])
    listing = tmp_path / "val.txt"
    listing.write_text(f"{next(dataset.rglob('*.avi'))} 9\n")
    with pytest.raises(ConfigError, match="label 9, outside the model's 4 classes"):
        evaluate(backends, read_labelled_list(listing), protocol, results_path=tmp_path / "r.jsonl", progress=False)


def test_results_file_that_is_not_ours(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("hello\n")
    with pytest.raises(ConfigError, match="not a JSON line"):
        ResultsFile(path).load()
