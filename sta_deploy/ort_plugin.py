"""Run plugin-mode graphs (``--sta-impl plugin``) on ONNX Runtime CPU.

The ``STAStageSelect`` nodes are served by the plugin's compiled CPU reference (the same
``__host__ __device__`` source as the CUDA kernel), registered as an onnxruntime-extensions Python
custom op.  onnxruntime-extensions only serves its own domain, so the nodes are moved from the
``sta_deploy`` domain to ``ai.onnx.contrib`` in an in-memory copy of the model; the file on disk
keeps the form TensorRT loads.
"""

from __future__ import annotations

import numpy as np

from .plugin_names import PLUGIN_OP_TYPE

CONTRIB_DOMAIN = "ai.onnx.contrib"
_REGISTERED = False


def _reference_library():
    """The CPU reference library, built from the source tree with CMake on first use if needed."""
    from . import plugin_ref

    try:
        return plugin_ref.load_reference_library()
    except plugin_ref.ReferenceLibraryError:
        source = plugin_ref.plugin_source_dir()
        if not (source / "CMakeLists.txt").is_file():
            raise
        plugin_ref.build_plugin(source / "build", cuda=False)
        return plugin_ref.load_reference_library()


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
    from . import plugin_ref

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
        kept = plugin_ref.select_reference(
            np.ascontiguousarray(metric, dtype=np.float32),
            np.ascontiguousarray(semantic, dtype=np.float32),
            int(attributes["num_groups"]),
            int(attributes["r"]),
            bool(attributes["backward"]),
        )
        return kept.astype(np.int32)

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


def plugin_node_count(path) -> int:
    from ._io import read_onnx

    model = read_onnx(path)
    return sum(node.op_type == PLUGIN_OP_TYPE for node in model.graph.node)
