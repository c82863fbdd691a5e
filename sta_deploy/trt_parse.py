"""Does TensorRT accept this graph?  Parse an export with TensorRT's ONNX parser and build an engine.

With TensorRT-RTX (``pip install sta-deploy[trt-rtx]``) this needs no GPU: its builder compiles
engines ahead of time.  It also works for ``--sta-impl plugin`` exports when the STAStageSelect
plugin library is passed, in which case TensorRT itself calls the plugin's build-time methods
(createPlugin, getOutputShapes, getOutputDataTypes, supportsFormatCombination, configurePlugin,
getWorkspaceSize, getFieldsToSerialize, clone).

TensorRT-RTX's ONNX parser dlopen()s ``libtensorrt_rtx.so`` by its unversioned name the first time
it imports a plugin node, and the wheel ships only ``libtensorrt_rtx.so.1``: the lookup fails and
the parser calls std::terminate.  When that name is missing, the check therefore runs in a child
process whose ``LD_LIBRARY_PATH`` holds a temporary ``libtensorrt_rtx.so`` link to the real library
(which also keeps an abort inside TensorRT from taking the caller down).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .plugin_names import PLUGIN_NAMESPACE, PLUGIN_OP_TYPE
from .tensorrt_backend import _parse, add_batch_profile, import_tensorrt

CHILD_MARKER = "STA_DEPLOY_TRT_PARSE_CHILD"
_PLUGIN_HINT = "build it with cmake (see plugins/sta_stage_select/README.md) and pass --plugin-lib path/to/libsta_stage_select_trt.so"


@dataclass
class ParseReport:
    flavour: str
    version: str
    layers: int
    inputs: list
    outputs: list
    engine_bytes: int | None
    plugin_layers: list = field(default_factory=list)


def plugin_node_count(onnx_path) -> int:
    """STAStageSelect nodes in the graph (read without its external weights)."""
    from ._io import read_onnx

    model = read_onnx(onnx_path)
    return sum(1 for node in model.graph.node if node.op_type == PLUGIN_OP_TYPE and node.domain == PLUGIN_NAMESPACE)


def check_plugin_libs(onnx_path, plugin_libs) -> int:
    """One clear line when a plugin-mode export comes without its plugin library (or the path is wrong)."""
    for library in plugin_libs:
        if not Path(library).is_file():
            raise FileNotFoundError(f"plugin library {library} does not exist: {_PLUGIN_HINT}")
    nodes = plugin_node_count(onnx_path)
    if nodes and not plugin_libs:
        raise ValueError(
            f"{onnx_path} has {nodes} {PLUGIN_OP_TYPE} plugin nodes (exported with --sta-impl plugin) "
            f"and TensorRT needs their library: {_PLUGIN_HINT}"
        )
    return nodes


def parse_check(onnx_path, *, build: bool = True, plugin_libs=(), batch_profile=(None, None, None)) -> ParseReport:
    """Parse ``onnx_path`` with TensorRT's ONNX parser and (optionally) build an engine in memory.

    Prefers TensorRT-RTX, which needs no GPU.  ``plugin_libs`` are loaded into the builder's plugin
    registry (``--sta-impl plugin`` exports need ``libsta_stage_select_trt.so``).  A --dynamic-batch
    export is built for ``batch_profile`` = (min, opt, max) batch, by default 1 / 1 / 8.
    """
    trt = import_tensorrt(prefer=("tensorrt_rtx", "tensorrt"))
    plugin_libs = tuple(str(Path(library).resolve()) for library in plugin_libs)
    check_plugin_libs(onnx_path, plugin_libs)
    if plugin_libs and _rtx_library_link_missing(trt):
        return _parse_check_in_child(onnx_path, build=build, plugin_libs=plugin_libs, batch_profile=batch_profile)
    logger = trt.Logger(trt.Logger.ERROR)
    builder, network = _parse(trt, onnx_path, logger, plugin_libs)
    engine_bytes = None
    if build:
        config = builder.create_builder_config()
        add_batch_profile(builder, network, config, *batch_profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}")
        engine_bytes = serialized.nbytes

    def describe(tensor):
        return {"name": tensor.name, "shape": list(tensor.shape), "dtype": str(tensor.dtype)}

    plugin_layers = []
    plugin_type = getattr(trt.LayerType, "PLUGIN_V3", None)
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if plugin_type is not None and layer.type == plugin_type:
            plugin_layers.append({"name": layer.name, "outputs": [describe(layer.get_output(i)) for i in range(layer.num_outputs)]})
    return ParseReport(
        flavour=trt.__name__,
        version=trt.__version__,
        layers=network.num_layers,
        inputs=[describe(network.get_input(i)) for i in range(network.num_inputs)],
        outputs=[describe(network.get_output(i)) for i in range(network.num_outputs)],
        engine_bytes=engine_bytes,
        plugin_layers=plugin_layers,
    )


def _rtx_library_folder() -> Path | None:
    try:
        import tensorrt_rtx_libs
    except ImportError:
        return None
    return Path(tensorrt_rtx_libs.__file__).resolve().parent


def _rtx_library_link_missing(trt) -> bool:
    if trt.__name__ != "tensorrt_rtx" or os.environ.get(CHILD_MARKER):
        return False
    folder = _rtx_library_folder()
    return folder is not None and not (folder / "libtensorrt_rtx.so").exists() and any(folder.glob("libtensorrt_rtx.so.*"))


def _parse_check_in_child(onnx_path, *, build, plugin_libs, batch_profile=(None, None, None)) -> ParseReport:
    real = sorted(_rtx_library_folder().glob("libtensorrt_rtx.so.*"))[0]
    with tempfile.TemporaryDirectory(prefix="sta_trt_rtx_") as links:
        (Path(links) / "libtensorrt_rtx.so").symlink_to(real)
        env = dict(os.environ)
        env[CHILD_MARKER] = "1"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [links, env.get("LD_LIBRARY_PATH")]))
        # The child imports this very package, wherever it was imported from.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")]))
        request = json.dumps({"onnx_path": str(onnx_path), "build": build, "plugin_libs": list(plugin_libs), "batch_profile": list(batch_profile)})
        done = subprocess.run([sys.executable, "-m", "sta_deploy._trt_parse_child", request], env=env, capture_output=True, text=True)
    answer = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode in (0, 1) and done.stdout.strip() else None
    if done.returncode == 0 and answer is not None:
        return ParseReport(**answer)
    if done.returncode == 1 and answer is not None:
        # The child's one-line error, as the same exception type where it is one of ours to raise.
        kind = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError}.get(answer["error_type"], RuntimeError)
        raise kind(answer["error"])
    last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    how = f"crashed (signal {-done.returncode})" if done.returncode < 0 else f"failed (exit {done.returncode})"
    raise RuntimeError(f"TensorRT-RTX {how} while parsing {onnx_path}: {last}")


def _child_main(request: str) -> int:
    """Entry point of the child process (see the module docstring)."""
    arguments = json.loads(request)
    try:
        report = parse_check(
            arguments["onnx_path"], build=arguments["build"], plugin_libs=arguments["plugin_libs"], batch_profile=tuple(arguments["batch_profile"])
        )
    except Exception as error:  # the parent re-raises the one-line message
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(json.dumps({"error_type": type(error).__name__, "error": message}))
        return 1
    print(json.dumps(asdict(report)))
    return 0
