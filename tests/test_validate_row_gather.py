"""ViT's STA token gather in its two exported forms (sta.gather_tokens): one Gather of rows (static
batch) and GatherElements over an expanded index (dynamic batch).  The selection reader
(sta_deploy.export.selection_graph) must find both; the row form must compute the very same logits.

Expectations: the export's own kept_stage outputs, the PyTorch reference's own selections, and an
export of the same model made with the GatherElements form (the test's copy of it, patched in).
"""

from __future__ import annotations

import tempfile

import numpy as np
import onnx
import pytest
import torch

import sta_deploy
from sta_deploy import sta
from sta_deploy.export.manifest import read_manifest
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.export.selection_graph import find_stage_selections, write_selection_model
from sta_deploy.runtime.onnxrt import onnx_session, run_session
from sta_deploy.validate import seeded_clips, validate_onnx

from test_export_helpers import TINY

R1 = 48
BATCH = 2  # a static batch above 1: the row offsets b * N are not all zero


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one PyTorch thread is faster on the shared 2-core machine (conftest.py)."""


def element_gather_tokens(values, indices):
    """The GatherElements form of sta.gather_tokens (what every export used before the row Gather)."""
    return values.gather(1, indices.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("row_gather")
    model = sta_deploy.create_model("vit_s", r1=R1, seed=0, **TINY)
    made = {
        "rows": export_onnx(model, folder / "rows.onnx", with_kept=True, batch_size=BATCH).path,
        "dynamic": export_onnx(model, folder / "dynamic.onnx", with_kept=True, dynamic_batch=True).path,
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sta, "gather_tokens", element_gather_tokens)
        made["elements"] = export_onnx(model, folder / "elements.onnx", with_kept=True, batch_size=BATCH).path
    return made


def consumers_of(proto, name: str, depth: int) -> list[str]:
    """Op types met walking ``depth`` steps down from tensor ``name`` (breadth first)."""
    found, frontier = [], {name}
    for _ in range(depth):
        nodes = [node for node in proto.graph.node if frontier & set(node.input)]
        found += [node.op_type for node in nodes]
        frontier = {output for node in nodes for output in node.output}
    return found


def stage_token_gathers(proto) -> dict:
    """Count of each gather op type whose data is a stage's block output, by op type."""
    counts = {"Gather(axis=0)": 0, "GatherElements": 0}
    for node in proto.graph.node:
        scope = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        if "sta_stages" not in scope:
            continue
        if node.op_type == "GatherElements":
            counts["GatherElements"] += 1
        elif node.op_type == "Gather" and all(a.i == 0 for a in node.attribute if a.name == "axis"):
            counts["Gather(axis=0)"] += 1
    return counts


def test_static_batch_gathers_rows_and_dynamic_batch_gathers_elements(exports):
    rows, dynamic = (onnx.load(str(exports[name])) for name in ("rows", "dynamic"))
    # Static: every token gather is a row Gather; the GatherElements left take rank-2 data (scores,
    # positions) by their index as it is: no Expand feeds one.
    assert stage_token_gathers(rows)["Gather(axis=0)"] > 0
    assert not [n for n in rows.graph.node if n.op_type == "Expand" and "GatherElements" in consumers_of(rows, n.output[0], 1)]
    assert stage_token_gathers(dynamic)["Gather(axis=0)"] == 0
    for form, proto in (("rows", rows), ("dynamic", dynamic)):
        names = find_stage_selections(proto, read_manifest(exports[form])["schedule"])
        assert None not in names
        for name in names:
            below = consumers_of(proto, name, 3)
            if form == "rows":  # (B, K) index + batch-row offsets -> Reshape -> Gather of rows
                assert {"Add", "Reshape", "Gather"} <= set(below) and "Expand" not in below, below
            else:  # Unsqueeze -> Expand -> GatherElements
                assert {"Unsqueeze", "Expand", "GatherElements"} <= set(below), below


def selections_and_outputs(path, clips):
    manifest = read_manifest(path)
    with tempfile.TemporaryDirectory() as scratch:
        copy, names = write_selection_model(path, manifest["schedule"], scratch)
        outputs = run_session(onnx_session(copy, providers=["CPUExecutionProvider"]), manifest, clips)
    return outputs, [outputs[name] for name in names]


@pytest.mark.parametrize("form", ["rows", "dynamic"])
def test_selections_compose_to_the_exports_own_kept_outputs(exports, form):
    """Stage i's selection indexes stage i-1's kept tokens: composed, they are the kept_stage outputs,
    clip by clip (the second clip of a static batch of 2 is read past its batch offset)."""
    data = seeded_clips(2 * BATCH, (3, 16, 224, 224), seed=21)
    outputs, selections = selections_and_outputs(exports[form], data)
    for index in range(len(data)):
        positions = np.arange(8 * 196)
        for stage, selection in enumerate(selections):
            assert selection.shape == (len(data), outputs[f"kept_stage{stage}"].shape[1])
            positions = positions[selection[index]]
            np.testing.assert_array_equal(np.sort(positions), outputs[f"kept_stage{stage}"][index])


def test_row_gather_selections_are_the_references_own(exports):
    data = seeded_clips(BATCH, (3, 16, 224, 224), seed=22)
    _, selections = selections_and_outputs(exports["rows"], data)
    model = sta_deploy.create_model("vit_s", r1=R1, seed=0, **TINY)
    for index in range(BATCH):
        flats = []

        def record(metric_groups, semantic, r, backward):
            kept = sta.group_kept_indices(metric_groups, semantic, r, backward)
            groups, n = metric_groups.shape[1:3]
            flats.append((kept + (torch.arange(groups) * n).view(1, -1, 1)).reshape(-1))
            return kept

        with torch.no_grad(), sta.selection_override(record):
            model(torch.from_numpy(data[index : index + 1]))
        for stage, flat in enumerate(flats):
            np.testing.assert_array_equal(selections[stage][index], flat.numpy())


def test_onnxruntime_logits_are_bit_identical_in_both_gather_forms(exports):
    """A gather copies values, whatever the op: the row form and the GatherElements form of the same
    static-batch model give the same bits on ONNX Runtime."""
    elements = onnx.load(str(exports["elements"]))
    assert stage_token_gathers(elements)["Gather(axis=0)"] == 0  # the patch really made the old form
    data = seeded_clips(2 * BATCH, (3, 16, 224, 224), seed=23)
    results = {}
    for form in ("rows", "elements"):
        session = onnx_session(exports[form], providers=["CPUExecutionProvider"])
        results[form] = run_session(session, read_manifest(exports[form]), data)
    for name in ("logits", "kept_stage0", "kept_stage1", "kept_stage2"):
        np.testing.assert_array_equal(results["rows"][name], results["elements"][name])


@pytest.mark.parametrize("form", ["rows", "dynamic"])
def test_both_forms_validate_with_every_stage_replayed(exports, form):
    report = validate_onnx(exports[form], clips=2)
    assert report.passed, report.table()
    assert [(s["clips"], s["identical"]) for s in report.stages] == [(2, 2)] * 3
