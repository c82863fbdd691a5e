"""``sta-deploy bench --trtexec``: run trtexec with pinned, recorded flags and parse its summary.

TensorRT 11 made every network strongly typed and removed trtexec's precision flags (``--fp16``
...), so precision comes from the exported graph (``--dtype fp16``); we never pass them.  The
timing flags are pinned so that numbers from different machines are comparable.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .trt import TensorRTUnavailable, check_plugin_libs, require_gpu

PINNED_FLAGS = (
    "--warmUp=500",  # ms of warm-up
    "--iterations=200",
    "--duration=0",  # stop after the iterations, not after a wall-clock time
    "--avgRuns=10",
    "--useSpinWait",
    "--noDataTransfers",  # GPU compute only, no H2D/D2H
    "--separateProfileRun",
)

_STAT = r"min = (?P<min>[\d.]+) ms, max = (?P<max>[\d.]+) ms, mean = (?P<mean>[\d.]+) ms, median = (?P<median>[\d.]+) ms(?P<rest>.*)"


def find_trtexec() -> str:
    found = shutil.which("trtexec")
    if found is None:
        for candidate in ("/usr/src/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec"):
            if Path(candidate).is_file():
                return candidate
        raise TensorRTUnavailable("trtexec is not on PATH: install TensorRT (it ships trtexec in bin/) on a machine with an NVIDIA GPU")
    return found


def trtexec_command(model_path, *, plugin_libs=(), extra=()) -> list[str]:
    model_path = Path(model_path)
    source = f"--loadEngine={model_path}" if model_path.suffix in (".plan", ".engine", ".trt") else f"--onnx={model_path}"
    command = [find_trtexec(), source, *PINNED_FLAGS]
    command += [f"--dynamicPlugins={library}" for library in plugin_libs]
    return command + list(extra)


def parse_summary(text: str) -> dict:
    """Throughput and latency statistics from trtexec's '=== Performance summary ===' block."""
    result: dict = {}
    throughput = re.search(r"Throughput: ([\d.]+) qps", text)
    if throughput:
        result["throughput_qps"] = float(throughput.group(1))
    for label, key in (("GPU Compute Time", "gpu_compute_ms"), ("Latency", "latency_ms"), ("Enqueue Time", "enqueue_ms")):
        match = re.search(rf"\] {re.escape(label)}: {_STAT}", text) or re.search(rf"^{re.escape(label)}: {_STAT}", text, re.M)
        if match:
            stats = {name: float(match.group(name)) for name in ("min", "max", "mean", "median")}
            for percent, value in re.findall(r"percentile\((\d+)%\) = ([\d.]+) ms", match.group("rest")):
                stats[f"p{percent}"] = float(value)
            result[key] = stats
    if "throughput_qps" not in result or "gpu_compute_ms" not in result:
        raise ValueError("no '=== Performance summary ===' with Throughput and GPU Compute Time in trtexec's output")
    return result


def run_trtexec_bench(model_path, *, plugin_libs=(), timeout: int = 1800) -> dict:
    command = trtexec_command(model_path, plugin_libs=plugin_libs)
    require_gpu()
    exported = Path(model_path).with_suffix(".onnx")  # a plan's export, when it sits beside it
    if exported.is_file():
        check_plugin_libs(exported, plugin_libs)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        tail = " | ".join(completed.stdout.strip().splitlines()[-3:])
        raise RuntimeError(f"trtexec failed (exit {completed.returncode}): {tail[:400]}")
    summary = parse_summary(completed.stdout)
    summary["command"] = command
    return summary
