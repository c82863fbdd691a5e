"""Compare a backend's outputs (ONNX Runtime, a TensorRT engine) with the PyTorch reference that the
export's manifest describes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._io import sha256_file
from .runtime.pytorch import run_model

# fp16 graphs keep STA's scores in fp32, but fp16 activations move logits by ~1e-3 and can flip
# near-tied token choices; these thresholds are what a healthy fp16 export meets on random weights.
TOLERANCES = {
    "fp32": {"max_abs": 1e-4, "top1": 1.0, "kept": 1.0, "cosine": 0.99999},
    "fp16": {"max_abs": 5e-2, "top1": 0.9, "kept": 0.9, "cosine": 0.999},
    # int8 dynamic quantization: weights and activations of the blocks' products in 8 bits.
    "int8": {"max_abs": 5e-1, "top1": 0.75, "kept": 0.75, "cosine": 0.99},
    # OpenVINO's bf16 inference precision hint: every product in bf16 (8-bit mantissa), STA's included.
    "bf16": {"max_abs": 2e-1, "top1": 0.9, "kept": 0.8, "cosine": 0.995},
}


@dataclass
class ValidationReport:
    backend: str
    clips: int
    max_abs: float
    mean_abs: float
    cosine: float
    top1: float
    top5: float
    kept: list[float] = field(default_factory=list)  # mean kept-set agreement (IoU) per stage
    kept_exact: list[float] = field(default_factory=list)  # fraction of clips with identical kept sets
    tolerances: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        return data

    def table(self) -> str:
        t = self.tolerances
        rows = [
            ("logits max |diff|", f"{self.max_abs:.3e}", f"<= {t['max_abs']:.0e}"),
            ("logits mean |diff|", f"{self.mean_abs:.3e}", ""),
            ("cosine similarity", f"{self.cosine:.6f}", f">= {t['cosine']}"),
            ("top-1 agreement", f"{self.top1:.1%}", f">= {t['top1']:.0%}"),
            ("top-5 agreement", f"{self.top5:.1%}", ""),
        ]
        for stage, (iou, exact) in enumerate(zip(self.kept, self.kept_exact)):
            rows.append((f"kept set stage {stage}", f"{iou:.2%} (exact {exact:.0%})", f">= {t['kept']:.0%}"))
        width = max(len(r[0]) for r in rows)
        lines = [f"{self.backend} vs PyTorch on {self.clips} clips", f"{'metric':<{width}}  {'value':<24} threshold"]
        lines += [f"{name:<{width}}  {value:<24} {limit}" for name, value, limit in rows]
        lines.append("PASS" if self.passed else "FAIL: " + "; ".join(self.failures))
        return "\n".join(lines)


def seeded_clips(count: int, input_shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, *input_shape), dtype=np.float32)


def validation_clips(input_shape, clips: int, inputs, seed: int) -> np.ndarray:
    """``clips`` seeded random clips followed by the clips of the ``inputs`` .npy file, if given."""
    input_shape = tuple(input_shape)
    batches = [seeded_clips(clips, input_shape, seed)] if clips > 0 else []
    if inputs is not None:
        batches.append(load_clips(inputs, input_shape))
    if not batches:
        raise ValueError("nothing to validate: --clips is 0 and no --inputs given")
    return np.concatenate(batches)


def load_clips(path, input_shape) -> np.ndarray:
    path = Path(path)
    try:
        clips = np.load(path, allow_pickle=False)
    except Exception as error:
        raise ValueError(f"cannot read --inputs {path} ({type(error).__name__}); save clips with numpy.save") from None
    expected = tuple(input_shape)
    original_shape = tuple(clips.shape)
    if clips.ndim == len(expected):
        clips = clips[None]
    if clips.ndim != len(expected) + 1 or tuple(clips.shape[1:]) != expected:
        raise ValueError(
            f"--inputs {path} has shape {original_shape}; expected (N, {', '.join(map(str, expected))}) for this model"
        )
    return clips.astype(np.float32)


def _topk(logits: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[-1])
    return np.argsort(-logits, axis=-1, kind="stable")[:, :k]


def compare_outputs(reference_logits, backend_logits, reference_kept=None, backend_kept=None, *, dtype="fp32", backend="onnxruntime", tolerances=None) -> ValidationReport:
    """Metrics and pass/fail of one backend's outputs against the reference's."""
    tol = dict(TOLERANCES[dtype])
    tol.update({k: v for k, v in (tolerances or {}).items() if v is not None})
    ref = np.asarray(reference_logits, dtype=np.float64)
    got = np.asarray(backend_logits, dtype=np.float64)
    diff = np.abs(ref - got)
    cosine = float(np.mean(np.sum(ref * got, -1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1) + 1e-30)))
    top1 = float(np.mean(_topk(ref, 1)[:, 0] == _topk(got, 1)[:, 0]))
    ref5, got5 = _topk(ref, 5), _topk(got, 5)
    top5 = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(ref5, got5)]))
    report = ValidationReport(backend, ref.shape[0], float(diff.max()), float(diff.mean()), cosine, top1, top5, tolerances=tol)
    if reference_kept is not None and backend_kept is not None:
        for ref_stage, got_stage in zip(reference_kept, backend_kept):
            ious, exact = [], []
            for a, b in zip(np.asarray(ref_stage), np.asarray(got_stage)):
                sa, sb = set(a.tolist()), set(b.tolist())
                ious.append(len(sa & sb) / max(len(sa | sb), 1))
                exact.append(sa == sb)
            report.kept.append(float(np.mean(ious)))
            report.kept_exact.append(float(np.mean(exact)))
    if report.max_abs > tol["max_abs"]:
        report.failures.append(f"max |diff| {report.max_abs:.2e} > {tol['max_abs']:.0e}")
    if report.cosine < tol["cosine"]:
        report.failures.append(f"cosine {report.cosine:.6f} < {tol['cosine']}")
    if report.top1 < tol["top1"]:
        report.failures.append(f"top-1 agreement {report.top1:.1%} < {tol['top1']:.0%}")
    for stage, iou in enumerate(report.kept):
        if iou < tol["kept"]:
            report.failures.append(f"kept agreement at stage {stage} {iou:.2%} < {tol['kept']:.0%}")
    return report


def check_model_file(path, manifest: dict) -> None:
    """The .onnx must be the file the manifest describes (its sha256), not a later edit."""
    expected = manifest.get("onnx_sha256")
    if expected and sha256_file(path) != expected:
        raise ValueError(f"{path} changed since export (sha256 differs from its manifest); re-export it or restore the file")


def validate_onnx(path, *, checkpoint=None, clips: int = 4, inputs=None, seed: int = 0, tolerances=None, session=None, providers=None) -> ValidationReport:
    """Validate ``path`` on ONNX Runtime against the PyTorch model its manifest describes."""
    from .export.manifest import read_manifest, rebuild_reference
    from .runtime.onnxrt import onnx_session, run_clips

    manifest = read_manifest(path)
    check_model_file(path, manifest)
    model = rebuild_reference(manifest, checkpoint)
    data = validation_clips(model.config.input_shape, clips, inputs, seed)
    session = session or onnx_session(path, providers=providers)
    got_logits, got_kept = run_clips(session, manifest, data)
    ref_logits, ref_kept = run_model(model, data, got_kept is not None)
    backend = f"onnxruntime ({session.get_providers()[0]})"
    return compare_outputs(ref_logits, got_logits, ref_kept, got_kept, dtype=manifest["dtype"], backend=backend, tolerances=tolerances)


def validate_engine(onnx_path, plan_path, *, checkpoint=None, clips=4, inputs=None, seed=0, tolerances=None, plugin_libs=()) -> ValidationReport:
    """Validate the TensorRT engine ``plan_path`` built from ``onnx_path`` against the PyTorch reference."""
    from .export.manifest import read_manifest, rebuild_reference
    from .runtime.batching import kept_outputs, run_in_batches
    from .runtime.trt import EngineRunner, check_plugin_libs

    manifest = read_manifest(onnx_path)
    check_plugin_libs(onnx_path, plugin_libs)  # a plugin-mode export's engine cannot load without its library
    runner = EngineRunner(plan_path, plugin_libs=plugin_libs)  # fails in one line without TensorRT or a GPU
    model = rebuild_reference(manifest, checkpoint)
    data = validation_clips(model.config.input_shape, clips, inputs, seed)
    # A dynamic-batch engine is validated one clip at a time: its profile may not cover larger batches.
    outputs = run_in_batches(runner.run, data, batch=1 if manifest["dynamic_batch"] else manifest["batch_size"])
    got_kept = kept_outputs(outputs)
    ref_logits, ref_kept = run_model(model, data, got_kept is not None)
    return compare_outputs(ref_logits, outputs["logits"], ref_kept, got_kept, dtype=manifest["dtype"], backend="tensorrt", tolerances=tolerances)


def openvino_tolerance_key(dtype: str, precision: str) -> str:
    """The TOLERANCES row for an export of ``dtype`` run by OpenVINO at ``precision``: the bf16 hint
    loosens fp32/fp16 exports to the bf16 row; int8 exports keep the int8 row (looser still)."""
    return "bf16" if precision == "bf16" and dtype in ("fp32", "fp16") else dtype


def validate_openvino(path, *, precision: str = "f32", checkpoint=None, clips: int = 4, inputs=None, seed: int = 0, tolerances=None, threads=None, cache_dir=None) -> ValidationReport:
    """Validate ``path`` on OpenVINO (CPU, inference precision ``precision``) against the PyTorch model
    its manifest describes; like :func:`validate_onnx`, with the tolerances of the precision it ran in."""
    from .export.manifest import read_manifest, rebuild_reference
    from .runtime.openvino import check_openvino_model_file, check_precision, openvino_model, run_clips as run_openvino

    check_precision(precision)
    check_openvino_model_file(path)  # a plugin-mode export is refused before the reference is built
    manifest = read_manifest(path)
    check_model_file(path, manifest)
    model = rebuild_reference(manifest, checkpoint)
    data = validation_clips(model.config.input_shape, clips, inputs, seed)
    compiled = openvino_model(path, precision=precision, threads=threads, cache_dir=cache_dir)
    got_logits, got_kept = run_openvino(compiled, manifest, data)
    ref_logits, ref_kept = run_model(model, data, got_kept is not None)
    key = openvino_tolerance_key(manifest["dtype"], compiled.precision)
    return compare_outputs(ref_logits, got_logits, ref_kept, got_kept, dtype=key, backend=compiled.description, tolerances=tolerances)
