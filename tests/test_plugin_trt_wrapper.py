"""The STAStageSelect TensorRT wrapper, exercised against TensorRT headers without libnvinfer.

Builds libsta_stage_select_trt.so (dynamic registration), libsta_stage_select_trt_static.so (static
registration) and the check driver (plugins/sta_stage_select/tests/trt_wrapper_check.cpp), then runs
the driver: dlopen, getCreators / setLoggerFinder, createPlugin from INT32 / INT64 fields and its
rejections, getFieldsToSerialize round trip, getOutputShapes through a stub IExprBuilder,
getOutputDataTypes, supportsFormatCombination, configurePlugin limits, getWorkspaceSize, and the
static registrar against a stub registry.  On a GPU machine the driver also runs enqueue and
compares with the CPU reference.

With TensorRT-RTX installed (the ``[trt-rtx]`` extra), the built wrapper also goes through a real
TensorRT without a GPU: its ONNX parser imports the plugin nodes of ``--sta-impl plugin`` exports and
its builder builds engines, calling the plugin's build-time methods; static registration is checked
against TensorRT-RTX's own global registry.

Needs TensorRT headers (no TensorRT install): set TensorRT_ROOT (or STA_TENSORRT_ROOT) to a folder
with include/NvInferRuntime.h, e.g. a checkout of github.com/NVIDIA/TensorRT outside this repository.
Skipped when no headers or no nvcc are found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import sta_deploy
from sta_deploy.plugin import reference as plugin_ref
from sta_deploy.export.onnx_export import export_onnx

from _helpers import expected_tokens_per_stage
from _native import HAS_RTX, NO_RTX, headers_major, nvcc_path, tensorrt_root



@dataclass
class WrapperBuild:
    folder: Path
    headers_major: int | None


@pytest.fixture(scope="module")
def wrapper_build(tmp_path_factory):
    """The wrapper, both registration variants and the check driver, built once for this module."""
    root = tensorrt_root()
    if root is None:
        pytest.skip("TensorRT headers not found: set TensorRT_ROOT to a folder with include/NvInferRuntime.h")
    nvcc = nvcc_path()
    if nvcc is None or shutil.which("cmake") is None:
        pytest.skip("nvcc or cmake not found: the wrapper links the CUDA kernel")
    build_dir = tmp_path_factory.mktemp("trt_wrapper")
    try:
        plugin_ref.build_plugin(
            build_dir,
            cuda=True,
            cuda_compiler=nvcc,
            cuda_architectures="75-real",  # one architecture is enough to check the wrapper
            tensorrt_root=root,
            targets=("sta_stage_select_ref", "sta_stage_select_trt", "sta_stage_select_trt_static", "sta_stage_select_trt_check"),
        )
    except subprocess.CalledProcessError as error:
        pytest.fail(f"building the TensorRT wrapper failed:\n{error.output}")
    return WrapperBuild(build_dir, headers_major(root))


def test_wrapper_against_tensorrt_headers(wrapper_build):
    tmp_path = wrapper_build.folder
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


def _expected_plugin_outputs(num_temporal: int, num_spatial: int, r1: int) -> list[list[int]]:
    """(B, G, n - r) of each stage's STAStageSelect output, by hand: groups halve, r1 dropped per group."""
    tokens = expected_tokens_per_stage(num_temporal, num_spatial, r1)
    groups = [num_temporal // 2**stage for stage in range(3)]
    return [[1, g, t // g] for g, t in zip(groups, tokens)]


@pytest.fixture(scope="module", params=["fp32", "fp16", "fp32-dynamic-batch"])
def vit_s_r48_plugin(request, tmp_path_factory):
    dtype, dynamic = request.param.split("-")[0], request.param.endswith("dynamic-batch")
    path = tmp_path_factory.mktemp("plugin_onnx") / f"vit_s_r48_{request.param}_plugin.onnx"
    export_onnx(sta_deploy.create_model("vit_s", r1=48, seed=0), path, dtype=dtype, dynamic_batch=dynamic, with_kept=True, sta_impl="plugin")
    return path


@pytest.mark.skipif(not HAS_RTX, reason=NO_RTX)
def test_tensorrt_rtx_parses_and_builds_plugin_export(wrapper_build, vit_s_r48_plugin):
    """TensorRT's own parser and builder drive the plugin: the output shapes are the plugin's getOutputShapes."""
    from sta_deploy.runtime.trt_parse import parse_check

    # A --dynamic-batch export is built for batches 1..4: configurePlugin sees that range.
    batch = -1 if "dynamic" in vit_s_r48_plugin.name else 1
    profile = (1, 2, 4) if batch == -1 else (None, None, None)
    report = parse_check(vit_s_r48_plugin, plugin_libs=[wrapper_build.folder / "libsta_stage_select_trt.so"], batch_profile=profile)
    assert report.flavour == "tensorrt_rtx"
    expected = [[batch, *shape[1:]] for shape in _expected_plugin_outputs(8, 196, 48)]
    assert [layer["outputs"][0]["shape"] for layer in report.plugin_layers] == expected
    assert all(layer["outputs"][0]["dtype"] == "DataType.INT32" for layer in report.plugin_layers)
    shapes = {o["name"]: o["shape"] for o in report.outputs}
    assert shapes == {"logits": [batch, 400], **{f"kept_stage{i}": [batch, t] for i, t in enumerate(expected_tokens_per_stage(8, 196, 48))}}
    assert report.engine_bytes > 10_000_000  # the weights are in the engine (half of fp32's in fp16)


@pytest.mark.skipif(not HAS_RTX, reason=NO_RTX)
def test_static_registration_reaches_tensorrt_rtx_registry(wrapper_build, vit_s_r48_plugin, tmp_path):
    """libsta_stage_select_trt_static registers itself through TensorRT-RTX's getPluginRegistry() when
    dlopen()ed into a process that has TensorRT loaded (what trtexec --staticPlugins does)."""
    if "dynamic" in vit_s_r48_plugin.name:
        pytest.skip("registration does not depend on the export: the static-batch exports cover it")
    if (wrapper_build.headers_major or 0) < 11:
        # The registrar makes a virtual call on IPluginRegistry, whose layout TensorRT 11 changed;
        # TensorRT-RTX has the 11 layout, so a build against 10.x headers is only for libnvinfer 10.
        pytest.skip("wrapper built against TensorRT 10 headers: static registration is for libnvinfer 10, not TensorRT-RTX")
    import tensorrt_rtx_libs

    real = sorted(Path(tensorrt_rtx_libs.__file__).parent.glob("libtensorrt_rtx.so.*"))[0]
    (tmp_path / "libtensorrt_rtx.so").symlink_to(real)  # see sta_deploy/runtime/trt_parse.py for why
    script = f"""
import ctypes, os
import tensorrt_rtx as trt
ctypes.CDLL({str(real)!r}, mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)  # export getPluginRegistry
ctypes.CDLL({str(wrapper_build.folder / "libsta_stage_select_trt_static.so")!r}, mode=ctypes.RTLD_GLOBAL)
names = [(c.name, c.plugin_version, c.plugin_namespace) for c in trt.get_plugin_registry().all_creators]
assert ("STAStageSelect", "1", "sta_deploy") in names, names
logger = trt.Logger(trt.Logger.ERROR)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
assert parser.parse_from_file({str(vit_s_r48_plugin)!r}), [parser.get_error(i).desc() for i in range(parser.num_errors)]
assert builder.build_serialized_network(network, builder.create_builder_config()) is not None
print("static registration ok")
"""
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("LD_LIBRARY_PATH")])))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "static registration ok" in done.stdout, done.stdout + done.stderr[-2000:]
