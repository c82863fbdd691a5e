"""ctypes binding of the STAStageSelect CPU reference (``plugins/sta_stage_select``).

The CPU reference is the same C++ source as the CUDA kernel inside the TensorRT plugin (one
``__host__ __device__`` core, two builds), compiled into ``libsta_stage_select_ref.so`` with a C ABI.
It computes :func:`sta_deploy.sta.group_kept_indices`.  Build it with::

    cmake -S plugins/sta_stage_select -B plugins/sta_stage_select/build && cmake --build plugins/sta_stage_select/build

Two precisions are exposed:

* ``"float32"`` (default): what the plugin computes on the GPU, bit for bit.  ``metric`` may be
  float32 or float16 (scores always accumulate in float32); ``semantic`` is float32.
* ``"float64"``: the verification build of the same source.  It agrees with PyTorch run in float64,
  and :func:`select_reference_float64` also returns the decision margin (the smallest relative gap
  between neighbouring values of any ordering that decides the output).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

__all__ = [
    "ReferenceLibraryError",
    "default_library_path",
    "load_reference_library",
    "select_reference",
    "select_reference_float64",
    "plugin_source_dir",
    "build_plugin",
    "MAX_TOKENS",
    "MAX_DIM",
]

ENV_VAR = "STA_PLUGIN_REF_LIB"
MAX_TOKENS = 2048
MAX_DIM = 4096
_BUILD_HINT = (
    "build it with `cmake -S plugins/sta_stage_select -B plugins/sta_stage_select/build && "
    "cmake --build plugins/sta_stage_select/build` or point STA_PLUGIN_REF_LIB at libsta_stage_select_ref.so"
)

_i64 = ctypes.c_int64
_i32 = ctypes.c_int32
_ptr = ctypes.c_void_p

_loaded: dict[str, ctypes.CDLL] = {}


class ReferenceLibraryError(RuntimeError):
    """The CPU reference library is missing, unloadable, or rejected its arguments."""


def plugin_source_dir() -> Path:
    """``plugins/sta_stage_select`` of the source tree this package lives in."""
    return Path(__file__).resolve().parents[2] / "plugins" / "sta_stage_select"


def default_library_path() -> Path:
    """``plugins/sta_stage_select/build/libsta_stage_select_ref.so`` next to this package."""
    return plugin_source_dir() / "build" / "libsta_stage_select_ref.so"


def build_plugin(
    build_dir: str | os.PathLike[str],
    *,
    cuda: bool = False,
    tensorrt_root: str | os.PathLike[str] | None = None,
    cuda_architectures: str | None = None,
    targets: tuple[str, ...] = (),
    cuda_compiler: str | None = None,
    jobs: int = 2,
    source_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Configure and build ``plugins/sta_stage_select`` with CMake into ``build_dir``; returns it.

    ``cuda=False`` builds the CPU reference only.  ``tensorrt_root`` adds the TensorRT wrapper (needs
    CUDA).  ``source_dir`` builds another plugin folder the same way (default
    ``plugins/sta_stage_select``).  Raises ``subprocess.CalledProcessError`` with CMake's output when a step fails.
    """
    cmake = shutil.which("cmake")
    if cmake is None:
        raise FileNotFoundError("cmake is not on PATH")
    build_dir = Path(build_dir)
    options = [f"-DSTA_ENABLE_CUDA={'ON' if cuda else 'OFF'}", "-DCMAKE_BUILD_TYPE=Release"]
    if cuda_compiler:
        options.append(f"-DCMAKE_CUDA_COMPILER={cuda_compiler}")
    if cuda_architectures:
        options.append(f"-DSTA_CUDA_ARCHITECTURES={cuda_architectures}")
    if tensorrt_root is not None:
        options.append(f"-DTensorRT_ROOT={tensorrt_root}")
    source = Path(source_dir) if source_dir is not None else plugin_source_dir()
    steps = [[cmake, "-S", str(source), "-B", str(build_dir), *options]]
    build = [cmake, "--build", str(build_dir), "-j", str(jobs)]
    if targets:
        build += ["--target", *targets]
    steps.append(build)
    for command in steps:
        subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return build_dir


def load_reference_library(path: str | os.PathLike[str] | None = None) -> ctypes.CDLL:
    """Load (once) the CPU reference: ``path``, else ``$STA_PLUGIN_REF_LIB``, else the default build folder."""
    candidate = path if path is not None else os.environ.get(ENV_VAR) or default_library_path()
    resolved = str(Path(candidate).resolve())
    if resolved in _loaded:
        return _loaded[resolved]
    if not Path(resolved).is_file():
        raise ReferenceLibraryError(f"STAStageSelect CPU reference not found at {resolved}: {_BUILD_HINT}")
    try:
        lib = ctypes.CDLL(resolved)
    except OSError as error:
        raise ReferenceLibraryError(f"cannot load {resolved} ({error}): {_BUILD_HINT}") from error

    shape = [_i64, _i64, _i64, _i64, _i64, _i32, _ptr]
    for name in ("sta_stage_select_ref_f32", "sta_stage_select_ref_f16"):
        function = getattr(lib, name)
        function.argtypes = [_ptr, _ptr, *shape]
        function.restype = ctypes.c_int
    lib.sta_stage_select_ref_f32_threads.argtypes = [_ptr, _ptr, *shape, _i32]
    lib.sta_stage_select_ref_f32_threads.restype = ctypes.c_int
    lib.sta_stage_select_ref_f64.argtypes = [_ptr, _ptr, *shape, ctypes.POINTER(ctypes.c_double)]
    lib.sta_stage_select_ref_f64.restype = ctypes.c_int
    lib.sta_stage_select_error_string.argtypes = [ctypes.c_int]
    lib.sta_stage_select_error_string.restype = ctypes.c_char_p
    _loaded[resolved] = lib
    return lib


def _as_groups(array: np.ndarray, num_groups: int, name: str, trailing: int) -> np.ndarray:
    """(B, G, n[, D]) as is, or (B, N[, D]) split into ``num_groups`` consecutive groups."""
    if array.ndim == 2 + trailing:
        batch, tokens = array.shape[:2]
        if tokens % num_groups:
            raise ValueError(f"{name}: {tokens} tokens are not divisible into {num_groups} groups")
        return array.reshape(batch, num_groups, tokens // num_groups, *array.shape[2:])
    if array.ndim == 3 + trailing:
        if array.shape[1] != num_groups:
            raise ValueError(f"{name}: shape {array.shape} has {array.shape[1]} groups, num_groups={num_groups}")
        return array
    raise ValueError(f"{name}: expected {2 + trailing} or {3 + trailing} dimensions, got shape {array.shape}")


def _prepare(metric, semantic, num_groups: int, r: int, precision: str):
    metric = np.asarray(metric)
    semantic = np.asarray(semantic)
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    metric = _as_groups(metric, num_groups, "metric", 1)
    semantic = _as_groups(semantic, num_groups, "semantic", 0)
    if semantic.shape != metric.shape[:3]:
        raise ValueError(f"semantic shape {semantic.shape} does not match metric shape {metric.shape}")
    if precision == "float64":
        metric = np.ascontiguousarray(metric, dtype=np.float64)
        semantic = np.ascontiguousarray(semantic, dtype=np.float64)
    elif precision == "float32":
        if metric.dtype != np.float16:
            metric = np.ascontiguousarray(metric, dtype=np.float32)
        metric = np.ascontiguousarray(metric)
        semantic = np.ascontiguousarray(semantic, dtype=np.float32)
    else:
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    batch, groups, n, _ = metric.shape
    out = np.empty((batch, groups, max(n - int(r), 0)), dtype=np.int32)
    return metric, semantic, out


def _check(lib: ctypes.CDLL, status: int, metric: np.ndarray, r: int) -> None:
    if status != 0:
        message = lib.sta_stage_select_error_string(status).decode()
        raise ValueError(f"STAStageSelect rejected metric shape {metric.shape} with r={r}: {message}")


def select_reference(
    metric,
    semantic,
    num_groups: int,
    r: int,
    backward: bool,
    *,
    precision: str = "float32",
    threads: int | None = None,
    library: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Kept token indices of one STA stage, (B, G, n - r) int32, by the CPU reference.

    ``metric`` (B, G, n, D) L2-normalised (or (B, G * n, D)), ``semantic`` (B, G, n) (or (B, G * n)).
    Equal to ``sta_deploy.sta.group_kept_indices(metric, semantic, r, backward)``.
    ``threads`` (float32 metric only) runs each sample the way the CUDA kernel does, split over that
    many host threads that meet at barriers; the result is the same for every thread count.
    """
    if precision == "float64":
        return select_reference_float64(metric, semantic, num_groups, r, backward, library=library)[0]
    lib = load_reference_library(library)
    metric, semantic, out = _prepare(metric, semantic, num_groups, r, precision)
    arguments = (metric.ctypes.data, semantic.ctypes.data, *metric.shape, int(r), int(bool(backward)), out.ctypes.data)
    if threads is not None:
        if metric.dtype != np.float32:
            raise ValueError("threads= is only available for a float32 metric")
        status = lib.sta_stage_select_ref_f32_threads(*arguments, int(threads))
    elif metric.dtype == np.float16:
        status = lib.sta_stage_select_ref_f16(*arguments)
    else:
        status = lib.sta_stage_select_ref_f32(*arguments)
    _check(lib, status, metric, r)
    return out


def select_reference_float64(
    metric,
    semantic,
    num_groups: int,
    r: int,
    backward: bool,
    *,
    library: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, float]:
    """The float64 verification build: ``(kept indices, decision margin)``.

    The margin is the smallest relative gap between two distinct neighbouring values in any ordering
    that decides the output (the first group's best matches, every later group's scores); 1.0 if
    there is none.  Exact ties are not gaps: they are broken towards the earlier token.
    """
    lib = load_reference_library(library)
    metric, semantic, out = _prepare(metric, semantic, num_groups, r, "float64")
    margin = ctypes.c_double(1.0)
    status = lib.sta_stage_select_ref_f64(
        metric.ctypes.data, semantic.ctypes.data, *metric.shape, int(r), int(bool(backward)), out.ctypes.data, ctypes.byref(margin)
    )
    _check(lib, status, metric, r)
    return out, margin.value
