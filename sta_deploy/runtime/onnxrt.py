"""ONNX Runtime sessions for exported models, with whatever the graph needs already registered."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import first_line
from ..plugin.names import count_plugin_nodes, count_window_attention_nodes
from .batching import kept_outputs, run_in_batches

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def default_providers() -> list[str]:
    """CUDA when onnxruntime-gpu and a GPU are there, else CPU."""
    providers = available_providers()
    chosen = [p for p in ("CUDAExecutionProvider",) if p in providers]
    return chosen + ["CPUExecutionProvider"]


# Subnormal floats cost Video Swin 1.4-1.5x on Intel CPUs (microcode assists on subnormal
# operands): the shifted-window mask's -100 makes the softmax emit exp(-100) = 3.7e-44, and the
# attention-times-values MatMul then reads them (swin_t r1 = 256, 2 threads: 1550 -> 1040 ms;
# Softmax alone 420 -> 63 ms; the AMD machine measured before showed no such cost).  Flushing them
# changes nothing above 1.2e-38, so every session flushes them unless told not to.
DENORMAL_AS_ZERO_KEY = "session.set_denormal_as_zero"


def onnx_session(
    path, *, providers=None, threads: int | None = None, optimization: str = "all", session_options=None, denormal_as_zero: bool = True
):
    """An ``onnxruntime.InferenceSession`` for ``path`` (pure-ONNX or plugin-mode graph).

    ``denormal_as_zero`` sets flush-to-zero / denormals-are-zero on the session's threads (ONNX
    Runtime applies it to the calling thread only for the first session a process creates, which is
    why every session here asks for it).

    Plugin-mode graphs get the CPU reference of the STA plugin registered as an
    onnxruntime-extensions custom op first (see :mod:`sta_deploy.plugin.onnxrt`).
    ``--window-attention kernel`` graphs get a :class:`~sta_deploy.runtime.segmented.SegmentedSession`
    (the graph cut at its KeptWindowAttention nodes, the kernel run between the pieces).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    options = session_options or ort.SessionOptions()
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization {optimization!r} is not one of {', '.join(OPTIMIZATION_LEVELS)}")
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if threads is not None:
        options.intra_op_num_threads = threads
    if denormal_as_zero:
        options.add_session_config_entry(DENORMAL_AS_ZERO_KEY, "1")
    options.log_severity_level = 3
    model_bytes_or_path: str | bytes = str(path)
    if count_window_attention_nodes(path):
        if count_plugin_nodes(path):
            raise ValueError(f"{path} has both STAStageSelect and KeptWindowAttention nodes; export it with --sta-impl onnx")
        from .segmented import SegmentedSession

        try:
            return SegmentedSession(path, make_options=lambda: _copy_options(options, ort), providers=providers or default_providers(), threads=threads)
        except Exception as error:  # onnxruntime raises its own exception types
            raise RuntimeError(f"ONNX Runtime cannot load {path}: {first_line(error)}") from None
    plugin_mode = bool(count_plugin_nodes(path))
    if plugin_mode:
        from ..plugin.onnxrt import prepare_plugin_session

        model_bytes_or_path = prepare_plugin_session(path, options)
    try:
        session = ort.InferenceSession(model_bytes_or_path, sess_options=options, providers=providers or default_providers())
    except Exception as error:  # onnxruntime raises its own exception types
        raise RuntimeError(f"ONNX Runtime cannot load {path}: {first_line(error)}") from None
    if plugin_mode:
        from ..plugin.onnxrt import CheckedSession

        return CheckedSession(session)
    return session


def _copy_options(options, ort):
    """A fresh SessionOptions with ``options``' settings (one SessionOptions per session)."""
    copy = ort.SessionOptions()
    for name in ("graph_optimization_level", "intra_op_num_threads", "inter_op_num_threads", "log_severity_level",
                 "execution_mode", "enable_cpu_mem_arena", "enable_mem_pattern", "enable_profiling", "profile_file_prefix",
                 "optimized_model_filepath"):
        setattr(copy, name, getattr(options, name))
    try:
        copy.add_session_config_entry(DENORMAL_AS_ZERO_KEY, options.get_session_config_entry(DENORMAL_AS_ZERO_KEY))
    except Exception:  # onnxruntime raises its own exception type when the entry was never set
        pass
    return copy


def run_session(session, manifest: dict, clips: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``session`` on ``clips``, in the exported batch size (see :func:`.batching.run_in_batches`)."""
    names = [output.name for output in session.get_outputs()]
    input_name = manifest["inputs"][0]["name"]

    def run_batch(chunk):
        return dict(zip(names, session.run(None, {input_name: chunk})))

    return run_in_batches(run_batch, clips, batch=None if manifest["dynamic_batch"] else manifest["batch_size"])


def run_clips(session, manifest: dict, clips: np.ndarray):
    """``(logits, kept)`` of ``clips`` through ``session``; ``kept`` (sorted per clip) is None when the
    export has no kept outputs."""
    outputs = run_session(session, manifest, clips)
    return outputs["logits"], kept_outputs(outputs)
