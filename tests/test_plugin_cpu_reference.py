"""The STAStageSelect CPU reference selects exactly PyTorch's kept indices, in the same order.

The CPU reference (``plugins/sta_stage_select``) is the same C++ source as the plugin's CUDA kernel,
built for the host; its float32 build is bit-identical to the kernel (no FMA contraction on either
side, own exp), so what is proven here for the float32 build holds for the GPU.

How "exactly" is tested.  PyTorch's float32 BLAS sums in its own order, so on a near tie (two scores
within rounding error) the float32 selection is decided by rounding noise on either side.  Hence:

* float64 build vs PyTorch in float64: must agree on every draw (random and tie-heavy data).
* float32 build vs PyTorch in float32 (and vs the float64 build): must agree whenever the float64
  run's decision margin (smallest relative gap between neighbouring decisive values, exact ties
  excluded) is above 1e-5, well beyond float32 rounding error; draws below it are counted, not failed.

Tie-heavy data are built so that PyTorch itself is tie-exact: metric vectors from a small palette of
signed unit axes (every dot product exact, so duplicated tokens tie exactly in the image-style step),
semantic scores from {0, 0.5, 1} and many scores of exactly 1 (score exactly 0 at every step).
Duplicated tokens from the second processed group on are avoided on purpose: PyTorch sums identical
rows of ``P`` (and computes identical rows of ``P @ acc``) in different orders depending on the row's
offset (seen with n = 27 in float64), so its "ties" there are rounding noise; the plugin breaks those
ties towards the earlier token.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sta_deploy.plugin import reference as plugin_ref  # noqa: E402
from sta_deploy.plugin.reference import (  # noqa: E402
    ReferenceLibraryError,
    load_reference_library,
    select_reference,
    select_reference_float64,
)
from sta_deploy.sta import group_kept_indices, normalise_metric, semantic_score  # noqa: E402

from _native import cxx_compiler, nvcc_path  # noqa: E402

FLOAT32_MARGIN = 1e-5


@pytest.fixture(scope="session")
def reference_library(tmp_path_factory) -> str:
    """libsta_stage_select_ref.so: $STA_PLUGIN_REF_LIB if set, else built with CMake into a temp dir."""
    prebuilt = os.environ.get(plugin_ref.ENV_VAR)
    if prebuilt:
        load_reference_library(prebuilt)
        return prebuilt
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found: cannot build the STAStageSelect CPU reference")
    if cxx_compiler() is None:
        pytest.skip("no C++ compiler (c++, g++, clang++ or $CXX) found: cannot build the STAStageSelect CPU reference")
    build_dir = tmp_path_factory.mktemp("sta_stage_select_ref")
    try:
        plugin_ref.build_plugin(build_dir, cuda=False, targets=("sta_stage_select_ref",))
    except subprocess.CalledProcessError as error:
        pytest.fail(f"building the CPU reference failed:\n{error.output}")
    path = str(build_dir / "libsta_stage_select_ref.so")
    load_reference_library(path)
    return path


# ---- data ------------------------------------------------------------------------------------------


def _normalised(rng: np.random.Generator, shape) -> np.ndarray:
    x = rng.standard_normal(shape)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_data(seed: int, batch: int, groups: int, n: int, dim: int):
    rng = np.random.default_rng(seed)
    return _normalised(rng, (batch, groups, n, dim)), rng.random((batch, groups, n), dtype=np.float32)


def tie_heavy_data(seed: int, batch: int, groups: int, n: int, dim: int, backward: bool):
    """Exact ties PyTorch reproduces (see the module docstring)."""
    rng = np.random.default_rng(seed)
    metric = _normalised(rng, (batch, groups, n, dim))
    semantic = rng.random((batch, groups, n), dtype=np.float32)
    semantic[rng.random((batch, groups, n)) < 0.3] = 1.0
    order = list(range(groups))[::-1] if backward else list(range(groups))
    # Duplicated tokens only in the first processed group: its ties come from a max (exact in any
    # order).  From the second group on, PyTorch's row sums of P add identical rows in different
    # orders (BLAS/vectorisation depends on the row's offset), so "duplicates" there tie only up to
    # rounding; exact ties at every step still come from semantic = 1 (score exactly 0).
    for group in order[:1]:
        size = int(rng.integers(1, 5))
        palette = np.zeros((size, dim), np.float32)
        palette[np.arange(size), rng.integers(0, dim, size)] = rng.choice([-1.0, 1.0], size)
        metric[:, group] = palette[rng.integers(0, size, (batch, n))]
        semantic[:, group] = rng.choice(np.array([0.0, 0.5, 1.0], np.float32), (batch, n))
    return metric, semantic


def torch_kept(metric: np.ndarray, semantic: np.ndarray, r: int, backward: bool, dtype=torch.float64) -> np.ndarray:
    kept = group_kept_indices(torch.from_numpy(metric).to(dtype), torch.from_numpy(semantic).to(dtype), r, backward)
    return kept.numpy()


@st.composite
def problems(draw):
    batch = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 8))
    n = draw(st.integers(2, 64))
    dim = draw(st.integers(1, 64))
    r = draw(st.integers(1, n - 1))
    backward = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return batch, groups, n, dim, r, backward, seed


PROPERTY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_same(expected: np.ndarray, got: np.ndarray, what: str) -> None:
    assert got.dtype == np.int32
    assert got.shape == expected.shape, what
    if not np.array_equal(got, expected.astype(np.int32)):
        b, g = np.argwhere((got != expected).any(-1))[0]
        raise AssertionError(f"{what}: first differing group (b={b}, g={g})\nexpected {expected[b, g]}\ngot      {got[b, g]}")


# ---- property tests --------------------------------------------------------------------------------


@PROPERTY
@given(problems())
def test_float64_build_matches_pytorch_on_random_data(reference_library, problem):
    batch, groups, n, dim, r, backward, seed = problem
    metric, semantic = random_data(seed, batch, groups, n, dim)
    got, _ = select_reference_float64(metric, semantic, groups, r, backward, library=reference_library)
    _assert_same(torch_kept(metric, semantic, r, backward), got, "float64 reference vs PyTorch float64")


@PROPERTY
@given(problems())
def test_float64_build_matches_pytorch_on_tie_heavy_data(reference_library, problem):
    batch, groups, n, dim, r, backward, seed = problem
    metric, semantic = tie_heavy_data(seed, batch, groups, n, dim, backward)
    got, _ = select_reference_float64(metric, semantic, groups, r, backward, library=reference_library)
    _assert_same(torch_kept(metric, semantic, r, backward), got, "float64 reference vs PyTorch float64 (ties)")


@PROPERTY
@given(problems(), st.booleans())
def test_float32_build_matches_pytorch_where_the_selection_is_decided(reference_library, problem, ties):
    batch, groups, n, dim, r, backward, seed = problem
    if ties:
        metric, semantic = tie_heavy_data(seed, batch, groups, n, dim, backward)
    else:
        metric, semantic = random_data(seed, batch, groups, n, dim)
    exact, margin = select_reference_float64(metric, semantic, groups, r, backward, library=reference_library)
    if margin < FLOAT32_MARGIN:
        event("float32 comparison skipped: near tie below float32 resolution")
        return
    got = select_reference(metric, semantic, groups, r, backward, library=reference_library)
    _assert_same(exact, got, "float32 reference vs float64 reference")
    _assert_same(torch_kept(metric, semantic, r, backward, torch.float32), got, "float32 reference vs PyTorch float32")


@settings(max_examples=60, deadline=None)
@given(problems(), st.booleans())
def test_float16_metric_accumulates_in_float32(reference_library, problem, ties):
    batch, groups, n, dim, r, backward, seed = problem
    if ties:
        metric, semantic = tie_heavy_data(seed, batch, groups, n, dim, backward)
    else:
        metric, semantic = random_data(seed, batch, groups, n, dim)
    half = metric.astype(np.float16)
    widened = half.astype(np.float32)
    got = select_reference(half, semantic, groups, r, backward, library=reference_library)
    # Exact conversion, float32 accumulation: identical to the float32 build on the widened values ...
    _assert_same(select_reference(widened, semantic, groups, r, backward, library=reference_library), got, "fp16 vs widened fp32")
    # ... which is PyTorch's selection on those values wherever the selection is decided.
    exact, margin = select_reference_float64(widened, semantic, groups, r, backward, library=reference_library)
    _assert_same(torch_kept(widened, semantic, r, backward), exact, "float64 reference vs PyTorch on widened fp16")
    if margin >= FLOAT32_MARGIN:
        _assert_same(exact, got, "fp16 metric vs float64 reference")


@settings(max_examples=80, deadline=None)
@given(problems(), st.integers(1, 48), st.booleans())
def test_kernel_thread_decomposition_gives_the_serial_result(reference_library, problem, threads, ties):
    """The kernel's phases run by a block of host threads meeting at barriers: same bits as serial."""
    batch, groups, n, dim, r, backward, seed = problem
    if ties:
        metric, semantic = tie_heavy_data(seed, batch, groups, n, dim, backward)
    else:
        metric, semantic = random_data(seed, batch, groups, n, dim)
    serial = select_reference(metric, semantic, groups, r, backward, library=reference_library)
    threaded = select_reference(metric, semantic, groups, r, backward, threads=threads, library=reference_library)
    _assert_same(serial, threaded, f"{threads} threads vs serial")


# ---- fixed cases -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "n", "r", "backward"),
    [(8, 196, 48, False), (4, 296, 48, True), (2, 496, 48, False)],
    ids=["stage1", "stage2", "stage3"],
)
def test_vit_schedule_shapes_through_the_stage_inputs(reference_library, groups, n, r, backward):
    """ViT-B's three stages at r1 = 48, with the inputs sta_stage feeds the op (keys, block output)."""
    rng = np.random.default_rng(n)
    keys = torch.from_numpy(rng.standard_normal((2, groups * n, 64)).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((2, groups * n, 96)).astype(np.float32))
    metric = normalise_metric(keys).reshape(2, groups, n, 64)
    semantic = semantic_score(x.reshape(2, groups, n, 96))
    exact, margin = select_reference_float64(metric.numpy(), semantic.numpy(), groups, r, backward, library=reference_library)
    _assert_same(torch_kept(metric.numpy(), semantic.numpy(), r, backward), exact, "float64")
    got = select_reference(metric.numpy(), semantic.numpy(), groups, r, backward, library=reference_library)
    expected32 = group_kept_indices(metric, semantic, r, backward).numpy()
    if margin >= FLOAT32_MARGIN:
        _assert_same(expected32, got, "float32 vs PyTorch float32")
    else:  # a near tie in this draw: everything else must still agree
        assert (got == expected32).mean() > 0.95


def test_ties_go_to_the_earlier_token(reference_library):
    """Identical tokens with identical scores: B positions in order, then A; later groups by index."""
    metric = np.zeros((1, 3, 7, 4), np.float32)
    metric[..., 0] = 1.0
    semantic = np.ones((1, 3, 7), np.float32)
    expected = np.array([[[1, 3, 5, 0], [0, 1, 2, 3], [0, 1, 2, 3]]], np.int32)
    _assert_same(expected, select_reference(metric, semantic, 3, 3, False, library=reference_library), "forward")
    _assert_same(torch_kept(metric, semantic, 3, False), expected, "PyTorch agrees")
    backward = np.array([[[0, 1, 2, 3], [0, 1, 2, 3], [1, 3, 5, 0]]], np.int32)
    _assert_same(backward, select_reference(metric, semantic, 3, 3, True, library=reference_library), "backward")


def test_edge_shapes(reference_library):
    rng = np.random.default_rng(3)
    cases = [(1, 1, 2, 1, 1), (2, 1, 9, 3, 4), (1, 5, 2, 2, 1), (1, 3, 7, 4, 0), (3, 2, 5, 1, 4)]
    for batch, groups, n, dim, r in cases:
        metric = _normalised(rng, (batch, groups, n, dim))
        semantic = rng.random((batch, groups, n), dtype=np.float32)
        for backward in (False, True):
            got, _ = select_reference_float64(metric, semantic, groups, r, backward, library=reference_library)
            _assert_same(torch_kept(metric, semantic, r, backward), got, f"B={batch} G={groups} n={n} D={dim} r={r}")


def test_nan_tokens_sort_last_like_pytorch(reference_library):
    """A zero key normalises to NaN: NaN scores sort after every number, ties stable (torch.sort)."""
    rng = np.random.default_rng(11)
    raw = rng.standard_normal((2, 4, 10, 5)).astype(np.float32)
    raw[0, 1, 3] = 0.0
    raw[1, 0, 6] = 0.0
    with np.errstate(invalid="ignore"):
        metric = (raw / np.linalg.norm(raw, axis=-1, keepdims=True)).astype(np.float32)
    semantic = rng.random((2, 4, 10), dtype=np.float32)
    for backward in (False, True):
        expected = torch_kept(metric, semantic, 3, backward)
        _assert_same(expected, select_reference_float64(metric, semantic, 4, 3, backward, library=reference_library)[0], "f64")
        _assert_same(torch_kept(metric, semantic, 3, backward, torch.float32), select_reference(metric, semantic, 4, 3, backward, library=reference_library), "f32")


def test_flat_token_layout_is_split_into_groups(reference_library):
    metric, semantic = random_data(5, 2, 4, 12, 8)
    grouped = select_reference(metric, semantic, 4, 5, True, library=reference_library)
    flat = select_reference(metric.reshape(2, 48, 8), semantic.reshape(2, 48), 4, 5, True, library=reference_library)
    _assert_same(grouped, flat, "(B, N, D) input")


def test_invalid_arguments_are_rejected_with_a_reason(reference_library):
    metric, semantic = random_data(0, 1, 2, 8, 4)
    with pytest.raises(ValueError, match="invalid r"):
        select_reference(metric, semantic, 2, 8, False, library=reference_library)
    with pytest.raises(ValueError, match="groups"):
        select_reference(metric, semantic, 3, 2, False, library=reference_library)
    with pytest.raises(ValueError, match="does not match"):
        select_reference(metric, semantic[:, :, :4], 2, 2, False, library=reference_library)
    big, big_semantic = random_data(0, 1, 1, plugin_ref.MAX_TOKENS + 1, 2)
    with pytest.raises(ValueError, match=str(plugin_ref.MAX_TOKENS)):
        select_reference(big, big_semantic, 1, 1, False, library=reference_library)
    wide, wide_semantic = random_data(0, 1, 1, 2, plugin_ref.MAX_DIM + 1)
    with pytest.raises(ValueError, match=str(plugin_ref.MAX_DIM)):
        select_reference(wide, wide_semantic, 1, 1, False, library=reference_library)


def test_missing_library_names_the_build_command(tmp_path):
    with pytest.raises(ReferenceLibraryError, match="cmake -S plugins/sta_stage_select"):
        load_reference_library(tmp_path / "libsta_stage_select_ref.so")


# ---- the CUDA kernel compiles (no GPU needed) ------------------------------------------------------


def fatbin_architectures(path: Path) -> set[tuple[str, int]]:
    """(kind, sm) of every entry of the CUDA fat binaries embedded in a shared library."""
    data = path.read_bytes()
    magic = struct.pack("<I", 0xBA55ED50)
    found: set[tuple[str, int]] = set()
    position = data.find(magic)
    while position >= 0:
        version, header_size, fat_size = struct.unpack_from("<HHQ", data, position + 4)
        end = position + header_size + fat_size
        if version == 1 and header_size == 16 and end <= len(data):
            entry = position + header_size
            while entry < end:
                kind, _, entry_header, size = struct.unpack_from("<HHIQ", data, entry)
                (arch,) = struct.unpack_from("<I", data, entry + 28)
                found.add(({1: "ptx", 2: "sass"}.get(kind, str(kind)), arch))
                entry += entry_header + size
            position = data.find(magic, end)
        else:
            position = data.find(magic, position + 4)
    return found


def test_nvcc_compiles_the_cuda_kernel_for_every_architecture(tmp_path):
    """CMake + nvcc build the kernel for sm_75 ... sm_120 plus PTX (compile only, no GPU)."""
    nvcc = nvcc_path()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, $CUDACXX, /usr/local/cuda/bin): cannot compile the CUDA kernel")
    if shutil.which("cmake") is None or cxx_compiler() is None:
        pytest.skip("cmake or a C++ compiler is missing")
    release = re.search(r"release (\d+)\.(\d+)", subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout)
    version = (int(release.group(1)), int(release.group(2))) if release else (0, 0)
    start = time.perf_counter()
    try:
        plugin_ref.build_plugin(tmp_path, cuda=True, cuda_compiler=nvcc, targets=("sta_stage_select_cuda",))
    except subprocess.CalledProcessError as error:
        pytest.fail(f"nvcc build of the CUDA kernel failed:\n{error.output}")
    elapsed = time.perf_counter() - start
    found = fatbin_architectures(tmp_path / "libsta_stage_select_cuda.so")
    sass = {arch for kind, arch in found if kind == "sass"}
    ptx = {arch for kind, arch in found if kind == "ptx"}
    required = {75, 80, 86, 87, 89, 90}
    newest = 90
    if version >= (12, 8):
        required |= {100, 120}
        newest = 120
    assert required <= sass, f"missing SASS for {sorted(required - sass)}; embedded: {sorted(found)}"
    assert newest in ptx, f"no PTX for compute_{newest}; embedded: {sorted(found)}"
    print(f"CUDA kernel built for sm_{sorted(sass)} + PTX {sorted(ptx)} in {elapsed:.1f}s")
