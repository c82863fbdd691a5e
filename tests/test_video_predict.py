"""``sta-deploy predict`` on generated clips: top-k per file, view averaging, labels, failures reported at the end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from sta_deploy import ConfigError, create_model
from sta_deploy.video.backends import TorchBackend
from sta_deploy.video.clips import load_views
from sta_deploy.video.labels import labels_from_hf_config, read_labels_file, resolve_labels
from sta_deploy.video.predict import average_views, predict_clip, protocol_for_backend, softmax
from sta_deploy.video.synthetic import moving_shapes, write_frame_folder, write_video

TINY = dict(embed_dim=32, depth=3, num_heads=2, img_size=64, num_frames=16, num_classes=7)
TINY_ARGS = ["--model", "vit_s", "--embed-dim", "32", "--depth", "3", "--num-heads", "2", "--img-size", "64", "--num-classes", "7"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test in this module runs PyTorch on one thread (fixture in conftest.py)."""


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    write_video(root / "a.mp4", moving_shapes(40, 48, 80, seed=1))
    write_video(root / "b.webm", moving_shapes(36, 64, 48, seed=2))
    write_frame_folder(root / "c_frames", moving_shapes(20, 64, 64, seed=3))
    write_video(root / "short.avi", moving_shapes(8, 48, 64, seed=4))
    (root / "broken.mp4").write_bytes(b"\x00garbage" * 300)
    return root


def test_average_views():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    assert np.allclose(average_views(logits, "logits"), softmax(np.array([1.0, 2.0, 0.0])))
    assert np.allclose(average_views(logits, "prob"), softmax(logits).mean(axis=0))


def test_predict_clip_is_the_mean_over_views(clips):
    model = create_model("vit_s", r1=4, seed=0, **TINY)
    backend = TorchBackend(model, source="test")
    protocol = protocol_for_backend(backend, views="2x3")
    prediction = predict_clip(backend, clips / "a.mp4", protocol, top=3)
    views = load_views(clips / "a.mp4", protocol).tensors()
    assert views.shape == (6, 3, 16, 64, 64)
    with torch.no_grad():
        logits = model(torch.from_numpy(views)).numpy()
    expected = softmax(logits.astype(np.float64).mean(axis=0))
    assert prediction.classes == np.argsort(-expected, kind="stable")[:3].tolist()
    assert np.allclose(prediction.scores, np.sort(expected)[::-1][:3], atol=1e-6)
    assert prediction.views == 6 and prediction.total_frames == 40


def test_predict_cli_reports_failures_at_the_end(cli, clips):
    labels = clips / "labels.txt"
    labels.write_text("\n".join(f"action {i}" for i in range(7)) + "\n")
    code, out, err = cli(
        "predict", clips / "a.mp4", clips / "broken.mp4", clips / "b.webm", clips / "short.avi", clips / "c_frames",
        *TINY_ARGS, "--r1", "4", "--views", "1x3", "--top", "2", "--labels", labels,
    )
    assert code == 1
    assert "a.mp4  (3 views, 40 frames" in out and "b.webm  (3 views, 36 frames" in out and "c_frames  (3 views, 20 frames" in out
    assert out.count("  1. action ") == 3 and out.count("  2. action ") == 3
    assert "broken.mp4: skipped (not a readable video" in out
    assert "short.avi: skipped (too short: 8 frame(s)" in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("sta-deploy: error: 2 of 5 clip(s) could not be used:") and "broken.mp4" in last and "short.avi" in last
    assert "random weights" in err


def test_predict_cli_json(cli, clips):
    code, out, _ = cli("predict", clips / "a.mp4", clips / "short.avi", *TINY_ARGS, "--r1", "4", "--views", "1x1", "--json", "--min-frames", "1")
    assert code == 0
    payload = json.loads(out)
    assert [r["path"] for r in payload["results"]] == [str(clips / "a.mp4"), str(clips / "short.avi")]
    top = payload["results"][0]["top"]
    assert len(top) == 5 and top[0]["label"] == f"class_{top[0]['class']}" and top[0]["score"] >= top[1]["score"]
    assert payload["protocol"]["temporal_views"] == 1 and payload["protocol"]["min_frames"] == 1
    assert payload["failed"] == [] and payload["r1"] == 4 and payload["backend"] == "pytorch"


def test_predict_cli_unknown_views(cli, clips):
    code, _, err = cli("predict", clips / "a.mp4", *TINY_ARGS, "--views", "3")
    assert code == 1 and "views must look like TxS" in err


# ----------------------------------------------------------------------------- labels
def test_labels_file_forms(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("abseiling\nair drumming\n\n")
    assert read_labels_file(plain) == ["abseiling", "air drumming"]
    indexed = tmp_path / "indexed.csv"
    indexed.write_text("1,air drumming\n0,abseiling\n")
    assert read_labels_file(indexed) == ["abseiling", "air drumming"]
    with pytest.raises(ConfigError, match="has 2 names but the model has 3 classes"):
        resolve_labels(3, labels_file=plain)


def test_labels_from_hf_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"1": "b", "0": "a", "2": "c"}}))
    assert labels_from_hf_config(tmp_path) == ["a", "b", "c"]
    assert resolve_labels(3, checkpoint=tmp_path) == (["a", "b", "c"], f"{tmp_path} (id2label)")
    assert resolve_labels(4, checkpoint=tmp_path)[0] == ["class_0", "class_1", "class_2", "class_3"]
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}))
    assert labels_from_hf_config(tmp_path) is None


def test_predict_save_views_writes_the_exact_model_input(cli, clips, tmp_path):
    """--save-views: each clip's input as <name>.views.npy; the model on that file gives the printed scores."""
    folder = tmp_path / "views"
    code, out, _ = cli("predict", clips / "a.mp4", clips / "c_frames", clips / "broken.mp4", *TINY_ARGS, "--r1", "4", "--views", "2x1", "--json", "--save-views", folder)
    assert code == 1  # broken.mp4 is still reported
    results = json.loads(out.strip().splitlines()[-1])["results"]
    assert sorted(p.name for p in folder.iterdir()) == ["a.mp4.views.npy", "c_frames.views.npy"]  # nothing half-written
    model = create_model("vit_s", r1=4, seed=0, **TINY)
    protocol = protocol_for_backend(TorchBackend(model, source="test"), views="2x1")
    for result, name in zip(results, ["a.mp4", "c_frames"]):
        saved = np.load(result["views_file"])
        assert saved.dtype == np.float32 and saved.shape == (2, 3, 16, 64, 64)
        assert np.array_equal(saved, load_views(clips / name, protocol).tensors())
        with torch.no_grad():
            expected = softmax(model(torch.from_numpy(saved)).double().numpy().mean(axis=0))
        assert result["top"][0]["class"] == int(np.argmax(expected))
        assert result["top"][0]["score"] == pytest.approx(float(expected.max()), abs=1e-5)
