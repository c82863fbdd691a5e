"""The STAStageSelect TensorRT wrapper, exercised against TensorRT headers without libnvinfer.

Builds libsta_stage_select_trt.so (dynamic registration), libsta_stage_select_trt_static.so (static
registration) and the check driver (plugins/sta_stage_select/tests/trt_wrapper_check.cpp), then runs
the driver: dlopen, getCreators / setLoggerFinder, createPlugin from INT32 / INT64 fields and its
rejections, getFieldsToSerialize round trip, getOutputShapes through a stub IExprBuilder,
getOutputDataTypes, supportsFormatCombination, configurePlugin limits, getWorkspaceSize, and the
static registrar against a stub registry.  On a GPU machine the driver also runs enqueue and
compares with the CPU reference.

Needs TensorRT headers (no TensorRT install): set TensorRT_ROOT (or STA_TENSORRT_ROOT) to a folder
with include/NvInferRuntime.h, e.g. a checkout of github.com/NVIDIA/TensorRT outside this repository.
Skipped when no headers or no nvcc are found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sta_deploy import plugin_ref


def _tensorrt_root() -> str | None:
    for variable in ("STA_TENSORRT_ROOT", "TensorRT_ROOT"):
        root = os.environ.get(variable)
        if root and (Path(root) / "include" / "NvInferRuntime.h").is_file():
            return root
    for system in ("/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/include"):
        if (Path(system) / "NvInferRuntime.h").is_file():
            return "/usr"  # CMake looks in /usr/include and /usr/include/<arch>-linux-gnu
    return None


def _nvcc() -> str | None:
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def test_wrapper_against_tensorrt_headers(tmp_path):
    root = _tensorrt_root()
    if root is None:
        pytest.skip("TensorRT headers not found: set TensorRT_ROOT to a folder with include/NvInferRuntime.h")
    nvcc = _nvcc()
    if nvcc is None or shutil.which("cmake") is None:
        pytest.skip("nvcc or cmake not found: the wrapper links the CUDA kernel")
    try:
        plugin_ref.build_plugin(
            tmp_path,
            cuda=True,
            cuda_compiler=nvcc,
            cuda_architectures="75-real",  # one architecture is enough to check the wrapper
            tensorrt_root=root,
            targets=("sta_stage_select_ref", "sta_stage_select_trt", "sta_stage_select_trt_static", "sta_stage_select_trt_check"),
        )
    except subprocess.CalledProcessError as error:
        pytest.fail(f"building the TensorRT wrapper failed:\n{error.output}")
    result = subprocess.run(
        [
            str(tmp_path / "sta_stage_select_trt_check"),
            str(tmp_path / "libsta_stage_select_trt.so"),
            str(tmp_path / "libsta_stage_select_trt_static.so"),
            str(tmp_path / "libsta_stage_select_ref.so"),
        ],
        capture_output=True,
        text=True,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failures" in result.stdout

    if shutil.which("nm"):
        exported = subprocess.run(
            ["nm", "-D", "--defined-only", str(tmp_path / "libsta_stage_select_trt.so")], capture_output=True, text=True
        ).stdout.split()
        assert "getCreators" in exported and "setLoggerFinder" in exported
        undefined = subprocess.run(
            ["nm", "-D", "--undefined-only", str(tmp_path / "libsta_stage_select_trt.so")], capture_output=True, text=True
        ).stdout
        assert "getPluginRegistry" not in undefined, "the dynamic-registration library must not need libnvinfer"
