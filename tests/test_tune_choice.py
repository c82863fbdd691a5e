"""``tune``'s pieces without a sweep: the r1 values, the budget choice and Pareto front, recipes, clip sets."""

from __future__ import annotations

import numpy as np
import pytest

from sta_deploy import ConfigError
from sta_deploy.export.recipes import load_recipe
from sta_deploy.schedule import max_r1
from sta_deploy.video.tune_choice import Budget, PointResult, choose, pareto_front
from sta_deploy.video.tune_clips import read_clip_set
from sta_deploy.video.tune_measures import accuracy_cost, clip_logits
from sta_deploy.video.tune_points import Point, default_r1_sweep, sweep_points, valid_r1_values


def test_default_sweep_runs_from_0_to_the_largest_valid_r1():
    assert max_r1(196) == 111
    assert default_r1_sweep("vit_b", {}) == [0, 16, 32, 48, 64, 80, 96, 111]  # steps of 16, the paper's 32/48/64 among them
    swin = default_r1_sweep("swin_t", {})
    assert swin[0] == 0 and swin[-1] == valid_r1_values("swin_t", {})[-1] and all(r % 8 == 0 for r in swin)
    assert {192, 256, 320} <= set(swin)
    # every point of a sweep on one backend, with the unpruned fp32 baseline added
    assert [p.key for p in sweep_points([0, 8], "openvino", ["int8"])] == ["r0_openvino_fp32", "r0_openvino_int8", "r8_openvino_int8"]


def _result(r1, ms, agreement, kl=0.0, precision="fp32", gflops=None):
    measures = {"top1_agreement": agreement, "top5_overlap": 1.0, "mean_kl": kl, "top1": None, "top5": None}
    return PointResult(Point(r1, precision, "onnxruntime"), gflops if gflops is not None else 100.0 - r1, measures, latencies_ms=[ms, ms + 2, ms - 2])


RESULTS = [_result(0, 100, 1.0), _result(32, 70, 0.98, 0.01), _result(48, 60, 0.97, 0.02), _result(48, 40, 0.97, 0.05, "int8"), _result(64, 50, 0.90, 0.1)]


def test_choice_is_the_most_accurate_point_within_budget():
    choice = choose(RESULTS, Budget("ms", 65))
    assert choice.met and (choice.chosen.point.r1, choice.chosen.point.precision) == (48, "fp32") and choice.figure == 60  # KL breaks the tie
    choice = choose(RESULTS, Budget("speedup", 2.0))  # 100 / 50 = 2.0 and 100 / 40 = 2.5 qualify
    assert (choice.chosen.point.r1, choice.chosen.point.precision) == (48, "int8") and choice.figure == pytest.approx(2.5) and choice.baseline_ms == 100
    choice = choose(RESULTS, Budget("gflops", 60))
    assert choice.met and choice.chosen.point.r1 == 48 and choice.chosen.point.precision == "fp32"


def test_no_point_within_budget_gives_the_closest_and_the_miss():
    choice = choose(RESULTS, Budget("ms", 30))
    assert not choice.met and choice.chosen.point.precision == "int8" and choice.miss == pytest.approx(10)
    choice = choose(RESULTS, Budget("speedup", 4))
    assert not choice.met and choice.miss == pytest.approx(1.5)


def test_pareto_front_drops_dominated_points():
    front = pareto_front(RESULTS)
    # r1 = 48 fp32 (60 ms, 0.97) is beaten by r1 = 48 int8 (40 ms, 0.97); r1 = 64 (50 ms, 0.90) by it too
    assert [(r.point.r1, r.point.precision) for r in front] == [(48, "int8"), (32, "fp32"), (0, "fp32")]


def test_budget_values_are_checked():
    with pytest.raises(ConfigError, match="must be > 0"):
        Budget("ms", 0)


def test_measures_of_known_logits():
    reference = np.array([[3.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    same = accuracy_cost(reference, reference + 5.0, labels=[0, 1])  # a shift changes no softmax
    assert same["top1_agreement"] == 1.0 and same["mean_kl"] == pytest.approx(0.0, abs=1e-12)
    assert same["top1"] == 0.5 and same["top5"] == 1.0
    swapped = accuracy_cost(reference, reference[:, ::-1].copy())
    assert swapped["top1_agreement"] == 0.0
    p, q = np.exp(reference[0]) / np.exp(reference[0]).sum(), np.exp(reference[0][::-1]) / np.exp(reference[0][::-1]).sum()
    p2, q2 = np.exp(reference[1]) / np.exp(reference[1]).sum(), np.exp(reference[1][::-1]) / np.exp(reference[1][::-1]).sum()
    assert swapped["mean_kl"] == pytest.approx((np.sum(p * np.log(p / q)) + np.sum(p2 * np.log(p2 / q2))) / 2)
    # two views: VideoMAE averages logits; mmaction2 averages probabilities (the row is their log)
    views = np.array([[1.0, 0.0], [0.0, 3.0]])
    assert clip_logits(views, "logits") == pytest.approx([0.5, 1.5])
    probs = np.exp(views) / np.exp(views).sum(1, keepdims=True)
    assert np.exp(clip_logits(views, "prob")) == pytest.approx(probs.mean(0))


def test_recipe_backend_and_precision_are_checked(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "vit_s"\nbackend = "openvino"\nprecision = "fp16"\n')
    with pytest.raises(ValueError, match="precision 'fp16' is not available on openvino"):
        load_recipe(recipe)
    recipe.write_text('model = "vit_s"\nbackend = "openvino"\nprecision = "int8"\n')
    with pytest.raises(ValueError, match=r"needs a \[quantize\] table"):
        load_recipe(recipe)
    recipe.write_text('model = "vit_s"\nbackend = "onnxruntime"\nprecision = "int8"\ndtype = "fp16"\n')
    with pytest.raises(ValueError, match="contradicts onnxruntime int8"):
        load_recipe(recipe)
    recipe.write_text('model = "vit_s"\nbackend = "tensorrt"\nprecision = "fp16"\n')
    assert load_recipe(recipe)["dtype"] == "fp32"  # TensorRT's fp16 is the engine's, built from the fp32 export


def test_unlabelled_clip_sets(tmp_path):
    for name in ("b.mp4", "a.avi", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    flat = read_clip_set(tmp_path)
    assert flat.keys == ["a.avi", "b.mp4"] and flat.labels is None
    listing = tmp_path / "list.txt"
    listing.write_text("# clips\nb.mp4\na.avi\n")
    listed = read_clip_set(listing)
    assert listed.keys == ["b.mp4", "a.avi"] and listed.labels is None and listed.paths[0] == tmp_path / "b.mp4"
    listing.write_text("b.mp4 1\na.avi 0\n")
    assert read_clip_set(listing).labels == [1, 0]
    with pytest.raises(ConfigError, match="does not exist"):
        read_clip_set(tmp_path / "missing")
