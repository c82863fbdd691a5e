"""One interface over a PyTorch model and an exported ONNX model: clips in, logits (and kept tokens) out."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..runtime.onnxrt import run_clips
from ..runtime.pytorch import run_model


class Backend:
    """``run(clips, with_kept)``: (N, 3, T, H, W) float32 -> logits (N, C) and, if asked, the kept positions
    of the three STA stages (one (N, K_i) int64 array each, ascending)."""

    kind = "backend"

    def __init__(self, model_name: str, r1: int, config, *, source: str, checkpoint=None, random_weights: bool = False):
        self.model_name = model_name
        self.r1 = r1
        self.config = config
        self.source = source
        self.checkpoint = checkpoint
        self.random_weights = random_weights
        self.calls = 0  # clips run so far
        self.seconds = 0.0

    family = property(lambda self: self.config.family)
    num_frames = property(lambda self: self.config.num_frames)
    img_size = property(lambda self: self.config.img_size)
    num_classes = property(lambda self: self.config.num_classes)

    @property
    def gflops(self) -> float:
        """GFLOPs of one view (fvcore convention), without STA's own products: the figure 'sta-deploy
        models', 'flops' and 'bench' print and the paper's tables give."""
        from ..models.flops import count_flops

        return count_flops(self.model_name, self.r1, **self.config.as_dict()).gflops

    def describe(self) -> str:
        return f"{self.model_name} r1={self.r1} ({self.kind}: {self.source})"

    @property
    def has_kept(self) -> bool:
        return True

    def run(self, clips: np.ndarray, with_kept: bool = False):
        start = time.perf_counter()
        logits, kept = self._run(np.ascontiguousarray(clips, dtype=np.float32), with_kept)
        self.seconds += time.perf_counter() - start
        self.calls += len(clips)
        return logits, kept

    def _run(self, clips, with_kept):  # pragma: no cover - abstract
        raise NotImplementedError


class TorchBackend(Backend):
    kind = "pytorch"

    def __init__(self, model, *, source: str, checkpoint=None, random_weights=False, batch_size: int = 4):
        super().__init__(model.name, model.r1, model.config, source=source, checkpoint=checkpoint, random_weights=random_weights)
        self.model = model.eval()
        self.batch_size = batch_size

    def _run(self, clips, with_kept):
        return run_model(self.model, clips, with_kept, batch_size=self.batch_size)


class OnnxBackend(Backend):
    kind = "onnxruntime"

    def __init__(self, path, *, providers=None, threads=None, checkpoint=None, needed_by: str = "--onnx"):
        from ..export.manifest import manifest_config, read_verified_manifest
        from ..models.registry import resolve_config

        self.path = Path(path)
        self.manifest = read_verified_manifest(path, needed_by=needed_by)  # names the command in its errors
        config = manifest_config(self.manifest)
        weights = self.manifest.get("weights", {})
        checkpoint = checkpoint or (weights.get("path") if weights.get("source") == "checkpoint" else None)
        super().__init__(
            self.manifest["model"], int(self.manifest["r1"]), resolve_config(self.manifest["model"], **config),
            source=str(path), checkpoint=checkpoint, random_weights=weights.get("source") == "random-init",
        )
        self._open_runtime(providers=providers, threads=threads)

    def _open_runtime(self, *, providers, threads):
        from ..runtime.onnxrt import onnx_session

        self.session = onnx_session(self.path, providers=providers, threads=threads)
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def has_kept(self) -> bool:
        return "kept_stage0" in self.output_names

    @property
    def batch_size(self):
        return None if self.manifest["dynamic_batch"] else self.manifest["batch_size"]

    def _run(self, clips, with_kept):
        if with_kept and not self.has_kept:
            raise ConfigError(f"{self.path} has no kept_stage outputs; export it with --with-kept to see the kept tokens")
        logits, kept = run_clips(self.session, self.manifest, clips)
        return logits, (kept if with_kept else None)

    def reference(self, r1: int | None = None) -> TorchBackend:
        """The PyTorch model the manifest describes (same weights), optionally at another ``r1``."""
        from ..export.manifest import rebuild_reference

        manifest = dict(self.manifest, r1=self.r1 if r1 is None else r1)
        model = rebuild_reference(manifest, self.checkpoint if self.manifest["weights"]["source"] == "checkpoint" else None)
        return TorchBackend(model, source=f"rebuilt from {self.path.name}", checkpoint=self.checkpoint, random_weights=self.random_weights)


class OpenVinoBackend(OnnxBackend):
    """An exported model on OpenVINO (CPU) at an inference precision (``f32`` or ``bf16``)."""

    kind = "openvino"

    def __init__(self, path, *, precision: str = "f32", threads=None, checkpoint=None, cache_dir=None, needed_by: str = "--onnx"):
        from ..runtime.openvino import check_openvino_model_file, check_precision

        check_openvino_model_file(path)  # plugin-mode exports are refused before anything is built
        self.precision = check_precision(precision)
        self.cache_dir = cache_dir
        super().__init__(path, threads=threads, checkpoint=checkpoint, needed_by=needed_by)

    def _open_runtime(self, *, providers, threads):
        from ..runtime.openvino import openvino_model

        self.compiled = openvino_model(self.path, precision=self.precision, threads=threads, cache_dir=self.cache_dir)
        self.output_names = self.compiled.output_names

    def describe(self) -> str:
        return f"{self.model_name} r1={self.r1} ({self.compiled.description}: {self.source})"

    def _run(self, clips, with_kept):
        from ..runtime.openvino import run_clips as run_openvino

        if with_kept and not self.has_kept:
            raise ConfigError(f"{self.path} has no kept_stage outputs; export it with --with-kept to see the kept tokens")
        logits, kept = run_openvino(self.compiled, self.manifest, clips)
        return logits, (kept if with_kept else None)


class EngineBackend(OnnxBackend):
    """An exported model as a TensorRT engine (``plan``; by default the ``.plan`` beside the ``.onnx``,
    where ``sta-deploy build`` writes it), run through Polygraphy's ``TrtRunner``; needs TensorRT and an
    NVIDIA GPU.  The ``.onnx`` and its manifest say what the engine is (model, r1, weights)."""

    kind = "tensorrt"

    def __init__(self, path, *, plan=None, plugin_libs=(), checkpoint=None, needed_by: str = "--onnx"):
        from ..runtime.trt import import_tensorrt, require_gpu

        import_tensorrt(prefer=("tensorrt",))  # "TensorRT is not installed: ..." before anything else
        require_gpu()
        self.plan = Path(plan) if plan is not None else Path(path).with_suffix(".plan")
        if not self.plan.is_file():
            raise ConfigError(f"no TensorRT engine {self.plan} for {path}: build it with sta-deploy build {path} -o {self.plan}")
        self.plugin_libs = tuple(plugin_libs)
        super().__init__(path, checkpoint=checkpoint, needed_by=needed_by)

    def _open_runtime(self, *, providers, threads):
        from ..runtime.trt import EngineRunner, check_plugin_libs

        check_plugin_libs(self.path, self.plugin_libs)  # a plugin-mode engine cannot load without its library
        self.runner = EngineRunner(self.plan, plugin_libs=self.plugin_libs)
        self.output_names = self.runner.output_names

    def describe(self) -> str:
        return f"{self.model_name} r1={self.r1} (tensorrt: {self.plan})"

    def _run(self, clips, with_kept):
        from ..runtime.batching import kept_outputs

        if with_kept and not self.has_kept:
            raise ConfigError(f"{self.plan} has no kept_stage outputs; build it from an export made with --with-kept")
        outputs = self.runner.run_clips(clips, self.manifest)
        return outputs["logits"], (kept_outputs(outputs) if with_kept else None)

    def close(self) -> None:
        self.runner.close()


EXPORTED_BACKENDS = ("onnxruntime", "openvino", "tensorrt")


def exported_backend(path, *, backend: str = "onnxruntime", precision: str | None = None, threads=None, checkpoint=None, needed_by: str = "--onnx",
                     plugin_libs=()) -> OnnxBackend:
    """An exported model on ``backend`` (one of :data:`EXPORTED_BACKENDS`; ``precision`` is OpenVINO's;
    TensorRT runs the engine ``sta-deploy build`` wrote beside the ``.onnx``)."""
    if backend == "openvino":
        return OpenVinoBackend(path, precision=precision or "f32", threads=threads, checkpoint=checkpoint, needed_by=needed_by)
    if backend == "tensorrt":
        return EngineBackend(path, plugin_libs=plugin_libs, checkpoint=checkpoint, needed_by=needed_by)
    if backend != "onnxruntime":
        raise ConfigError(f"backend {backend!r} is not one of {', '.join(EXPORTED_BACKENDS)}")
    return OnnxBackend(path, threads=threads, checkpoint=checkpoint, needed_by=needed_by)


def torch_backends(model_name: str, r1_values, *, checkpoint=None, overrides=None, seed: int = 0) -> list[TorchBackend]:
    """One PyTorch backend per r1, sharing the weights (STA has no parameters, so the state dict is the same)."""
    from ..models.registry import create_model

    overrides = dict(overrides or {})
    backends, first = [], None
    source = str(checkpoint) if checkpoint else f"random weights, seed {seed}"
    for r1 in r1_values:
        if first is None:
            model = create_model(model_name, r1=r1, checkpoint=checkpoint, seed=seed if checkpoint is None else None, **overrides)
            first = model
        else:
            model = create_model(model_name, r1=r1, seed=0, **first.config.as_dict())
            model.load_state_dict(first.state_dict())
            model.eval()
        backends.append(TorchBackend(model, source=source, checkpoint=checkpoint, random_weights=checkpoint is None))
    return backends
