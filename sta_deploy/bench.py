"""Latency of exported models (ONNX Runtime; TensorRT through trtexec), plus STA's share of the time."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .sta import STA_SCOPE


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


def node_scopes(onnx_path) -> dict[str, str]:
    """ONNX node name -> the exporter's module namespace (empty when unknown)."""
    from ._io import read_onnx

    model = read_onnx(onnx_path)
    return {node.name: _scope(node) for node in model.graph.node}


def node_times(
    onnx_path, video: np.ndarray, *, runs: int = 5, threads: int | None = None, optimization: str = "disable"
) -> dict[str, tuple[str, float]]:
    """Node name -> (op type, median microseconds per run) from ONNX Runtime's profiler.

    By default graph optimisations are off, so every node keeps the name the exporter gave it (the
    Swin design limit reads the unoptimised graph); :func:`sta_time_share` profiles the graph ONNX
    Runtime really runs.  The median over runs keeps one pre-empted run out of a node's time.
    """
    return profile_nodes(onnx_path, video, runs=runs, threads=threads, optimization=optimization)[0]


def profile_nodes(onnx_path, video, *, runs: int, threads, optimization: str, keep_graph: bool = False):
    """(node times as :func:`node_times` returns them, the optimised graph when ``keep_graph``)."""
    import onnxruntime as ort

    from ._io import read_onnx
    from .runtime.onnxrt import onnx_session

    options = ort.SessionOptions()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "profile")
        if keep_graph:
            options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimized.weights")
        session = onnx_session(onnx_path, threads=threads, optimization=optimization, session_options=options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: video}
        session.run(None, feed)  # warm-up, excluded below by counting only the last `runs`
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        if keep_graph:  # a --window-attention kernel export runs as segments: it merges their graphs
            graph = session.optimized_graph() if hasattr(session, "optimized_graph") else read_onnx(options.optimized_model_filepath).graph
        else:
            graph = None
    durations: dict[str, list[float]] = {}
    op_types: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        durations.setdefault(node, []).append(float(event["dur"]))
        op_types[node] = event.get("args", {}).get("op_name", "")
    return {node: (op_types[node], statistics.median(values[-runs:])) for node, values in durations.items()}, graph


def optimized_scopes(onnx_path, optimized_graph) -> dict[str, str]:
    """Node name of ONNX Runtime's optimised graph -> the exporter's module scope.

    Nodes ORT leaves alone keep their names; a fused node is named ``ORIGINAL/FusionName`` or keeps
    the name of the tensor its pattern produced; a node ORT inserts (a Reshape before a Gemm, the
    Squeezes after a Split) takes the scope of the node that produces its first input.
    """
    from ._io import read_onnx

    exported = read_onnx(onnx_path).graph
    scopes = {node.name: _scope(node) for node in exported.node}
    by_output = {output: _scope(node) for node in exported.node for output in node.output}
    resolved: dict[str, str] = {}
    produced_by: dict[str, str] = {}
    for node in optimized_graph.node:  # topological order: an inserted node's producer comes first
        for output in node.output:
            produced_by[output] = node.name
        prefix = node.name.split("/")[0]
        if prefix in scopes:
            resolved[node.name] = scopes[prefix]
        elif any(name in by_output for name in node.output):
            resolved[node.name] = next(by_output[name] for name in node.output if name in by_output)
        else:
            producer = produced_by.get(node.input[0], "") if node.input else ""
            resolved[node.name] = resolved.get(producer, "")
    return resolved


def _scope(node) -> str:
    return next((prop.value for prop in node.metadata_props if prop.key == "namespace"), "")


def sta_time_share(onnx_path, video: np.ndarray, *, runs: int = 5, threads: int | None = None, optimization: str = "all") -> dict:
    """Profile ``onnx_path`` on ONNX Runtime, by default as it runs it (all graph optimisations), and
    split node time into STA nodes and the rest.

    STA's nodes are those in the exporter's module scope ``sta_stages.i`` (fused nodes: see
    :func:`optimized_scopes`; with ``optimization="disable"`` every node keeps its exported name).
    Returns microseconds per run and the STA fraction.
    """
    optimised = optimization != "disable"
    times, graph = profile_nodes(onnx_path, video, runs=runs, threads=threads, optimization=optimization, keep_graph=optimised)
    scopes = optimized_scopes(onnx_path, graph) if optimised else node_scopes(onnx_path)
    sta_us = other_us = 0.0
    for node, (_, median_us) in times.items():
        if STA_SCOPE in scopes.get(node, ""):
            sta_us += median_us
        else:
            other_us += median_us
    total = sta_us + other_us
    return {"sta_us": sta_us, "other_us": other_us, "sta_fraction": sta_us / total if total else 0.0}


def op_type_times(onnx_path, video: np.ndarray, *, runs: int = 5, threads: int | None = None) -> dict[str, float]:
    """Milliseconds per run spent in each ONNX op type, largest first."""
    totals: dict[str, float] = {}
    for op_type, mean in node_times(onnx_path, video, runs=runs, threads=threads).values():
        totals[op_type] = totals.get(op_type, 0.0) + mean / 1000.0
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def trtexec_bench(model_path, *, plugin_libs=()) -> dict:
    """trtexec's summary for an exported model or engine, with GFLOPs per clip when the export's
    manifest sits beside it, and a one-paragraph ``table``."""
    from .export.manifest import manifest_flops, read_manifest
    from .runtime.trtexec import run_trtexec_bench

    summary = run_trtexec_bench(model_path, plugin_libs=plugin_libs)
    command = summary["command"]
    flops_line = ""
    try:
        summary["gflops_per_clip"] = manifest_flops(read_manifest(Path(model_path).with_suffix(".onnx"))).gflops
        flops_line = f"   {summary['gflops_per_clip']:.1f} GFLOPs/clip"
    except (FileNotFoundError, ValueError):
        pass
    gpu = summary["gpu_compute_ms"]
    summary["table"] = (
        f"trtexec {' '.join(command[1:])}\n"
        f"throughput {summary['throughput_qps']:.1f} qps   GPU compute mean {gpu['mean']:.3f} ms, median {gpu['median']:.3f} ms, "
        f"p99 {gpu.get('p99', float('nan')):.3f} ms{flops_line}"
    )
    return summary


def time_openvino(label: str, model, video: np.ndarray, **kwargs) -> Timing:
    """:func:`time_callable` of one OpenVINO inference (a :class:`sta_deploy.runtime.openvino.OpenVinoModel`)."""
    return time_callable(label, lambda: model.run(video), batch=video.shape[0], **kwargs)


def openvino_bench(model_path, video: np.ndarray, *, precision: str = "f32", threads=None, runs: int = 10, warmup: int = 2, profile: bool = False, cache_dir=None) -> dict:
    """Median latency of ``model_path`` on OpenVINO (CPU) at ``precision``, the time its compilation
    took (from the model cache when it was there), and with ``profile`` STA's share of the node time."""
    from .runtime.openvino import openvino_model, openvino_sta_share

    model = openvino_model(model_path, precision=precision, threads=threads, cache_dir=cache_dir)
    timing = time_openvino(Path(model_path).name, model, video, warmup=warmup, runs=runs)
    result = {
        "provider": model.description,
        "precision": model.precision,
        "compile_s": model.compile_seconds,
        "cache_dir": str(model.cache_dir) if model.cache_dir else None,
        "threads": threads,
        **timing.as_dict(),
    }
    if profile:
        profiled = openvino_model(model_path, precision=precision, threads=threads, cache_dir=cache_dir, profile=True)
        result["sta_share"] = openvino_sta_share(profiled, node_scopes(model_path), video)
    return result
