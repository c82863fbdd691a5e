"""``sta-deploy serve`` and the local Triton launcher when things go wrong: a port in use, a missing
repository, a model that fails to load (one-line errors, no server process left), a server killed
under load (clients get errors within their timeout, a restart serves again), and a clean stop on
SIGTERM / Ctrl-C.  Every server listens on 127.0.0.1 only; every loop is bounded in count and time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from _serve import needs_triton, processes_mentioning

pytestmark = needs_triton
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory, tiny_exports):
    """A repository with one Python-backend model (the tiny dynamic-batch export)."""
    from sta_deploy.serve.repository import write_repository

    return write_repository(tiny_exports.get("tiny"), tmp_path_factory.mktemp("lifecycle") / "repo", platform="python", threads=1).root


def _gone(marker: str, within: float = 15.0) -> list[int]:
    deadline = time.monotonic() + within
    while (left := processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _free_ports(count):
    from sta_deploy.serve.server import free_port

    return [free_port() for _ in range(count)]


def test_port_in_use_is_one_line_and_starts_nothing(cli, small_repo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        grpc, metrics = _free_ports(2)
        code, _, err = cli("serve", small_repo, "--http-port", port, "--grpc-port", grpc, "--metrics-port", metrics)
    assert code == 1
    assert err.strip().splitlines()[-1] == f"sta-deploy: error: port {port} on 127.0.0.1 is in use (another server?); choose another with --http-port"
    assert _gone(str(small_repo), within=1) == []


def test_missing_repository_is_one_line(cli, tmp_path):
    code, _, err = cli("serve", tmp_path / "nowhere")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "model repository" in err and "does not exist" in err


def test_onnxruntime_model_is_refused_with_the_reason(cli, tiny_exports, tmp_path):
    """onnxruntime_onnx (and tensorrt_plan) models load only in NVIDIA's container: serve says so before starting."""
    code, _, _ = cli("triton-repo", tiny_exports.get("tiny"), "-o", tmp_path / "ort")
    assert code == 0
    code, _, err = cli("serve", tmp_path / "ort", *sum((["--" + p, port] for p, port in zip(("http-port", "grpc-port", "metrics-port"), _free_ports(3))), []))
    assert code == 1 and "is onnxruntime_onnx" in err and "only the Python backend" in err and len(err.strip().splitlines()) == 1


def test_model_that_fails_to_load_is_one_line_and_leaves_no_process(cli, small_repo, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(small_repo, broken)
    (broken / "tiny" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    http, grpc, metrics = _free_ports(3)
    code, _, err = cli("serve", broken, "--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics, "--timeout", 120)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "model 'tiny' failed to load" in lines[0] and "cannot load" in lines[0] and "At:" not in lines[0], lines
    assert _gone(str(broken)) == []


def _hammer(url, stop_at, outcomes, limit=200):
    from sta_deploy.serve.client import Connection

    connection = Connection(url, timeout=10)
    clips = np.zeros((1, 3, 16, 64, 64), np.float32)
    for _ in range(limit):
        if time.monotonic() > stop_at:
            return
        try:
            connection.infer("tiny", {"video": clips}, ["logits"])
            outcomes.append("ok")
        except Exception as error:  # a dead server: the client must fail, not hang
            outcomes.append(f"error: {error}")
            return


def test_server_killed_under_load_clients_fail_in_time_and_a_restart_serves(small_repo):
    from sta_deploy.serve.client import Connection
    from sta_deploy.serve.server import TritonServer

    http, grpc = _free_ports(2)
    server = TritonServer(small_repo, http_port=http, grpc_port=grpc)
    try:
        server.start(timeout=180)
        outcomes: list[str] = []
        threads = [threading.Thread(target=_hammer, args=(server.http_url, time.monotonic() + 90, outcomes), daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while outcomes.count("ok") < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outcomes.count("ok") >= 8, outcomes[:3]
        killed_at = time.monotonic()
        server.kill()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a client hung after the server died"
        assert time.monotonic() - killed_at < 30
        assert sum(o.startswith("error") for o in outcomes) == 4, outcomes[-4:]
        assert _gone(str(small_repo)) == []
        server.process = None
        server.start(timeout=180)  # same ports
        answer = Connection(server.http_url, timeout=30).infer("tiny", {"video": np.zeros((2, 3, 16, 64, 64), np.float32)}, ["logits"])
        assert answer["logits"].shape == (2, 6)
    finally:
        server.stop()
    assert _gone(str(small_repo)) == []


@pytest.mark.parametrize("stop_signal, target", [(signal.SIGTERM, "repository"), (signal.SIGINT, "export")], ids=["SIGTERM-repository", "Ctrl-C-export"])
def test_serve_command_prints_urls_and_stops_cleanly(small_repo, tiny_exports, stop_signal, target):
    """``serve REPO`` and ``serve EXPORT`` (a Python-backend repository with the video ensemble, made on the fly)."""
    http, grpc, metrics = _free_ports(3)
    what = [str(small_repo)] if target == "repository" else [str(tiny_exports.get("tiny")), "--with-preprocess", "--views", "1x1"]
    command = [sys.executable, "-c", "import sys; from sta_deploy.cli.app import main; sys.exit(main())", "serve", *what, "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # The Ctrl-C case starts serve with SIGINT ignored, as every background job inherits it (nohup, CI
    # scripts): serve must still stop on SIGINT.
    ignore_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if stop_signal == signal.SIGINT else None
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT, preexec_fn=ignore_sigint)
    try:
        lines, deadline = [], time.monotonic() + 180
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if " ready: " in line:
                break
        assert any(f"HTTP http://127.0.0.1:{http}, gRPC grpc://127.0.0.1:{grpc}, metrics http://127.0.0.1:{metrics}/metrics" in l for l in lines), lines
        if target == "export":
            assert "tiny, tiny_classify, tiny_preprocess, tiny_video" in lines[0]
        process.send_signal(stop_signal)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, out
    assert out.strip().splitlines()[-2:] == ["stopping Triton ...", "stopped"]
    assert _gone(str(small_repo) if target == "repository" else "sta_serve_") == []
