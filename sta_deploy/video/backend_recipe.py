"""What builds ``evaluate``'s backends, as a small picklable value: the driver builds them from it,
and so does every Ray worker (:mod:`.ray_evaluate`), which gets the same models at the same r1."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackendRecipe:
    """One backend per r1: PyTorch models (``r1_values``, ``checkpoint`` or random weights from
    ``seed``) or exported models (``onnx_paths`` on ``runtime`` at ``precision``), with r1 = 0 added
    as the baseline unless ``baseline`` is False (on PyTorch, rebuilt from the first export's manifest)."""

    model_name: str
    r1_values: tuple | None = None
    checkpoint: str | None = None
    overrides: dict = field(default_factory=dict)
    onnx_paths: tuple = ()
    runtime: str = "onnxruntime"
    precision: str | None = None
    seed: int = 0
    threads: int | None = None
    baseline: bool = True
    plugin_libs: tuple = ()  # TensorRT plugin libraries (runtime "tensorrt")

    def files(self) -> list[str]:
        """The files every machine that builds the backends needs, at these paths."""
        from pathlib import Path

        engines = [Path(path).with_suffix(".plan") for path in self.onnx_paths] if self.runtime == "tensorrt" else []
        return [str(path) for path in ([self.checkpoint] if self.checkpoint else []) + list(self.onnx_paths) + engines + list(self.plugin_libs)]

    def build(self, needed_by: str = "evaluate --onnx") -> list:
        """The backends, sorted by r1."""
        from .backends import exported_backend, torch_backends

        if self.threads is not None:
            import torch

            torch.set_num_threads(max(1, self.threads))  # --threads for PyTorch too
        if self.onnx_paths:
            backends = [
                exported_backend(path, backend=self.runtime, precision=self.precision, checkpoint=self.checkpoint, threads=self.threads, needed_by=needed_by,
                                 plugin_libs=self.plugin_libs)
                for path in self.onnx_paths
            ]
            if self.baseline and 0 not in {b.r1 for b in backends}:
                backends.insert(0, backends[0].reference(0))  # r1 = 0 on PyTorch, same weights
            return sorted(backends, key=lambda b: b.r1)
        values = sorted(set(self.r1_values or ()) | ({0} if self.baseline else set()))
        return torch_backends(self.model_name, values, checkpoint=self.checkpoint, overrides=self.overrides, seed=self.seed)
