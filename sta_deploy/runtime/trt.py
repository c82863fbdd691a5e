"""TensorRT: engine building (Python API), running engines and plugin libraries; the GPU-less parse check
is in :mod:`.trt_parse`.

TensorRT is an optional extra (``pip install sta-deploy[trt]`` on a GPU machine).  Two flavours
are understood:

* ``tensorrt`` (TensorRT 10/11): builds and runs engines; needs an NVIDIA GPU.
* ``tensorrt_rtx`` (TensorRT-RTX, ``pip install sta-deploy[trt-rtx]``): its builder and ONNX parser
  run without a GPU, which makes a cheap "does TensorRT accept this graph" check for CI.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .._io import atomic_path
from ..plugin.names import PLUGIN_OP_TYPE, count_plugin_nodes

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
    nodes = count_plugin_nodes(onnx_path)
    if nodes and not plugin_libs:
        raise ValueError(
            f"{onnx_path} has {nodes} {PLUGIN_OP_TYPE} plugin nodes (exported with --sta-impl plugin) "
            f"and TensorRT needs their library: {PLUGIN_HINT}"
        )
    return nodes


def parse_network(trt, onnx_path, logger, plugin_libs=()):
    """TensorRT's builder and the network its ONNX parser made of ``onnx_path`` (plugin libraries loaded first)."""
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        # TensorRT 8.x needs the flag; 10+ ignores (and deprecates) it.
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    load_plugin_libraries(trt, builder.get_plugin_registry(), plugin_libs)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors[:400]}")
    return builder, network


def add_batch_profile(builder, network, config, min_batch=None, opt_batch=None, max_batch=None) -> None:
    """An optimization profile for a --dynamic-batch export's batch (default 1 / min / max(opt, 8));
    batch options on a static export are refused."""
    video = network.get_input(0)
    if video.shape[0] == -1:
        low, mid, high = min_batch or 1, opt_batch or max(min_batch or 1, 1), max_batch or max(opt_batch or 1, 8)
        if not low <= mid <= high:
            raise ValueError(f"batch profile must satisfy min <= opt <= max, got {low}/{mid}/{high}")
        rest = tuple(video.shape[1:])
        profile = builder.create_optimization_profile()
        profile.set_shape(video.name, (low, *rest), (mid, *rest), (high, *rest))
        config.add_optimization_profile(profile)
    elif any(v is not None for v in (min_batch, opt_batch, max_batch)):
        raise ValueError("--min/opt/max-batch need a model exported with --dynamic-batch")


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
    """Build a serialized TensorRT engine (``.plan``) from an exported model; needs TensorRT and a GPU."""
    trt = import_tensorrt(prefer=("tensorrt",))
    require_gpu()
    check_plugin_libs(onnx_path, plugin_libs)
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network = parse_network(trt, onnx_path, logger, plugin_libs)
    config = builder.create_builder_config()
    for wanted, flag in ((fp16, "FP16"), (bf16, "BF16")):
        if not wanted:
            continue
        if not hasattr(trt.BuilderFlag, flag):
            raise ValueError(
                f"TensorRT {trt.__version__} builds strongly typed networks and has no --{flag.lower()} flag; "
                f"export the model with --dtype fp16 instead"
            )
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    add_batch_profile(builder, network, config, min_batch, opt_batch, max_batch)
    cache = None
    if timing_cache is not None and Path(timing_cache).is_file():
        cache = config.create_timing_cache(Path(timing_cache).read_bytes())
    else:
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see the log above)")
    with atomic_path(plan_path, force=force) as temp:
        temp.write_bytes(bytes(serialized))
    if timing_cache is not None:
        with atomic_path(timing_cache) as temp:
            temp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return Path(plan_path)


class EngineRunner:
    """Runs a serialized engine on CUDA tensors (torch) with TensorRT's name-based I/O API."""

    def __init__(self, plan_path, plugin_libs=()):
        trt = import_tensorrt(prefer=("tensorrt",))
        require_gpu()
        import torch

        self.trt = trt
        self.torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        load_plugin_libraries(trt, runtime.get_plugin_registry(), plugin_libs)
        self.engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {plan_path}: built with another TensorRT version or GPU?")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def _torch_dtype(self, trt_dtype):
        trt, torch = self.trt, self.torch
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int64: torch.int64}
        if hasattr(trt, "bfloat16"):
            table[trt.bfloat16] = torch.bfloat16
        return table[trt_dtype]

    def run(self, video):
        """video: numpy (B, C, T, H, W) float32 -> dict of numpy outputs."""
        torch, trt = self.torch, self.trt
        stream = torch.cuda.Stream()
        outputs = {}
        inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        device_input = torch.from_numpy(video).cuda()
        self.context.set_input_shape(inputs[0], tuple(device_input.shape))
        self.context.set_tensor_address(inputs[0], device_input.data_ptr())
        for name in self.names:
            if name in inputs:
                continue
            shape = tuple(self.context.get_tensor_shape(name))
            buffer = torch.empty(shape, dtype=self._torch_dtype(self.engine.get_tensor_dtype(name)), device="cuda")
            self.context.set_tensor_address(name, buffer.data_ptr())
            outputs[name] = buffer
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {name: value.float().cpu().numpy() if value.is_floating_point() else value.cpu().numpy() for name, value in outputs.items()}
