"""Calibration clips for int8 quantization from real videos: decoded and sampled exactly as the model
will see them at inference (the backbone's protocol, at the exported input size)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from .clips import load_views
from .errors import VideoError
from .sampling import SamplingProtocol, checkpoint_normalisation, protocol_for


def manifest_protocol(manifest: dict, *, dataset: str = "k400", views=None, stride=None, min_frames=None) -> SamplingProtocol:
    """The evaluation protocol of the exported model (its family, frames and size; the checkpoint's
    mean/std when it is a Hugging Face folder that has them)."""
    weights = manifest.get("weights", {})
    norm = checkpoint_normalisation(weights.get("path")) if weights.get("source") == "checkpoint" else None
    mean, std = norm if norm else (None, None)
    config = manifest["config"]
    return protocol_for(
        manifest["family"], num_frames=config["num_frames"], img_size=config["img_size"], dataset=dataset, views=views,
        stride=stride, min_frames=min_frames, mean=mean, std=std,
    )


def spread(count: int, limit: int) -> list[int]:
    """``limit`` indices spread evenly over ``range(count)`` (all of them when ``count <= limit``)."""
    if count <= limit:
        return list(range(count))
    return sorted({int(round(i * (count - 1) / max(limit - 1, 1))) for i in range(limit)})


def calibration_clips(paths, protocol: SamplingProtocol, *, limit: int = 16):
    """``(clips (N, 3, T, H, W) float32, failures [(path, reason)])``: at most ``limit`` views, taken
    evenly from every readable video.  Raises :class:`ConfigError` when no video could be used."""
    if limit < 1:
        raise ConfigError(f"the calibration size must be >= 1, got {limit}")
    paths = list(paths)
    per_video = max(1, math.ceil(limit / max(len(paths), 1)))
    views, failures = [], []
    for path in paths:
        if len(views) >= limit:
            break
        try:
            clip = load_views(path, protocol).tensors()
        except VideoError as error:
            failures.append((str(path), error.reason))
            continue
        views.extend(clip[i] for i in spread(len(clip), per_video))
    if not views:
        listed = "; ".join(f"{path}: {reason}" for path, reason in failures[:3])
        raise ConfigError(f"no calibration clip could be read ({listed})")
    chosen = spread(len(views), limit)
    return np.stack([views[i] for i in chosen]).astype(np.float32), failures
