"""``sta-deploy predict``: top-k classes of video clips, with a PyTorch model or an exported ONNX model."""

from __future__ import annotations

import json

import click

from .video_options import onnx_option, sampling_options, single_backend, warn_random
from .options import backend_precision, check_plugin_libs_option, json_option, model_options, server_options, video_backend_options


@click.command()
@click.argument("clips", nargs=-1, required=True, type=click.Path())
@model_options
@onnx_option
@click.option("--labels", type=click.Path(dir_okay=False), default=None, help="Class names, one per line [default: the checkpoint's id2label, else class indices].")
@click.option("--top", type=click.IntRange(1, 100), default=5, show_default=True, help="Classes to show per clip.")
@sampling_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights when no --checkpoint is given.")
@click.option("--threads", type=int, default=None, help="CPU threads for PyTorch / ONNX Runtime [default: their own choice].")
@video_backend_options
@click.option("--save-views", "views_folder", type=click.Path(file_okay=False), default=None, help="Also save each clip's model input as DIR/<clip>.views.npy (views, 3, T, H, W) float32, e.g. for examples/classify.")
@server_options
@json_option
@click.pass_context
def predict(ctx, clips, model_name, r1, checkpoint, overrides, onnx_path, labels, top, dataset, views, stride, min_frames, seed, threads, backend, precision, plugin_libs, views_folder, url, served_model, shared_memory, as_json):
    """Classify CLIPS (video files or frame folders): top-k classes with scores, averaged over the views.

    Frames are sampled as the backbone was evaluated (see --dataset); the scores are the average
    over the views (VideoMAE: softmax of the mean logits; Video Swin: mean softmax).  Clips that
    cannot be read are reported at the end (exit code 1); the others are still predicted.

    \b
    Examples:
      sta-deploy predict clip.mp4 --model vit_b --r1 48 --checkpoint videomae-base-finetuned-kinetics/
      sta-deploy predict clips/*.mp4 --onnx vit_b_r48.onnx --labels k400_labels.txt --views 1x1 --json
      sta-deploy predict clip.mp4 --onnx vit_b_r48.onnx --backend openvino --precision bf16
      sta-deploy predict clip.mp4 --url http://127.0.0.1:8000
      sta-deploy predict clip.mp4 --url http://127.0.0.1:8000 --model-name vit_b_r48 --shared-memory
    """
    from ..video.labels import resolve_labels
    from ..video.predict import predict_files, protocol_for_backend

    run_files = predict_files
    runtime, precision = backend, backend_precision(backend, precision)
    if shared_memory and url is None:
        raise click.UsageError("--shared-memory needs --url (it is how the clips reach a Triton server on this host)")
    if url is not None:  # the model runs on a Triton server (sta_deploy.serve.remote)
        from ..serve.remote import remote_predict_setup

        if onnx_path is not None:
            raise click.UsageError("--url and --onnx exclude each other: the model runs on the server")
        remote = remote_predict_setup(url, served_model, labels=labels, dataset=dataset, views=views, stride=stride, min_frames=min_frames, shared_memory=shared_memory)
        backend, protocol, run_files, names, label_source = remote.backend, remote.protocol, remote.run_files, remote.names, remote.label_source
        warn_random(backend)
    else:
        backend = single_backend(ctx, model_name=model_name, r1=r1, checkpoint=checkpoint, overrides=overrides, onnx_path=onnx_path, seed=seed, threads=threads,
                                 runtime=runtime, precision=precision, plugin_libs=check_plugin_libs_option(runtime, plugin_libs))
        names, label_source = resolve_labels(backend.num_classes, labels_file=labels, checkpoint=backend.checkpoint)
        protocol = protocol_for_backend(backend, dataset=dataset, views=views, stride=stride, min_frames=min_frames)

    def show(path, prediction, error):
        if as_json:
            return
        if prediction is None:
            click.echo(f"{path}: skipped ({error})")
            return
        saved = f", input saved to {prediction.views_file}" if prediction.views_file else ""
        click.echo(f"{path}  ({prediction.views} views, {prediction.total_frames} frames, {prediction.seconds:.2f}s{saved})")
        for rank, (index, score) in enumerate(zip(prediction.classes, prediction.scores), 1):
            click.echo(f"  {rank}. {names[index]:<40} {score:.4f}")

    if not as_json:
        click.echo(f"{backend.describe()}; {protocol.describe()}; labels: {label_source}")
    try:
        run = run_files(backend, clips, protocol, top=top, on_result=show, views_folder=views_folder)
    finally:  # a served model's connection releases its shared-memory regions
        if url is not None:
            backend.close()
    if as_json:
        payload = {
            "model": backend.model_name, "r1": backend.r1, "backend": backend.kind, "source": backend.source,
            "protocol": protocol.as_dict(), "labels": label_source,
            "results": [p.as_dict(names) for p in run.predictions],
            "failed": [{"path": path, "error": error} for path, error in run.failures],
        }
        click.echo(json.dumps(payload))
    if run.failures:
        listed = "; ".join(f"{path}: {error}" for path, error in run.failures[:5])
        more = f" and {len(run.failures) - 5} more" if len(run.failures) > 5 else ""
        raise click.ClickException(f"{len(run.failures)} of {len(clips)} clip(s) could not be used: {listed}{more}")
