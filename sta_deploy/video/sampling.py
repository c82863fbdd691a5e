"""Test-time sampling as each backbone was evaluated: frame indices, short-side resize, crops, views.

VideoMAE (``kinetics.py`` / ``ssv2.py`` of the reference code, test mode):

* K400 ("dense"): take every ``stride``-th frame (0, 4, 8, ...; repeat the last one until there are
  at least ``num_frames``), then ``T`` windows of ``num_frames`` consecutive entries starting at
  ``int(k * (n - num_frames) / (T - 1))``.  One window: the centre one (the reference divides by
  zero there).
* SSv2 ("segment"): ``num_frames`` equal segments, one frame each; of the reference's two views the
  first takes ``int(tick * x)`` and the second ``int(tick * x + tick / 2)``, ``tick = total /
  num_frames``; generally view ``k`` of ``T`` takes ``int(tick * (x + k / T))`` (one view: the
  segment middles).  This is what VideoMAE's SSv2 fine-tuning evaluates; pass ``stride`` to use
  dense sampling instead.
* Short side resized to the crop size (``int`` of the scaled long side), bilinear; ``S`` crops of
  ``crop x crop`` along the long side at ``int(j * (L - crop) / (S - 1))`` (one crop: centred).
* Normalisation: ImageNet mean/std on [0, 1] pixels; the logits of all views are averaged.

Video Swin (mmaction2's ``SampleFrames(test_mode=True)``, ``Resize(-1, 224)``, ``ThreeCrop``):

* ``T`` clips of ``num_frames`` frames ``stride`` apart; clip ``k`` starts at
  ``int(k * a + a / 2)``, ``a = (total - num_frames * stride + 1) / T`` (0 when the clip is too
  short), indices beyond the end wrap around (``loop``).
* Short side resized to the crop size (long side rounded), three crops at 0, ``(L - crop) // 2``
  and ``2 * ((L - crop) // 2)`` (one crop: centred).  Same ImageNet statistics (mmaction2 writes
  them in 0-255 scale), softmax scores averaged over views.

Views are ordered temporal-major: view ``k * S + j`` is temporal window ``k`` with crop ``j``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATASETS = ("k400", "ssv2")


@dataclass(frozen=True)
class SamplingProtocol:
    """Everything that turns a decoded clip into the model's input views."""

    name: str
    temporal: str  # "dense" | "segment" | "mmaction"
    num_frames: int
    stride: int  # frames between samples (dense, mmaction); unused by "segment"
    temporal_views: int
    spatial_crops: int
    crop_size: int  # the short side is resized to this size too
    crop_style: str  # "videomae" | "mmaction"
    resize_rounding: str  # "floor" (VideoMAE) | "round" (mmaction2)
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    average: str = "logits"  # average "logits" (VideoMAE) or softmax "prob" (mmaction2) over views
    min_frames: int = 1

    @property
    def num_views(self) -> int:
        return self.temporal_views * self.spatial_crops

    @property
    def views(self) -> str:
        return f"{self.temporal_views}x{self.spatial_crops}"

    def describe(self) -> str:
        how = f"segments of {self.num_frames}" if self.temporal == "segment" else f"{self.num_frames} frames, stride {self.stride}"
        return f"{self.name}: {how}, {self.views} views, {self.crop_size}px crops"

    def as_dict(self) -> dict:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    def temporal_indices(self, total: int) -> np.ndarray:
        """(temporal_views, num_frames) frame indices into a clip of ``total`` frames."""
        if self.temporal == "dense":
            return videomae_dense_indices(total, self.num_frames, self.stride, self.temporal_views)
        if self.temporal == "segment":
            return videomae_segment_indices(total, self.num_frames, self.temporal_views)
        if self.temporal == "mmaction":
            return mmaction_indices(total, self.num_frames, self.stride, self.temporal_views)
        raise ValueError(f"unknown temporal sampling {self.temporal!r}")

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        return short_side_size(height, width, self.crop_size, self.resize_rounding)

    def crop_boxes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of every crop in a frame already resized to (height, width)."""
        size = self.crop_size
        if height >= width:  # crop along the long side (VideoMAE: H >= W crops along H)
            return [(offset, (width - size) // 2) for offset in crop_offsets(height, size, self.spatial_crops, self.crop_style)]
        return [((height - size) // 2, offset) for offset in crop_offsets(width, size, self.spatial_crops, self.crop_style)]


# ----------------------------------------------------------------------------- temporal
def videomae_dense_indices(total: int, num_frames: int, stride: int, views: int) -> np.ndarray:
    """VideoMAE's K400 test sampling (see the module docstring)."""
    sampled = list(range(0, total, stride))
    while len(sampled) < num_frames:
        sampled.append(sampled[-1])
    spare = len(sampled) - num_frames
    if views == 1:
        starts = [spare // 2]
    else:
        step = max(spare / (views - 1), 0.0)
        starts = [int(k * step) for k in range(views)]
    return np.array([sampled[s : s + num_frames] for s in starts], dtype=np.int64)


def videomae_segment_indices(total: int, num_segments: int, views: int) -> np.ndarray:
    """VideoMAE's SSv2 test sampling: one frame per segment, view k offset by k / views of a segment."""
    tick = total / float(num_segments)
    offsets = [0.5] if views == 1 else [k / views for k in range(views)]
    rows = [[min(int(tick * (x + offset)), total - 1) for x in range(num_segments)] for offset in offsets]
    return np.array(rows, dtype=np.int64)


def mmaction_indices(total: int, clip_len: int, frame_interval: int, num_clips: int) -> np.ndarray:
    """mmaction2's ``SampleFrames`` in test mode with ``out_of_bound_opt='loop'``."""
    span = clip_len * frame_interval
    average = (total - span + 1) / float(num_clips)
    if total > span - 1:
        offsets = (np.arange(num_clips) * average + average / 2.0).astype(np.int64)
    else:
        offsets = np.zeros(num_clips, dtype=np.int64)
    indices = offsets[:, None] + np.arange(clip_len)[None, :] * frame_interval
    return np.mod(indices, total).astype(np.int64)


# ----------------------------------------------------------------------------- spatial
def short_side_size(height: int, width: int, short: int, rounding: str = "floor") -> tuple[int, int]:
    """(height, width) with the short side at ``short`` and the aspect ratio kept."""
    scale = (lambda v: int(v)) if rounding == "floor" else (lambda v: int(v + 0.5))
    if width < height:
        return scale(short * height / width), short
    return short, scale(short * width / height)


def crop_offsets(length: int, size: int, count: int, style: str = "videomae") -> list[int]:
    """Start offsets of ``count`` crops of ``size`` along a side of ``length`` pixels."""
    if size > length:
        raise ValueError(f"crop of {size} px does not fit in {length} px")
    if count == 1:
        return [(length - size) // 2]
    if style == "mmaction" and count == 3:
        step = (length - size) // 2
        return [0, step, 2 * step]
    step = (length - size) / (count - 1)
    return [int(j * step) for j in range(count)]


def resize_frame(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (H, W, 3) uint8 frame (OpenCV's INTER_LINEAR: no antialias), rounded to uint8.

    PyTorch resizes on one thread here: for 3-channel images it picks its kernel by thread count,
    and the multi-threaded one rounds a few pixels per million differently, so the views would
    depend on ``--threads``.  examples/classify reproduces the one-thread kernel bit for bit.
    """
    if frame.shape[:2] == (height, width):
        return np.ascontiguousarray(frame)
    import torch
    import torch.nn.functional as F

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one frame is too little work to share anyway
    try:
        tensor = torch.from_numpy(np.require(frame, requirements=["C", "W"])).permute(2, 0, 1)[None].float()
        out = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
        return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    finally:
        torch.set_num_threads(threads)


def normalise(views: np.ndarray, mean, std) -> np.ndarray:
    """(..., H, W, 3) uint8 -> float32 with (x / 255 - mean) / std per channel."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    return ((views.astype(np.float32) / 255.0) - mean) / std


def denormalise(views: np.ndarray, mean, std) -> np.ndarray:
    """Inverse of :func:`normalise`, back to uint8."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    return np.clip(np.rint((views * std + mean) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- presets
def parse_views(text) -> tuple[int, int]:
    """'5x3' -> (5, 3): temporal windows x spatial crops."""
    if isinstance(text, (tuple, list)):
        temporal, spatial = text
    else:
        parts = str(text).lower().replace(" ", "").split("x")
        try:
            temporal, spatial = (int(p) for p in parts)
        except ValueError:
            raise ConfigError(f"views must look like TxS (temporal windows x spatial crops), e.g. 1x1 or 5x3; got {text!r}") from None
    if not (1 <= temporal <= 32 and 1 <= spatial <= 10):
        raise ConfigError(f"views {temporal}x{spatial} out of range: 1..32 temporal windows and 1..10 crops")
    return temporal, spatial


DEFAULT_VIEWS = {("vit", "k400"): (5, 3), ("vit", "ssv2"): (2, 3), ("swin", "k400"): (4, 3), ("swin", "ssv2"): (1, 3)}


def protocol_for(family: str, *, num_frames: int, img_size: int, dataset: str = "k400", views=None, stride: int | None = None,
                 min_frames: int | None = None, mean=None, std=None) -> SamplingProtocol:
    """The evaluation protocol of a backbone ``family`` ("vit" or "swin") on ``dataset``.

    ``num_frames``/``img_size`` come from the model (or the exported ONNX input); ``views`` as
    "TxS" overrides the protocol's count; ``stride`` forces dense sampling with that stride;
    ``min_frames`` is the shortest clip accepted (default ``num_frames``: shorter clips are refused).
    """
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset protocol {dataset!r}; choose one of {', '.join(DATASETS)}")
    if family not in ("vit", "swin"):
        raise ConfigError(f"no sampling protocol for model family {family!r}")
    temporal_views, spatial_crops = parse_views(views) if views is not None else DEFAULT_VIEWS[(family, dataset)]
    if stride is not None and stride < 1:
        raise ConfigError(f"stride must be >= 1, got {stride}")
    if family == "vit":
        if dataset == "ssv2" and stride is None:
            temporal, stride_used = "segment", 1
        else:
            temporal, stride_used = "dense", stride or (4 if dataset == "k400" else 2)
        base = dict(temporal=temporal, stride=stride_used, crop_style="videomae", resize_rounding="floor", average="logits")
        name = f"videomae-{dataset}"
    else:
        base = dict(temporal="mmaction", stride=stride or 2, crop_style="mmaction", resize_rounding="round", average="prob")
        name = f"videoswin-{dataset}"
    protocol = SamplingProtocol(
        name=name, num_frames=num_frames, temporal_views=temporal_views, spatial_crops=spatial_crops, crop_size=img_size,
        min_frames=num_frames if min_frames is None else max(1, min_frames), **base,
    )
    if mean is not None or std is not None:
        protocol = replace(protocol, mean=tuple(mean or protocol.mean), std=tuple(std or protocol.std))
    return protocol


def checkpoint_normalisation(checkpoint) -> tuple[tuple, tuple] | None:
    """(mean, std) from a Hugging Face folder's ``preprocessor_config.json``, if it has one."""
    if checkpoint is None:
        return None
    config = Path(checkpoint) / "preprocessor_config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
        mean, std = tuple(float(v) for v in data["image_mean"]), tuple(float(v) for v in data["image_std"])
    except (ValueError, KeyError, TypeError):
        return None
    return (mean, std) if len(mean) == 3 and len(std) == 3 else None
