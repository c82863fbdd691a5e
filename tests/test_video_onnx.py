"""predict / evaluate / visualize on an exported ONNX model give the PyTorch model's answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("onnxruntime")

from sta_deploy import create_model
from sta_deploy.video.synthetic import moving_shapes, write_video

TINY = dict(embed_dim=32, depth=3, num_heads=2, img_size=64, num_frames=16, num_classes=6)
TINY_ARGS = ["--model", "vit_s", "--embed-dim", "32", "--depth", "3", "--num-heads", "2", "--img-size", "64", "--num-classes", "6"]
R1 = 4


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test in this module runs PyTorch on one thread (fixture in conftest.py)."""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A seeded tiny ViT at r1=4, static batch 2 (so 3 views need a padded second batch), with kept outputs."""
    from sta_deploy.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    model = create_model("vit_s", r1=R1, seed=0, **TINY)
    export_onnx(model, folder / "tiny.onnx", batch_size=2, with_kept=True)
    return folder / "tiny.onnx"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_clips")
    for label in range(3):
        (root / f"class{label}").mkdir()
        for index in range(2):
            suffix = [".mp4", ".webm", ".avi"][(label + index) % 3]
            write_video(root / f"class{label}" / f"clip{index}{suffix}", moving_shapes(36, 48, 72, seed=10 * label + index, kind=label))
    return root


def test_predict_onnx_matches_pytorch(cli, exported, dataset):
    clips = sorted(str(p) for p in dataset.rglob("clip*"))
    common = ["predict", *clips, "--views", "1x3", "--top", "6", "--json"]
    code, out, _ = cli(*common, "--onnx", exported)
    assert code == 0
    onnx = json.loads(out)
    code, out, _ = cli(*common, *TINY_ARGS, "--r1", R1)
    assert code == 0
    torch_run = json.loads(out)
    assert onnx["backend"] == "onnxruntime" and torch_run["backend"] == "pytorch" and onnx["r1"] == R1
    assert len(onnx["results"]) == len(torch_run["results"]) == 6
    for a, b in zip(onnx["results"], torch_run["results"]):
        assert a["path"] == b["path"]
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        assert np.allclose([t["score"] for t in a["top"]], [t["score"] for t in b["top"]], atol=1e-5)


def test_predict_onnx_refuses_a_different_r1(cli, exported, dataset):
    code, _, err = cli("predict", next(dataset.rglob("*.mp4")), "--onnx", exported, "--r1", "8")
    assert code == 2 and "exported with r1=4" in err


def test_evaluate_onnx_matches_pytorch(cli, exported, dataset, tmp_path):
    common = ["evaluate", dataset, "--views", "1x3", "--no-progress", "--no-plot", "--json"]
    code, out, err = cli(*common, "--onnx", exported, "-o", tmp_path / "onnx")
    assert code == 0, err
    onnx_summary = json.loads(out)
    code, out, err = cli(*common, *TINY_ARGS, "--r1", R1, "-o", tmp_path / "torch")
    assert code == 0, err
    torch_summary = json.loads(out)
    # r1 = 0 runs on PyTorch (rebuilt from the manifest) beside the ONNX model
    assert [(r["r1"], r["backend"]) for r in onnx_summary["results"]] == [(0, "pytorch"), (R1, "onnxruntime")]
    for a, b in zip(onnx_summary["results"], torch_summary["results"]):
        assert (a["r1"], a["top1"], a["top5"], a["clips"]) == (b["r1"], b["top1"], b["top5"], b["clips"])
        assert a["gflops"] == pytest.approx(b["gflops"])

    def per_clip(path):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return {r["clip"]: r["results"] for r in records if "clip" in r}

    onnx_records, torch_records = per_clip(tmp_path / "onnx.jsonl"), per_clip(tmp_path / "torch.jsonl")
    assert onnx_records.keys() == torch_records.keys() and len(onnx_records) == 6
    for key in onnx_records:
        for r1 in ("0", str(R1)):
            assert onnx_records[key][r1]["top5"] == torch_records[key][r1]["top5"]
            assert onnx_records[key][r1]["score"] == pytest.approx(torch_records[key][r1]["score"], abs=1e-5)


def test_visualize_onnx_matches_pytorch(cli, exported, dataset, tmp_path):
    from PIL import Image

    clip = next(dataset.rglob("*.mp4"))
    code, _, err = cli("visualize", clip, "-o", tmp_path / "onnx.png", "--onnx", exported)
    assert code == 0, err
    code, _, err = cli("visualize", clip, "-o", tmp_path / "torch.png", *TINY_ARGS, "--r1", R1)
    assert code == 0, err
    onnx_image = np.asarray(Image.open(tmp_path / "onnx.png").convert("RGB"))
    torch_image = np.asarray(Image.open(tmp_path / "torch.png").convert("RGB"))
    # the title names the model, r1 and clip, not the backend: the pictures are identical
    assert onnx_image.shape == torch_image.shape and (onnx_image == torch_image).all()
