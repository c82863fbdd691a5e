"""``sta-deploy evaluate --ray``: the same records, summary and resume as local evaluate, on a local Ray.

One Ray instance (2 CPUs, loopback, no dashboard) serves the whole module: the in-process tests drive
it directly, the subprocess ones connect to its address.  ``--ray local`` itself (a private Ray
started and stopped by the command) runs once, first, before that instance exists."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("av")

from sta_deploy import ConfigError
from sta_deploy.video.backend_recipe import BackendRecipe
from sta_deploy.video.dataset import read_labelled_list
from sta_deploy.video.evaluate import evaluate
from sta_deploy.video.predict import protocol_for_backend
from sta_deploy.video.synthetic import moving_shapes, write_video

ROOT = Path(__file__).resolve().parent.parent
# 196 patches per frame (224 px, 16 px patches), so that r1 = 48 is possible; 32 wide and 3 deep stays cheap
TINY = dict(embed_dim=32, depth=3, num_heads=2, img_size=224, num_frames=16, num_classes=4)
ARGS = ["--model", "vit_s", "--embed-dim", "32", "--depth", "3", "--num-heads", "2", "--img-size", "224", "--num-classes", "4",
        "--r1", "48", "--views", "1x1", "--threads", "1", "--no-progress", "--no-plot"]
CLASSES, PER_CLASS = 4, 10  # 40 readable clips and one broken file
TIMING = {"seconds", "decode_seconds", "clips_per_s"}  # what may differ between two runs of the same thing


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """PyTorch on one thread, as the Ray workers run it (fixture in conftest.py)."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_eval") / "by_class"
    for label in range(CLASSES):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for index in range(PER_CLASS):
            frames = moving_shapes(20, 32, 40, seed=100 * label + index, kind=label, shapes=2)
            write_video(folder / f"clip{index:02d}{('.avi', '.mp4', '.webm')[index % 3]}", frames)
    (root / "class_2" / "zz_broken.mp4").write_bytes(b"definitely not a video" * 50)
    return root


def _recipe(**changes):
    return BackendRecipe("vit_s", (48,), overrides=TINY, seed=0, threads=1, **changes)


def _setup(dataset, **changes):
    recipe = _recipe(**changes)
    backends = _recipe().build()  # the driver's own backends always load (only a worker may lack a file)
    return recipe, backends, protocol_for_backend(backends[0], views="1x1"), read_labelled_list(dataset)


@pytest.fixture(scope="module")
def local_run(dataset, tmp_path_factory):
    """The uninterrupted local evaluate every Ray run is compared with."""
    prefix = tmp_path_factory.mktemp("local") / "run"
    from sta_deploy.cli.app import main

    assert main(["evaluate", str(dataset), *ARGS, "-o", str(prefix)]) == 0
    return prefix


def _records(path) -> dict:
    """clip -> record without the timings; every clip must appear exactly once."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if '"clip"' in line]
    keys = [r["clip"] for r in records]
    assert len(keys) == len(set(keys)), "a clip was recorded twice"
    return {r["clip"]: _untimed(r) for r in records}


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _same_outputs(prefix, expected_prefix) -> None:
    """Per-clip records, the summary JSON and the CSV equal those of ``expected_prefix`` (timings aside)."""
    assert _records(f"{prefix}.jsonl") == _records(f"{expected_prefix}.jsonl")
    summary, expected = (json.loads(Path(f"{p}.json").read_text()) for p in (prefix, expected_prefix))
    assert _untimed(summary) == _untimed(expected)
    rows, expected_rows = ([_untimed(row) for row in csv.DictReader(open(f"{p}.csv"))] for p in (prefix, expected_prefix))
    assert rows == expected_rows


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
                RAY_USAGE_STATS_ENABLED="0")


# ----------------------------------------------------------------------------- --ray local (first: no other Ray yet)
def test_ray_local_gives_the_local_predictions(dataset, local_run, tmp_path):
    pytest.importorskip("ray")
    expected = _records(f"{local_run}.jsonl")
    assert len(expected) == CLASSES * PER_CLASS + 1
    assert [k for k, r in expected.items() if "error" in r] == [os.path.join("class_2", "zz_broken.mp4")]
    assert all(set(r["results"]) == {"0", "48"} for r in expected.values() if "error" not in r)
    command = [sys.executable, "-m", "sta_deploy.cli", "evaluate", str(dataset), *ARGS, "-o", str(tmp_path / "ray"), "--ray", "local"]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_outputs(tmp_path / "ray", local_run)  # predictions, top-1/top-5 per r1 and the failed list
    assert "40 clips evaluated, 1 failed" in done.stdout
    assert "skipped class_2/zz_broken.mp4: not a readable video" in done.stderr


# ----------------------------------------------------------------------------- one cluster for the rest
@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray owned by this process (stopped at the end); its workers import this checkout."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    previous = os.environ.get("PYTHONPATH")
    os.environ.update(_env())
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="ERROR")
    from sta_deploy.video.ray_evaluate import _quiet_ray_data

    _quiet_ray_data(ray)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    if previous is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = previous


def _inference_workers() -> dict[int, str]:
    """pid -> class name of the live inference actors, from Ray's GCS actor table (``ray.util.state``
    needs the dashboard of ray[default], which ray[data] does not install)."""
    from ray._private import state

    return {a["Pid"]: a["ActorClassName"] for a in state.actors().values() if "InferenceWorker" in a["ActorClassName"] and a["State"] == "ALIVE" and a["Pid"]}


def _count_records(path) -> int:
    return path.read_bytes().count(b'"clip"') if path.exists() else 0


def test_a_worker_killed_mid_run_is_replaced_and_every_clip_counts_once(cluster, dataset, local_run, tmp_path):
    from sta_deploy.video.ray_evaluate import ray_producer

    recipe, backends, protocol, labelled = _setup(dataset)
    results = tmp_path / "r.jsonl"
    killed = {}

    def kill_one_worker():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "pid" not in killed:
            workers = _inference_workers()
            if workers and _count_records(results) >= 4:
                pid, name = next(iter(workers.items()))
                killed.update(pid=pid, name=name, records_before=_count_records(results))
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    summary = evaluate(backends, labelled, protocol, results_path=results, progress=False, log=lambda _: None,
                       produce=ray_producer(recipe, workers=1))
    killer.join(5)
    assert "pid" in killed and killed["records_before"] < CLASSES * PER_CLASS + 1, "the run ended before a worker could be killed"
    assert killed["pid"] not in _inference_workers()
    assert "decode_row" not in killed["name"]  # decoding is its own stage (tasks), not fused into the actors
    assert _records(results) == _records(f"{local_run}.jsonl")  # all 41 clips, once each, same predictions
    assert summary.rows[1].clips == CLASSES * PER_CLASS and summary.pending == 0


def test_driver_killed_midway_resumes_to_the_uninterrupted_files(cluster, dataset, local_run, tmp_path):
    prefix = tmp_path / "run"
    results = tmp_path / "run.jsonl"
    command = [sys.executable, "-m", "sta_deploy.cli", "evaluate", str(dataset), *ARGS, "-o", str(prefix), "--ray", cluster]
    first = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while _count_records(results) < 5:
            assert first.poll() is None, f"finished before it could be interrupted: {first.communicate()}"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
    finally:
        first.kill()
        first.communicate()
    done_before = _count_records(results)
    assert 5 <= done_before < CLASSES * PER_CLASS + 1
    second = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-3000:]
    _same_outputs(prefix, local_run)


def test_exported_models_run_on_the_workers_as_here(cluster, dataset, tiny_exports, tmp_path):
    """--onnx on Ray: each worker opens the export (ONNX Runtime, and OpenVINO where installed) and
    rebuilds the r1 = 0 PyTorch baseline from its manifest, as the driver does."""
    import importlib.util

    from sta_deploy.video.ray_evaluate import ray_producer

    exported = tiny_exports.get("tiny")
    labelled = read_labelled_list(dataset)
    labelled.clips = labelled.clips[:6]
    runtimes = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    outcomes = {}
    for runtime in runtimes:
        recipe = BackendRecipe("vit_s", None, onnx_paths=(str(exported),), runtime=runtime, precision="f32" if runtime == "openvino" else None, threads=1)
        backends = recipe.build()
        protocol = protocol_for_backend(backends[0], views="1x1")
        for where, produce in (("here", None), ("ray", ray_producer(recipe, workers=1))):
            path = tmp_path / f"{runtime}_{where}.jsonl"
            evaluate(backends, labelled, protocol, results_path=path, progress=False, log=lambda _: None, produce=produce)
            outcomes[runtime, where] = _records(path)
    for runtime in runtimes:
        here, ray = outcomes[runtime, "here"], outcomes[runtime, "ray"]
        assert len(here) == 6 and {k: {r1: v["top5"] for r1, v in r["results"].items()} for k, r in here.items()} == {
            k: {r1: v["top5"] for r1, v in r["results"].items()} for k, r in ray.items()
        }
        assert all(set(r["results"]) == {"0", "4"} for r in ray.values())


def test_a_worker_missing_the_checkpoint_stops_the_run_in_one_line(cluster, dataset, tmp_path):
    from sta_deploy.video.ray_evaluate import ray_producer

    missing = tmp_path / "only_on_the_driver.pth"
    recipe, backends, protocol, labelled = _setup(dataset, checkpoint=str(missing))
    started = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        evaluate(backends, labelled, protocol, results_path=tmp_path / "r.jsonl", progress=False, log=lambda _: None,
                 produce=ray_producer(recipe, workers=1))
    message = str(raised.value)
    assert "\n" not in message and message.startswith("node ")
    assert f"{missing} does not exist there" in message
    assert time.monotonic() - started < 60


def test_an_address_where_nothing_listens_fails_in_one_line(cli, dataset, tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    code, out, err = cli("evaluate", dataset, *ARGS, "-o", tmp_path / "run", "--ray", f"127.0.0.1:{port}")
    assert code == 1 and time.monotonic() - started < 30
    assert err.strip().splitlines()[-1] == (
        f"sta-deploy: error: no Ray cluster at 127.0.0.1:{port}: start one with `ray start --head` or use --ray local"
    )


def test_without_ray_the_option_says_what_to_install(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, out, err = cli("evaluate", ROOT / "README.md", *ARGS, "--ray", "local")
    assert code == 1
    assert err.strip().splitlines()[-1] == "sta-deploy: error: --ray needs Ray Data: pip install 'sta-deploy[ray]'"


def test_ray_sizes_without_ray_are_refused(cli, dataset):
    code, out, err = cli("evaluate", dataset, *ARGS, "--ray-workers", "4")
    assert code == 2 and "add --ray local|auto|ADDRESS" in err
