"""The STAStageSelect CUDA kernel on a GPU: bit-identical selections to the CPU reference.

Skipped without a CUDA device (torch.cuda) or without nvcc.  The CPU reference is proven against
PyTorch in test_plugin_cpu_reference.py; this file closes the loop kernel == CPU reference, which
must hold exactly, on every input (same source, same IEEE operations in the same order, no FMA).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch

from _native import nvcc_path
from sta_deploy.plugin import reference as plugin_ref
from sta_deploy.plugin.reference import load_reference_library, select_reference

if not torch.cuda.is_available():
    pytest.skip("no CUDA device: the kernel check waits for a GPU machine", allow_module_level=True)

CUDA_ERROR_INSUFFICIENT_DRIVER = 35


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    nvcc = nvcc_path()
    if nvcc is None or shutil.which("cmake") is None:
        pytest.skip("nvcc or cmake not found: cannot build the CUDA kernel")
    major, minor = torch.cuda.get_device_capability()
    build_dir = tmp_path_factory.mktemp("sta_stage_select_cuda")
    try:
        plugin_ref.build_plugin(
            build_dir,
            cuda=True,
            cuda_compiler=nvcc,
            cuda_architectures=f"{major}{minor}-real",
            targets=("sta_stage_select_ref", "sta_stage_select_cuda"),
        )
    except subprocess.CalledProcessError as error:
        pytest.fail(f"building the CUDA kernel failed:\n{error.output}")
    reference = str(build_dir / "libsta_stage_select_ref.so")
    load_reference_library(reference)
    cuda = ctypes.CDLL(str(build_dir / "libsta_stage_select_cuda.so"))
    cuda.sta_stage_select_cuda_launch.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p] + [ctypes.c_int64] * 5 + [
        ctypes.c_int32,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int32),
    ]
    cuda.sta_stage_select_cuda_launch.restype = ctypes.c_int
    cuda.sta_stage_select_workspace_size.argtypes = [ctypes.c_int64, ctypes.c_int64]
    cuda.sta_stage_select_workspace_size.restype = ctypes.c_size_t
    return reference, cuda


def run_kernel(cuda, metric: np.ndarray, semantic: np.ndarray, r: int, backward: bool, *, workspace_bytes=None) -> np.ndarray:
    batch, groups, n, dim = metric.shape
    device_metric = torch.from_numpy(metric).cuda()
    device_semantic = torch.from_numpy(semantic).cuda()
    out = torch.full((batch, groups, n - r), -1, dtype=torch.int32, device="cuda")
    needed = cuda.sta_stage_select_workspace_size(batch, n)
    size = needed if workspace_bytes is None else workspace_bytes
    workspace = torch.empty(max(size, 1), dtype=torch.uint8, device="cuda")
    error = ctypes.c_int32(0)
    status = cuda.sta_stage_select_cuda_launch(
        device_metric.data_ptr(),
        int(metric.dtype == np.float16),
        device_semantic.data_ptr(),
        batch,
        groups,
        n,
        dim,
        r,
        int(backward),
        out.data_ptr(),
        workspace.data_ptr(),
        size,
        torch.cuda.current_stream().cuda_stream,
        ctypes.byref(error),
    )
    if status == 8 and error.value == CUDA_ERROR_INSUFFICIENT_DRIVER:
        pytest.skip("the NVIDIA driver is older than the CUDA runtime the kernel was built with")
    if status != 0:
        raise RuntimeError(f"launch failed: status {status}, cudaError {error.value}")
    torch.cuda.synchronize()
    return out.cpu().numpy()


def _data(rng, batch, groups, n, dim, ties=False):
    metric = rng.standard_normal((batch, groups, n, dim))
    metric = (metric / np.linalg.norm(metric, axis=-1, keepdims=True)).astype(np.float32)
    semantic = rng.random((batch, groups, n), dtype=np.float32)
    if ties:
        palette = metric[0, 0, : max(1, n // 8)].copy()
        metric[:] = palette[rng.integers(0, len(palette), (batch, groups, n))]
        semantic = rng.choice(np.array([0.0, 0.5, 1.0], np.float32), (batch, groups, n))
    return metric, semantic


def test_kernel_equals_cpu_reference_bit_for_bit(libraries):
    reference, cuda = libraries
    rng = np.random.default_rng(0)
    for trial in range(120):
        batch, groups = int(rng.integers(1, 4)), int(rng.integers(1, 9))
        n, dim = int(rng.integers(2, 160)), int(rng.integers(1, 96))
        r, backward, ties = int(rng.integers(0, n)), bool(rng.integers(0, 2)), trial % 3 == 0
        metric, semantic = _data(rng, batch, groups, n, dim, ties)
        for sample in (metric, metric.astype(np.float16)):
            expected = select_reference(sample, semantic, groups, r, backward, library=reference)
            got = run_kernel(cuda, sample, semantic, r, backward)
            assert np.array_equal(got, expected), (trial, batch, groups, n, dim, r, backward, ties, sample.dtype)


@pytest.mark.parametrize(("groups", "n", "backward"), [(8, 196, False), (4, 296, True), (2, 496, False), (2, 2048, True)])
def test_vit_stage_shapes_and_the_largest_n(libraries, groups, n, backward):
    reference, cuda = libraries
    rng = np.random.default_rng(n)
    batch = 1 if n == 2048 else 8
    metric, semantic = _data(rng, batch, groups, n, 64)
    expected = select_reference(metric, semantic, groups, 48, backward, library=reference)
    start = time.perf_counter()
    got = run_kernel(cuda, metric, semantic, 48, backward)
    elapsed = time.perf_counter() - start
    assert np.array_equal(got, expected)
    print(f"B={batch} G={groups} n={n}: {elapsed * 1e3:.2f} ms including transfers")


def test_too_small_workspace_is_refused(libraries):
    _, cuda = libraries
    metric, semantic = _data(np.random.default_rng(1), 2, 2, 16, 8)
    with pytest.raises(RuntimeError, match="status 7"):
        run_kernel(cuda, metric, semantic, 4, False, workspace_bytes=16)
