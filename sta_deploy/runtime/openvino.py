"""OpenVINO for exported models: the pure-ONNX exports compiled directly (no conversion step, no IR
files), a compiled-model cache so that the second start is fast, an inference precision hint
(``f32`` or ``bf16``), and clips fed the way every runtime gets them (:mod:`.batching`).

OpenVINO is an optional dependency (``pip install 'sta-deploy[openvino]'``); it is imported only here,
and only when a model is compiled.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, first_line
from ..plugin.names import count_plugin_nodes, count_window_attention_nodes
from ..sta import STA_SCOPE
from .batching import kept_outputs, run_in_batches

INSTALL_HINT = "pip install 'sta-deploy[openvino]'"
PRECISIONS = ("f32", "bf16")
CACHE_ENV = "STA_DEPLOY_OPENVINO_CACHE"


class PrecisionFallbackWarning(UserWarning):
    """``bf16`` was asked for on a CPU without bf16 instructions: the model runs in f32 instead."""


def import_openvino():
    """The ``openvino`` module, or an ImportError whose one line says what to install."""
    try:
        import openvino
    except ImportError:
        raise ImportError(f"OpenVINO is not installed: {INSTALL_HINT}") from None
    return openvino


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)} (OpenVINO's inference precision hint)")
    return precision


def cpu_has_bf16(core, device: str = "CPU") -> bool:
    """Whether ``device`` computes in bf16 natively (AVX512-BF16 or AMX: OPTIMIZATION_CAPABILITIES has BF16)."""
    return "BF16" in core.get_property(device, "OPTIMIZATION_CAPABILITIES")


def default_cache_dir() -> Path:
    """``$STA_DEPLOY_OPENVINO_CACHE``, else ``$XDG_CACHE_HOME/sta-deploy/openvino`` (``~/.cache/...``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sta-deploy" / "openvino"


def check_openvino_model_file(path) -> Path:
    """The file must exist and be a pure-ONNX export: OpenVINO cannot run the STAStageSelect plugin node."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist")
    if path.suffix == ".onnx" and count_plugin_nodes(path):
        raise ConfigError(
            f"{path} is a plugin-mode export (STAStageSelect nodes, a TensorRT plugin); OpenVINO runs pure-ONNX exports: "
            "export it again with --sta-impl onnx"
        )
    if path.suffix == ".onnx" and count_window_attention_nodes(path):
        raise ConfigError(
            f"{path} is a --window-attention kernel export (KeptWindowAttention nodes, an ONNX Runtime kernel); OpenVINO runs "
            "pure-ONNX exports: export it again with --window-attention onnx"
        )
    return path


@dataclass
class OpenVinoModel:
    """A compiled model and how it was made; ``run(chunk)`` -> ``{output name: array}``."""

    compiled: object
    path: Path
    precision: str  # the precision it runs in (f32 when bf16 was asked for but the CPU lacks it)
    requested: str
    device: str
    cache_dir: Path | None
    compile_seconds: float
    input_name: str = ""
    output_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.input_name = self.compiled.inputs[0].get_any_name()
        self.output_names = [output.get_any_name() for output in self.compiled.outputs]
        self._request = self.compiled.create_infer_request()

    @property
    def description(self) -> str:
        fallback = f", {self.requested} not supported here" if self.requested != self.precision else ""
        return f"openvino ({self.device}, {self.precision}{fallback})"

    def run(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        self._request.infer({self.input_name: np.ascontiguousarray(chunk, dtype=np.float32)})
        return {name: self._request.get_output_tensor(i).data.copy() for i, name in enumerate(self.output_names)}

    def profiling(self) -> list:
        """Per-node timings of the last run (compile with ``profile=True``)."""
        return self._request.get_profiling_info()


def _compile_config(precision: str, threads, profile: bool) -> dict:
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if profile:
        config["PERF_COUNT"] = True
    return config


def openvino_model(path, *, precision: str = "f32", threads: int | None = None, cache_dir=None, device: str = "CPU", profile: bool = False) -> OpenVinoModel:
    """Compile ``path`` (an exported .onnx, or an OpenVINO .xml) for ``device``.

    ``precision``: OpenVINO's inference precision hint, ``f32`` or ``bf16``; ``bf16`` on a CPU without
    bf16 instructions runs in f32 with a :class:`PrecisionFallbackWarning`.  ``cache_dir``: where
    compiled models are cached (default :func:`default_cache_dir`; ``False`` for no cache).
    """
    path = check_openvino_model_file(path)
    check_precision(precision)
    ov = import_openvino()
    core = ov.Core()
    effective = precision
    if precision == "bf16" and not cpu_has_bf16(core, device):
        warnings.warn(f"this {device} has no bf16 instructions (OPTIMIZATION_CAPABILITIES lacks BF16): running in f32", PrecisionFallbackWarning, stacklevel=2)
        effective = "f32"
    cache = None if cache_dir is False else Path(cache_dir or default_cache_dir())
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(cache)})
    start = time.perf_counter()
    try:
        compiled = core.compile_model(str(path), device, _compile_config(effective, threads, profile))
    except Exception as error:  # OpenVINO raises RuntimeError subclasses with multi-line messages
        raise RuntimeError(f"OpenVINO cannot compile {path}: {first_line(error)}") from None
    return OpenVinoModel(compiled, path, effective, precision, device, cache, time.perf_counter() - start)


def run_clips(model: OpenVinoModel, manifest: dict, clips: np.ndarray):
    """``(logits, kept)`` of ``clips`` through ``model``, in the exported batch size (see
    :func:`.batching.run_in_batches`); ``kept`` is None when the export has no kept outputs."""
    batch = None if manifest["dynamic_batch"] else manifest["batch_size"]
    outputs = run_in_batches(model.run, clips, batch=batch)
    return outputs["logits"], kept_outputs(outputs)


def openvino_sta_share(model: OpenVinoModel, scopes: dict[str, str], video: np.ndarray, *, runs: int = 5) -> dict:
    """STA's share of OpenVINO's node time, from its performance counters (a ``profile=True`` model).

    ``scopes``: ONNX node name -> the exporter's module scope.  OpenVINO's ONNX reader keeps node names
    as operation names and fuses operations; a fused node counts as STA when most of the ONNX nodes it
    was made of (``originalLayersNames`` in the runtime model) are in the STA scope.
    """
    is_sta = {}
    for op in model.compiled.get_runtime_model().get_ops():
        known = [n for n in op.get_rt_info()["originalLayersNames"].astype(str).split(",") if n in scopes]
        is_sta[op.get_friendly_name()] = bool(known) and sum(STA_SCOPE in scopes[n] for n in known) * 2 > len(known)
    model.run(video)  # warm-up
    sta_us = other_us = 0.0
    for _ in range(runs):
        model.run(video)
        for entry in model.profiling():
            micros = entry.real_time.total_seconds() * 1e6
            if is_sta.get(entry.node_name, False):
                sta_us += micros
            else:
                other_us += micros
    sta_us, other_us = sta_us / runs, other_us / runs
    total = sta_us + other_us
    return {"sta_us": sta_us, "other_us": other_us, "sta_fraction": sta_us / total if total else 0.0}
