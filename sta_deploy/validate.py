"""Compare an exported model's outputs with the PyTorch reference that the manifest describes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# fp16 graphs keep STA's scores in fp32, but fp16 activations move logits by ~1e-3 and can flip
# near-tied token choices; these thresholds are what a healthy fp16 export meets on random weights.
TOLERANCES = {
    "fp32": {"max_abs": 1e-4, "top1": 1.0, "kept": 1.0, "cosine": 0.99999},
    "fp16": {"max_abs": 5e-2, "top1": 0.9, "kept": 0.9, "cosine": 0.999},
    # int8 dynamic quantization: weights and activations of the blocks' products in 8 bits.
    "int8": {"max_abs": 5e-1, "top1": 0.75, "kept": 0.75, "cosine": 0.99},
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


def run_reference(model, clips: np.ndarray, with_kept: bool, batch_size: int = 4):
    import torch

    logits, kept = [], [[], [], []]
    with torch.no_grad():
        for start in range(0, len(clips), batch_size):
            out = model(torch.from_numpy(clips[start : start + batch_size]), return_kept=True)
            logits.append(out[0].float().numpy())
            for stage, positions in enumerate(out[1]):
                kept[stage].append(positions.numpy())
    return np.concatenate(logits), ([np.concatenate(k) for k in kept] if with_kept else None)


def run_onnxruntime(session, manifest: dict, clips: np.ndarray):
    """Run clips through ``session`` in the exported batch size (padding the last batch)."""
    batch = None if manifest["dynamic_batch"] else manifest["batch_size"]
    names = [o.name for o in session.get_outputs()]
    outputs: dict[str, list] = {name: [] for name in names}
    step = batch or min(len(clips), 4)
    for start in range(0, len(clips), step):
        chunk = clips[start : start + step]
        real = len(chunk)
        if batch and real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        for name, value in zip(names, session.run(None, {manifest["inputs"][0]["name"]: chunk})):
            outputs[name].append(value[:real])
    merged = {name: np.concatenate(values) for name, values in outputs.items()}
    kept = [np.sort(merged[f"kept_stage{i}"], axis=-1) for i in range(3)] if "kept_stage0" in merged else None
    return merged["logits"], kept


def check_model_file(path, manifest: dict) -> None:
    """The .onnx must be the file the manifest describes (its sha256), not a later edit."""
    from .manifest import check_model_matches

    check_model_matches(path, manifest)


def validate_onnx(path, *, checkpoint=None, clips: int = 4, inputs=None, seed: int = 0, tolerances=None, session=None, providers=None) -> ValidationReport:
    """Validate ``path`` on ONNX Runtime against the PyTorch model its manifest describes."""
    from .manifest import read_manifest, rebuild_reference
    from .runtime import onnx_session

    manifest = read_manifest(path)
    check_model_file(path, manifest)
    model = rebuild_reference(manifest, checkpoint)
    input_shape = tuple(model.config.input_shape)
    batches = [seeded_clips(clips, input_shape, seed)] if clips > 0 else []
    if inputs is not None:
        batches.append(load_clips(inputs, input_shape))
    if not batches:
        raise ValueError("nothing to validate: --clips is 0 and no --inputs given")
    data = np.concatenate(batches)
    session = session or onnx_session(path, providers=providers)
    got_logits, got_kept = run_onnxruntime(session, manifest, data)
    with_kept = got_kept is not None
    ref_logits, ref_kept = run_reference(model, data, with_kept)
    backend = f"onnxruntime ({session.get_providers()[0]})"
    return compare_outputs(ref_logits, got_logits, ref_kept, got_kept, dtype=manifest["dtype"], backend=backend, tolerances=tolerances)
