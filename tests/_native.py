"""Finding what native builds need in tests: a C++ compiler, nvcc, TensorRT headers and their version, TensorRT-RTX."""

from __future__ import annotations

import importlib
import os
import re
import shutil
from pathlib import Path


def tensorrt_root() -> str | None:
    for variable in ("STA_TENSORRT_ROOT", "TensorRT_ROOT"):
        root = os.environ.get(variable)
        if root and (Path(root) / "include" / "NvInferRuntime.h").is_file():
            return root
    for system in ("/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/include"):
        if (Path(system) / "NvInferRuntime.h").is_file():
            return "/usr"  # CMake looks in /usr/include and /usr/include/<arch>-linux-gnu
    return None


def headers_major(root: str) -> int | None:
    """TensorRT major version of the headers under ``root`` (NvInferVersion.h)."""
    for folder in (Path(root) / "include", Path(root) / "include" / "x86_64-linux-gnu", Path(root) / "include" / "aarch64-linux-gnu"):
        version = folder / "NvInferVersion.h"
        if version.is_file():
            found = re.search(r"define (?:TRT_MAJOR_ENTERPRISE|NV_TENSORRT_MAJOR) (\d+)", version.read_text())
            return int(found.group(1)) if found else None
    return None


def nvcc_path() -> str | None:
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def cxx_compiler() -> str | None:
    for candidate in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def _has_tensorrt_rtx() -> bool:
    try:
        importlib.import_module("tensorrt_rtx")
    except Exception:  # noqa: BLE001 - not installed, or a wheel that does not import here
        return False
    return True


HAS_RTX = _has_tensorrt_rtx()
NO_RTX = "tensorrt_rtx is not importable (pip install 'sta-deploy[trt-rtx]')"
