"""The one way clips go through any runtime: in the model's batch size, the last batch padded."""

from __future__ import annotations

import numpy as np


def padded_batches(clips: np.ndarray, size: int, *, pad: bool = True):
    """``(chunk, real)`` for consecutive chunks of ``size`` clips; with ``pad`` the last chunk repeats
    its final clip up to ``size`` (``real`` clips of it are genuine)."""
    for start in range(0, len(clips), size):
        chunk = clips[start : start + size]
        real = len(chunk)
        if pad and real < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - real, axis=0)])
        yield chunk, real


def run_in_batches(run_batch, clips: np.ndarray, *, batch: int | None, step: int = 4) -> dict[str, np.ndarray]:
    """``run_batch(chunk) -> {name: array}`` over ``clips`` (N, C, T, H, W); the outputs concatenated.

    ``batch`` is the static batch the model was built for: every call gets exactly that many clips
    (the last chunk repeats its final clip, and the padding is cut from the outputs).  ``None`` means
    any batch works, and clips go in chunks of ``step``.
    """
    size = batch or max(1, min(len(clips), step))
    outputs: dict[str, list] = {}
    for chunk, real in padded_batches(clips, size, pad=bool(batch)):
        for name, value in run_batch(chunk).items():
            outputs.setdefault(name, []).append(value[:real])
    return {name: np.concatenate(values) for name, values in outputs.items()}


def kept_outputs(outputs: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """The ``kept_stage0..2`` outputs sorted per clip, or None when the model has none."""
    if "kept_stage0" not in outputs:
        return None
    return [np.sort(outputs[f"kept_stage{stage}"], axis=-1) for stage in range(3)]
