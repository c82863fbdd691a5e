"""``evaluate`` on a Ray cluster (Ray Data): the same records, resume and summary, at dataset scale.

The clips still to do become a Dataset of one row per clip, in two stages that scale apart:

1. decoding + view sampling: Ray tasks (one CPU each), a row's uint8 views as bytes, or the clip's error;
2. inference: an actor pool, each actor holding every r1's backend, rebuilt on its node from a
   :class:`~.backend_recipe.BackendRecipe` (``--threads`` CPUs and ``--ray-gpus-per-worker`` GPUs each).

The records are built by :mod:`.records`, as in the local loop, and streamed back to the driver,
which :func:`.evaluate.evaluate` appends to the results file as they arrive (so the file is always a
valid prefix and resume works as locally).  Ray re-runs the task of a worker that dies; a clip that
arrives twice is counted once by the driver.  A worker that cannot build its backends (a checkpoint
missing on its node) stops the run with one line naming the node and the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import threading

import numpy as np

from ..errors import ConfigError, first_line
from .clips import load_views, model_input
from .records import decode_into, error_into, new_record, run_into

INSTALL = "--ray needs Ray Data: pip install 'sta-deploy[ray]'"
NO_CLUSTER = "no Ray cluster at {address}: start one with `ray start --head` or use --ray local"
CONNECT_TIMEOUT_S = 5.0  # a TCP connection to the head's GCS port
INIT_TIMEOUT_S = 60.0  # ray.init once something listens there (Ray itself retries for minutes)
SETUP_FAILED = "sta-deploy worker setup failed: "  # marks a worker's setup error inside Ray's wrapping


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the 'data' extra: pandas, pyarrow)
    except ImportError:
        raise ConfigError(INSTALL) from None
    return ray


@contextlib.contextmanager
def connected(target: str, *, num_cpus: int | None = None):
    """``ray.init`` for ``target``: "local" (a private Ray on this machine, loopback only, no dashboard,
    no usage stats; stopped on exit), "auto" (the cluster this machine is part of) or a head's address."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = import_ray()
    quiet = dict(log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False)
    if target == "local":
        ray.init(num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1", **quiet)
    elif target == "auto":
        try:
            ray.init(address="auto", **quiet)
        except ConnectionError:
            raise ConfigError("--ray auto: this machine is not part of a Ray cluster; start one with `ray start --head` or use --ray local") from None
    else:
        _init_at(ray, target, {key: value for key, value in quiet.items() if key != "include_dashboard"})
    _quiet_ray_data(ray)
    try:
        yield ray
    finally:
        ray.shutdown()


def _init_at(ray, address: str, options: dict) -> None:
    """``ray.init(address)`` in bounded time: Ray waits minutes for a head that is not there."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or address, int(port or 6379)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError):
        raise ConfigError(NO_CLUSTER.format(address=address)) from None
    outcome: dict = {}

    def init():
        try:
            ray.init(address=address, **options)
            outcome["done"] = True
        except Exception as error:  # reported in the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=init, name="ray-init", daemon=True)
    worker.start()
    worker.join(INIT_TIMEOUT_S)
    if "error" in outcome:
        raise ConfigError(f"{NO_CLUSTER.format(address=address)} ({first_line(outcome['error'])})") from None
    if "done" not in outcome:
        raise ConfigError(f"{address} answers but is no Ray head (ray.init gave up after {INIT_TIMEOUT_S:.0f} s); " + NO_CLUSTER.format(address=address))


def _quiet_ray_data(ray) -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # evaluate draws its own bar
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def ray_producer(recipe, *, workers: int | None = None, gpus_per_worker: float = 0):
    """``produce(todo, protocol)`` for :func:`.evaluate.evaluate`: runs ``todo`` on the connected
    cluster and yields each clip's record as the driver receives it."""

    def produce(todo, protocol):
        if not todo:
            return
        ray = import_ray()
        # workers start in other folders: every path absolute (the same on every node, e.g. a shared mount)
        rows = [{"key": clip.key, "label": clip.label, "path": os.path.abspath(clip.path), "r1": json.dumps([b.r1 for b in missing])} for clip, missing in todo]
        threads = recipe.threads or 1  # an actor's CPUs: PyTorch/ONNX Runtime threads on them, not the node's count
        worker_recipe = dataclasses.replace(recipe, threads=threads, checkpoint=recipe.checkpoint and os.path.abspath(recipe.checkpoint),
                                            onnx_paths=tuple(os.path.abspath(path) for path in recipe.onnx_paths))
        decoded = ray.data.from_items(rows, override_num_blocks=len(rows)).map(
            decode_row, fn_kwargs={"protocol": protocol}, num_cpus=1,
            # a decode task holds the decoded frames and the views: say so to the scheduler (the
            # different resources also keep Ray Data from fusing decoding into the inference actors)
            memory=max(256 << 20, 4 * view_bytes(protocol)),
        )
        size = workers or default_workers(ray, threads, gpus_per_worker)
        finished = decoded.map(
            InferenceWorker, fn_constructor_kwargs={"recipe": worker_recipe, "protocol": protocol},
            compute=ray.data.ActorPoolStrategy(size=size), num_cpus=threads, num_gpus=gpus_per_worker or None,
        )
        rows_back = iter(finished.iter_rows())
        try:
            while True:
                try:
                    row = next(rows_back)
                except StopIteration:
                    return
                except Exception as error:
                    raise _driver_error(error) from None
                yield json.loads(row["record"])
        finally:
            getattr(rows_back, "close", lambda: None)()  # stops the pipeline when the driver stops early

    return produce


def view_bytes(protocol) -> int:
    return protocol.num_views * protocol.num_frames * protocol.crop_size * protocol.crop_size * 3


def default_workers(ray, threads: int, gpus_per_worker: float) -> int:
    """One actor per GPU share; on CPUs, half the cluster's cores (the other half decodes)."""
    resources = ray.cluster_resources()
    if gpus_per_worker:
        return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // (2 * threads)))


def decode_row(row: dict, protocol) -> dict:
    """Stage 1 (a Ray task): decode one clip and cut its views, or record why it cannot be."""
    record = new_record(row["key"], int(row["label"]))
    pixels = b""
    shape: list = []
    try:
        views = decode_into(record, row["path"], protocol, load_views)
        pixels, shape = views.pixels.tobytes(), list(views.pixels.shape)
    except Exception as error:  # the clip's error, recorded as locally
        error_into(record, error)
    return {"record": json.dumps(record), "r1": row["r1"], "pixels": pixels, "shape": json.dumps(shape)}


class InferenceWorker:
    """Stage 2 (a Ray actor): every r1's backend, built once on this node from the recipe."""

    def __init__(self, recipe, protocol):
        self.protocol = protocol
        missing = [path for path in recipe.files() if not os.path.exists(path)]
        try:
            if missing:
                raise ConfigError(f"{missing[0]} does not exist there (every node needs the checkpoint and the exported models at the same path)")
            self.backends = {backend.r1: backend for backend in recipe.build(needed_by="evaluate --ray")}
        except Exception as error:
            raise RuntimeError(f"{SETUP_FAILED}{_node()}: {first_line(error)}") from None

    def __call__(self, row: dict) -> dict:
        record = json.loads(row["record"])
        if "error" not in record:
            try:
                pixels = np.frombuffer(row["pixels"], dtype=np.uint8).reshape(json.loads(row["shape"]))
                run_into(record, [self.backends[r1] for r1 in json.loads(row["r1"])], model_input(pixels, self.protocol), self.protocol)
            except Exception as error:  # not the clip's fault: recorded with retry, as locally
                error_into(record, error)
        return {"record": json.dumps(record)}


def _node() -> str:
    import ray

    return f"node {ray.util.get_node_ip_address()} (id {ray.get_runtime_context().get_node_id()[:12]})"


def _driver_error(error: Exception) -> Exception:
    """A worker's setup error as its own line; anything else as Ray's first line."""
    cause: BaseException | None = error
    while cause is not None:
        found = re.search(re.escape(SETUP_FAILED) + r"([^\n\x1b]*)", str(cause))
        if found:
            return ConfigError(found.group(1).strip())
        cause = cause.__cause__ or cause.__context__
    return RuntimeError(f"the Ray run failed: {first_line(error)}")
