"""A real ``tritonserver`` (the binary nvidia-pytriton ships: CPU, Python backend) as a child process.

What this takes care of, so that ``sta-deploy serve`` is one command:

* the Python backend's stub links ``libpython3.X``; with a Python built elsewhere (pyenv) the system
  library would be loaded instead of the running interpreter's and model loading fails
  (``'_thread.RLock' object has no attribute '_recursion_count'``): ``LD_LIBRARY_PATH`` starts with
  this interpreter's ``LIBDIR``, and ``PATH`` with its ``bin`` so the stub finds this environment;
  the server runs in the folder above this package (the stub ignores PYTHONPATH but puts its working
  directory on ``sys.path``), so the models import this very ``sta_deploy``;
* numpy 2 in the stub's environment made answers come back empty without an error: refused before
  starting (and every model self-tests its tensors when it loads, see ``triton_models.common``);
* the server runs in its own process group, with a parent-death signal: stopping it (or this process
  dying) takes the Python-backend stubs with it; no orphan is left;
* ports in use, a missing repository and a model that fails to load are one-line errors.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .. import errors

SERVE_EXTRA = "pip install 'sta-deploy[serve]'"


class ServeError(RuntimeError):
    """The server could not start or stopped; the message is one line."""


def triton_dist() -> Path:
    """The folder of nvidia-pytriton's Triton build (bin/tritonserver, backends/python, stubs)."""
    try:
        import pytriton
    except ImportError:
        raise ImportError(f"serving with a local Triton needs nvidia-pytriton and tritonclient: {SERVE_EXTRA}") from None
    folder = Path(pytriton.__file__).resolve().parent / "tritonserver"
    if not (folder / "bin" / "tritonserver").is_file():
        raise ServeError(f"nvidia-pytriton at {folder.parent} has no tritonserver binary; reinstall it: {SERVE_EXTRA}")
    return folder


def check_numpy() -> None:
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        raise ServeError(
            f"numpy {numpy.__version__} is installed: Triton's python-backend stub (nvidia-pytriton 0.7) answers empty tensors "
            "with numpy 2; install numpy<2 in this environment (pip install 'numpy<2')"
        )


def backend_folder(dist: Path, into: Path) -> Path:
    """``into/backends/python``: the Python backend with the stub of this interpreter's version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServeError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    python = into / "backends" / "python"
    python.mkdir(parents=True)
    for item in (dist / "backends" / "python").iterdir():
        if item.is_file():
            (python / item.name).symlink_to(item)
    (python / "triton_python_backend_stub").symlink_to(stub)
    return into / "backends"


def server_env(dist: Path) -> dict:
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    libs = [libdir, str(dist.parent.parent / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


def package_parent() -> str:
    """The folder holding this ``sta_deploy``: the server's working directory.  The stub ignores
    PYTHONPATH but puts its working directory first on ``sys.path``, so the Python-backend models
    import this very package, whichever way it is installed."""
    return str(Path(__file__).resolve().parents[2])


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict, a listener is
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_repository(repository: Path) -> list[str]:
    """The model names in a repository (folders with a config.pbtxt); one-line errors otherwise."""
    if not repository.exists():
        raise ServeError(f"model repository {repository} does not exist (write one with 'sta-deploy triton-repo')")
    if not repository.is_dir():
        raise ServeError(f"{repository} is not a model repository folder")
    models = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file())
    if not models:
        raise ServeError(f"{repository} holds no model (no */config.pbtxt); write one with 'sta-deploy triton-repo'")
    return models


def _set_parent_death_signal() -> None:  # runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version \d+: (.*?)\"?$")


def failure_from_log(text: str) -> str | None:
    """The first reason in tritonserver's log why it could not serve, as one line."""
    for line in text.splitlines():
        found = LOAD_FAILURE.search(line)
        if found:
            reason = found.group(2).split("\\n\\nAt:")[0].replace("\\n", " ").strip()  # the Python backend appends a traceback
            return f"model '{found.group(1)}' failed to load: {reason[:400]}"
    for pattern in ("failed to start", "Address already in use", "error:", "Error"):
        for line in text.splitlines():
            if pattern in line:
                return line.split("] ", 1)[-1].strip().strip('"')[:400]
    return None


@dataclass
class TritonServer:
    """``with TritonServer(repo) as server:`` starts tritonserver, waits until every model is ready, and
    stops it (process group, stubs included) on exit."""

    repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 0  # 0: no metrics endpoint
    log_verbose: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)
    _scratch: Path | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def log_path(self) -> Path | None:
        return self._scratch / "tritonserver.log" if self._scratch else None

    def log(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace") if path is not None and path.is_file() else ""

    def _arguments(self, dist: Path, backends: Path) -> list[str]:
        arguments = [
            str(dist / "bin" / "tritonserver"), f"--model-repository={self.repository}", f"--backend-directory={backends}",
            f"--cache-directory={dist / 'caches'}", f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}", "--exit-on-error=true", "--strict-readiness=true",
            f"--log-verbose={self.log_verbose}", "--exit-timeout-secs=10",
        ]
        if self.metrics_port:
            arguments += ["--allow-metrics=true", "--allow-cpu-metrics=true", f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}"]
        else:
            arguments += ["--allow-metrics=false"]
        return arguments

    def _check_ports(self) -> None:
        ports = [("--http-port", self.http_port), ("--grpc-port", self.grpc_port)] + ([("--metrics-port", self.metrics_port)] if self.metrics_port else [])
        if len({port for _, port in ports}) != len(ports):
            raise ServeError(f"HTTP, gRPC and metrics ports must differ, got {', '.join(str(p) for _, p in ports)}")
        for option, port in ports:
            if not port_free(self.host, port):
                raise ServeError(f"port {port} on {self.host} is in use (another server?); choose another with {option}")

    def start(self, timeout: float = 180.0) -> TritonServer:
        self.repository = Path(self.repository).resolve()
        check_repository(self.repository)
        dist = triton_dist()
        check_numpy()
        self._check_ports()
        self._scratch = Path(tempfile.mkdtemp(prefix="sta_triton_"))
        backends = backend_folder(dist, self._scratch)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self._arguments(dist, backends), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=server_env(dist), preexec_fn=_set_parent_death_signal, cwd=package_parent(),
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process.wait()
                reason = failure_from_log(self.log()) or f"tritonserver exited with code {self.process.returncode}"
                raise ServeError(f"Triton did not start: {reason}")
            if self.ready():
                return
            time.sleep(0.25)
        reason = failure_from_log(self.log())
        raise ServeError(f"Triton was not ready after {timeout:.0f}s" + (f": {reason}" if reason else ""))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group at once (for fault tests): no clean shutdown."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Triton drains and unloads), SIGKILL to the group after ``timeout``; scratch removed."""
        if self.process is not None:
            group = self.process.pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)  # the stubs, if any outlived the server
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def one_line(error: BaseException) -> str:
    return errors.first_line(error, 500)
