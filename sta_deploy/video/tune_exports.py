"""The artifact of every ``tune`` point, made once in ``DIR/exports`` and reused while its manifest still
describes the wanted model (model, config, r1, dtype, batch, weights; for OpenVINO int8 also the fp32
source and the calibration), and the runtime that runs it (ONNX Runtime, OpenVINO or a TensorRT engine)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .backends import Backend, EngineBackend, exported_backend
from .tune_points import Point, exports_folder, onnx_file_name


@dataclass
class ModelSpec:
    """What every export of the sweep shares: the model, its architecture overrides and weights."""

    name: str
    overrides: dict = field(default_factory=dict)
    checkpoint: str | None = None
    seed: int = 0
    batch: int = 1

    def build(self, r1: int):
        from ..models.registry import create_model

        seed = self.seed if self.checkpoint is None else None
        return create_model(self.name, r1=r1, checkpoint=self.checkpoint, seed=seed, **self.overrides)

    def config_dict(self) -> dict:
        from ..models.registry import resolve_config

        return json.loads(json.dumps(resolve_config(self.name, **self.overrides).as_dict()))

    def weights(self) -> dict:
        """The manifest's weights fields that identify them (not the checkpoint's path)."""
        if self.checkpoint is None:
            return {"source": "random-init", "seed": self.seed}
        from ..models.checkpoints import checkpoint_sha256

        return {"source": "checkpoint", "sha256": checkpoint_sha256(self.checkpoint)}


def _same_weights(recorded: dict, wanted: dict) -> bool:
    return all(recorded.get(key) == value for key, value in wanted.items())


def export_matches(path: Path, spec: ModelSpec, r1: int, dtype: str, weights: dict) -> bool:
    """``path`` is an unchanged export of exactly this model (its manifest says so, its sha256 agrees)."""
    from ..export.manifest import manifest_path, read_verified_manifest

    if not path.is_file() or not manifest_path(path).is_file():
        return False
    try:
        manifest = read_verified_manifest(path, needed_by="tune")
    except (ValueError, OSError):
        return False
    wanted = {"model": spec.name, "r1": r1, "dtype": dtype, "sta_impl": "onnx", "batch_size": spec.batch, "dynamic_batch": False}
    return (
        all(manifest.get(key) == value for key, value in wanted.items())
        and manifest.get("config") == spec.config_dict()
        and _same_weights(manifest["weights"], weights)
    )


def ensure_onnx(spec: ModelSpec, r1: int, dtype: str, folder: Path, weights: dict) -> tuple[Path, bool]:
    """(path, reused) of the ``dtype`` export at ``r1`` in ``folder``."""
    from ..export.onnx_export import export_onnx

    path = folder / onnx_file_name(spec.name, Point(r1, dtype, "onnxruntime"))
    if export_matches(path, spec, r1, dtype, weights):
        return path, True
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(spec.build(r1), path, batch_size=spec.batch, dtype=dtype, force=True)
    return path, False


def ensure_openvino_int8(spec: ModelSpec, r1: int, folder: Path, weights: dict, calibration) -> tuple[Path, bool]:
    """The NNCF int8 model of the fp32 export at ``r1``; ``calibration()`` -> (clips, description)."""
    from ..export.manifest import read_manifest
    from ..export.quantize_openvino import quantize_openvino

    source, _ = ensure_onnx(spec, r1, "fp32", folder, weights)
    path = folder / onnx_file_name(spec.name, Point(r1, "int8", "openvino"))
    clips, description = calibration()
    if export_matches(path, spec, r1, "int8", weights):
        record = read_manifest(path).get("quantization", {})
        if record.get("source_sha256") == read_manifest(source)["onnx_sha256"] and record.get("calibration", {}).get("source") == description:
            return path, True
    quantize_openvino(source, path, calibration=clips, calibration_source=description, force=True)
    return path, False


def ensure_artifact(spec: ModelSpec, point: Point, out_dir, *, weights: dict, calibration) -> tuple[Path, bool]:
    """(the .onnx this point runs, whether an earlier export was reused)."""
    folder = exports_folder(out_dir)
    if point.backend == "openvino" and point.precision == "int8":
        return ensure_openvino_int8(spec, point.r1, folder, weights, calibration)
    dtype = tensorrt_export_dtype(point.precision) if point.backend == "tensorrt" else point.export_dtype
    return ensure_onnx(spec, point.r1, dtype, folder, weights)


def tensorrt_export_dtype(precision: str) -> str:
    """fp32, with the engine built at ``precision``; but TensorRT 11 is strongly typed (no FP16 builder
    flag): its fp16 engine is built from the fp16 export.  bf16 needs the flag (TensorRT 10)."""
    from ..runtime.trt import import_tensorrt

    flags = import_tensorrt(prefer=("tensorrt",)).BuilderFlag
    if precision == "fp16" and not hasattr(flags, "FP16"):
        return "fp16"
    if precision == "bf16" and not hasattr(flags, "BF16"):
        raise ConfigError("this TensorRT builds strongly typed networks and has no bf16 builder flag; sweep --precision fp32,fp16")
    return "fp32"


class TensorRTBackend(EngineBackend):
    """An exported model as a TensorRT engine built beside it for ``precision`` (rebuilt when the .onnx
    or the precision changed); needs TensorRT and an NVIDIA GPU."""

    def __init__(self, path, *, precision: str = "fp32"):
        from ..export.manifest import read_verified_manifest

        # build_engine (or EngineBackend, for a plan already built) says "TensorRT is not installed" first.
        manifest = read_verified_manifest(path, needed_by="tune --backend tensorrt")
        super().__init__(path, plan=_engine(Path(path), manifest, precision), needed_by="tune --backend tensorrt")


def _engine(path: Path, manifest: dict, precision: str) -> Path:
    from .._io import atomic_path
    from ..runtime.trt import build_engine

    plan = path.with_name(f"{path.stem}_{precision}.plan")
    stamp = plan.with_suffix(".plan.json")
    wanted = {"onnx_sha256": manifest["onnx_sha256"], "precision": precision}
    if plan.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return plan
    cast = manifest["dtype"] == "fp32"  # an fp16 export (strongly typed TensorRT) needs no builder flag
    build_engine(path, plan, fp16=cast and precision == "fp16", bf16=cast and precision == "bf16", force=True)
    with atomic_path(stamp) as temp:
        Path(temp).write_text(json.dumps(wanted))
    return plan


def check_tensorrt() -> None:
    """One line when TensorRT (or the GPU it needs) is missing, before any export is made."""
    from ..runtime.trt import import_tensorrt, require_gpu

    import_tensorrt(prefer=("tensorrt",))
    require_gpu()


def open_backend(point: Point, path: Path, *, threads=None) -> Backend:
    if point.backend == "tensorrt":
        return TensorRTBackend(path, precision=point.precision)
    if point.backend == "openvino":
        precision = "bf16" if point.precision == "bf16" else "f32"  # an int8 model runs its int8 ops at any hint
        return exported_backend(path, backend="openvino", precision=precision, threads=threads, needed_by="tune")
    return exported_backend(path, backend="onnxruntime", threads=threads, needed_by="tune")


def timing_input(views: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` views of a real clip (repeated when it has fewer): the input every latency is timed on."""
    views = np.ascontiguousarray(views, dtype=np.float32)
    reps = -(-batch // len(views))
    return np.ascontiguousarray(np.concatenate([views] * reps)[:batch])
