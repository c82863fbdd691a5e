"""``sta-deploy evaluate``: top-1/top-5 at several r1 next to r1 = 0 on a labelled clip list, resumable."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from .video_options import onnx_option, parse_r1_list, sampling_options, warn_random
from .options import arch_options, backend_precision, check_plugin_libs_option, checkpoint_option, json_option, video_backend_options


@click.command()
@click.argument("clip_list", type=click.Path())
@click.option("--model", "-m", "model_name", default="vit_b", show_default=True, help="Registry name (see 'sta-deploy models').")
@click.option("--r1", "r1_values", default=None, callback=parse_r1_list, metavar="R[,R...]", help="r1 values to evaluate, e.g. 32,48,64 (r1 = 0 is added as the baseline).")
@checkpoint_option
@onnx_option(multiple=True)
@click.option("--labels", type=click.Path(dir_okay=False), default=None, help="Class names, one per line, to match class names in the list or folder names [default: the checkpoint's id2label].")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Folder that relative paths in the list start from [default: the list's folder].")
@sampling_options
@click.option("-o", "--output", "prefix", default=None, help="Output prefix: PREFIX.jsonl (per clip, resumable), .json, .csv, .png [default: LIST.MODEL in the current folder].")
@click.option("--restart", is_flag=True, help="Discard the results of an earlier run instead of resuming it.")
@click.option("--retry-failed", is_flag=True, help="Try the clips that failed in an earlier run again.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate only the first N clips of the list.")
@click.option("--no-baseline", is_flag=True, help="Do not add r1 = 0.")
@click.option("--no-plot", is_flag=True, help="Skip the accuracy-vs-GFLOPs plot.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights when no --checkpoint is given.")
@click.option("--threads", type=int, default=None, help="CPU threads for PyTorch / ONNX Runtime [default: their own choice].")
@video_backend_options
@click.option("--ray", "ray_target", default=None, is_flag=False, flag_value="auto", metavar="[auto|local|ADDRESS]",
              help="Run on a Ray cluster (Ray Data): 'auto' (this machine's cluster; --ray alone), 'local' (a private Ray here, stopped afterwards) "
              "or a head's ADDRESS (host:port).  Needs pip install 'sta-deploy[ray]'; see docs/ray.md.")
@click.option("--ray-workers", type=click.IntRange(1), default=None, help="Inference actors, each holding every r1's model [default: one per GPU share, or half the cluster's CPUs].")
@click.option("--ray-gpus-per-worker", type=click.FloatRange(0), default=0, show_default=True, help="GPUs each inference actor reserves (e.g. 1, or 0.5 to share one).")
@arch_options
@json_option
@click.pass_context
def evaluate(ctx, clip_list, model_name, r1_values, checkpoint, onnx_paths, labels, root, dataset, views, stride, min_frames, prefix, restart,
             retry_failed, limit, no_baseline, no_plot, no_progress, seed, threads, backend, precision, plugin_libs, ray_target, ray_workers, ray_gpus_per_worker,
             overrides, as_json):
    """Evaluate on CLIP_LIST: a 'path label' file (K400 / SSv2 style) or a folder with a sub-folder per class.

    Prints top-1 / top-5 for every r1 next to r1 = 0, GFLOPs per view and clips/s, and writes
    PREFIX.jsonl (one line per clip, appended as it finishes), PREFIX.json, PREFIX.csv and
    PREFIX.png (accuracy against GFLOPs).  Failing clips are logged and skipped.  Re-running the
    same command resumes: finished clips are not redone.

    \b
    Examples:
      sta-deploy evaluate k400_val.txt --model vit_b --r1 32,48,64 --checkpoint vit_b_k400.pth --views 1x1
      sta-deploy evaluate clips_by_class/ --onnx vit_b_r0.onnx --onnx vit_b_r48.onnx -o runs/vitb
      sta-deploy evaluate k400_val.txt --model vit_b --r1 48 --checkpoint /shared/vit_b_k400.pth --ray HEAD:6379
    """
    from ..video.dataset import read_labelled_list
    from ..video.evaluate import evaluate as run_evaluation
    from ..video.labels import resolve_labels
    from ..video.predict import protocol_for_backend

    if not Path(clip_list).exists():
        raise click.BadParameter(f"{clip_list} does not exist", param_hint="CLIP_LIST")
    if prefix:
        from .._io import writable_folder

        writable_folder(prefix)  # before any work; a missing folder is created when writing
    if ray_target is None and (ray_workers is not None or ray_gpus_per_worker):
        raise click.UsageError("--ray-workers and --ray-gpus-per-worker size a Ray run: add --ray local|auto|ADDRESS")
    if ray_target is not None:
        from ..video.ray_evaluate import import_ray

        import_ray()  # says what to install before any work
    from ..video.backend_recipe import BackendRecipe

    recipe = BackendRecipe(model_name, tuple(r1_values) if r1_values else None, checkpoint=checkpoint, overrides=dict(overrides or {}),
                           onnx_paths=tuple(onnx_paths or ()), runtime=backend, precision=backend_precision(backend, precision), seed=seed,
                           plugin_libs=check_plugin_libs_option(backend, plugin_libs),
                           threads=threads, baseline=not no_baseline)
    backends = _backends(ctx, recipe)
    first = backends[0]
    warn_random(first)
    names, label_source = resolve_labels(first.num_classes, labels_file=labels, checkpoint=first.checkpoint)
    labelled = read_labelled_list(clip_list, root=root, class_names=None if label_source == "class indices" else names)
    protocol = protocol_for_backend(first, dataset=dataset, views=views, stride=stride, min_frames=min_frames)
    prefix = Path(prefix) if prefix else Path(f"{Path(clip_list).stem or 'clips'}.{first.model_name}")
    results_path = prefix.with_name(prefix.name + ".jsonl")
    if not as_json:
        click.echo(f"{len(labelled.clips)} clips from {clip_list}; {protocol.describe()}; r1 {', '.join(str(b.r1) for b in backends)}; results in {results_path}")
    try:
        with _cluster(ray_target, recipe, ray_workers, ray_gpus_per_worker) as produce:
            summary = run_evaluation(backends, labelled, protocol, results_path=results_path, restart=restart, retry_failed=retry_failed,
                                     limit=limit, progress=not no_progress, produce=produce)
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished clips are saved in {results_path}; run the same command again to resume", err=True)
        raise
    written = [summary.write_json(prefix.with_name(prefix.name + ".json")), summary.write_csv(prefix.with_name(prefix.name + ".csv"))]
    if not no_plot:
        written.append(summary.plot(prefix.with_name(prefix.name + ".png")))
    if as_json:
        click.echo(json.dumps({**summary.as_dict(), "files": [str(p) for p in [results_path, *written]]}))
    else:
        click.echo(summary.table())
        click.echo("wrote " + ", ".join(str(p) for p in [results_path, *written]))


def _backends(ctx, recipe):
    """The recipe's backends (a Ray worker builds the same from it), checked against the command line."""
    from .options import warnings_as_lines
    from .video_options import check_against_manifest, check_runtime_needs_onnx, set_torch_threads

    set_torch_threads(recipe.threads)
    check_runtime_needs_onnx(recipe.runtime, recipe.onnx_paths)
    if not recipe.onnx_paths and recipe.r1_values is None:
        raise click.UsageError("give the r1 values to evaluate (--r1 32,48,64) or exported models (--onnx)")
    with warnings_as_lines():
        backends = recipe.build()
    exported = [b for b in backends if getattr(b, "manifest", None) is not None]
    for backend in exported:
        check_against_manifest(ctx, backend, recipe.model_name, backend.r1, recipe.overrides)
    if exported and recipe.r1_values is not None and sorted(set(recipe.r1_values) - {0}) != sorted({b.r1 for b in exported} - {0}):
        given, found = ",".join(map(str, recipe.r1_values)), ",".join(str(b.r1) for b in exported)
        raise click.UsageError(f"--r1 {given} does not match the r1 of the --onnx models ({found}); drop --r1")
    return backends


@contextlib.contextmanager
def _cluster(target, recipe, workers, gpus_per_worker):
    """None (run here) without --ray; else the Ray producer, connected for the run."""
    if target is None:
        yield None
        return
    from ..video.ray_evaluate import connected, ray_producer

    with connected(target):
        yield ray_producer(recipe, workers=workers, gpus_per_worker=gpus_per_worker)
