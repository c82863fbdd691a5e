"""examples/classify, the C++ app that runs an exported engine: its TensorRT-free parts (.npy reader,
view averaging, half -> float) against numpy and sta_deploy.video.predict on the CPU; the app itself
compiled against TensorRT headers when they are found (running it needs TensorRT and a GPU)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from _native import nvcc_path, tensorrt_root
from sta_deploy.video.predict import average_views, top_k

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "classify"

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is needed to build examples/classify")


def _cmake(build: Path, *options: str, target: str | None = None) -> str:
    configure = subprocess.run(["cmake", "-S", str(EXAMPLE), "-B", str(build), *options], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    command = ["cmake", "--build", str(build), "-j", "2"] + (["--target", target] if target else [])
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    return configure.stdout


@pytest.fixture(scope="module")
def check_tool(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("trt_classify")
    _cmake(build, "-DCMAKE_CXX_FLAGS=-Wall -Wextra -Werror", target="postprocess_check")
    return build / "postprocess_check"


def _run(tool: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("shape", [(6, 3, 16, 8, 8), (400,), (2, 3), (1, 0)])
@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_npy_reader_returns_numpys_data(check_tool, tmp_path, shape, version):
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with open(tmp_path / "a.npy", "wb") as handle:
        np.lib.format.write_array(handle, array, version=version)
    done = _run(check_tool, "npy", tmp_path / "a.npy", tmp_path / "a.bin")
    assert done.returncode == 0, done.stderr
    assert tuple(int(x) for x in done.stdout.split()) == shape
    assert np.array_equal(np.fromfile(tmp_path / "a.bin", dtype=np.float32).reshape(shape), array)


def _save_truncated(path: Path, array: np.ndarray) -> None:
    np.save(path, array)
    path.write_bytes(path.read_bytes()[:-4])


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda path: np.save(path, np.zeros((2, 3), np.float64)), "expected little-endian float32 ('<f4'), found '<f8'"),
        (lambda path: np.save(path, np.asfortranarray(np.zeros((2, 3), np.float32))), "expected a C-ordered array"),
        (lambda path: path.write_bytes(b"not numpy at all"), "is not a .npy file"),
        (lambda path: _save_truncated(path, np.ones((2, 3), np.float32)), "truncated .npy data"),
    ],
)
def test_npy_reader_refuses_what_it_cannot_read(check_tool, tmp_path, write, message):
    write(tmp_path / "a.npy")
    done = _run(check_tool, "npy", tmp_path / "a.npy", tmp_path / "a.bin")
    assert done.returncode == 1 and message in done.stderr, done.stderr


@pytest.mark.parametrize("average", ["logits", "prob"])
@pytest.mark.parametrize("views", [1, 6])
def test_view_averaging_and_top_k_match_sta_deploy_predict(check_tool, tmp_path, average, views):
    logits = (np.random.default_rng(views).standard_normal((views, 400)) * 4).astype(np.float32)
    logits[:, 7] = logits[:, 3]  # a tie: the lower class must come first
    np.save(tmp_path / "logits.npy", logits)
    done = _run(check_tool, "top", tmp_path / "logits.npy", average, 400)
    assert done.returncode == 0, done.stderr
    got = [line.split() for line in done.stdout.strip().splitlines()]
    classes, scores = top_k(average_views(logits, average), 400)
    assert [int(c) for c, _ in got] == classes
    assert np.allclose([float(s) for _, s in got], scores, rtol=1e-12, atol=1e-15)


def test_half_to_float_matches_numpy_for_every_bit_pattern(check_tool, tmp_path):
    assert _run(check_tool, "half", tmp_path / "half.bin").returncode == 0
    got = np.fromfile(tmp_path / "half.bin", dtype=np.float32)
    expected = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), expected[~nan].view(np.uint32))  # bit for bit, signed zeros too


def test_trt_classify_compiles_against_tensorrt_headers(tmp_path):
    root = tensorrt_root()
    if root is None:
        pytest.skip("TensorRT headers not found: set TensorRT_ROOT to a folder with include/NvInferRuntime.h")
    if nvcc_path() is None:
        pytest.skip("the CUDA toolkit is not found (trt_classify includes cuda_runtime_api.h)")
    log = _cmake(tmp_path, f"-DTensorRT_ROOT={root}", "-DCMAKE_CXX_FLAGS=-Wall -Wextra -Werror", "-DSTA_EXAMPLE_TESTS=OFF")
    assert "trt_classify:" in log and "skipping it" not in log
