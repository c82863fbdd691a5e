"""Validation must catch real bugs: a correct export is broken on purpose and ``validate`` must FAIL,
naming the stage.  Graph bugs are ONNX edits of the exported file (its manifest's checksum updated,
as a buggy exporter would have written it); schedule bugs (r, direction) are exports of a model whose
STA stage was changed, with a manifest that still claims the correct schedule.

The model is a tiny vit_s at r1 = 48 (8 groups of 196 tokens: stage 0 forward over 8 groups, stage 1
backward over 4, stage 2 forward over 2), validated on 2 seeded clips.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import sta_deploy
from sta_deploy._io import sha256_file
from sta_deploy.export.manifest import manifest_path
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.validate import validate_onnx

from test_export_helpers import TINY, error_line, run_cli

R1 = 48
CLIPS = 2


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one PyTorch thread is faster on the shared 2-core machine (conftest.py)."""


@pytest.fixture(scope="module")
def correct(tmp_path_factory):
    model = sta_deploy.create_model("vit_s", r1=R1, seed=0, **TINY)
    return export_onnx(model, tmp_path_factory.mktemp("correct") / "vit.onnx", with_kept=True).path


# ----------------------------------------------------------------------------- graph edits
def in_stage(node, stage: int) -> bool:
    return any(p.key == "namespace" and f"sta_stages.{stage}:" in p.value for p in node.metadata_props)


def constant(proto, name: str) -> np.ndarray:
    for tensor in proto.graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    node = next(n for n in proto.graph.node if n.op_type == "Constant" and name in n.output)
    return numpy_helper.to_array(node.attribute[0].t)


def mutated(source, folder, edit):
    """A copy of the export at ``source`` with ``edit(proto)`` applied and its manifest's checksum updated."""
    target = folder / "mutant.onnx"
    proto = onnx.load(str(source))
    edit(proto)
    onnx.save(proto, str(target))
    manifest = json.loads(manifest_path(source).read_text())
    manifest.update(onnx_file=target.name, onnx_sha256=sha256_file(target))
    manifest_path(target).write_text(json.dumps(manifest))
    return target


def score_topks(proto, stage: int) -> list:
    """The stage's TopK nodes that rank accumulated scores (not the first group's A-token ranking), in graph order."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    return [n for n in proto.graph.node if n.op_type == "TopK" and in_stage(n, stage) and producer[n.input[0]].op_type == "Mul"]


def topk_group(proto, topk) -> int:
    """Which group a score TopK ranks: score = accumulated * (1 - semantic[:, group]) with a constant group index."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    one_minus_semantic = producer[producer[topk.input[0]].input[1]]
    select = producer[one_minus_semantic.input[1]]
    return int(constant(proto, select.input[1]))


def group_offsets_add(proto, stage: int):
    """The Add of ``kept_in_group + group_offsets`` (the constant (1, G, 1) of multiples of the group size)."""
    # Rank 3: the static-batch token gathers add (B, 1) batch-row offsets to their indices too.
    group_offsets = {t.name for t in proto.graph.initializer if len(t.dims) == 3}
    return next(n for n in proto.graph.node if n.op_type == "Add" and in_stage(n, stage) and n.input[1] in group_offsets)


def failures_naming(report, stage: int) -> list[str]:
    return [f for f in report.failures if f.startswith(f"stage {stage} ")]


def assert_fails_at(report, stage: int):
    assert not report.passed
    assert failures_naming(report, stage), report.table()
    assert report.stages[stage]["mismatch"] > 0, report.table()
    for earlier in range(stage):  # the stages before the bug are still judged correct
        assert report.stages[earlier]["mismatch"] == 0, report.table()


# ----------------------------------------------------------------------------- the tests
def test_the_unmutated_export_passes(correct):
    report = validate_onnx(correct, clips=CLIPS)
    assert report.passed, report.table()


def test_topk_largest_instead_of_smallest_in_one_group(correct, tmp_path):
    proto = onnx.load(str(correct))
    topk = score_topks(proto, 1)[1]
    group = topk_group(proto, topk)

    def largest(model):
        node = next(n for n in model.graph.node if n.name == topk.name)
        next(a for a in node.attribute if a.name == "largest").i = 1

    report = validate_onnx(mutated(correct, tmp_path, largest), clips=CLIPS)
    assert_fails_at(report, 1)
    assert report.stages[1]["first_mismatch"]["group"] == group
    assert f"group {group}:" in failures_naming(report, 1)[0]


def test_group_boundary_shifted_by_one_token(correct, tmp_path):
    def shift(model):
        add = group_offsets_add(model, 1)
        tensor = next(t for t in model.graph.initializer if t.name == add.input[1])
        offsets = numpy_helper.to_array(tensor).copy()
        assert offsets.ravel().tolist() == [0, 296, 592, 888]  # 4 groups of 2 x (196 - 48) tokens
        offsets[0, 1, 0] += 1
        tensor.CopyFrom(numpy_helper.from_array(offsets, tensor.name))

    report = validate_onnx(mutated(correct, tmp_path, shift), clips=CLIPS)
    assert_fails_at(report, 1)
    assert report.stages[1]["first_mismatch"]["group"] == 1


def reverse_last_stage(model) -> None:
    """Reverse every group's kept order in stage 2 (a Slice in front of the group-offset Add)."""
    add = group_offsets_add(model, 2)
    stacked = add.input[0]  # (B, G, n - r) kept indices per group
    names = [f"reverse_{k}" for k in ("starts", "ends", "axes", "steps")]
    values = [[-1], [-(2**62)], [2], [-1]]
    model.graph.initializer.extend(numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in zip(names, values))
    model.graph.node.append(helper.make_node("Slice", [stacked, *names], ["reversed_kept"], name="reverse_kept"))
    add.input[0] = "reversed_kept"
    onnx_sort(model)


def test_kept_order_reversed_in_the_last_stage(correct, tmp_path):
    """The last stage's order changes no logit (mean pool), so only the order check can see it."""
    report = validate_onnx(mutated(correct, tmp_path, reverse_last_stage), clips=CLIPS)
    assert report.max_abs <= 1e-4, report.table()  # the logits agree...
    assert_fails_at(report, 2)  # ...and the stage still fails
    assert "placed before" in failures_naming(report, 2)[0] or "odd-position (B)" in failures_naming(report, 2)[0]


def onnx_sort(model) -> None:
    """Topologically sort the graph's nodes (the appended Slice must come before its consumer)."""
    available = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        assert ready, "graph has a cycle"
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        pending = [n for n in pending if n not in ready]
    del model.graph.node[:]
    model.graph.node.extend(ordered)


@pytest.mark.parametrize("change", ["r", "direction"])
def test_schedule_changed_in_one_stage(tmp_path, change):
    model = sta_deploy.create_model("vit_s", r1=R1, seed=0, **TINY)
    if change == "r":
        model.sta_stages[1].r = R1 - 8
    else:
        model.sta_stages[1].backward = False
    path = export_onnx(model, tmp_path / "bug.onnx", with_kept=True).path  # the manifest claims r1 = 48, F-B-F
    report = validate_onnx(path, clips=CLIPS)
    assert_fails_at(report, 1)
    if change == "r":
        assert "the backend keeps 1024 tokens, the schedule 4 groups x 248 = 992" in failures_naming(report, 1)[0]


def test_one_nan_logit_fails_although_top1_agrees(correct, tmp_path):
    def nan_logit(model):
        row = np.zeros((1, 400), dtype=np.float32)
        row[0, 7] = np.nan
        append_to_logits(model, "Add", row)

    report = validate_onnx(mutated(correct, tmp_path, nan_logit), clips=CLIPS)
    assert report.top1 == 1.0
    assert not report.passed
    assert "backend logits are not finite (2 NaN/inf values, clips 0, 1)" in report.failures
    assert report.as_dict()["max_abs"] is None  # NaN is not valid JSON


def test_all_logits_times_1_001_fail(correct, tmp_path):
    report = validate_onnx(mutated(correct, tmp_path, lambda m: append_to_logits(m, "Mul", np.float32(1.001))), clips=CLIPS)
    assert [f for f in report.failures if f.startswith("max |diff|")], report.table()
    assert all(s["mismatch"] == 0 for s in report.stages)  # the tokens are still right


def append_to_logits(model, op: str, value) -> None:
    """logits <- op(logits, value): rename the producer's output and append the op under the old name."""
    producer = next(n for n in model.graph.node if "logits" in n.output)
    producer.output[list(producer.output).index("logits")] = "logits_before"
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), "mutation_value"))
    model.graph.node.append(helper.make_node(op, ["logits_before", "mutation_value"], ["logits"], name="mutation"))


def test_kept_output_that_lies_about_the_kept_tokens(correct, tmp_path):
    """kept_stage1 shifted by one position while the graph itself keeps the right tokens."""

    def shift_output(model):
        producer = next(n for n in model.graph.node if "kept_stage1" in n.output)
        producer.output[list(producer.output).index("kept_stage1")] = "kept_stage1_before"
        model.graph.initializer.append(numpy_helper.from_array(np.array(1, dtype=np.int64), "one"))
        model.graph.node.append(helper.make_node("Add", ["kept_stage1_before", "one"], ["kept_stage1"], name="shift_kept"))

    report = validate_onnx(mutated(correct, tmp_path, shift_output), clips=CLIPS)
    assert report.failures == ["kept_stage1 output is not the set of tokens the graph kept at stage 1 (clips 0, 1)"]


def test_cli_names_the_stage_in_one_line(correct, tmp_path):
    proto = onnx.load(str(correct))
    name = score_topks(proto, 0)[0].name

    def largest(model):
        next(a for a in next(n for n in model.graph.node if n.name == name).attribute if a.name == "largest").i = 1

    code, out, err = run_cli("validate", mutated(correct, tmp_path, largest), "--clips", 1)
    assert code == 1
    line = error_line(err, only_line=True)
    assert line.startswith("sta-deploy: error: validation failed: stage 0 (forward): 1 of 1 clip(s) keep tokens the reference would not")
    assert "kept tokens stage 0 (forward)   0 identical, 0 near-tie, 1 mismatch" in out


NO_PLUGIN_RUNTIME = importlib.util.find_spec("onnxruntime_extensions") is None or shutil.which("cmake") is None


@pytest.mark.skipif(NO_PLUGIN_RUNTIME, reason="plugin graphs on ONNX Runtime need onnxruntime-extensions and cmake")
def test_plugin_node_with_the_wrong_direction(tmp_path):
    """--sta-impl plugin: the STAStageSelect node of stage 1 told to walk forward."""
    from sta_deploy.plugin.names import PLUGIN_OP_TYPE

    model = sta_deploy.create_model("vit_s", r1=R1, seed=0, **TINY)
    plugin = export_onnx(model, tmp_path / "plugin.onnx", sta_impl="plugin").path
    assert validate_onnx(plugin, clips=1).passed

    def forward(proto):
        node = [n for n in proto.graph.node if n.op_type == PLUGIN_OP_TYPE][1]
        attribute = next(a for a in node.attribute if a.name == "backward")
        assert attribute.i == 1
        attribute.i = 0

    (tmp_path / "bug").mkdir()
    report = validate_onnx(mutated(plugin, tmp_path / "bug", forward), clips=1)
    assert_fails_at(report, 1)


# ----------------------------------------------------------------------------- the same through OpenVINO
def _openvino_has_bf16() -> bool:
    import openvino

    from sta_deploy.runtime.openvino import cpu_has_bf16

    return cpu_has_bf16(openvino.Core())


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_replays_the_selection_and_names_the_stage(correct, tmp_path, precision):
    """OpenVINO's choices go through the same replay: a reversed last-stage order (same kept sets, same
    logits) fails at stage 2, also at bf16 where near-ties are allowed up to bf16's margin."""
    pytest.importorskip("openvino")
    from sta_deploy.validate import validate_openvino

    if precision == "bf16" and not _openvino_has_bf16():
        pytest.skip("this CPU has no bf16 instructions")
    assert validate_openvino(correct, precision=precision, clips=1, cache_dir=False).passed
    report = validate_openvino(mutated(correct, tmp_path, reverse_last_stage), precision=precision, clips=1, cache_dir=False)
    if precision == "f32":  # the sets are the reference's own: a set comparison would pass it
        assert report.kept_exact == [1.0, 1.0, 1.0]
    assert_fails_at(report, 2)
    assert report.stages[2]["first_mismatch"]["margin"] > report.tolerances["margin"]


def test_openvino_cli_names_the_group_of_a_largest_topk(correct, tmp_path):
    pytest.importorskip("openvino")
    proto = onnx.load(str(correct))
    topk = score_topks(proto, 1)[1]
    group = topk_group(proto, topk)

    def largest(model):
        next(a for a in next(n for n in model.graph.node if n.name == topk.name).attribute if a.name == "largest").i = 1

    code, out, err = run_cli("validate", mutated(correct, tmp_path, largest), "--clips", 1, "--backend", "openvino")
    assert code == 1
    line = error_line(err, only_line=True)
    assert line.startswith("sta-deploy: error: validation failed: stage 1 (backward): 1 of 1 clip(s) keep tokens the reference would not")
    assert f"group {group}:" in line
    assert "openvino (CPU, f32) vs PyTorch on 1 clips" in out
    assert "kept tokens stage 0 (forward)   1 identical, 0 near-tie, 0 mismatch" in out
    assert "kept tokens stage 1 (backward)  0 identical, 0 near-tie, 1 mismatch" in out
