"""``sta-deploy tune``: the r1 and precision that meet a latency (or speed-up, or GFLOPs) budget on this
machine at the smallest accuracy cost, measured on the user's own clips; resumable."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import arch_options, checkpoint_option, json_option
from .video_options import parse_r1_list, sampling_options

TUNE_BACKENDS = ("onnxruntime", "openvino", "tensorrt")


def _precisions(ctx, param, value):
    parts = [p for p in str(value).replace(" ", "").split(",") if p]
    if not parts:
        raise click.BadParameter("expected precisions separated by commas, e.g. fp32,int8")
    return parts


@click.command()
@click.option("--model", "-m", "model_name", default="vit_b", show_default=True, help="Registry name (see 'sta-deploy models').")
@checkpoint_option
@click.option("--clips", "clip_source", required=True, type=click.Path(), help="Clips to measure on: a 'path label' list, a folder per class, a list of paths or a folder of videos (labels optional).")
@click.option("--budget-ms", type=float, default=None, help="Median latency budget in ms of one model call on one batch (--batch views; default one view).")
@click.option("--speedup", type=float, default=None, help="Budget as a speed-up over the measured r1 = 0 fp32 latency on the same backend.")
@click.option("--gflops", type=float, default=None, help="Budget in model GFLOPs per view (no timing).")
@click.option("--backend", type=click.Choice(TUNE_BACKENDS), default="onnxruntime", show_default=True, help="Runtime to time and measure on (tensorrt needs TensorRT and an NVIDIA GPU).")
@click.option("--precision", "precisions", default="fp32", show_default=True, callback=_precisions, metavar="P[,P...]",
              help="Precisions to sweep: onnxruntime fp32,fp16,int8; openvino fp32,bf16,int8; tensorrt fp32,fp16,bf16.")
@click.option("--r1", "r1_values", default=None, callback=parse_r1_list, metavar="R[,R...]", help="r1 values [default: 0 to the largest valid r1 in 8 steps, plus the paper's].")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None, help="Sweep folder: exports, logits, tune.jsonl (resumable), tune.json, tune.png, recipe.toml [default: tune_MODEL].")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True, help="Static batch of the exports (and of the timed call).")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True, help="Round-robin timing rounds over all points.")
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True, help="Timed calls per point and round.")
@click.option("--calib-size", type=click.IntRange(1), default=16, show_default=True, help="Views to calibrate OpenVINO int8 on (taken from --clips).")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Folder that relative paths in the list start from [default: the list's folder].")
@sampling_options
@click.option("--threads", type=int, default=None, help="CPU threads of the runtimes [default: their own choice].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights when no --checkpoint is given.")
@click.option("--restart", is_flag=True, help="Discard an earlier sweep in the folder instead of resuming it.")
@click.option("--no-plot", is_flag=True, help="Skip tune.png.")
@arch_options
@json_option
def tune(model_name, checkpoint, clip_source, budget_ms, speedup, gflops, backend, precisions, r1_values, out_dir, batch, rounds, runs, calib_size,
         root, dataset, views, stride, min_frames, threads, seed, restart, no_plot, overrides, as_json):
    """Pick r1 and precision for a budget: export every (r1, precision), time them on this machine
    (round-robin, medians) and measure their accuracy cost on --clips against the unpruned fp32 model.

    Prints a table and the answer, writes DIR/tune.json, DIR/tune.png and the chosen configuration as
    DIR/recipe.toml ('sta-deploy export --recipe DIR/recipe.toml' reproduces it).  Exit code 1 when no
    configuration meets the budget (the closest one is named).  Re-running resumes the sweep.

    \b
    Examples:
      sta-deploy tune --model vit_b --checkpoint vit_b_k400.pth --clips val_200.txt --budget-ms 450 --backend openvino --precision fp32,int8
      sta-deploy tune --model vit_s --clips clips/ --speedup 1.5 --r1 32,48,64 -o runs/tune_vit_s
    """
    budget = _budget(budget_ms, speedup, gflops)
    if backend == "tensorrt":
        from ..video.tune_exports import check_tensorrt

        check_tensorrt()  # "TensorRT is not installed ..." before any work
    request = _request(model_name, checkpoint, overrides, seed, batch, backend, precisions, r1_values, clip_source, root,
                       dict(dataset=dataset, views=views or "1x1", stride=stride, min_frames=min_frames), out_dir, budget)
    request.rounds, request.runs, request.threads, request.calib_size, request.restart = rounds, runs, threads, calib_size, restart
    results, reference = _sweep(request, as_json)
    _report(request, results, reference, no_plot, as_json)


def _budget(budget_ms, speedup, gflops):
    from ..video.tune_choice import Budget

    given = [(mode, value) for mode, value in (("ms", budget_ms), ("speedup", speedup), ("gflops", gflops)) if value is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one budget: --budget-ms X, --speedup S or --gflops G")
    return Budget(*given[0])


def _request(model_name, checkpoint, overrides, seed, batch, backend, precisions, r1_values, clip_source, root, sampling, out_dir, budget):
    from ..video.sampling import checkpoint_normalisation, protocol_for
    from ..video.tune_clips import read_clip_set
    from ..video.tune_exports import ModelSpec
    from ..video.tune_points import check_precisions, check_r1_values, default_r1_sweep, sweep_points
    from ..video.tune_sweep import TuneRequest

    if checkpoint is not None and not Path(checkpoint).exists():
        raise click.BadParameter(f"{checkpoint} does not exist", param_hint="--checkpoint")
    spec = ModelSpec(model_name, dict(overrides), checkpoint, seed, batch)
    if checkpoint is not None:  # a checkpoint may set the classes (a Hugging Face one more): the exports' config
        import dataclasses

        from ..models.registry import resolve_config

        config, preset = spec.build(0).config, resolve_config(model_name)
        loaded = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(preset, f.name)}
        spec.overrides = {**spec.overrides, **loaded}
    values = check_r1_values(model_name, spec.overrides, r1_values) if r1_values else default_r1_sweep(model_name, spec.overrides)
    points = sweep_points(values, backend, check_precisions(backend, precisions))
    clips = read_clip_set(clip_source, root=root)
    from ..models.registry import resolve_config

    resolved = resolve_config(model_name, **spec.overrides)
    norm = checkpoint_normalisation(checkpoint)
    mean, std = norm if norm else (None, None)
    protocol = protocol_for(resolved.family, num_frames=resolved.num_frames, img_size=resolved.img_size, mean=mean, std=std, **sampling)
    return TuneRequest(spec, points, clips, protocol, Path(out_dir or f"tune_{model_name}"), budget, sampling=sampling)


def _sweep(request, as_json):
    from ..video.tune_sweep import run_sweep

    if not as_json:
        r1s = sorted({p.r1 for p in request.points})
        click.echo(f"tune {request.spec.name}: r1 {', '.join(map(str, r1s))} x {', '.join(sorted({p.precision for p in request.points}))} on "
                   f"{request.points[0].backend}; {len(request.clips.keys)} clips from {request.clips.source} ({request.protocol.describe()}); "
                   f"budget {request.budget.describe()}; results in {request.out_dir}")
    if request.spec.checkpoint is None:
        from .options import RANDOM_WEIGHTS_WARNING

        click.echo(RANDOM_WEIGHTS_WARNING.format(name=request.spec.name), err=True)
    try:
        from .options import warnings_as_lines

        with warnings_as_lines():
            return run_sweep(request)
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished points are saved in {request.out_dir / 'tune.jsonl'}; run the same command again to resume", err=True)
        raise


def _report(request, results, reference, no_plot, as_json):
    from ..video import tune_report
    from ..video.tune_choice import choose

    out = request.out_dir
    choice = choose(results, request.budget)
    answer = tune_report.answer_line(choice, request.budget, len(reference["clips"]))
    table = tune_report.rows(results, request.budget, choice)
    files = [out / "tune.jsonl"]
    if not choice.met:
        (out / "recipe.toml").unlink(missing_ok=True)  # an earlier budget's choice must not pass for this one's
    else:
        text = tune_report.recipe_text(request.spec, choice.chosen, answer=answer, quantize=_quantize_keys(request, choice, reference),
                                       dtype=_tensorrt_dtype(out, choice.chosen))
        files.append(tune_report.write_recipe(out / "recipe.toml", text))
    payload = {
        "model": request.spec.name, "backend": request.points[0].backend, "budget": {"mode": request.budget.mode, "value": request.budget.value},
        "clips": len(reference["clips"]), "failed_clips": reference["failed"], "labelled": reference["labels"] is not None,
        "protocol": request.protocol.as_dict(), "baseline_ms": choice.baseline_ms, "points": table,
        "choice": {"key": choice.chosen.point.key, "met": choice.met, "figure": choice.figure, "miss": choice.miss, "answer": answer},
    }
    files.append(tune_report.write_json(out / "tune.json", payload))
    if not no_plot:
        files.append(tune_report.plot(out / "tune.png", results, request.budget, choice, f"{request.spec.name} on {payload['backend']}: {len(reference['clips'])} clips"))
    if as_json:
        click.echo(json.dumps({**payload, "files": [str(f) for f in files]}))
    else:
        click.echo(tune_report.table_text(table))
        click.echo("wrote " + ", ".join(str(f) for f in files))
    if not choice.met:
        raise click.ClickException(answer)
    if not as_json:
        click.echo(answer)


def _tensorrt_dtype(out, result):
    """The dtype of a TensorRT point's export (fp16 for a strongly typed TensorRT's fp16 engine)."""
    if result.point.backend != "tensorrt":
        return None
    from ..export.manifest import read_manifest

    return read_manifest(out / result.export, needed_by="tune")["dtype"]


def _quantize_keys(request, choice, reference) -> dict | None:
    """The calibration of an OpenVINO int8 choice, for 'export --recipe' to redo it (same clips, protocol, size)."""
    point = choice.chosen.point
    if not (point.backend == "openvino" and point.precision == "int8"):
        return None
    paths = [str(Path(request.clips.paths[i]).resolve()) for i in reference["indices"]]
    return {"calib": paths, "calib_size": request.calib_size, **request.sampling}
