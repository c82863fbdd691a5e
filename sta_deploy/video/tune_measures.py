"""Accuracy cost of a pruned / lower-precision model, from per-clip logits (pure numpy).

``reference`` is the unpruned float32 model's logits on the same clips, ``logits`` the candidate's,
both ``(N, C)`` with one row per clip.  The label-free measures need no labels:

* **top-1 agreement**: the fraction of clips whose arg-max class is the reference's
  (``mean(argmax(logits) == argmax(reference))``).
* **top-5 overlap**: the mean over clips of ``|top5(logits) ∩ top5(reference)| / 5`` (``k = min(5, C)``;
  top-k by descending logit, ties broken by the lower class index).
* **mean KL**: ``mean_i KL(p_i || q_i) = mean_i sum_c p_ic (log p_ic - log q_ic)`` with ``p = softmax(reference)``
  and ``q = softmax(logits)``, in nats; 0 when the distributions match.

With labels, **top-1 / top-5 accuracy**: the fraction of clips whose label is the arg-max class / among
the top-5 classes.

A clip with several views has one row: the views' logits combined as the protocol does
(:func:`clip_logits`), so that ``softmax(row)`` is the clip's class distribution.
"""

from __future__ import annotations

import numpy as np

TOP_K = 5


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def clip_logits(view_logits: np.ndarray, average: str) -> np.ndarray:
    """(views, C) -> (C,): VideoMAE averages logits ("logits"); mmaction2 averages probabilities
    ("prob"), whose log is returned so that its softmax is that average."""
    view_logits = np.asarray(view_logits, dtype=np.float64)
    if average == "prob":
        return np.log(np.exp(log_softmax(view_logits)).mean(axis=0))
    return view_logits.mean(axis=0)


def top_k_classes(logits: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """(N, C) -> (N, min(k, C)) class indices, best first (stable: ties go to the lower index)."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.argsort(-logits, axis=-1, kind="stable")[:, : min(k, logits.shape[-1])]


def _check(reference: np.ndarray, logits: np.ndarray) -> None:
    if reference.shape != logits.shape or reference.ndim != 2 or len(reference) == 0:
        raise ValueError(f"logits {logits.shape} and reference {reference.shape} must be the same (clips, classes) shape")


def top1_agreement(reference: np.ndarray, logits: np.ndarray) -> float:
    reference, logits = np.asarray(reference), np.asarray(logits)
    _check(reference, logits)
    return float(np.mean(top_k_classes(reference, 1)[:, 0] == top_k_classes(logits, 1)[:, 0]))


def top5_overlap(reference: np.ndarray, logits: np.ndarray) -> float:
    reference, logits = np.asarray(reference), np.asarray(logits)
    _check(reference, logits)
    ours, theirs = top_k_classes(logits), top_k_classes(reference)
    shared = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ours, theirs)]
    return float(np.mean(shared) / ours.shape[1])


def mean_kl(reference: np.ndarray, logits: np.ndarray) -> float:
    reference, logits = np.asarray(reference), np.asarray(logits)
    _check(reference, logits)
    log_p, log_q = log_softmax(reference), log_softmax(logits)
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)))


def label_accuracy(logits: np.ndarray, labels, k: int) -> float:
    labels = np.asarray(labels)
    top = top_k_classes(logits, k)
    return float(np.mean([label in row for label, row in zip(labels.tolist(), top.tolist())]))


def accuracy_cost(reference: np.ndarray, logits: np.ndarray, labels=None) -> dict:
    """Every measure of ``logits`` against ``reference`` (and ``labels`` when given, else None)."""
    measures = {
        "top1_agreement": top1_agreement(reference, logits),
        "top5_overlap": top5_overlap(reference, logits),
        "mean_kl": mean_kl(reference, logits),
        "top1": None,
        "top5": None,
    }
    if labels is not None:
        measures["top1"] = label_accuracy(logits, labels, 1)
        measures["top5"] = label_accuracy(logits, labels, TOP_K)
    return measures
