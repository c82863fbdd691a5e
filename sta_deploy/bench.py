"""Latency measurement for exported models (ONNX Runtime) and PyTorch eager, plus STA's share of the time."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

STA_SCOPE = "sta_stages"


@dataclass
class Timing:
    label: str
    batch: int
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p90_ms(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]

    @property
    def clips_per_s(self) -> float:
        return self.batch / (self.median_ms / 1000.0)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.update(median_ms=self.median_ms, p90_ms=self.p90_ms, clips_per_s=self.clips_per_s, runs=len(self.latencies_ms))
        return data


def time_callable(label: str, run, *, batch: int, warmup: int = 2, runs: int = 10) -> Timing:
    """Median-friendly wall-clock timing of ``run()`` after ``warmup`` untimed calls."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    from ._progress import counter

    timing = Timing(label, batch)
    with counter(f"timing {label} ({warmup} warm-up + {runs} timed)", warmup + runs, unit="runs") as done:
        for _ in range(warmup):
            run()
            done.update()
        for _ in range(runs):
            start = time.perf_counter()
            run()
            timing.latencies_ms.append((time.perf_counter() - start) * 1000.0)
            done.update()  # outside the timed span
    return timing


def time_session(label: str, session, video: np.ndarray, **kwargs) -> Timing:
    feed = {session.get_inputs()[0].name: video}
    return time_callable(label, lambda: session.run(None, feed), batch=video.shape[0], **kwargs)


def time_torch(label: str, model, video: np.ndarray, **kwargs) -> Timing:
    import torch

    tensor = torch.from_numpy(video)

    def run():
        with torch.inference_mode():
            model(tensor)

    return time_callable(label, run, batch=video.shape[0], **kwargs)


def node_scopes(onnx_path) -> dict[str, str]:
    """ONNX node name -> the exporter's module namespace (empty when unknown)."""
    from ._io import read_onnx

    model = read_onnx(onnx_path)
    return {
        node.name: next((prop.value for prop in node.metadata_props if prop.key == "namespace"), "")
        for node in model.graph.node
    }


def sta_time_share(onnx_path, video: np.ndarray, *, runs: int = 5, threads: int | None = None) -> dict:
    """Profile ``onnx_path`` on ONNX Runtime and split node time into STA nodes and the rest.

    Uses ONNX Runtime's profiler with graph optimisations off, so every node keeps the module scope
    the exporter gave it (``sta_stages.i`` for STA).  Returns microseconds and the STA fraction.
    """
    import onnxruntime as ort

    from .runtime import onnx_session

    scopes = node_scopes(onnx_path)
    options = ort.SessionOptions()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = onnx_session(onnx_path, threads=threads, optimization="disable", session_options=options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: video}
        session.run(None, feed)  # warm-up, excluded below by counting only the last `runs`
        for _ in range(runs):
            session.run(None, feed)
        profile_path = session.end_profiling()
        events = json.loads(Path(profile_path).read_text())
    per_run: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        per_run.setdefault(node, []).append(float(event["dur"]))
    sta_us = other_us = 0.0
    for node, durations in per_run.items():
        recent = durations[-runs:]
        mean = sum(recent) / len(recent)
        if STA_SCOPE in scopes.get(node, ""):
            sta_us += mean
        else:
            other_us += mean
    total = sta_us + other_us
    return {"sta_us": sta_us, "other_us": other_us, "sta_fraction": sta_us / total if total else 0.0}
