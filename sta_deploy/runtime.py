"""ONNX Runtime sessions for exported models, with whatever the graph needs already registered."""

from __future__ import annotations

from pathlib import Path

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def default_providers() -> list[str]:
    """CUDA when onnxruntime-gpu and a GPU are there, else CPU."""
    providers = available_providers()
    chosen = [p for p in ("CUDAExecutionProvider",) if p in providers]
    return chosen + ["CPUExecutionProvider"]


def uses_plugin(path) -> bool:
    from ._io import read_onnx
    from .plugin_names import PLUGIN_OP_TYPE

    model = read_onnx(path)

    return any(node.op_type == PLUGIN_OP_TYPE for node in model.graph.node)


def onnx_session(path, *, providers=None, threads: int | None = None, optimization: str = "all", session_options=None):
    """An ``onnxruntime.InferenceSession`` for ``path`` (pure-ONNX or plugin-mode graph).

    Plugin-mode graphs get the CPU reference of the STA plugin registered as an
    onnxruntime-extensions custom op first (see :mod:`sta_deploy.ort_plugin`).
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
    options.log_severity_level = 3
    model_bytes_or_path: str | bytes = str(path)
    if uses_plugin(path):
        from .ort_plugin import prepare_plugin_session

        model_bytes_or_path = prepare_plugin_session(path, options)
    try:
        return ort.InferenceSession(model_bytes_or_path, sess_options=options, providers=providers or default_providers())
    except Exception as error:  # onnxruntime raises its own exception types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(f"ONNX Runtime cannot load {path}: {first[:300]}") from None
