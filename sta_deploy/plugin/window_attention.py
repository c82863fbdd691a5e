"""ctypes binding of the KeptWindowAttention CPU kernel (``plugins/kept_window_attention``).

The kernel computes one Video Swin block's window attention for the kept queries only (see
:func:`sta_deploy.models.swin_attention.attend_kept` for the definition).  It serves the
``KeptWindowAttention`` nodes of ``--window-attention kernel`` exports on ONNX Runtime CPU and is
built with CMake on first use when the source tree is at hand::

    cmake -S plugins/kept_window_attention -B plugins/kept_window_attention/build && cmake --build plugins/kept_window_attention/build
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from .reference import build_plugin

ENV_VAR = "STA_WINDOW_ATTENTION_LIB"
_BUILD_HINT = (
    "build it with `cmake -S plugins/kept_window_attention -B plugins/kept_window_attention/build && "
    "cmake --build plugins/kept_window_attention/build` or point STA_WINDOW_ATTENTION_LIB at libkept_window_attention.so"
)
_loaded: dict[str, ctypes.CDLL] = {}
_threads: int | None = None


class WindowAttentionKernelError(RuntimeError):
    """The kernel library is missing or unloadable, or it rejected its arguments."""


def kernel_source_dir() -> Path:
    """``plugins/kept_window_attention`` of the source tree this package lives in."""
    return Path(__file__).resolve().parents[2] / "plugins" / "kept_window_attention"


def default_library_path() -> Path:
    return kernel_source_dir() / "build" / "libkept_window_attention.so"


def load_kernel_library(path: str | os.PathLike[str] | None = None, *, build: bool = True) -> ctypes.CDLL:
    """Load (once) ``path``, else ``$STA_WINDOW_ATTENTION_LIB``, else the default build folder,
    building the latter with CMake first when it is missing and ``build`` is set."""
    candidate = path if path is not None else os.environ.get(ENV_VAR) or default_library_path()
    resolved = Path(candidate).resolve()
    if str(resolved) in _loaded:
        return _loaded[str(resolved)]
    if not resolved.is_file() and build and resolved == default_library_path().resolve():
        if (kernel_source_dir() / "CMakeLists.txt").is_file():
            try:
                build_plugin(resolved.parent, source_dir=kernel_source_dir())
            except Exception as error:  # cmake missing or a failed step: say so in one line
                raise WindowAttentionKernelError(f"could not build the KeptWindowAttention kernel ({error}): {_BUILD_HINT}") from None
    if not resolved.is_file():
        raise WindowAttentionKernelError(f"KeptWindowAttention kernel not found at {resolved}: {_BUILD_HINT}")
    try:
        lib = ctypes.CDLL(str(resolved))
    except OSError as error:
        raise WindowAttentionKernelError(f"cannot load {resolved} ({error}): {_BUILD_HINT}") from None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.kwa_forward.argtypes = [ptr] * 7 + [i64] * 8 + [ctypes.c_int, ctypes.c_float, ctypes.c_int, ptr]
    lib.kwa_forward.restype = ctypes.c_int
    lib.kwa_error_string.argtypes = [ctypes.c_int]
    lib.kwa_error_string.restype = ctypes.c_char_p
    _loaded[str(resolved)] = lib
    return lib


def set_kernel_threads(threads: int | None) -> None:
    """Threads the kernel uses from now on (None: every CPU this process may run on)."""
    global _threads
    _threads = threads


def kernel_threads() -> int:
    if _threads is not None:
        return max(1, int(_threads))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def kept_window_attention_cpu(q, k, v, window_index, back_index, additive, window_type, scale: float, *, threads: int | None = None) -> np.ndarray:
    """(B, heads, K, hd) float32: :func:`~sta_deploy.models.swin_attention.attend_kept` for the kept queries.

    ``q, k, v`` (B, heads, rows, hd); ``window_index`` (L,) or (B, L) and ``back_index`` (K,) or
    (B, K) integer rows/slots; ``additive`` (types, heads, V, V); ``window_type`` (L / V,) the mask
    type of every window, in window order.
    """
    q, k, v = (np.ascontiguousarray(a, dtype=np.float32) for a in (q, k, v))
    window_index, back_index = np.asarray(window_index), np.asarray(back_index)
    if (window_index.ndim == 2 or back_index.ndim == 2) and q.ndim == 4:  # one per sample: broadcast a shared one
        window_index = np.broadcast_to(window_index, (q.shape[0], window_index.shape[-1]))
        back_index = np.broadcast_to(back_index, (q.shape[0], back_index.shape[-1]))
    arrays = [q, k, v, np.ascontiguousarray(window_index, dtype=np.int64), np.ascontiguousarray(back_index, dtype=np.int64),
              np.ascontiguousarray(additive, dtype=np.float32)]
    out = np.empty((q.shape[0], q.shape[1], arrays[4].shape[-1], q.shape[3]) if q.ndim == 4 else (0,), dtype=np.float32)
    kernel_forward([(a.ctypes.data, a.shape) for a in arrays], window_type, scale, (out.ctypes.data, out.shape), threads=threads)
    return out


def kernel_forward(inputs, window_type, scale: float, out, *, threads: int | None = None) -> None:
    """The kernel on raw buffers: ``inputs`` = (pointer, shape) of contiguous q, k, v (float32),
    window_index, back_index (int64) and additive (float32); ``out`` = (pointer, shape) of the
    (B, heads, K, hd) float32 result.  Shapes are checked here, so the kernel never reads out of bounds."""
    lib = load_kernel_library()
    (q, q_shape), (k, k_shape), (v, v_shape), (window_index, w_shape), (back_index, b_shape), (additive, a_shape) = inputs
    q_shape, k_shape, v_shape, w_shape, b_shape, a_shape = (tuple(shape) for shape in (q_shape, k_shape, v_shape, w_shape, b_shape, a_shape))
    if len(q_shape) != 4 or k_shape != q_shape or v_shape != q_shape:
        raise ValueError(f"q, k, v must be (B, heads, rows, head_dim) of one shape; got {q_shape}, {k_shape}, {v_shape}")
    batch, heads, rows, head_dim = q_shape
    if len(a_shape) != 4 or a_shape[1] != heads or a_shape[2] != a_shape[3]:
        raise ValueError(f"additive must be (types, {heads}, V, V); got {a_shape}")
    volume = a_shape[-1]
    batched = len(w_shape) == 2
    if len(b_shape) != len(w_shape) or len(w_shape) not in (1, 2) or (batched and (w_shape[0] != batch or b_shape[0] != batch)):
        raise ValueError(f"window_index {w_shape} and back_index {b_shape} must both be (L,)/(K,) or both ({batch}, L)/({batch}, K)")
    slots, kept = w_shape[-1], b_shape[-1]
    window_type = np.ascontiguousarray(window_type, dtype=np.int64).reshape(-1)
    if slots != window_type.size * volume:
        raise ValueError(f"window_index has {slots} slots but {window_type.size} windows of {volume} need {window_type.size * volume}")
    if window_type.size and (window_type.min() < 0 or window_type.max() >= a_shape[0] or np.any(np.diff(window_type) < 0)):
        raise ValueError(f"window_type must list types 0..{a_shape[0] - 1} in ascending order (windows grouped by type)")
    if tuple(out[1]) != (batch, heads, kept, head_dim):
        raise ValueError(f"output must be {(batch, heads, kept, head_dim)}; got {tuple(out[1])}")
    windows_per_type = np.bincount(window_type, minlength=a_shape[0]).astype(np.int64)
    code = lib.kwa_forward(
        q, k, v, window_index, back_index, additive, windows_per_type.ctypes.data, len(windows_per_type),
        batch, heads, rows, head_dim, slots, kept, volume, int(batched), float(scale),
        threads if threads is not None else kernel_threads(), out[0],
    )
    if code != 0:
        raise WindowAttentionKernelError(f"KeptWindowAttention kernel: {lib.kwa_error_string(code).decode()}")
