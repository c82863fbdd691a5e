"""``sta-deploy triton-repo``: a Triton Inference Server model repository from an export."""

from __future__ import annotations

import click

from .options import int_list
from .video_options import sampling_options


@click.command("triton-repo")
@click.argument("export", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Repository folder to write.")
@click.option("--name", default=None, help="Model name [default: the export's file name].")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None, help="For a .plan: its ONNX export (with the manifest) [default: beside it].")
@click.option("--kind", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True, help="Where the model instances run.")
@click.option("--platform", type=click.Choice(["python", "onnxruntime", "tensorrt"]), default=None,
              help="Triton backend [default: tensorrt for .plan, python for plugin-mode ONNX, onnxruntime otherwise]. "
              "python (ONNX Runtime in Triton's Python backend) is what 'sta-deploy serve' loads locally.")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=None, help="max_batch_size of a --dynamic-batch export [default: 8]; at most the engine's profile.")
@click.option("--preferred-batch", default=None, callback=int_list,
              help="Batch sizes the dynamic batcher prefers, e.g. 1,2 (each <= --max-batch) [default: none: as large as the queue allows]. "
              "On a CPU with few cores small batches can be faster per clip.")
@click.option("--queue-delay-us", type=click.IntRange(0, 10_000_000), default=None, help="How long the dynamic batcher waits for more requests, in microseconds [default: 2000].")
@click.option("--instances", type=click.IntRange(1, 64), default=1, show_default=True, help="Model instances (instance_group count).")
@click.option("--plugin-lib", type=click.Path(dir_okay=False, exists=True), default=None,
              help="TensorRT plugin library for plugin-mode engines (run_triton.sh loads it); for plugin-mode ONNX on CPU, the CPU reference to copy [default: built].")
@click.option("--with-preprocess", is_flag=True, help="Add a video-bytes -> views preprocess model and an ensemble that answers top-k labels.")
@click.option("--labels", type=click.Path(dir_okay=False, exists=True), default=None, help="Class names, one per line [default: the checkpoint's id2label, else class indices].")
@click.option("--top", type=click.IntRange(1, 100), default=5, show_default=True, help="Classes the ensemble's top_* outputs hold.")
@sampling_options
@click.option("--openvino", is_flag=True, help="onnxruntime_onnx on CPU: use ONNX Runtime's OpenVINO accelerator.")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Python-backend models: ONNX Runtime threads per instance [default: ONNX Runtime's].")
@click.option("--force", is_flag=True, help="Replace an existing repository.")
def triton_repo(export, output, name, onnx_path, kind, platform, max_batch, preferred_batch, queue_delay_us, instances, plugin_lib, with_preprocess, labels, top, dataset, views, stride, min_frames, openvino, threads, force):
    """Write a Triton model repository for EXPORT (an .onnx with its manifest, or a TensorRT .plan).

    Every config.pbtxt is checked against Triton's model-config schema (the protobuf tritonclient
    ships).  tensorrt_plan and onnxruntime_onnx models load only in NVIDIA's Triton container
    (run_triton.sh); python models also load with 'sta-deploy serve' on this machine.

    \b
    Examples:
      sta-deploy triton-repo vit_b_r48.onnx -o models --platform python --with-preprocess --views 1x3
      sta-deploy triton-repo vit_b_r48.plan -o models --kind gpu --plugin-lib libsta_stage_select_trt.so
    """
    from ..serve.repository import PreprocessOptions, write_repository

    options = PreprocessOptions(dataset=dataset, views=views, stride=stride, min_frames=min_frames, labels=labels, top=top)
    report = write_repository(
        export, output, name=name, onnx=onnx_path, kind=kind, platform=platform, max_batch=max_batch, instances=instances,
        plugin_lib=plugin_lib, with_preprocess=with_preprocess, preprocess=options, openvino=openvino, threads=threads, force=force,
        preferred_batch=preferred_batch, queue_delay_us=queue_delay_us,
    )
    checked = "checked against Triton's schema" if report.schema_checked else "NOT schema-checked (pip install 'sta-deploy[serve]')"
    click.echo(f"wrote {report.root}: {', '.join(report.models)} (config.pbtxt {checked})")
    for note in report.notes:
        click.echo(f"  {note}")
    if report.platform == "python":
        click.echo(f"serve it here: sta-deploy serve {report.root}")
    else:
        from ..serve.readme import TRITON_PLATFORM

        click.echo(f"{report.name} is {TRITON_PLATFORM[report.platform]}: it loads in NVIDIA's Triton container ({report.root}/run_triton.sh), not in 'sta-deploy serve'")
