"""One clip -> the model's input views: decode (decode.py) + sample, resize, crop, normalise (sampling.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .decode import read_clip
from .sampling import SamplingProtocol, normalise, resize_frame


@dataclass
class ClipViews:
    path: str
    total_frames: int
    indices: np.ndarray  # (temporal_views, num_frames) frame indices
    crops: list  # (top, left) of every crop in the resized frame
    resized_size: tuple[int, int]  # (H, W) after the short-side resize
    source_size: tuple[int, int]
    pixels: np.ndarray  # (views, T, S, S, 3) uint8: exactly what the model sees, before normalisation
    protocol: SamplingProtocol

    def tensors(self) -> np.ndarray:
        """(views, 3, T, S, S) float32, normalised: the model input."""
        return model_input(self.pixels, self.protocol)


def model_input(pixels: np.ndarray, protocol: SamplingProtocol) -> np.ndarray:
    """(views, T, S, S, 3) uint8 views -> (views, 3, T, S, S) float32, normalised as the protocol says."""
    data = normalise(pixels, protocol.mean, protocol.std)
    return np.ascontiguousarray(data.transpose(0, 4, 1, 2, 3))


def load_views(path, protocol: SamplingProtocol) -> ClipViews:
    """Decode ``path`` and cut the protocol's views (raises a :class:`VideoError` naming the file)."""
    sizes = {}

    def transform(frame):
        if "resized" not in sizes:
            sizes["source"] = frame.shape[:2]
            sizes["resized"] = protocol.resized_size(*frame.shape[:2])
        return resize_frame(frame, *sizes["resized"])

    frames = read_clip(path, protocol.temporal_indices, min_frames=protocol.min_frames, transform=transform)
    stacked = frames.stack()  # (temporal_views, T, H', W', 3)
    height, width = stacked.shape[2:4]
    size = protocol.crop_size
    boxes = protocol.crop_boxes(height, width)
    views = [stacked[k, :, top : top + size, left : left + size] for k in range(stacked.shape[0]) for top, left in boxes]
    return ClipViews(
        path=str(path),
        total_frames=frames.total_frames,
        indices=frames.indices,
        crops=boxes,
        resized_size=(height, width),
        source_size=tuple(frames.source_size),
        pixels=np.stack(views),
        protocol=protocol,
    )
