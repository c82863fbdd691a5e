"""Run plugin-mode graphs (``--sta-impl plugin``) on ONNX Runtime CPU.

The ``STAStageSelect`` nodes are served by the plugin's compiled CPU reference (the same
``__host__ __device__`` source as the CUDA kernel), registered as an onnxruntime-extensions Python
custom op.  onnxruntime-extensions only serves its own domain, so the nodes are moved from the
``sta_deploy`` domain to ``ai.onnx.contrib`` in an in-memory copy of the model; the file on disk
keeps the form TensorRT loads.

A Python exception must not leave the op: onnxruntime-extensions turns it into a C++ exception that
nothing catches, and the process aborts.  So the op records the error and returns placeholder indices,
and :class:`CheckedSession` (what :func:`sta_deploy.runtime.onnxrt.onnx_session` returns for these
graphs) raises it after the run, in one line.
"""

from __future__ import annotations

import threading

import numpy as np

from . import reference
from .names import PLUGIN_OP_TYPE

CONTRIB_DOMAIN = "ai.onnx.contrib"
_REGISTERED = False
# Errors raised inside the op, oldest first; a run raises those recorded while it ran.  (Two runs at
# once in two threads would both see an error of either: both fail, neither is silent.)  The list is
# emptied when no run is in flight.
_op_errors: list[str] = []
_op_errors_lock = threading.Lock()
_runs_in_flight = 0


def _reference_library():
    """The CPU reference library, built from the source tree with CMake on first use if needed."""
    try:
        return reference.load_reference_library()
    except reference.ReferenceLibraryError:
        source = reference.plugin_source_dir()
        if not (source / "CMakeLists.txt").is_file():
            raise
        reference.build_plugin(source / "build", cuda=False)
        return reference.load_reference_library()


def register_custom_op() -> None:
    """Register ``STAStageSelect`` with onnxruntime-extensions (once per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    try:
        from onnxruntime_extensions import PyCustomOpDef, onnx_op
    except ImportError:
        raise ImportError(
            "running a plugin-mode model on ONNX Runtime needs onnxruntime-extensions: pip install onnxruntime-extensions"
        ) from None
    _reference_library()

    @onnx_op(
        op_type=PLUGIN_OP_TYPE,
        domain=CONTRIB_DOMAIN,
        inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float],
        outputs=[PyCustomOpDef.dt_int32],
        attrs={
            "num_groups": PyCustomOpDef.dt_int64,
            "r": PyCustomOpDef.dt_int64,
            "backward": PyCustomOpDef.dt_int64,
            "plugin_version": PyCustomOpDef.dt_string,
            "plugin_namespace": PyCustomOpDef.dt_string,
        },
    )
    def sta_stage_select(metric, semantic, **attributes):  # pragma: no cover - runs inside onnxruntime
        try:
            kept = reference.select_reference(
                np.ascontiguousarray(metric, dtype=np.float32),
                np.ascontiguousarray(semantic, dtype=np.float32),
                int(attributes["num_groups"]),
                int(attributes["r"]),
                bool(attributes["backward"]),
            )
            return kept.astype(np.int32)
        except Exception as error:  # never out of here: it would abort the process
            with _op_errors_lock:
                _op_errors.append(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            # valid (all-zero) indices of a plausible shape, so the rest of the graph runs to the end
            return np.zeros((metric.shape[0], max(int(attributes["num_groups"]), 1), 1), dtype=np.int32)

    _REGISTERED = True


def prepare_plugin_session(path, options) -> bytes:
    """Model bytes with plugin nodes moved to the contrib domain; ``options`` gets the extensions library."""
    import onnx
    from onnxruntime_extensions import get_library_path

    register_custom_op()
    model = onnx.load(str(path))  # with external data, if any
    for node in model.graph.node:
        if node.op_type == PLUGIN_OP_TYPE:
            node.domain = CONTRIB_DOMAIN
    if not any(entry.domain == CONTRIB_DOMAIN for entry in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1))
    options.register_custom_ops_library(get_library_path())
    return model.SerializeToString()


class CheckedSession:
    """An ``onnxruntime.InferenceSession`` of a plugin-mode graph whose ``run`` raises, in one line,
    any error the ``STAStageSelect`` op recorded while it ran (see the module docstring)."""

    def __init__(self, session):
        self._session = session

    def __getattr__(self, name):
        return getattr(self._session, name)

    def run(self, *args, **kwargs):
        return self._checked(self._session.run, *args, **kwargs)

    def run_with_iobinding(self, *args, **kwargs):
        return self._checked(self._session.run_with_iobinding, *args, **kwargs)

    def _checked(self, run, *args, **kwargs):
        global _runs_in_flight
        with _op_errors_lock:
            start = len(_op_errors)
            _runs_in_flight += 1
        result = failure = None
        try:
            result = run(*args, **kwargs)
        except Exception as error:  # the placeholder indices may break a later node: report the cause
            failure = error
        finally:
            with _op_errors_lock:
                recorded = _op_errors[start:]
                _runs_in_flight -= 1
                if not _runs_in_flight:
                    _op_errors.clear()
        if recorded:
            raise RuntimeError(f"STAStageSelect failed ({recorded[0]}); re-export the model (sta-deploy export ... --sta-impl plugin)") from None
        if failure is not None:
            raise failure
        return result
