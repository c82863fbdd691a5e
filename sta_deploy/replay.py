"""Replay a backend's STA token choices in the PyTorch reference, stage by stage and group by group.

A backend (ONNX Runtime, TensorRT, the plugin) and PyTorch round differently, so where two tokens'
STA scores are nearly tied they may pick, or order, the two differently.  That is harmless, but
every later decision then starts from different tokens, so a plain side-by-side comparison cannot
tell it from a real bug.  The replay can:

1. Every group's decision is recomputed by the reference from the state the *backend* reached (its
   kept tokens of the previous group and stage, in its order) with the reference's own arithmetic.
2. The backend's choice is judged against those scores: identical; or different only where the
   values it had to order differ by at most a rounding margin (:data:`ROUNDING_MARGINS`, relative
   to the group's largest value); or a real mismatch.
3. The backend's choice (and order) is then forced into the reference, so the next group, the next
   stage and the logits are compared like for like.

The replay runs one clip at a time, so a clip's verdict never depends on what it was batched with.
Forcing the reference's own choice reproduces :func:`sta_deploy.sta.group_kept_indices` bit for bit
(tests/test_validate_replay.py), so where the backend agrees the replayed reference *is* the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from . import sta

# Largest score difference, relative to the group's largest |value|, that a swap may span and still
# count as rounding.  fp32: the backend's arithmetic matches PyTorch's to a few ulps per operation;
# 1e-5 is ~84 x fp32's epsilon (1.19e-7), room for sums over a few hundred tokens and the blocks in
# front of the stage.  fp16: activations carry fp16's epsilon (9.8e-4) into the fp32 scores; 20 x.
# int8: dynamic quantization moves the blocks' products by ~1% of their range.  Largest margins
# measured on random-weight vit_s r1=64: fp32 6.8e-7, fp16 8.4e-4, int8 1.8e-2; the deliberate bugs
# of tests/test_validate_mutations.py measure 1e-1 or more (most are structural: infinite).
# bf16 (OpenVINO's bf16 inference precision hint): unlike an fp16 export, STA's own products and
# softmax run in bf16 too, so the scores themselves carry bf16's rounding: 8 significand bits, epsilon
# 2**-7 = 7.8e-3.  The margin is 8 x that epsilon, 6.25e-2: largest measured (OpenVINO 2026.4 on an
# AVX512-BF16 CPU) 1.4e-2, under 2 epsilons, on random-weight vit_s r1 = 48 and 64 (4 clips each; every
# clip near-tied at every stage, none beyond) and 1.2e-2 on the tiny test models; still below the 1e-1
# the deliberate bugs start at.
BF16_EPSILON = 2.0**-7
ROUNDING_MARGINS = {"fp32": 1e-5, "fp16": 2e-2, "int8": 1e-1, "bf16": 8 * BF16_EPSILON}

IDENTICAL = "identical"
NEAR_TIE = "near-tie"
MISMATCH = "mismatch"
NOT_FINITE = "reference not finite"
SKIPPED = "not replayed"
# Worst first: a stage's verdict is the worst of its groups'.
_SEVERITY = {IDENTICAL: 0, NEAR_TIE: 1, MISMATCH: 2, NOT_FINITE: 3, SKIPPED: 4}


@dataclass
class GroupCheck:
    """The verdict on one group's choice: ``margin`` is the largest relative score gap it inverts."""

    kind: str
    margin: float = 0.0
    detail: str = ""
    forceable: bool = True  # False: the choice is not a valid selection (so the reference's own is used)


@dataclass
class StageCheck:
    """One clip at one STA stage."""

    stage: int
    kind: str
    margin: float = 0.0  # mismatch: the first mismatching group's margin; otherwise the largest near-tie margin
    group: int | None = None  # first group (temporal index) with a real mismatch
    detail: str = ""
    agreement: float = 1.0  # IoU of the backend's kept set and the reference's own choice


@dataclass
class ClipReplay:
    logits: Tensor  # (num_classes,) float32 of the reference with the backend's choices forced
    kept: list = field(default_factory=list)  # reference kept positions per stage, ascending (the model's return_kept)
    stages: list = field(default_factory=list)  # StageCheck per stage


def judge_choice(values: Tensor, candidates: list, backend: list, reference: list, *, ordered: bool, limit: float) -> GroupCheck:
    """Judge ``backend`` (indices chosen among ``candidates``, smallest ``values`` first) against ``reference``.

    ``ordered``: the order of the chosen tokens matters too (ViT: the next stage splits A/B by it).
    The margin is the largest ``values`` gap the backend's choice inverts, over the group's largest
    |value|: a kept token scoring above a dropped one, or (ordered) a token placed before a smaller one.
    """
    allowed = set(candidates)
    if len(set(backend)) != len(backend):
        repeated = next(token for token in backend if backend.count(token) > 1)
        return GroupCheck(MISMATCH, math.inf, f"token {repeated} is kept twice", forceable=False)
    stray = [token for token in backend if token not in allowed]
    if stray:
        return GroupCheck(MISMATCH, math.inf, f"token {stray[0]} is not one of the group's candidates", forceable=False)
    if not bool(torch.isfinite(values[candidates]).all()):
        return GroupCheck(NOT_FINITE, math.nan, "the reference's scores are not finite")
    if (backend == reference) if ordered else (set(backend) == set(reference)):
        return GroupCheck(IDENTICAL)
    v = values.double().tolist()
    scale = max(abs(v[token]) for token in candidates) or 1.0
    gap, detail = 0.0, ""
    chosen = set(backend)
    dropped = [token for token in candidates if token not in chosen]
    if dropped and backend:
        worst_kept = max(backend, key=v.__getitem__)
        best_dropped = min(dropped, key=v.__getitem__)
        gap = v[worst_kept] - v[best_dropped]
        detail = f"kept token {worst_kept} ({v[worst_kept]:.6g}) over dropped token {best_dropped} ({v[best_dropped]:.6g})"
    if ordered:
        highest = backend[0]
        for token in backend[1:]:
            if v[highest] - v[token] > gap:
                gap = v[highest] - v[token]
                detail = f"token {highest} ({v[highest]:.6g}) placed before token {token} ({v[token]:.6g})"
            if v[token] > v[highest]:
                highest = token
    margin = max(gap, 0.0) / scale
    return GroupCheck(NEAR_TIE if margin <= limit else MISMATCH, margin, detail)


def _forced_order(backend: list, reference_full: list, *, ordered: bool, forceable: bool) -> list:
    """The token order to continue from: the backend's kept tokens, then the rest in the reference's order.

    Unordered (Swin), the backend's kept tokens take the reference's order among themselves, so that
    an identical set reproduces the reference exactly.  An invalid choice is replaced by the reference's.
    """
    if not forceable:
        return list(reference_full)
    if ordered:
        kept = list(backend)
    else:
        chosen = set(backend)
        kept = [token for token in reference_full if token in chosen]
    taken = set(kept)
    return kept + [token for token in reference_full if token not in taken]


def _first_group(metric: Tensor, backend: list, keep: int, *, ordered: bool, limit: float) -> tuple[list, GroupCheck, list]:
    """The image-style first group: B tokens (odd positions) in order, then A tokens by ascending best similarity.

    The B part is fixed (no score decides it), so any difference there is a mismatch; the A part is judged
    on the similarities :func:`sta.image_style_order` ranks by.
    Returns ``(full order to continue from, check, the reference's own kept tokens)``.
    """
    n = metric.shape[1]
    reference_full = sta.image_style_order(metric)[0].tolist()
    fixed = list(range(1, n, 2))[:keep]
    chosen_b = [t for t in backend if t % 2 == 1]
    fixed_ok = backend[: len(fixed)] == fixed if ordered else sorted(chosen_b) == fixed
    if not fixed_ok:
        valid = len(set(backend)) == len(backend) and all(0 <= t < n for t in backend)
        detail = f"the first {len(fixed)} kept tokens must be the odd-position (B) tokens" + (" in order" if ordered else "")
        check = GroupCheck(MISMATCH, math.inf, detail, forceable=valid)
    else:
        similarity = metric[:, 0::2] @ metric[:, 1::2].transpose(-1, -2)  # what image_style_order ranks A by
        values = torch.full((n,), math.inf, dtype=torch.float64)
        values[0::2] = similarity.amax(dim=-1)[0].double()
        chosen_a = backend[len(fixed) :] if ordered else [t for t in backend if t % 2 == 0]
        check = judge_choice(values, list(range(0, n, 2)), chosen_a, reference_full[len(fixed) : keep], ordered=ordered, limit=limit)
    forced = _forced_order(backend, reference_full, ordered=ordered, forceable=check.forceable)
    return forced, check, reference_full[:keep]


def replay_groups(metric_groups: Tensor, semantic: Tensor, r: int, backward: bool, backend_groups: Tensor, *, ordered: bool, limit: float):
    """One stage's selection, walking the groups like :func:`sta.group_kept_indices` but continuing from the backend's choices.

    ``backend_groups`` (G, n - r): the backend's kept indices within each group (its order).
    Returns ``(forced (1, G, n - r), checks {group: GroupCheck}, own (G, n - r) the reference's own choices)``.
    """
    _, num_groups, n, _ = metric_groups.shape
    keep = n - r
    order = list(range(num_groups))
    if backward:
        order.reverse()
    kept: list = [None] * num_groups
    own: list = [None] * num_groups
    checks: dict = {}

    first = order[0]
    first_metric = metric_groups[:, first]
    first_full, checks[first], own[first] = _first_group(first_metric, backend_groups[first].tolist(), keep, ordered=ordered, limit=limit)
    kept[first] = first_full[:keep]
    # As in the reference, the first transition looks at the first group's full order (dropped tokens too).
    previous_metric = sta.gather_tokens(first_metric, torch.tensor([first_full]))
    previous_accumulated = None
    for group in order[1:]:
        current_metric = metric_groups[:, group]
        accumulated = sta.accumulate_scores(current_metric, previous_metric, previous_accumulated)
        score = accumulated * (1.0 - semantic[:, group])  # sta.select_group_tokens' score
        reference_full = sta.stable_smallest_k(score, n)[0].tolist()
        backend = backend_groups[group].tolist()
        check = judge_choice(score[0], list(range(n)), backend, reference_full[:keep], ordered=ordered, limit=limit)
        checks[group], own[group] = check, reference_full[:keep]
        kept_indices = torch.tensor([_forced_order(backend, reference_full, ordered=ordered, forceable=check.forceable)[:keep]])
        kept[group] = kept_indices[0].tolist()
        kept_accumulated = accumulated.gather(1, kept_indices)
        previous_accumulated = kept_accumulated / kept_accumulated.sum(dim=1, keepdim=True)
        previous_metric = sta.gather_tokens(current_metric, kept_indices)
    return torch.tensor([kept]), checks, torch.tensor(own)


def summarise_stage(stage: int, checks: dict, order: list, agreement: float) -> StageCheck:
    """The stage verdict: the worst group's kind; the first mismatching group (processing order) is named."""
    kind = max((check.kind for check in checks.values()), key=_SEVERITY.__getitem__, default=IDENTICAL)
    if kind in (MISMATCH, NOT_FINITE):
        group = next(g for g in order if checks[g].kind == kind)
        return StageCheck(stage, kind, checks[group].margin, group, checks[group].detail, agreement)
    margin = max((check.margin for check in checks.values() if check.kind == NEAR_TIE), default=0.0)
    return StageCheck(stage, kind, margin, None, "", agreement)


class ReplaySelector:
    """A :func:`sta.selection_override` implementation that replays one clip's backend selections.

    ``backend_flat[i]``: (K_i,) int64, the backend's kept tokens at stage ``i`` as indices into that
    stage's input tokens, groups in temporal order, each group's tokens in the backend's order
    (None: the backend's graph has no such selection).
    """

    def __init__(self, backend_flat: list, *, ordered: bool, limit: float):
        self.backend_flat = [None if flat is None else torch.as_tensor(flat, dtype=torch.int64).reshape(-1) for flat in backend_flat]
        self.ordered = ordered
        self.limit = limit
        self.stages: list[StageCheck] = []
        self.diverged = False  # a stage could not be forced: later indices refer to tokens the reference never had

    def __call__(self, metric_groups: Tensor, semantic: Tensor, r: int, backward: bool) -> Tensor:
        stage = len(self.stages)
        if metric_groups.shape[0] != 1:
            raise ValueError("the replay runs one clip at a time (batch 1)")
        _, num_groups, n, _ = metric_groups.shape
        keep = n - r
        if self.diverged or stage >= len(self.backend_flat):
            self.stages.append(StageCheck(stage, SKIPPED, detail="not replayed: an earlier stage's choice could not be forced"))
            return sta.group_kept_indices(metric_groups, semantic, r, backward)
        flat = self.backend_flat[stage]
        if flat is None or flat.numel() != num_groups * keep:
            # Nothing to force: the reference goes on with its own choice, and later stages are not replayed.
            self.diverged = True
            if flat is None:
                detail = f"the graph has no selection of this stage's {num_groups * n} tokens"
            else:
                detail = f"the backend keeps {flat.numel()} tokens, the schedule {num_groups} groups x {keep} = {num_groups * keep}"
            self.stages.append(StageCheck(stage, MISMATCH, math.inf, None, detail, 0.0))
            return sta.group_kept_indices(metric_groups, semantic, r, backward)
        backend_groups = flat.view(num_groups, keep) - (torch.arange(num_groups) * n).view(-1, 1)
        forced, checks, own = replay_groups(metric_groups, semantic, r, backward, backend_groups, ordered=self.ordered, limit=self.limit)
        if not all(check.forceable for check in checks.values()):
            self.diverged = True
        order = list(range(num_groups))[:: -1 if backward else 1]
        self.stages.append(summarise_stage(stage, checks, order, _agreement(own, backend_groups)))
        return forced


def _agreement(own: Tensor, backend_groups: Tensor) -> float:
    """IoU of two selections (G, k) of within-group indices, as sets of (group, index)."""
    a = {(g, t) for g, row in enumerate(own.tolist()) for t in row}
    b = {(g, t) for g, row in enumerate(backend_groups.tolist()) for t in row}
    return len(a & b) / max(len(a | b), 1)


def replay_clip(model, clip: Tensor, backend_flat: list, *, ordered: bool, limit: float) -> ClipReplay:
    """Run ``model`` on one clip (1, C, T, H, W) with the backend's selections forced; judge every stage."""
    selector = ReplaySelector(backend_flat, ordered=ordered, limit=limit)
    with torch.no_grad(), sta.selection_override(selector):
        logits, kept = model(clip, return_kept=True)
    return ClipReplay(logits[0].float(), [k[0] for k in kept], selector.stages)


@dataclass
class StageSummary:
    """One STA stage over all clips: how many clips chose identically, up to near-ties, or differently."""

    stage: int
    direction: str
    clips: int = 0
    identical: int = 0
    near_tie: int = 0
    mismatch: int = 0
    not_finite: int = 0
    skipped: int = 0
    largest_near_tie: float = 0.0  # largest relative margin among near-tie clips
    near_tie_clips: list = field(default_factory=list)
    mismatch_clips: list = field(default_factory=list)
    first_mismatch: dict | None = None  # {"clip", "group", "margin", "detail"}
    first_not_finite: int | None = None  # clip index
    agreement: float = 1.0  # mean IoU of the backend's kept set and the reference's own choice
    same_set: int = 0  # clips whose kept set is the reference's own (order aside)

    @property
    def agreeing(self) -> float:
        """Fraction of clips whose choice is the reference's, up to near-ties."""
        return (self.identical + self.near_tie) / max(self.clips, 1)


def summarise_stages(per_clip: list, directions) -> list[StageSummary]:
    """Per-stage counts over clips from each clip's ``ClipReplay.stages``."""
    summaries = [StageSummary(stage, direction) for stage, direction in enumerate(directions)]
    agreements: list[list[float]] = [[] for _ in summaries]
    for clip, checks in enumerate(per_clip):
        for check in checks:
            summary = summaries[check.stage]
            summary.clips += 1
            agreements[check.stage].append(check.agreement)
            summary.same_set += check.agreement == 1.0
            if check.kind == IDENTICAL:
                summary.identical += 1
            elif check.kind == NEAR_TIE:
                summary.near_tie += 1
                summary.near_tie_clips.append(clip)
                summary.largest_near_tie = max(summary.largest_near_tie, check.margin)
            elif check.kind == MISMATCH:
                summary.mismatch += 1
                summary.mismatch_clips.append(clip)
                if summary.first_mismatch is None:
                    summary.first_mismatch = {"clip": clip, "group": check.group, "margin": check.margin, "detail": check.detail}
            elif check.kind == NOT_FINITE:
                summary.not_finite += 1
                summary.first_not_finite = summary.first_not_finite if summary.first_not_finite is not None else clip
            else:
                summary.skipped += 1
    for summary, values in zip(summaries, agreements):
        summary.agreement = sum(values) / len(values) if values else 1.0
    return summaries


@dataclass
class ReplayRun:
    logits: object  # numpy (N, num_classes) float32: the replayed reference
    kept: list  # numpy (N, K_i) int64 per stage: its kept positions, ascending
    checks: list  # per clip, the StageCheck list


def replay_clips(model, clips, selections, *, ordered: bool, limit: float) -> ReplayRun:
    """The reference on every clip, one at a time, with the backend's selections forced.

    ``clips`` (N, C, T, H, W) float32 numpy; ``selections`` one (N, K_i) array per stage (None when the
    model has no STA: then this is the plain reference, still clip by clip; a None stage: not found in the graph).
    """
    logits, kept, checks = [], [], []
    for index in range(len(clips)):
        clip = torch.from_numpy(np.ascontiguousarray(clips[index : index + 1]))
        if selections is None:
            with torch.no_grad():
                out, positions = model(clip, return_kept=True)
            result = ClipReplay(out[0].float(), [p[0] for p in positions], [])
        else:
            result = replay_clip(model, clip, [None if stage is None else stage[index] for stage in selections], ordered=ordered, limit=limit)
        logits.append(result.logits.numpy())
        kept.append([k.numpy() for k in result.kept])
        checks.append(result.stages)
    stacked = [np.stack([clip_kept[stage] for clip_kept in kept]) for stage in range(len(kept[0]))] if kept and kept[0] else []
    return ReplayRun(np.stack(logits), stacked, checks)
