"""Compare an exported model's outputs with the PyTorch reference that the manifest describes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .replay import ROUNDING_MARGINS
from .runtime.batching import kept_outputs
from .runtime.pytorch import run_model

# fp16 graphs keep STA's scores in fp32, but fp16 activations move logits by ~1e-3 and can flip
# near-tied token choices; these thresholds are what a healthy fp16 export meets on random weights.
# "kept": the smallest fraction of clips whose kept tokens are the reference's (up to near-ties) at
# every stage; "margin": the largest relative score gap a near-tie swap may span (sta_deploy.replay).
TOLERANCES = {
    "fp32": {"max_abs": 1e-4, "top1": 1.0, "kept": 1.0, "cosine": 0.99999, "margin": ROUNDING_MARGINS["fp32"]},
    "fp16": {"max_abs": 5e-2, "top1": 0.9, "kept": 0.9, "cosine": 0.999, "margin": ROUNDING_MARGINS["fp16"]},
    # int8 dynamic quantization: weights and activations of the blocks' products in 8 bits.
    "int8": {"max_abs": 5e-1, "top1": 0.75, "kept": 0.75, "cosine": 0.99, "margin": ROUNDING_MARGINS["int8"]},
    # OpenVINO's bf16 inference precision hint: every product in bf16 (8-bit mantissa), STA's included.
    "bf16": {"max_abs": 2e-1, "top1": 0.9, "kept": 0.8, "cosine": 0.995, "margin": ROUNDING_MARGINS["bf16"]},
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
    # Replay verdict per stage (sta_deploy.replay.StageSummary as a dict): clips identical / near-tie
    # only (largest margin) / real mismatches (first clip, group, margin).  Empty without a replay.
    stages: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the reader must know about how the verdict was reached

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        """Plain JSON types; NaN and inf (a non-finite logit, an impossible selection) become None."""
        data = _finite_or_none(asdict(self))
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
        if self.stages:
            rows += _stage_rows(self.stages, t)
        else:
            for stage, (iou, exact) in enumerate(zip(self.kept, self.kept_exact)):
                rows.append((f"kept set stage {stage}", f"{iou:.2%} (exact {exact:.0%})", f">= {t['kept']:.0%}"))
        width = max(len(r[0]) for r in rows)
        value_width = max(24, *(len(r[1]) for r in rows))
        lines = [f"{self.backend} vs PyTorch on {self.clips} clips", f"{'metric':<{width}}  {'value':<{value_width}} threshold"]
        lines += [f"{name:<{width}}  {value:<{value_width}} {limit}".rstrip() for name, value, limit in rows]
        lines += [f"note: {note}" for note in self.notes]
        lines.append("PASS" if self.passed else "FAIL: " + "; ".join(self.failures))
        return "\n".join(lines)


def _finite_or_none(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]
    return value


def _stage_rows(stages: list[dict], tol: dict) -> list[tuple[str, str, str]]:
    """Table rows of the replay verdict: one per stage, plus its largest near-tie and first mismatch."""
    rows = []
    limit = f"swaps within {tol['margin']:.0e}" + (f", >= {tol['kept']:.0%} of clips" if tol["kept"] < 1 else "")
    for s in stages:
        counts = f"{s['identical']} identical, {s['near_tie']} near-tie, {s['mismatch']} mismatch"
        if s["not_finite"] or s["skipped"]:
            counts += f", {s['not_finite'] + s['skipped']} not judged"
        rows.append((f"kept tokens stage {s['stage']} ({s['direction']})", counts, limit))
        if s["near_tie"]:
            rows.append(("  largest near-tie margin", f"{s['largest_near_tie']:.1e}", f"<= {tol['margin']:.0e}"))
        if s["first_mismatch"]:
            first = s["first_mismatch"]
            where = f"clip {first['clip']}" + (f", group {first['group']}" if first["group"] is not None else "")
            rows.append(("  first mismatch", f"{where}, margin {first['margin']:.1e}", ""))
    return rows


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
    """Metrics and pass/fail of one backend's outputs against the reference's.

    Every threshold is checked so that NaN fails it, and non-finite logits on either side are named.
    """
    tol = dict(TOLERANCES[dtype])
    tol.update({k: v for k, v in (tolerances or {}).items() if v is not None})
    ref = np.asarray(reference_logits, dtype=np.float64)
    got = np.asarray(backend_logits, dtype=np.float64)
    diff = np.abs(ref - got)
    with np.errstate(invalid="ignore"):
        cosine = float(np.mean(np.sum(ref * got, -1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1) + 1e-30)))
    top1 = float(np.mean(_topk(ref, 1)[:, 0] == _topk(got, 1)[:, 0]))
    ref5, got5 = _topk(ref, 5), _topk(got, 5)
    top5 = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(ref5, got5)]))
    report = ValidationReport(backend, ref.shape[0], float(diff.max()), float(diff.mean()), cosine, top1, top5, tolerances=tol)
    report.failures += _non_finite_failures(ref, got)
    if reference_kept is not None and backend_kept is not None:
        for ref_stage, got_stage in zip(reference_kept, backend_kept):
            ious, exact = [], []
            for a, b in zip(np.asarray(ref_stage), np.asarray(got_stage)):
                sa, sb = set(a.tolist()), set(b.tolist())
                ious.append(len(sa & sb) / max(len(sa | sb), 1))
                exact.append(sa == sb)
            report.kept.append(float(np.mean(ious)))
            report.kept_exact.append(float(np.mean(exact)))
    # `not <=` rather than `>`: a NaN fails every threshold.
    if not report.max_abs <= tol["max_abs"]:
        report.failures.append(f"max |diff| {report.max_abs:.2e} > {tol['max_abs']:.0e}")
    if not report.cosine >= tol["cosine"]:
        report.failures.append(f"cosine {report.cosine:.6f} < {tol['cosine']}")
    if not report.top1 >= tol["top1"]:
        report.failures.append(f"top-1 agreement {report.top1:.1%} < {tol['top1']:.0%}")
    for stage, iou in enumerate(report.kept):
        if not iou >= tol["kept"]:
            report.failures.append(f"kept agreement at stage {stage} {iou:.2%} < {tol['kept']:.0%}")
    return report


def _clip_list(mask: np.ndarray) -> str:
    """'clip 3' or 'clips 0, 1, 2 and 5 more' for the rows of ``mask`` (N, ...) that hold a True."""
    clips = np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1)).tolist()
    shown = ", ".join(map(str, clips[:3])) + (f" and {len(clips) - 3} more" if len(clips) > 3 else "")
    return f"clip{'s' if len(clips) > 1 else ''} {shown}"


def _non_finite_failures(reference: np.ndarray, backend: np.ndarray) -> list[str]:
    """One failure per side whose logits hold NaN or inf, saying where; a non-finite reference is the checkpoint's fault."""
    failures = []
    bad = ~np.isfinite(reference)
    if bad.any():
        failures.append(
            f"the PyTorch reference's logits are not finite ({int(bad.sum())} NaN/inf values, {_clip_list(bad)}): "
            "the checkpoint's weights produce NaN/inf; fix or replace the checkpoint"
        )
    bad = ~np.isfinite(backend)
    if bad.any():
        failures.append(f"backend logits are not finite ({int(bad.sum())} NaN/inf values, {_clip_list(bad)})")
    return failures


def judge_replay(report: ValidationReport, summaries) -> None:
    """Add the replay's per-stage verdict (sta_deploy.replay.summarise_stages) and its failures to ``report``."""
    tol = report.tolerances
    report.stages = [{**asdict(s), "agreeing": s.agreeing} for s in summaries]
    report.kept = [s.agreement for s in summaries]
    report.kept_exact = [s.same_set / max(s.clips, 1) for s in summaries]
    for s in summaries:
        name = f"stage {s.stage} ({s.direction})"
        if s.not_finite:
            report.failures.append(
                f"{name}: the PyTorch reference's STA scores are not finite (clip {s.first_not_finite}): "
                "the checkpoint's weights produce NaN/inf; fix or replace the checkpoint"
            )
        if s.mismatch and not s.agreeing >= tol["kept"]:
            first = s.first_mismatch
            group = f", group {first['group']}" if first["group"] is not None else ""
            detail = f": {first['detail']}" if first["detail"] else ""
            report.failures.append(
                f"{name}: {s.mismatch} of {s.clips} clip(s) keep tokens the reference would not, beyond the rounding margin "
                f"(first: clip {first['clip']}{group}{detail}; margin {first['margin']:.2e} > {tol['margin']:.0e})"
            )


def check_kept_outputs(report: ValidationReport, backend_kept, replay) -> None:
    """The export's kept_stage* outputs must be the tokens its graph kept (the replayed reference's, once forced)."""
    for stage, (got, want) in enumerate(zip(backend_kept, replay.kept)):
        if got.shape != want.shape:
            report.failures.append(f"kept_stage{stage} output has shape {got.shape}, the reference's kept tokens {want.shape}")
            continue
        # Where a stage could not be forced, the reference kept other tokens: the replay has failed it already.
        judged = np.array([len(checks) <= stage or checks[stage].kind in ("identical", "near-tie") for checks in replay.checks])
        differs = judged & np.any(np.sort(got, axis=-1) != want, axis=-1)
        if differs.any():
            report.failures.append(f"kept_stage{stage} output is not the set of tokens the graph kept at stage {stage} ({_clip_list(differs)})")


def validation_clips(input_shape, clips: int, inputs, seed: int) -> np.ndarray:
    """``clips`` seeded random clips followed by the clips of the ``inputs`` .npy file, if given."""
    input_shape = tuple(input_shape)
    batches = [seeded_clips(clips, input_shape, seed)] if clips > 0 else []
    if inputs is not None:
        batches.append(load_clips(inputs, input_shape))
    if not batches:
        raise ValueError("nothing to validate: --clips is 0 and no --inputs given")
    return np.concatenate(batches)


def _onnxruntime_outputs(path, manifest: dict, data: np.ndarray, session, providers):
    """ONNX Runtime's outputs on ``data``, the names of its per-stage selection outputs (None without
    STA) and the provider that ran them.

    Without a ``session`` the graph is run from a scratch copy with the selection outputs added
    (sta_deploy.export.selection_graph); a given ``session`` must already have them.
    """
    from .export.selection_graph import SELECTION_OUTPUT, selection_copy
    from .runtime.onnxrt import onnx_session, run_session

    pruned = manifest["r1"] > 0
    if session is not None:
        present = {o.name for o in session.get_outputs()}
        names = [name if name in present else None for name in map(SELECTION_OUTPUT.format, range(3))]
        if pruned and not any(names):
            raise ValueError("validate_onnx(session=...) needs a session of the graph with its selection outputs; pass providers= instead")
        return run_session(session, manifest, data), names if pruned else None, session.get_providers()[0]
    with selection_copy(path, manifest) as (copy, names):
        session = onnx_session(copy, providers=providers)
        return run_session(session, manifest, data), names, session.get_providers()[0]


def replay_report(model, manifest: dict, data: np.ndarray, outputs: dict, selection_names, *, backend: str, tolerance_key: str, tolerances=None) -> ValidationReport:
    """Judge a backend's ``outputs`` on ``data`` against ``model`` (the reference), whatever ran them.

    ``selection_names``: the outputs holding each STA stage's selection in the backend's order
    (sta_deploy.export.selection_graph; None for a model without STA).  The backend's choices are
    replayed in the reference (sta_deploy.replay) with the rounding margin of ``tolerance_key``'s
    TOLERANCES row: near-ties may differ; real mismatches, logits beyond tolerance (compared with
    the replayed reference's, like for like) and non-finite values fail.
    """
    from .replay import replay_clips, summarise_stages

    tol = {**TOLERANCES[tolerance_key], **{k: v for k, v in (tolerances or {}).items() if v is not None}}
    selections = [None if name is None else outputs[name] for name in selection_names] if selection_names else None
    replay = replay_clips(model, data, selections, ordered=manifest["family"] == "vit", limit=tol["margin"])
    backend_kept = kept_outputs(outputs)
    # Unpruned (no selection to replay): the kept outputs are compared as sets, as before the replay.
    plain_kept = (replay.kept, backend_kept) if selections is None and backend_kept is not None else (None, None)
    report = compare_outputs(replay.logits, outputs["logits"], *plain_kept, dtype=tolerance_key, backend=backend, tolerances=tol)
    if selections is not None:
        judge_replay(report, summarise_stages(replay.checks, manifest["schedule"]["directions"]))
        if backend_kept is not None:
            check_kept_outputs(report, backend_kept, replay)
    return report


def validate_onnx(
    path, *, checkpoint=None, clips: int = 4, inputs=None, seed: int = 0, tolerances=None, session=None, providers=None, save_inputs=None, save_outputs=None
) -> ValidationReport:
    """Validate ``path`` on ONNX Runtime against the PyTorch model its manifest describes.

    The backend's token choices are replayed in the reference (:func:`replay_report`).  ``save_inputs``
    / ``save_outputs``: also write the clips and the plain reference's outputs as Polygraphy JSON.
    """
    from .export.manifest import read_verified_manifest, rebuild_reference

    manifest = read_verified_manifest(path, needed_by="validate")
    model = rebuild_reference(manifest, checkpoint)
    data = validation_clips(model.config.input_shape, clips, inputs, seed)
    if save_inputs is not None or save_outputs is not None:
        from .runtime.polygraphy_io import save_polygraphy_data

        save_polygraphy_data(model, manifest, data, inputs_path=save_inputs, outputs_path=save_outputs)
    outputs, selection_names, provider = _onnxruntime_outputs(path, manifest, data, session, providers)
    backend = f"onnxruntime ({provider})"
    return replay_report(model, manifest, data, outputs, selection_names, backend=backend, tolerance_key=manifest["dtype"], tolerances=tolerances)


def validate_engine(onnx_path, plan_path, *, checkpoint=None, clips=4, inputs=None, seed=0, tolerances=None, plugin_libs=()) -> ValidationReport:
    """Validate the TensorRT engine ``plan_path`` built from ``onnx_path`` against the PyTorch reference.

    An engine built with ``sta-deploy build --selection-outputs`` carries every STA stage's selection:
    its choices are replayed in the reference like ONNX Runtime's (:func:`replay_report`).  Without
    them the kept sets and logits are compared plainly, and the report says so (a rounding near-tie
    the engine breaks the other way then fails)."""
    from .export.manifest import read_manifest, rebuild_reference
    from .export.selection_graph import SELECTION_OUTPUT
    from .runtime.trt import EngineRunner, check_plugin_libs

    manifest = read_manifest(onnx_path)
    check_plugin_libs(onnx_path, plugin_libs)  # a plugin-mode export's engine cannot load without its library
    runner = EngineRunner(plan_path, plugin_libs=plugin_libs)  # fails in one line without TensorRT or a GPU
    model = rebuild_reference(manifest, checkpoint)
    data = validation_clips(model.config.input_shape, clips, inputs, seed)
    try:
        outputs = runner.run_clips(data, manifest)
    finally:
        runner.close()
    names = [name if name in outputs else None for name in map(SELECTION_OUTPUT.format, range(3))]
    if manifest["r1"] == 0 or any(names):
        return replay_report(model, manifest, data, outputs, names if manifest["r1"] else None, backend="tensorrt",
                             tolerance_key=manifest["dtype"], tolerances=tolerances)
    got_kept = kept_outputs(outputs)
    # One clip per reference call, so that a clip's verdict never depends on its neighbours.
    ref_logits, ref_kept = run_model(model, data, got_kept is not None, batch_size=1)
    report = compare_outputs(ref_logits, outputs["logits"], ref_kept, got_kept, dtype=manifest["dtype"], backend="tensorrt", tolerances=tolerances)
    report.notes.append(NO_ENGINE_REPLAY)
    return report


NO_ENGINE_REPLAY = (
    "no replay: the engine has no sta_selection_stage* outputs, so kept sets and logits are compared plainly and a rounding "
    "near-tie broken the other way fails; rebuild it with sta-deploy build --selection-outputs to tell near-ties from bugs"
)


def openvino_tolerance_key(dtype: str, precision: str) -> str:
    """The TOLERANCES row for an export of ``dtype`` run by OpenVINO at ``precision``: the bf16 hint
    loosens fp32/fp16 exports to the bf16 row; int8 exports keep the int8 row (looser still)."""
    return "bf16" if precision == "bf16" and dtype in ("fp32", "fp16") else dtype


def validate_openvino(path, *, precision: str = "f32", checkpoint=None, clips: int = 4, inputs=None, seed: int = 0, tolerances=None, threads=None, cache_dir=None) -> ValidationReport:
    """Validate ``path`` on OpenVINO (CPU, inference precision ``precision``) against the PyTorch model
    its manifest describes; like :func:`validate_onnx` (the same replay of OpenVINO's token choices),
    with the tolerances and rounding margin of the precision it ran in (:func:`openvino_tolerance_key`).

    A pruned model is compiled from the scratch copy with its selection outputs, without the model
    cache (``cache_dir`` applies to an unpruned model only): the copy's path is new every run.
    """
    from .export.manifest import read_verified_manifest, rebuild_reference
    from .export.selection_graph import selection_copy
    from .runtime.batching import run_in_batches
    from .runtime.openvino import check_openvino_model_file, check_precision, openvino_model

    check_precision(precision)
    check_openvino_model_file(path)  # a plugin-mode export is refused before the reference is built
    manifest = read_verified_manifest(path, needed_by="validate")
    model = rebuild_reference(manifest, checkpoint)
    data = validation_clips(model.config.input_shape, clips, inputs, seed)
    with selection_copy(path, manifest) as (copy, selection_names):
        compiled = openvino_model(copy, precision=precision, threads=threads, cache_dir=cache_dir if selection_names is None else False)
        outputs = run_in_batches(compiled.run, data, batch=None if manifest["dynamic_batch"] else manifest["batch_size"])
    key = openvino_tolerance_key(manifest["dtype"], compiled.precision)
    return replay_report(model, manifest, data, outputs, selection_names, backend=compiled.description, tolerance_key=key, tolerances=tolerances)
