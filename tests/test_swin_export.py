"""Video Swin: static-shape ONNX export, ONNX Runtime validation, TensorRT parse, SSv2 FLOPs via the CLI.

Small models (one per preset, with narrow widths, two blocks per stage and short clips) are exported
once per module and reused by every check; they cover r1 = 0, 8 and 16, static batch 1 and 2, a
symbolic batch, windows that pad (2x3x3 on 14x14 and 16x16 grids), shift on every axis, and
windows clamped to the grid (4x7x7 on 7x7 and 4x4 grids).  One full-size ``swin_t`` at r1 = 256 is
exported and validated through the CLI (marked slow; it still runs in CI).

TensorRT's TopK takes k <= 3840.  Swin-T at r1 = 256 keeps 16 x 528 = 8448 tokens at its first STA
stage, so a whole-stage selection could not be built; the graph must select per temporal slice
(k = 784 - 256 = 528 over each slice's 784 tokens), which is what the TopK checks below pin down.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import sta_deploy
from sta_deploy.export.graph_checks import check_static_shapes
from sta_deploy.export.manifest import read_manifest, rebuild_reference
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.models.registry import get_entry
from sta_deploy.runtime.onnxrt import onnx_session
from sta_deploy.validate import TOLERANCES, validate_onnx

from _native import HAS_RTX, NO_RTX
from test_export_helpers import constant_values, error_line, run_cli, static_shape_problems, symbolic_dims


TRT_TOPK_LIMIT = 3840  # TensorRT's largest TopK k
FP32 = TOLERANCES["fp32"]  # the ViT thresholds: max |diff| 1e-4, cosine 0.99999, top-1 100%, kept 100%


# ----------------------------------------------------------------------------- the small exports
def _cli_args(overrides: dict) -> list[str]:
    args = []
    for key, value in overrides.items():
        args += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return args


@dataclass(frozen=True)
class Case:
    """One small export: preset, r1, overrides, batch (None = --dynamic-batch), through the CLI or the API."""

    preset: str
    r1: int
    overrides: dict
    batch: int | None
    via_cli: bool

    @property
    def id(self) -> str:
        return f"{self.preset}-r{self.r1}"


CASES = [
    # Grids (4,14,14) (4,7,7) (4,4,4) (4,2,2): STA slices of 49, 16 and 4 tokens drop 8, 3, 1.
    # The 2x3x3 window pads 14 -> 15 and 7 -> 9 and shifts on all three axes; static batch 2.
    Case("swin_t", 8, dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(2, 3, 3), num_frames=8, img_size=56, num_classes=10), 2, True),
    # Grids (8,28,28) (8,14,14) (8,7,7) (8,4,4): slices of 196, 49 and 16 tokens drop 16, 6, 2.  The
    # 4x7x7 window is clamped (no spatial shift) at stages 3 and 4; symbolic batch.
    Case("swin_s", 16, dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(4, 7, 7), num_frames=16, img_size=112, num_classes=10), None, True),
    # Unpruned (r1 = 0): the kept outputs are the full grids; 2x3x3 pads 16 -> 18 and 8 -> 9.
    Case("swin_b", 0, dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(2, 3, 3), num_frames=8, img_size=64, num_classes=10), 1, False),
    # Like the SSv2 Swin-B (16x7x7 on 16 temporal slices), the window spans every slice: 4x3x3 on
    # 4 slices.  Slices of 64, 16 and 4 tokens drop 16, 6, 2.
    Case("swin_b", 16, dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(2, 4, 4, 8), window_size=(4, 3, 3), num_frames=8, img_size=64, num_classes=10), 1, False),
    # The largest r1 of the 56^2 geometry: the last STA stage keeps 1 of 4 tokens per slice.
    Case("swin_t", 24, dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=(2, 3, 3), num_frames=8, img_size=56, num_classes=10), 1, False),
]
IDS = [case.id for case in CASES]


@dataclass
class Exported:
    case: Case
    path: Path
    manifest: dict
    proto: onnx.ModelProto
    model: torch.nn.Module  # the PyTorch reference rebuilt from the manifest (same seeded weights)
    export_output: str = ""


def _export(case: Case, folder: Path) -> Exported:
    path = folder / f"{case.id}.onnx"
    output = ""
    if case.via_cli:
        batch_args = ["--batch", case.batch] if case.batch is not None else ["--dynamic-batch"]
        code, output, err = run_cli(
            "export", "--model", case.preset, "--r1", case.r1, *_cli_args(case.overrides), *batch_args, "--with-kept", "--clips", 2, "-o", path
        )
        assert code == 0, err
        assert output.rstrip().splitlines()[-1] == "PASS", output  # export's own ORT validation
    else:
        model = sta_deploy.create_model(case.preset, r1=case.r1, seed=0, **case.overrides)
        export_onnx(model, path, batch_size=case.batch or 1, dynamic_batch=case.batch is None, with_kept=True)
    manifest = read_manifest(path)
    return Exported(case, path, manifest, onnx.load(str(path)), rebuild_reference(manifest), output)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    cache: dict[str, Exported] = {}

    def get(case: Case) -> Exported:
        if case.id not in cache:
            cache[case.id] = _export(case, tmp_path_factory.mktemp(case.id))
        return cache[case.id]

    return get


def _clips(count: int, shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *shape), dtype=np.float32)


def _graph_batch(exported: Exported):
    """The batch dimension of the graph's input: an int, or the batch symbol."""
    dim = exported.proto.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param if dim.HasField("dim_param") else dim.dim_value


def topk_nodes(proto: onnx.ModelProto) -> list[tuple[int, list, dict]]:
    """Every TopK as (k, input shape after shape inference, attributes); k must be a constant."""
    graph = onnx.shape_inference.infer_shapes(proto, data_prop=True).graph
    constants = constant_values(graph)
    shapes = {
        value.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]
        for value in [*graph.input, *graph.value_info, *graph.output]
    }
    found = []
    for node in graph.node:
        if node.op_type != "TopK":
            continue
        assert node.input[1] in constants, f"TopK {node.name}: k is computed, not a constant"
        k = constants[node.input[1]]
        assert k.size == 1, f"TopK {node.name}: k has shape {k.shape}"
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        found.append((int(k.reshape(-1)[0]), shapes[node.input[0]], attributes))
    return found


def expected_topks(schedule) -> list[tuple[int, int]]:
    """(k, size of the sorted axis) of every TopK that per-slice STA on Swin needs, sorted.

    Per STA stage with G slices of n tokens dropping r: the first processed slice ranks its
    ceil(n / 2) image-style A tokens; each other slice keeps its n - r smallest scores out of n;
    the kept positions of all slices are put back in raster order with one (B, G, n - r) TopK.
    """
    expected = []
    if not schedule.enabled:
        return expected
    for groups, n, r in zip(schedule.groups, schedule.group_sizes, schedule.rs):
        keep = n - r
        expected.append((math.ceil(n / 2), math.ceil(n / 2)))
        expected += [(keep, n)] * (groups - 1)
        expected.append((keep, keep))
    return sorted(expected)


def check_topk_per_slice(proto: onnx.ModelProto, schedule) -> None:
    topks = topk_nodes(proto)
    for k, shape, attributes in topks:
        assert k <= TRT_TOPK_LIMIT, f"TopK k = {k} exceeds TensorRT's limit of {TRT_TOPK_LIMIT}"
        assert attributes.get("largest") == 0 and attributes.get("sorted", 1) == 1
        assert attributes.get("axis", -1) in (-1, len(shape) - 1)
        assert isinstance(shape[-1], int) and k <= shape[-1]
        # No TopK sorts across slices: the sorted axis is at most one slice of the first STA stage.
        assert shape[-1] <= max(schedule.group_sizes, default=0), (k, shape)
    assert sorted((k, shape[-1]) for k, shape, _ in topks) == expected_topks(schedule)


def check_kept_per_slice(kept: list[np.ndarray], schedule) -> None:
    """Every slice keeps exactly n - r of its own n positions (ascending raster positions)."""
    for stage, positions in enumerate(kept):
        groups, n, r = schedule.groups[stage], schedule.group_sizes[stage], schedule.rs[stage]
        assert positions.shape[1] == groups * (n - r)
        assert (np.diff(positions, axis=1) > 0).all(), "kept positions are not ascending"
        per_slice = positions.reshape(len(positions), groups, n - r) // n
        assert (per_slice == np.arange(groups).reshape(1, groups, 1)).all(), f"stage {stage}: a slice does not keep n - r of its own tokens"


def _run_ort_and_torch(exported: Exported, clips: np.ndarray):
    session = onnx_session(exported.path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"video": clips})
    with torch.no_grad():
        logits, kept = exported.model(torch.from_numpy(clips), return_kept=True)
    return got, logits.numpy(), [k.numpy() for k in kept]


# ----------------------------------------------------------------------------- small exports: the graph
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_small_export_is_static_with_per_slice_topk(exports, case):
    exported = exports(case)
    proto, manifest, schedule = exported.proto, exported.manifest, exported.model.schedule
    batch = _graph_batch(exported)
    symbol = batch if isinstance(batch, str) else None
    assert (symbol is not None) == (case.batch is None) == manifest["dynamic_batch"]
    # Static after shape inference (the batch symbol alone may stay symbolic), by our check and the exporter's.
    assert static_shape_problems(proto, batch_symbol=symbol) == []
    assert symbolic_dims(proto) == ({symbol} if symbol else set())
    assert check_static_shapes(proto, dynamic_batch=symbol is not None).ok
    onnx.checker.check_model(str(exported.path), full_check=True)
    # I/O: fp32 video of the configured clip; logits and the kept positions per STA stage.
    config = exported.model.config
    assert manifest["inputs"] == [{"name": "video", "shape": [batch, *config.input_shape], "dtype": "float32"}]
    assert manifest["outputs"] == [
        {"name": "logits", "shape": [batch, config.num_classes], "dtype": "float32"},
        *({"name": f"kept_stage{i}", "shape": [batch, tokens], "dtype": "int64"} for i, tokens in enumerate(schedule.tokens_per_stage)),
    ]
    assert manifest["family"] == "swin" and manifest["r1"] == case.r1
    assert manifest["schedule"] == schedule.as_dict()
    check_topk_per_slice(proto, schedule)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_small_export_validates_on_onnxruntime(exports, case):
    exported = exports(case)
    report = validate_onnx(exported.path, clips=3)
    assert report.passed, report.table()
    assert report.tolerances == FP32  # the ViT thresholds, unchanged for Swin
    assert report.max_abs <= 1e-4 and report.top1 == 1.0 and report.cosine >= FP32["cosine"]
    assert report.kept == [1.0, 1.0, 1.0] and report.kept_exact == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_small_export_kept_outputs_equal_pytorch_exactly(exports, case):
    exported = exports(case)
    batch = case.batch or 2
    clips = _clips(batch, exported.model.config.input_shape, seed=7)
    (logits, *kept), ref_logits, ref_kept = _run_ort_and_torch(exported, clips)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)
    assert len(kept) == len(ref_kept) == 3
    for got, want in zip(kept, ref_kept):
        assert got.dtype == np.int64 and got.shape == want.shape
        assert np.array_equal(got, want)  # same positions in the same order, no sorting
    check_kept_per_slice(kept, exported.model.schedule)
    if case.r1 == 0:
        grids = exported.model.config.grids[1:4]
        for got, grid in zip(kept, grids):
            assert np.array_equal(got, np.broadcast_to(np.arange(math.prod(grid)), got.shape))


def test_cli_validate_json_on_a_static_batch_of_two(exports):
    exported = exports(CASES[0])
    assert "{4x8, 4x3, 4x1}" in exported.export_output
    assert "tokens 784 -> 164 -> 52 -> 12" in exported.export_output
    code, out, err = run_cli("validate", exported.path, "--clips", 3, "--json")  # 3 clips: the last batch is padded
    assert code == 0, err
    data = json.loads(out)
    assert data["passed"] is True and data["clips"] == 3
    assert data["tolerances"] == FP32
    assert data["max_abs"] <= 1e-4 and data["top1"] == 1.0
    assert data["kept"] == [1.0, 1.0, 1.0] and data["kept_exact"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch_runs_with_batch_1_and_3(exports, batch):
    exported = exports(CASES[1])
    assert exported.manifest["dynamic_batch"] is True
    clips = _clips(batch, exported.model.config.input_shape, seed=batch)
    (logits, *kept), ref_logits, ref_kept = _run_ort_and_torch(exported, clips)
    assert logits.shape == (batch, exported.model.config.num_classes)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)
    for got, want in zip(kept, ref_kept):
        assert got.shape[0] == batch and np.array_equal(got, want)
    # Each clip is selected on its own: a clip's outputs do not depend on the rest of the batch.
    (alone_logits, *alone_kept), _, _ = _run_ort_and_torch(exported, clips[-1:])
    np.testing.assert_allclose(alone_logits[0], logits[-1], atol=1e-5, rtol=0)
    for got, alone in zip(kept, alone_kept):
        assert np.array_equal(got[-1], alone[0])


@pytest.mark.skipif(not HAS_RTX, reason=NO_RTX)
def test_tensorrt_rtx_parses_and_builds_a_small_pruned_swin(exports):
    from sta_deploy.runtime.trt_parse import parse_check

    exported = exports(CASES[0])
    schedule = exported.model.schedule
    report = parse_check(exported.path, build=True)
    assert report.flavour == "tensorrt_rtx" and report.engine_bytes
    assert report.inputs == [{"name": "video", "shape": [2, 3, 8, 56, 56], "dtype": "DataType.FLOAT"}]
    shapes = {o["name"]: o["shape"] for o in report.outputs}
    assert shapes == {"logits": [2, 10], **{f"kept_stage{i}": [2, t] for i, t in enumerate(schedule.tokens_per_stage)}}


@pytest.mark.skipif(not HAS_RTX, reason=NO_RTX)
def test_tensorrt_rtx_parses_and_builds_the_dynamic_batch_swin(exports):
    from sta_deploy.runtime.trt_parse import parse_check

    exported = exports(CASES[1])
    report = parse_check(exported.path, batch_profile=(1, 2, 3))  # built for batches 1..3
    assert report.inputs[0]["shape"] == [-1, 3, 16, 112, 112]
    assert [o["shape"][0] for o in report.outputs] == [-1] * 4
    assert report.engine_bytes


# ----------------------------------------------------------------------------- SSv2 Swin-B FLOPs via the CLI
SSV2_ARGS = ["--model", "swin_b", "--window-size", "16,7,7", "--num-classes", "174"]


@pytest.mark.parametrize("r1, paper", [(0, 321), (192, 241), (256, 215), (320, 188)])
def test_cli_flops_ssv2_swin_b(r1, paper):
    code, out, err = run_cli("flops", *SSV2_ARGS, "--r1", r1, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["model"] == "swin_b" and data["r1"] == r1
    assert abs(data["gflops"] - paper) <= 1.0, (r1, data["gflops"], paper)
    drops = {0: (0, 0, 0), 192: (192, 72, 24), 256: (256, 96, 32), 320: (320, 120, 40)}[r1]
    assert data["tokens_per_stage"] == [16 * (784 - drops[0]), 16 * (196 - drops[1]), 16 * (49 - drops[2])]


@pytest.mark.parametrize(
    "r1, message",
    [(100, "not a multiple of 8"), (260, "not a multiple of 8"), (392, "the largest r1 for this model is 384"), (800, "the largest r1 for this model is 384")],
)
def test_cli_flops_ssv2_swin_b_impossible_r1(r1, message):
    code, out, err = run_cli("flops", *SSV2_ARGS, "--r1", r1, "--json")
    assert code == 1
    assert out == ""
    assert message in error_line(err, only_line=True)


# ----------------------------------------------------------------------------- full size
@pytest.mark.slow
def test_full_size_swin_t_r256_export_and_validate(tmp_path):
    """`sta-deploy export --model swin_t --r1 256` (+ --with-kept) and `sta-deploy validate` on it."""
    path = tmp_path / "swin_t_r256.onnx"
    code, out, err = run_cli("export", "--model", "swin_t", "--r1", 256, "--with-kept", "--no-validate", "-o", path)
    assert code == 0, err
    assert "{16x256, 16x96, 16x32}" in out and "tokens 50176 -> 8448 -> 1600 -> 272" in out
    manifest = read_manifest(path)
    assert manifest["config"]["embed_dim"] == 96 and manifest["config"]["depths"] == [2, 2, 6, 2]
    assert manifest["schedule"]["tokens_per_stage"] == [16 * 528, 16 * 100, 16 * 17]
    assert manifest["inputs"] == [{"name": "video", "shape": [1, 3, 32, 224, 224], "dtype": "float32"}]
    assert [o["shape"] for o in manifest["outputs"]] == [[1, 400], [1, 8448], [1, 1600], [1, 272]]

    proto = onnx.load(str(path))
    assert static_shape_problems(proto) == []
    schedule = get_entry("swin_t").config.schedule(256)
    check_topk_per_slice(proto, schedule)  # k <= 3840: 528, 100 and 17 per slice (never 8448 over a stage)
    # The nearest-kept fill at 224 pixels takes the encoded-key min-reduction, one per STA stage (ONNX
    # Runtime's ArgMin was 5-7x slower on the same input); the validation below checks its choices.
    producer = {output: node.op_type for node in proto.graph.node for output in node.output}
    assert not [node for node in proto.graph.node if node.op_type == "ArgMin"]
    assert len([node for node in proto.graph.node if node.op_type == "ReduceMin" and producer.get(node.input[0]) == "MatMul"]) == 3
    del proto

    code, out, err = run_cli("validate", path, "--clips", 2, "--json")
    assert code == 0, err + out
    data = json.loads(out)
    assert data["passed"] is True and data["tolerances"] == FP32
    assert data["max_abs"] <= 1e-4 and data["top1"] == 1.0
    assert data["kept"] == [1.0, 1.0, 1.0] and data["kept_exact"] == [1.0, 1.0, 1.0]

    if HAS_RTX:  # TensorRT's parser accepts the full-size graph (building an engine on CPU is too slow for CI)
        from sta_deploy.runtime.trt_parse import parse_check

        report = parse_check(path, build=False)
        assert {o["name"]: o["shape"] for o in report.outputs}["kept_stage0"] == [1, 8448]
