"""Synthetic clips (moving shapes) and writers, for tests, demos and the README picture: no downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import require

# suffix -> codecs to try, best first
CODECS = {
    ".mp4": ("libx264", "h264", "mpeg4"),
    ".m4v": ("libx264", "mpeg4"),
    ".mov": ("libx264", "mpeg4"),
    ".mkv": ("libx264", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx"),
    ".avi": ("mpeg4", "mjpeg"),
}
FAST_OPTIONS = {"libx264": {"preset": "ultrafast"}, "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"}, "libvpx": {"deadline": "realtime", "cpu-used": "8"}}


def moving_shapes(num_frames: int = 48, height: int = 64, width: int = 96, *, seed: int = 0, kind: int | None = None, shapes: int = 3) -> np.ndarray:
    """(T, H, W, 3) uint8: a soft gradient background with ``shapes`` coloured discs and squares moving.

    ``kind`` (any int) sets the direction of motion, so that a folder of clips per "class" differs
    by its motion; ``seed`` sets everything else.  No pixel is pure white or pure black.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(60, 140, size=3).astype(np.float32)
    background = base + 40 * (xx / max(width - 1, 1))[..., None] * np.array([1.0, 0.5, -0.5], np.float32) + 30 * (yy / max(height - 1, 1))[..., None] * np.array([-0.5, 1.0, 0.5], np.float32)
    angle = (kind * 2 * np.pi / 8) if kind is not None else rng.uniform(0, 2 * np.pi)
    objects = []
    for index in range(shapes):
        size = rng.uniform(0.12, 0.25) * min(height, width)
        speed = rng.uniform(0.6, 1.6) * min(height, width) / max(num_frames, 1) * 1.5
        direction = angle + rng.uniform(-0.4, 0.4)
        objects.append(
            dict(
                y=rng.uniform(size, height - size), x=rng.uniform(size, width - size), size=size,
                vy=speed * np.sin(direction), vx=speed * np.cos(direction),
                colour=rng.uniform(20, 235, size=3).astype(np.float32), disc=index % 2 == 0,
            )
        )
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frame = background.copy()
        for obj in objects:
            # bounce inside the frame
            y = _bounce(obj["y"] + obj["vy"] * t, obj["size"], height - obj["size"])
            x = _bounce(obj["x"] + obj["vx"] * t, obj["size"], width - obj["size"])
            if obj["disc"]:
                inside = (yy - y) ** 2 + (xx - x) ** 2 <= obj["size"] ** 2
            else:
                inside = (np.abs(yy - y) <= obj["size"]) & (np.abs(xx - x) <= obj["size"])
            frame[inside] = obj["colour"]
        frames[t] = np.clip(frame, 10, 245).astype(np.uint8)
    return frames


def _bounce(value: float, low: float, high: float) -> float:
    if high <= low:
        return (low + high) / 2
    span = high - low
    phase = (value - low) % (2 * span)
    return low + (phase if phase <= span else 2 * span - phase)


def write_video(path, frames: np.ndarray, *, fps: int = 25, codec: str | None = None) -> Path:
    """Write (T, H, W, 3) uint8 frames with PyAV; the codec follows the suffix (mp4: H.264, webm: VP9, avi: MPEG-4)."""
    av = require("av", "av", "writing video files")
    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got shape {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frame size {frames.shape[2]}x{frames.shape[1]} must be even for yuv420p video")
    candidates = (codec,) if codec else CODECS.get(path.suffix.lower())
    if not candidates:
        raise ValueError(f"no default codec for {path.suffix!r}; pass codec=, or use one of {', '.join(CODECS)}")
    available = set(av.codecs_available)
    chosen = next((c for c in candidates if c in available), None)
    if chosen is None:
        raise RuntimeError(f"none of the codecs {', '.join(candidates)} is available in this PyAV build")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(chosen, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if chosen == "mjpeg" else "yuv420p"
        stream.options = dict(FAST_OPTIONS.get(chosen, {}))
        if chosen in ("mpeg4", "mjpeg"):
            stream.bit_rate = 4_000_000  # their defaults are very lossy
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder, frames: np.ndarray, *, suffix: str = ".png", pattern: str = "frame_{:05d}") -> Path:
    """Write frames as numbered images (``frame_00000.png`` ...) with Pillow."""
    pil = require("PIL.Image", "pillow", "writing frame images")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, array in enumerate(np.asarray(frames, dtype=np.uint8)):
        pil.fromarray(array).save(folder / (pattern.format(index) + suffix))
    return folder
