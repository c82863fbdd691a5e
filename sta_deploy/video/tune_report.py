"""What ``tune`` hands back: the one-line answer, the table, ``tune.json``, ``tune.png`` and the
chosen configuration as an export recipe (``recipe.toml``, the keys of :mod:`sta_deploy.export.recipes`)."""

from __future__ import annotations

import json
from pathlib import Path

from .._io import atomic_path
from .errors import require
from .tune_choice import Budget, Choice, PointResult, pareto_front
from .tune_points import onnx_file_name


def _figure_text(budget: Budget, result: PointResult, figure: float) -> str:
    if budget.mode == "gflops":
        return f"{figure:.4g} GFLOPs/view"
    if budget.mode == "speedup":
        return f"{result.latency_ms:.4g} ms, {figure:.3g}x speed-up"
    return f"{figure:.4g} ms"


def answer_line(choice: Choice, budget: Budget, clips: int) -> str:
    result = choice.chosen
    agreement = f"top-1 agreement {100 * result.measures['top1_agreement']:.1f}% on {clips} clips"
    figure = _figure_text(budget, result, choice.figure)
    if choice.met:
        return f"{result.point.describe()}: {figure} (budget {budget.describe()}), {agreement}"
    if budget.mode == "speedup":
        miss = f"{choice.miss:.3g}x short of the {budget.describe()}"
    else:
        unit = "ms" if budget.mode == "ms" else "GFLOPs"
        miss = f"{choice.miss:.4g} {unit} ({100 * choice.miss / budget.value:.1f}%) over the budget of {budget.describe()}"
    return f"no configuration meets the budget; the closest is {result.point.describe()}: {figure}, {miss} ({agreement})"


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def rows(results: list[PointResult], budget: Budget, choice: Choice) -> list[dict]:
    front = {id(r) for r in pareto_front(results, by_latency=budget.needs_timing)}
    table = []
    for result in sorted(results, key=lambda r: (r.point.r1, r.point.precision)):
        latency = result.latency_ms
        speedup = choice.baseline_ms / latency if (choice.baseline_ms and latency) else None
        figure = budget.measure(result, choice.baseline_ms) if (latency is not None or not budget.needs_timing) else None
        table.append({
            "key": result.point.key, "r1": result.point.r1, "backend": result.point.backend, "precision": result.point.precision,
            "gflops": result.gflops, "latency_ms": latency, "latency_runs": len(result.latencies_ms), "speedup": speedup,
            **result.measures, "export": result.export, "pareto": id(result) in front,
            "meets_budget": None if figure is None else budget.meets(figure), "chosen": result is choice.chosen,
        })
    return table


def table_text(table: list[dict]) -> str:
    header = f"{'r1':>4} {'backend':<11} {'prec':<5} {'GFLOPs':>8} {'ms':>9} {'speedup':>7} {'agree%':>7} {'top5ov%':>7} {'KL':>8} {'top-1%':>6} {'top-5%':>6}  pareto budget"
    lines = [header]
    for row in table:
        latency = "-" if row["latency_ms"] is None else f"{row['latency_ms']:.3f}"
        speedup = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        meets = {None: "-", True: "ok", False: "miss"}[row["meets_budget"]]
        mark = " <- chosen" if row["chosen"] else ""
        lines.append(
            f"{row['r1']:>4} {row['backend']:<11} {row['precision']:<5} {row['gflops']:>8.4g} {latency:>9} {speedup:>7} "
            f"{_percent(row['top1_agreement']):>7} {_percent(row['top5_overlap']):>7} {row['mean_kl']:>8.4f} "
            f"{_percent(row['top1']):>6} {_percent(row['top5']):>6}  {'*' if row['pareto'] else ' ':^6} {meets:<6}{mark}".rstrip()
        )
    return "\n".join(lines)


def write_json(path, payload: dict) -> Path:
    with atomic_path(path) as temp:
        Path(temp).write_text(json.dumps(payload, indent=2) + "\n")
    return Path(path)


def plot(path, results: list[PointResult], budget: Budget, choice: Choice, title: str) -> Path:
    """Top-1 agreement against latency (GFLOPs for a --gflops budget): every point, the Pareto front,
    the budget line and the chosen point."""
    matplotlib = require("matplotlib", "matplotlib", "the tune plot")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    by_latency = budget.needs_timing

    def x_of(result):
        return result.latency_ms if by_latency else result.gflops

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=120)
    for precision in sorted({r.point.precision for r in results}):
        mine = [r for r in results if r.point.precision == precision]
        axis.scatter([x_of(r) for r in mine], [100 * r.measures["top1_agreement"] for r in mine], label=precision, zorder=3)
        for r in mine:
            axis.annotate(f"r1={r.point.r1}", (x_of(r), 100 * r.measures["top1_agreement"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = pareto_front(results, by_latency=by_latency)
    axis.plot([x_of(r) for r in front], [100 * r.measures["top1_agreement"] for r in front], "k--", alpha=0.6, label="Pareto front")
    line = budget.value if budget.mode != "speedup" else choice.baseline_ms / budget.value
    axis.axvline(line, color="tab:red", alpha=0.7, label=f"budget {budget.describe()}")
    chosen = choice.chosen
    axis.scatter([x_of(chosen)], [100 * chosen.measures["top1_agreement"]], s=200, facecolors="none", edgecolors="tab:red", zorder=4,
                 label="chosen" if choice.met else "closest (misses)")
    axis.set_xlabel("median latency per batch (ms)" if by_latency else "GFLOPs per view")
    axis.set_ylabel("top-1 agreement with unpruned fp32 (%)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png")
    plt.close(figure)
    return Path(path)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def recipe_text(spec, result: PointResult, *, answer: str, quantize: dict | None = None, dtype: str | None = None) -> str:
    """The chosen point as an ``export --recipe`` TOML (backend and precision included); ``dtype``: the
    export's, when it is not the point's usual one (TensorRT 11's fp16 export)."""
    point = result.point
    lines = [f"# written by 'sta-deploy tune': {answer}"]
    if spec.checkpoint is not None:
        lines.append(f"# weights: pass --checkpoint {spec.checkpoint}")
    keys = {
        "description": f"tune choice: {point.describe()}", "model": spec.name, "r1": point.r1, "dtype": dtype or point.export_dtype,
        "backend": point.backend, "precision": point.precision, "batch": spec.batch, "output": onnx_file_name(spec.name, point),
    }
    if spec.checkpoint is None:
        keys["seed"] = spec.seed
    lines += [f"{key} = {_toml_value(value)}" for key, value in keys.items()]
    if spec.overrides:
        lines += ["", "[overrides]"] + [f"{key} = {_toml_value(value)}" for key, value in spec.overrides.items()]
    if quantize:
        lines += ["", "[quantize]  # OpenVINO int8: NNCF calibration, as 'sta-deploy quantize' does"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in quantize.items() if value is not None]
    return "\n".join(lines) + "\n"


def write_recipe(path, text: str) -> Path:
    with atomic_path(path) as temp:
        Path(temp).write_text(text)
    return Path(path)
