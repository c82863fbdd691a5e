"""Decoding clips: video files through PyAV (FFmpeg), or a folder of frame images through Pillow.

Frames are addressed by their index in decoding order (0 .. total - 1), as decord (VideoMAE) and
mmaction2 (Video Swin) address them.  :func:`read_clip` asks a *plan* for the indices it needs once
it knows how many frames the clip has, decodes the clip once, and keeps only those frames (each one
passed through ``transform``, e.g. the short-side resize), so memory stays bounded on long clips.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import first_line
from .errors import EmptyVideoError, UnreadableVideoError, VideoTooShortError, require

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv", ".gif")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

Plan = Callable[[int], np.ndarray]


@dataclass
class FrameSet:
    """The frames a plan asked for.  ``frames`` maps a frame index to its (H, W, 3) uint8 array."""

    path: str
    total_frames: int
    indices: np.ndarray
    frames: dict = field(repr=False)
    source_size: tuple[int, int]  # (height, width) as decoded, before ``transform``
    fps: float | None = None

    def stack(self) -> np.ndarray:
        """``indices.shape + (H, W, 3)``: every planned index with its frame (repeats share data)."""
        flat = [self.frames[int(i)] for i in self.indices.reshape(-1)]
        return np.stack(flat).reshape(*self.indices.shape, *flat[0].shape)


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_frame_files(folder) -> list[Path]:
    """The image files of a frame folder in natural order (frame_2 before frame_10)."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)


def is_clip_path(path) -> bool:
    """A video file by its suffix, or a folder holding frame images."""
    path = Path(path)
    if path.is_dir():
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    return path.suffix.lower() in VIDEO_SUFFIXES


def _check_length(path, total: int, min_frames: int) -> None:
    if total <= 0:
        raise EmptyVideoError(path, "the clip has no frames")
    if total < min_frames:
        raise VideoTooShortError(
            path, f"too short: {total} frame(s), the sampling protocol needs at least {min_frames} (--min-frames 1 pads short clips by repetition)"
        )


def _plan(plan: Plan, total: int) -> np.ndarray:
    indices = np.asarray(plan(total), dtype=np.int64)
    if indices.size == 0 or indices.min() < 0 or indices.max() >= total:
        raise ValueError(f"frame plan returned indices outside 0..{total - 1}")
    return indices


# ----------------------------------------------------------------------------- frame folders
def _read_folder(path: Path, plan: Plan, min_frames: int, transform) -> FrameSet:
    files = list_frame_files(path)
    _check_length(path, len(files), min_frames)
    indices = _plan(plan, len(files))
    pil = require("PIL.Image", "pillow", "reading frame folders")
    frames, size = {}, None
    for index in sorted(set(indices.reshape(-1).tolist())):
        try:
            with pil.open(files[index]) as image:
                array = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as error:
            raise UnreadableVideoError(files[index], f"cannot read frame image ({type(error).__name__}: {error})") from None
        if size is None:
            size = array.shape[:2]
        elif array.shape[:2] != size:
            raise UnreadableVideoError(files[index], f"frame size {array.shape[1]}x{array.shape[0]} differs from the folder's first frame {size[1]}x{size[0]}")
        frames[index] = transform(array) if transform else array
    return FrameSet(str(path), len(files), indices, frames, tuple(size))


# ----------------------------------------------------------------------------- video files
def _open(av, path: Path):
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise UnreadableVideoError(path, f"not a readable video ({_reason(error)})") from None
    if not container.streams.video:
        container.close()
        raise UnreadableVideoError(path, "the file has no video stream")
    return container


def _reason(error) -> str:
    # FFmpeg errors repeat the file name after their message; the caller names the file already
    text = getattr(error, "strerror", None) or first_line(error)
    return text[:200]


def _estimate_frames(av, path: Path) -> int:
    """The container's frame count, or (webm/mkv often have none) the number of video packets."""
    container = _open(av, path)
    try:
        stream = container.streams.video[0]
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        count = 0
        for packet in container.demux(stream):
            if packet.size:
                count += 1
        return count
    except av.error.FFmpegError as error:
        raise UnreadableVideoError(path, f"cannot demux ({_reason(error)})") from None
    finally:
        container.close()


def _decode(av, path: Path, needed: set | None, transform):
    """Decode up to the last needed index; returns (frames, frames decoded, fps, size, complete)."""
    container = _open(av, path)
    frames, count, size = {}, 0, None
    last = max(needed) if needed else None
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else None
        try:
            for frame in container.decode(stream):
                if needed is None or count in needed:
                    array = frame.to_ndarray(format="rgb24")
                    size = size or array.shape[:2]
                    if needed is not None:
                        frames[count] = transform(array) if transform else array
                count += 1
                if last is not None and count > last:
                    return frames, count, fps, size, False
        except av.error.FFmpegError as error:
            if count == 0:
                raise UnreadableVideoError(path, f"cannot decode ({_reason(error)})") from None
            # A damaged tail: the frames before it are usable, the clip ends there.
        return frames, count, fps, size, True
    finally:
        container.close()


def _read_video(path: Path, plan: Plan, min_frames: int, transform) -> FrameSet:
    av = require("av", "av", "reading video files")
    total = _estimate_frames(av, path)
    if total < max(min_frames, 1):
        # Metadata can under-count; the true count of a short clip is cheap to get.
        _, total, _, _, _ = _decode(av, path, None, None)
    for _ in range(2):
        _check_length(path, total, min_frames)
        indices = _plan(plan, total)
        needed = set(indices.reshape(-1).tolist())
        frames, decoded, fps, size, complete = _decode(av, path, needed, transform)
        if needed <= frames.keys():
            return FrameSet(str(path), total, indices, frames, tuple(size), fps)
        # The container promised more frames than it holds: plan again with the decoded count.
        total = decoded
    raise UnreadableVideoError(path, "the number of decodable frames changed between two reads")


def read_clip(path, plan: Plan, *, min_frames: int = 1, transform=None) -> FrameSet:
    """Decode the frames ``plan(total_frames)`` asks for from a video file or a frame folder.

    Raises :class:`UnreadableVideoError`, :class:`EmptyVideoError` or :class:`VideoTooShortError`
    (all name the file) when the clip cannot be used.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableVideoError(path, "no such file or folder")
    if path.is_dir():
        return _read_folder(path, plan, min_frames, transform)
    if path.stat().st_size == 0:
        raise EmptyVideoError(path, "the file is empty (0 bytes)")
    return _read_video(path, plan, min_frames, transform)


def frame_count(path) -> int:
    """Frames in a clip: the decoded count for video files, the image count for folders."""
    path = Path(path)
    if path.is_dir():
        return len(list_frame_files(path))
    av = require("av", "av", "reading video files")
    if not path.exists():
        raise UnreadableVideoError(path, "no such file or folder")
    return _decode(av, path, None, None)[1]
