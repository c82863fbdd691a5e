"""The ``tune`` sweep: every point's accuracy cost on the clips, then its latency, resumable.

1. Reference: the unpruned float32 PyTorch model on every clip (clips that cannot be read are left out
   of every point); its per-clip logits go to ``DIR/logits/reference.npy``.
2. Accuracy, point by point: export (or reuse) its artifact, run it on the clips, save its per-clip
   logits (``DIR/logits/<point>.npy``, rows in the reference's clip order) and the measures of
   :mod:`.tune_measures`.
3. Latency (not for a ``--gflops`` budget): all points' runtimes open together, timed round-robin
   (each round starts one point later, so that machine noise hits all alike).  The latency of a point
   is the wall time of one call of its model on one batch of the export's batch size (default 1: one
   view), after a warm-up call; its median over ``rounds x runs`` calls is what the budget compares.

Every finished step is a line in ``DIR/tune.jsonl`` (:class:`.tune_log.TuneLog`): a re-run skips it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _progress
from .errors import VideoError
from .tune_choice import Budget, PointResult
from .tune_clips import ClipSet, ViewCache
from .tune_exports import ModelSpec, ensure_artifact, open_backend, timing_input
from .tune_log import TuneLog
from .tune_measures import accuracy_cost, clip_logits
from .tune_points import Point


@dataclass
class TuneRequest:
    spec: ModelSpec
    points: list  # Point
    clips: ClipSet
    protocol: object  # SamplingProtocol
    out_dir: Path
    budget: Budget
    rounds: int = 5
    runs: int = 3  # timed calls per point and round
    threads: int | None = None
    calib_size: int = 16
    restart: bool = False
    sampling: dict | None = None  # the --dataset/--views/--stride/--min-frames that made ``protocol``


def settings_for(request: TuneRequest) -> dict:
    """What must not change for earlier results to count (the points may: new ones are added)."""
    spec = request.spec
    return {
        "model": spec.name,
        "config": spec.config_dict(),
        "weights": spec.weights(),
        "batch": spec.batch,
        "clips": {"source": str(Path(request.clips.source).resolve()), "keys": list(request.clips.keys), "labels": request.clips.labels},
        "protocol": request.protocol.as_dict(),
        "timing": {"rounds": request.rounds, "runs": request.runs, "threads": request.threads},
        "calib_size": request.calib_size,
    }


def _save_logits(out_dir: Path, name: str, logits: np.ndarray) -> str:
    from .._io import atomic_path

    relative = Path("logits") / f"{name}.npy"
    (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / relative) as temp:
        with open(temp, "wb") as handle:
            np.save(handle, np.asarray(logits, dtype=np.float64))
    return str(relative)


def _run_clips(backend, cache: ViewCache, indices, protocol, label: str, failed: dict | None = None) -> tuple[list, np.ndarray]:
    """(indices that ran, their per-clip logits); unreadable clips go to ``failed`` when it is given."""
    rows, done = [], []
    with _progress.counter(label, len(indices), unit="clips") as bar:
        for index in indices:
            try:
                views = cache.views(index)
            except VideoError as error:
                if failed is None:
                    raise
                failed[str(cache.paths[index])] = error.reason
                bar.write(f"skipped {cache.paths[index]}: {error.reason}")
                bar.update()
                continue
            logits, _ = backend.run(views)
            rows.append(clip_logits(logits, protocol.average))
            done.append(index)
            bar.update()
    if not rows:
        raise VideoError(str(cache.paths[0]) if cache.paths else "clips", "no clip of the set could be read")
    return done, np.stack(rows)


def reference_pass(request: TuneRequest, log: TuneLog, cache: ViewCache) -> None:
    from .backends import TorchBackend

    spec = request.spec
    model = spec.build(0)
    backend = TorchBackend(model, source="unpruned fp32 reference", checkpoint=spec.checkpoint, random_weights=spec.checkpoint is None)
    failed: dict = {}
    done, logits = _run_clips(backend, cache, range(len(cache.paths)), request.protocol, "reference (PyTorch fp32, r1 = 0)", failed)
    labels = [request.clips.labels[i] for i in done] if request.clips.labels is not None else None
    log.append({"kind": "reference", "indices": done, "clips": [request.clips.keys[i] for i in done], "labels": labels,
                "failed": failed, "logits": _save_logits(request.out_dir, "reference", logits)})


def _calibration(request: TuneRequest, indices):
    """Calibration clips for OpenVINO int8 from the sweep's own clips (made once, on first need)."""
    made = {}

    def calibration():
        if "clips" not in made:
            from .calibration import calibration_clips

            paths = [request.clips.paths[i] for i in indices]
            clips, _ = calibration_clips(paths, request.protocol, limit=request.calib_size)
            made["clips"] = (clips, f"{len(clips)} views of {len(paths)} clips from {request.clips.source} ({request.protocol.describe()})")
        return made["clips"]

    return calibration


def measure_point(request: TuneRequest, log: TuneLog, cache: ViewCache, point: Point, calibration) -> None:
    from ..models.flops import count_flops

    reference = log.reference
    _progress.note(f"point {request.points.index(point) + 1}/{len(request.points)}: {point.describe()}")
    path, reused = ensure_artifact(request.spec, point, request.out_dir, weights=request.spec.weights(), calibration=calibration)
    if reused:
        _progress.note(f"reusing {path} (its manifest matches)")
    backend = open_backend(point, path, threads=request.threads)
    _, logits = _run_clips(backend, cache, reference["indices"], request.protocol, f"{point.describe()}: clips")
    ref_logits = np.load(request.out_dir / reference["logits"])
    measures = accuracy_cost(ref_logits, logits, reference["labels"])
    log.append({
        "kind": "accuracy", "point": {"r1": point.r1, "precision": point.precision, "backend": point.backend},
        "gflops": count_flops(request.spec.name, point.r1, **request.spec.overrides).gflops, "measures": measures,
        "logits": _save_logits(request.out_dir, point.key, logits), "export": str(Path(path).relative_to(request.out_dir)), "reused_export": reused,
    })


def time_points(request: TuneRequest, log: TuneLog, cache: ViewCache) -> None:
    pending = [p for p in request.points if log.rounds_done(p.key) < request.rounds]
    if not pending:
        return
    backends = {}
    with _progress.step(f"opening {len(pending)} runtimes for timing"):
        for point in pending:
            backends[point.key] = open_backend(point, request.out_dir / log.accuracy[point.key]["export"], threads=request.threads)
    feed = timing_input(cache.views(log.reference["indices"][0]), request.spec.batch)
    for backend in backends.values():
        backend.run(feed)  # warm-up: first-call allocations and lazy compilation
    total = sum(request.rounds - log.rounds_done(p.key) for p in pending)
    with _progress.counter(f"timing {len(pending)} points round-robin ({request.rounds} rounds x {request.runs} runs)", total, unit="point-rounds") as bar:
        for round_index in range(request.rounds):
            shift = round_index % len(pending)
            for point in pending[shift:] + pending[:shift]:
                if round_index in log.latency.get(point.key, {}):
                    continue
                times = []
                for _ in range(request.runs):
                    start = time.perf_counter()
                    backends[point.key].run(feed)
                    times.append(round((time.perf_counter() - start) * 1000.0, 4))
                log.append({"kind": "latency", "point": {"r1": point.r1, "precision": point.precision, "backend": point.backend},
                            "round": round_index, "ms": times})
                bar.update()


def run_sweep(request: TuneRequest) -> tuple[list[PointResult], dict]:
    """Measure every point of ``request`` not yet in ``DIR/tune.jsonl``; returns all points' results
    and the reference record (the clips measured, their labels, the clips that failed)."""
    request.out_dir.mkdir(parents=True, exist_ok=True)
    log = TuneLog(request.out_dir / "tune.jsonl").open(settings_for(request), restart=request.restart)
    try:
        cache = ViewCache(request.clips.paths, request.protocol)
        done = [p for p in request.points if p.key in log.accuracy]
        if log.reference is not None and done:
            _progress.note(f"resuming from {log.path}: {len(done)} of {len(request.points)} points already measured")
        if log.reference is None:
            reference_pass(request, log, cache)
        calibration = _calibration(request, log.reference["indices"])
        for point in request.points:
            if point.key not in log.accuracy:
                measure_point(request, log, cache, point, calibration)
        if request.budget.needs_timing:
            time_points(request, log, cache)
        return collect(request, log), log.reference
    finally:
        log.close()


def collect(request: TuneRequest, log: TuneLog) -> list[PointResult]:
    results = []
    for point in request.points:
        record = log.accuracy[point.key]
        results.append(PointResult(point, record["gflops"], record["measures"], record["export"], log.latencies(point.key)))
    return results
