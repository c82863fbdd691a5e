"""TensorRT: engine building and running through Polygraphy's loaders and ``TrtRunner``, and plugin
libraries; the GPU-less parse check is in :mod:`.trt_parse`.

TensorRT is an optional extra (``pip install sta-deploy[trt]`` on a GPU machine).  Two flavours
are understood:

* ``tensorrt`` (TensorRT 10/11): builds and runs engines; needs an NVIDIA GPU.
* ``tensorrt_rtx`` (TensorRT-RTX, ``pip install sta-deploy[trt-rtx]``): its builder and ONNX parser
  run without a GPU, which makes a cheap "does TensorRT accept this graph" check for CI.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from pathlib import Path

from .._io import atomic_path, writable_folder
from ..plugin.names import PLUGIN_OP_TYPE, count_plugin_nodes, count_window_attention_nodes
from .polygraphy_trt import polygraphy_backend, quiet_polygraphy

MISSING_TENSORRT = (
    "TensorRT is not installed: install it on a machine with an NVIDIA GPU (pip install 'sta-deploy[trt]'); "
    "for a GPU-less parse check install 'sta-deploy[trt-rtx]'"
)


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a GPU) is missing; the message says what to install."""


def import_tensorrt(prefer: tuple[str, ...] = ("tensorrt", "tensorrt_rtx")):
    """The first importable TensorRT flavour, or :class:`TensorRTUnavailable` with the fix."""
    for name in prefer:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
        except Exception as error:  # placeholder wheels raise odd errors at import time
            raise TensorRTUnavailable(f"{name} is installed but does not import ({type(error).__name__}: {error}); reinstall it") from None
    raise TensorRTUnavailable(MISSING_TENSORRT)


def require_gpu() -> None:
    """Engines run only on an NVIDIA GPU; say so in one line when there is none."""
    try:
        import torch

        if torch.cuda.is_available():
            return
    except ImportError:  # pragma: no cover - torch is a base dependency
        pass
    raise TensorRTUnavailable("no CUDA GPU is visible (torch.cuda.is_available() is False): TensorRT engines need an NVIDIA GPU and a CUDA build of torch")


def load_plugin_libraries(trt, registry, plugin_libs) -> None:
    """Load each plugin library into ``registry`` (a builder's or a runtime's), or say which one failed."""
    for library in plugin_libs:
        if registry.load_library(str(library)) is None:
            raise RuntimeError(
                f"TensorRT ({trt.__version__}) could not load {library} as a plugin library: it must export getCreators "
                "(libsta_stage_select_trt.so does) and be built against a compatible TensorRT"
            )


PLUGIN_HINT = "build it with cmake (see plugins/sta_stage_select/README.md) and pass --plugin-lib path/to/libsta_stage_select_trt.so"


def check_plugin_libs(onnx_path, plugin_libs) -> int:
    """One clear line when a plugin-mode export comes without its plugin library (or the path is wrong)."""
    for library in plugin_libs:
        if not Path(library).is_file():
            raise FileNotFoundError(f"plugin library {library} does not exist: {PLUGIN_HINT}")
    if count_window_attention_nodes(onnx_path):
        raise ValueError(
            f"{onnx_path} has KeptWindowAttention nodes (--window-attention kernel), which have no TensorRT plugin yet; "
            "export it with --window-attention onnx for TensorRT"
        )
    nodes = count_plugin_nodes(onnx_path)
    if nodes and not plugin_libs:
        raise ValueError(
            f"{onnx_path} has {nodes} {PLUGIN_OP_TYPE} plugin nodes (exported with --sta-impl plugin) "
            f"and TensorRT needs their library: {PLUGIN_HINT}"
        )
    return nodes


def parse_network(trt, onnx_path, plugin_libs=()):
    """``(builder, network, parser)`` of ``onnx_path`` from Polygraphy's ``NetworkFromOnnxPath``, the
    plugin libraries loaded into TensorRT's registry first (the library registers its creators
    through ``getCreators``, which a plain ``dlopen`` does not call)."""
    backend = polygraphy_backend(trt)
    load_plugin_libraries(trt, trt.get_plugin_registry(), plugin_libs)
    with quiet_polygraphy(f"TensorRT's ONNX parser rejected {onnx_path}"):
        return backend.NetworkFromOnnxPath(str(onnx_path))()


def batch_profiles(trt, network, min_batch=None, opt_batch=None, max_batch=None) -> list:
    """Polygraphy profiles for a --dynamic-batch export's batch (default 1 / min / max(opt, 8)); none
    for a static export, where batch options are refused."""
    video = network.get_input(0)
    if video.shape[0] == -1:
        low, mid, high = min_batch or 1, opt_batch or max(min_batch or 1, 1), max_batch or max(opt_batch or 1, 8)
        if not low <= mid <= high:
            raise ValueError(f"batch profile must satisfy min <= opt <= max, got {low}/{mid}/{high}")
        rest = tuple(video.shape[1:])
        profile = polygraphy_backend(trt).Profile().add(video.name, min=(low, *rest), opt=(mid, *rest), max=(high, *rest))
        return [profile]
    if any(v is not None for v in (min_batch, opt_batch, max_batch)):
        raise ValueError("--min/opt/max-batch need a model exported with --dynamic-batch")
    return []


def serialize_engine(trt, parsed, onnx_path, *, profiles=(), precision_flags=(), workspace_gib=None, timing_cache=None) -> bytes:
    """Polygraphy's ``CreateConfig`` + ``EngineBytesFromNetwork`` on a parsed network: the engine's bytes.

    ``timing_cache``: a file Polygraphy reads and merges the new timings into (under its lock)."""
    backend = polygraphy_backend(trt)
    config_options = {flag: True for flag in precision_flags}
    if workspace_gib:
        config_options["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: int(workspace_gib * (1 << 30))}
    if timing_cache is not None and Path(timing_cache).is_file():
        config_options["load_timing_cache"] = str(timing_cache)
    config = backend.CreateConfig(profiles=list(profiles) or None, **config_options)
    save_cache = str(timing_cache) if timing_cache is not None else None
    with quiet_polygraphy(f"TensorRT could not build an engine from {onnx_path}"):
        return bytes(backend.EngineBytesFromNetwork(parsed, config=config, save_timing_cache=save_cache)())


def _precision_flags(trt, fp16: bool, bf16: bool) -> list[str]:
    flags = []
    for wanted, flag in ((fp16, "FP16"), (bf16, "BF16")):
        if not wanted:
            continue
        if not hasattr(trt.BuilderFlag, flag):
            raise ValueError(
                f"TensorRT {trt.__version__} builds strongly typed networks and has no --{flag.lower()} flag; "
                f"export the model with --dtype fp16 instead"
            )
        flags.append(flag.lower())
    return flags


def build_engine(
    onnx_path,
    plan_path,
    *,
    fp16: bool = False,
    bf16: bool = False,
    plugin_libs=(),
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    timing_cache=None,
    workspace_gib: float | None = None,
    force: bool = True,
) -> Path:
    """Build a serialized TensorRT engine (``.plan``) from an exported model; needs TensorRT and a GPU.

    The plan and the timing cache are written atomically (the cache is merged in a temporary copy)."""
    trt = import_tensorrt(prefer=("tensorrt",))
    require_gpu()
    check_plugin_libs(onnx_path, plugin_libs)
    flags = _precision_flags(trt, fp16, bf16)
    parsed = parse_network(trt, onnx_path, plugin_libs)
    profiles = batch_profiles(trt, parsed[1], min_batch, opt_batch, max_batch)
    with atomic_path(plan_path, force=force) as plan_temp, contextlib.ExitStack() as stack:
        cache_temp = None
        if timing_cache is not None:
            # Polygraphy merges the cache under a lock file beside it: work on a copy in a private
            # folder and move it over the real one only once the engine is built.
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".sta_timing_", dir=writable_folder(timing_cache))))
            cache_temp = scratch / Path(timing_cache).name
            if Path(timing_cache).is_file():
                shutil.copyfile(timing_cache, cache_temp)
        engine = serialize_engine(trt, parsed, onnx_path, profiles=profiles, precision_flags=flags, workspace_gib=workspace_gib, timing_cache=cache_temp)
        plan_temp.write_bytes(engine)
        if cache_temp is not None:
            os.replace(cache_temp, timing_cache)
    return Path(plan_path)


class EngineRunner:
    """Runs a serialized engine through Polygraphy's ``TrtRunner``: numpy clips in, numpy outputs out."""

    def __init__(self, plan_path, plugin_libs=()):
        trt = import_tensorrt(prefer=("tensorrt",))
        require_gpu()
        backend = polygraphy_backend(trt)
        load_plugin_libraries(trt, trt.get_plugin_registry(), plugin_libs)
        with quiet_polygraphy(f"TensorRT could not deserialize {plan_path} (built with another TensorRT version or GPU?)"):
            engine = backend.engine_from_bytes(Path(plan_path).read_bytes())
        self.runner = backend.TrtRunner(engine)
        self.runner.activate()
        self.input_name = engine.get_tensor_name(0)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.output_names = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT]

    def run(self, video) -> dict:
        """video: numpy (B, C, T, H, W) float32 -> dict of numpy outputs (floating outputs as float32)."""
        with quiet_polygraphy("TensorRT execution failed"):
            outputs = self.runner.infer({self.input_name: video})
        return {name: value.astype("float32") if value.dtype.kind == "f" else value for name, value in outputs.items()}

    def run_clips(self, clips, manifest: dict) -> dict:
        """``clips`` through the engine in the batch its export fixed; a dynamic-batch engine goes one
        clip at a time (its optimisation profile may not cover larger batches)."""
        from .batching import run_in_batches

        return run_in_batches(self.run, clips, batch=1 if manifest["dynamic_batch"] else manifest["batch_size"])

    def close(self) -> None:
        self.runner.deactivate()
