"""``sta-deploy serve``: a repository (or an export, through a generated repository) on a local
``tritonserver`` until Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import json
import signal
import tempfile
import time
import urllib.request
from pathlib import Path

from .server import ServeError, TritonServer, check_repository

LOCAL_BACKENDS = ("python", "ensemble")


def check_local_backends(repository: Path, models: list[str]) -> None:
    """Only Python-backend models (and ensembles of them) load in nvidia-pytriton's tritonserver."""
    from .pbtxt import read_config

    for name in models:
        config = read_config(repository / name / "config.pbtxt")
        kind = config.get("backend") or config.get("platform") or "?"
        if kind not in LOCAL_BACKENDS:
            raise ServeError(
                f"model '{name}' is {kind}: the tritonserver of nvidia-pytriton ships only the Python backend; write the repository "
                "with 'triton-repo --platform python' to serve it here, or run NVIDIA's container (see its run_triton.sh)"
            )


def repository_for(target: Path, scratch: Path, options: dict) -> Path:
    """``target`` itself when it is a repository; for an .onnx export, a Python-backend repository in ``scratch``."""
    if target.is_dir() or not target.exists():
        return target
    if target.suffix == ".plan":
        raise ServeError(f"{target} is a TensorRT engine: serve it in NVIDIA's Triton container ('sta-deploy triton-repo {target.name} --kind gpu')")
    from .repository import PreprocessOptions, write_repository

    views = options.pop("views", None)
    write_repository(target, scratch / "models", platform="python", preprocess=PreprocessOptions(views=views), **options)
    return scratch / "models"


def server_version(url: str) -> str:
    with contextlib.suppress(Exception):
        with urllib.request.urlopen(f"{url}/v2", timeout=5) as answer:
            return f"Triton {json.loads(answer.read())['version']}"
    return "Triton"


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop()


def serve_forever(target, *, host, http_port, grpc_port, metrics_port, echo, timeout=300.0, export_options=None) -> None:
    target = Path(target)
    with tempfile.TemporaryDirectory(prefix="sta_serve_") as scratch:
        repository = repository_for(target, Path(scratch), dict(export_options or {}))
        models = check_repository(repository)
        check_local_backends(repository, models)
        server = TritonServer(repository, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
        # SIGINT too, explicitly: a process started in the background (nohup, a CI script, `cmd &`)
        # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt for it.
        previous = {number: signal.signal(number, _raise_stop) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            echo(f"starting Triton on {repository} ({', '.join(models)}) ...")
            server.start(timeout=timeout)
            metrics = f", metrics http://{host}:{metrics_port}/metrics" if metrics_port else ""
            echo(f"{server_version(server.http_url)} ready: HTTP {server.http_url}, gRPC {server.grpc_url}{metrics}")
            echo(f"try: sta-deploy predict CLIP --url {server.http_url}    (Ctrl-C or SIGTERM stops the server)")
            while server.alive():
                time.sleep(0.5)
            from .server import failure_from_log

            reason = failure_from_log(server.log()) or f"exit code {server.process.returncode}"
            raise ServeError(f"tritonserver stopped by itself: {reason}")
        except (KeyboardInterrupt, _Stop):
            echo("stopping Triton ...")
        finally:
            server.stop()
            for number, handler in previous.items():
                signal.signal(number, handler)
    echo("stopped")
