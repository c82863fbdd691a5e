"""``sta-deploy evaluate``: top-1/top-5 at several r1 next to r1 = 0 on a labelled clip list, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .video_options import onnx_option, parse_r1_list, sampling_options, warn_random
from .options import arch_options, backend_options, backend_precision, checkpoint_option, json_option


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
@backend_options
@arch_options
@json_option
@click.pass_context
def evaluate(ctx, clip_list, model_name, r1_values, checkpoint, onnx_paths, labels, root, dataset, views, stride, min_frames, prefix, restart,
             retry_failed, limit, no_baseline, no_plot, no_progress, seed, threads, backend, precision, overrides, as_json):
    """Evaluate on CLIP_LIST: a 'path label' file (K400 / SSv2 style) or a folder with a sub-folder per class.

    Prints top-1 / top-5 for every r1 next to r1 = 0, GFLOPs per view and clips/s, and writes
    PREFIX.jsonl (one line per clip, appended as it finishes), PREFIX.json, PREFIX.csv and
    PREFIX.png (accuracy against GFLOPs).  Failing clips are logged and skipped.  Re-running the
    same command resumes: finished clips are not redone.

    \b
    Examples:
      sta-deploy evaluate k400_val.txt --model vit_b --r1 32,48,64 --checkpoint vit_b_k400.pth --views 1x1
      sta-deploy evaluate clips_by_class/ --onnx vit_b_r0.onnx --onnx vit_b_r48.onnx -o runs/vitb
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
    runtime = (backend, backend_precision(backend, precision))
    backends = _backends(ctx, model_name, r1_values, checkpoint, overrides, onnx_paths, no_baseline, seed, threads, runtime)
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
        summary = run_evaluation(backends, labelled, protocol, results_path=results_path, restart=restart, retry_failed=retry_failed,
                                 limit=limit, progress=not no_progress)
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


def _backends(ctx, model_name, r1_values, checkpoint, overrides, onnx_paths, no_baseline, seed, threads, runtime=("onnxruntime", None)):
    from .video_options import check_runtime_needs_onnx, set_torch_threads

    set_torch_threads(threads)
    check_runtime_needs_onnx(runtime[0], onnx_paths)
    if onnx_paths:
        from ..video.backends import exported_backend
        from .options import warnings_as_lines
        from .video_options import check_against_manifest

        with warnings_as_lines():
            backends = [exported_backend(path, backend=runtime[0], precision=runtime[1], checkpoint=checkpoint, threads=threads, needed_by="evaluate --onnx") for path in onnx_paths]
        for backend in backends:
            check_against_manifest(ctx, backend, model_name, backend.r1, overrides)
        exported = sorted(b.r1 for b in backends)
        if r1_values is not None and sorted(set(r1_values) - {0}) != sorted(set(exported) - {0}):
            raise click.UsageError(f"--r1 {','.join(map(str, r1_values))} does not match the r1 of the --onnx models ({','.join(map(str, exported))}); drop --r1")
        if not no_baseline and 0 not in exported:
            backends.insert(0, backends[0].reference(0))  # r1 = 0 on PyTorch, same weights
        return sorted(backends, key=lambda b: b.r1)
    if r1_values is None:
        raise click.UsageError("give the r1 values to evaluate (--r1 32,48,64) or exported models (--onnx)")
    from ..video.backends import torch_backends

    values = sorted(set(r1_values) | (set() if no_baseline else {0}))
    return torch_backends(model_name, values, checkpoint=checkpoint, overrides=overrides, seed=seed)
