"""Clips through a PyTorch model (the reference every backend is compared with)."""

from __future__ import annotations

import numpy as np

from .batching import run_in_batches


def run_model(model, clips: np.ndarray, with_kept: bool, batch_size: int = 4):
    """``(logits (N, classes) float32, kept)``: ``kept`` is one (N, K_i) int64 array per STA stage
    (ascending positions) when ``with_kept``, else None."""
    import torch

    def run_batch(chunk):
        with torch.no_grad():
            logits, kept = model(torch.from_numpy(chunk), return_kept=True)
        outputs = {"logits": logits.float().numpy()}
        outputs.update({f"kept_stage{stage}": positions.numpy() for stage, positions in enumerate(kept)})
        return outputs

    outputs = run_in_batches(run_batch, np.ascontiguousarray(clips, dtype=np.float32), batch=None, step=batch_size)
    kept = [outputs[f"kept_stage{stage}"] for stage in range(3)] if with_kept else None
    return outputs["logits"], kept
