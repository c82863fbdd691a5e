"""Artifacts under faults (issue 12): killed exports leave nothing a rerun does not clean up, a live
writer's work is never removed, one writer per output, files get the user's umask."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sta_deploy import create_model, save_checkpoint
from sta_deploy._io import OWNERLESS_PARTIAL_AGE_S, atomic_path, output_lock
from sta_deploy.errors import OutputBusyError

from test_export_helpers import TINY_ARGS, listing, run_cli

ROOT = Path(__file__).resolve().parents[1]
EXPORT = [sys.executable, "-m", "sta_deploy.cli", "export", "--model", "vit_s", "--r1", "32", *TINY_ARGS, "--no-validate"]


def start(command, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([str(part) for part in command], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    """Poll ``condition`` every 50 ms, at most ``timeout`` seconds, while ``process`` runs."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if condition():
            return
        assert process.poll() is None, f"finished before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)
    raise AssertionError(f"no {what}")


def partials(folder: Path) -> list[str]:
    return [name for name in listing(folder) if name.endswith(".partial")]


# ----------------------------------------------------------------------------- killed exports
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_export_then_rerun_leaves_no_partial(tmp_path, signum):
    target = tmp_path / "x.onnx"
    first = start([*EXPORT, "-o", target])
    try:
        wait_for(lambda: partials(tmp_path), first, "partial folder")
        first.send_signal(signum)
        _, err = first.communicate(timeout=60)
    finally:
        first.kill()
        first.wait()  # reaped: a zombie would still count as a live writer
    if signum == signal.SIGTERM:
        # handled like Ctrl-C: cleaned up at once, exit 128 + 15, one error line
        assert first.returncode == 143, err
        assert err.strip().splitlines()[-1].startswith("sta-deploy: error: terminated (SIGTERM)")
        assert "Traceback" not in err
        assert listing(tmp_path) == []
    else:
        left = partials(tmp_path)
        assert len(left) == 1 and f".{first.pid}@" in left[0]  # the folder names its writer
        assert ".x.onnx.lock" in listing(tmp_path)
    code, _, err = run_cli("export", "--model", "vit_s", "--r1", "32", *TINY_ARGS, "--no-validate", "-o", target)
    assert code == 0, err
    assert ("removed 1 unfinished output(s) of x.onnx left by a writer that is gone" in err) == (signum == signal.SIGKILL), err
    assert listing(tmp_path) == ["x.manifest.json", "x.onnx"]  # no partial, no lock file


def _partial(folder: Path, tail: str, *, age_s: float = 0.0) -> Path:
    path = folder / f".x.onnx.{tail}.partial"
    path.mkdir()
    (path / "x.onnx").write_bytes(b"half a model")
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def test_only_partials_of_writers_that_are_gone_are_removed(tmp_path):
    host = socket.gethostname()
    host = "".join(c if c.isalnum() or c in "_-" else "_" for c in host)[:40]
    live = start([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        keep = [
            _partial(tmp_path, f"live1234.{live.pid}@{host}"),  # its writer runs: never removed
            _partial(tmp_path, f"other123.{dead.pid}@another-host"),  # cannot be checked from here
            _partial(tmp_path, "fresh123"),  # from an older version, recent: may still be written
        ]
        _partial(tmp_path, f"dead1234.{dead.pid}@{host}")
        _partial(tmp_path, "stale123", age_s=OWNERLESS_PARTIAL_AGE_S + 60)
        unrelated = tmp_path / ".y.onnx.dead5678.1@x.partial"
        unrelated.mkdir()
        with atomic_path(tmp_path / "x.onnx") as temp:
            temp.write_bytes(b"model")
        assert sorted(partials(tmp_path)) == sorted([p.name for p in keep] + [unrelated.name])
        assert all((p / "x.onnx").read_bytes() == b"half a model" for p in keep)
    finally:
        live.kill()
        live.wait()


# ----------------------------------------------------------------------------- one writer per output
def test_two_exports_at_once_exactly_one_succeeds(tmp_path):
    target = tmp_path / "x.onnx"
    runs = [start([*EXPORT, "-o", target]) for _ in range(2)]
    finished = {}
    deadline = time.monotonic() + 180
    for _ in range(3600):  # 50 ms steps, bounded by the deadline too
        for run in runs:
            if run.pid not in finished and run.poll() is not None:
                finished[run.pid] = (run.returncode, *run.communicate(), len(finished))
        if len(finished) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for run in runs:
        run.kill()
        run.wait()
    assert len(finished) == 2, "the exports did not finish in time"
    winner = next(pid for pid, result in finished.items() if result[0] == 0)
    loser = next(pid for pid, result in finished.items() if result[0] != 0)
    code, out, err, order = finished[loser]
    assert code == 1 and order == 0  # failed at once, before the other finished
    assert err.strip().splitlines() == [f"sta-deploy: error: another sta-deploy is writing {target} (pid {winner}); wait for it to finish or choose another output path"]
    assert listing(tmp_path) == ["x.manifest.json", "x.onnx"]
    from sta_deploy.export.manifest import read_verified_manifest

    read_verified_manifest(target, needed_by="test")  # the winner's model and manifest, whole


def test_evaluate_refuses_a_results_file_another_run_writes(tmp_path, monkeypatch):
    pytest.importorskip("av")
    clips = tmp_path / "by_class" / "a"
    clips.mkdir(parents=True)
    (clips / "clip.mp4").write_bytes(b"not decoded: the run stops before")
    results = tmp_path / "out" / "run.jsonl"
    results.parent.mkdir()
    results.write_text("")
    holder = start([sys.executable, "-c", "import sys, time\nfrom sta_deploy._io import output_lock\n"
                    "output_lock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)", results])
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = listing(results.parent)
        code, _, err = run_cli("evaluate", tmp_path / "by_class", "--r1", "1", *TINY_ARGS, "--img-size", "32", "--num-classes", "2",
                               "-o", tmp_path / "out" / "run", "--no-plot")
        assert code == 1
        assert err.strip().splitlines()[-1] == f"sta-deploy: error: another sta-deploy is writing {results} (pid {holder.pid}); wait for it to finish or choose another output path"
        assert listing(results.parent) == before and results.read_text() == ""
    finally:
        holder.kill()
        holder.wait()


def test_output_lock_is_reentrant_in_a_thread_exclusive_across_threads_and_tidy(tmp_path):
    target = tmp_path / "new" / "deeper" / "x.onnx"
    errors = []
    with output_lock(target):
        with output_lock(target):  # the CLI holds it, and the exporter takes it again
            thread = threading.Thread(target=lambda: errors.append(_try_lock(target)))
            thread.start()
            thread.join(timeout=30)
        assert (tmp_path / "new" / "deeper" / ".x.onnx.lock").read_text().split()[0] == str(os.getpid())
    assert errors == [f"another sta-deploy is writing {target} (pid {os.getpid()}); wait for it to finish or choose another output path"]
    assert listing(tmp_path) == []  # lock file gone, and the folders it created (left empty) too


def _try_lock(path) -> str:
    try:
        with output_lock(path):
            return "acquired"
    except OutputBusyError as error:
        return str(error)


# ----------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_written_files_get_the_users_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        save_checkpoint(create_model("vit_s", r1=0, seed=0, embed_dim=32, depth=3, num_heads=2, img_size=32), tmp_path / "w.pth")
        with atomic_path(tmp_path / "report.json") as temp:
            temp.write_text("{}")
    finally:
        os.umask(previous)
    for name in ("w.pth", "report.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_visualize_and_evaluate_reports_are_not_owner_only(tmp_path):
    pytest.importorskip("av")
    from sta_deploy.video.synthetic import moving_shapes, write_video

    folder = tmp_path / "by_class" / "a"
    folder.mkdir(parents=True)
    write_video(folder / "clip.mp4", moving_shapes(16, 32, 32, seed=0))
    previous = os.umask(0o022)
    try:
        small = [*TINY_ARGS, "--img-size", "32", "--num-classes", "2"]
        code, _, err = run_cli("visualize", folder / "clip.mp4", "-o", tmp_path / "png" / "kept.png", "--r1", "1", *small, "--threads", "1")
        assert code == 0, err
        code, _, err = run_cli("evaluate", tmp_path / "by_class", "--r1", "1", *small, "--views", "1x1", "-o", tmp_path / "runs" / "run", "--threads", "1")
        assert code == 0, err
    finally:
        os.umask(previous)
    written = [tmp_path / "png" / "kept.png", *(tmp_path / "runs").iterdir()]
    assert {p.name for p in written} >= {"kept.png", "run.jsonl", "run.json", "run.csv", "run.png"}
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o644)}
