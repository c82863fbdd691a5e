"""Options shared by ``predict``, ``visualize`` and ``evaluate``, and building their backends from them."""

from __future__ import annotations

import click

from .options import RANDOM_WEIGHTS_WARNING, apply_options, warnings_as_lines


SAMPLING_OPTIONS = {
    "dataset": click.option(
        "--dataset", type=click.Choice(["k400", "ssv2"]), default="k400", show_default=True,
        help="Evaluation protocol: VideoMAE K400 (16 frames, stride 4, 5x3 views) or SSv2 (16 segments, 2x3); "
        "Video Swin K400 (32 frames, stride 2, 4x3) or SSv2 (1x3).",
    ),
    "views": click.option("--views", default=None, metavar="TxS", help="Temporal windows x spatial crops, e.g. 1x1 or 5x3 [default: the protocol's]."),
    "stride": click.option("--stride", type=int, default=None, help="Frame stride; for VideoMAE SSv2 it replaces segment sampling with dense sampling."),
    "min_frames": click.option("--min-frames", type=int, default=None, help="Shortest clip accepted [default: the model's frame count]; 1 pads short clips by repetition."),
}


def sampling_options(func=None, *, with_views: bool = True):
    """--dataset, --views (unless ``with_views=False``), --stride, --min-frames."""
    if func is None:
        return lambda f: sampling_options(f, with_views=with_views)
    return apply_options(func, [option for name, option in SAMPLING_OPTIONS.items() if with_views or name != "views"])


def onnx_option(func=None, *, multiple: bool = False):
    if func is None:
        return lambda f: onnx_option(f, multiple=multiple)
    help_text = (
        "Exported model(s) to run instead of PyTorch; repeat for several r1 (each r1 comes from its manifest)."
        if multiple
        else "An exported model to run instead of PyTorch (model, r1 and input size come from its manifest)."
    )
    return click.option("--onnx", "onnx_paths" if multiple else "onnx_path", type=click.Path(dir_okay=False), multiple=multiple, default=None, help=help_text)(func)


def check_against_manifest(ctx, backend, model_name, r1, overrides) -> None:
    """--model/--r1/overrides are optional with --onnx, but must agree with the manifest when given."""
    from click.core import ParameterSource

    def given(name):
        return ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE

    if given("model_name") and model_name != backend.model_name:
        raise click.UsageError(f"--model {model_name} but {backend.source} is a {backend.model_name}; drop --model (--onnx takes it from the manifest)")
    if given("r1") and r1 != backend.r1:
        raise click.UsageError(f"--r1 {r1} but {backend.source} was exported with r1={backend.r1}; drop --r1 (--onnx takes it from the manifest)")
    for key, value in (overrides or {}).items():
        exported = getattr(backend.config, key, None)
        wanted = tuple(value) if isinstance(value, (list, tuple)) else value
        if wanted != exported:
            raise click.UsageError(f"--{key.replace('_', '-')} {value} differs from the exported model's {exported}; drop it (--onnx fixes the architecture)")


def warn_random(backend) -> None:
    if backend.random_weights:
        click.echo(RANDOM_WEIGHTS_WARNING.format(name=backend.model_name), err=True)


def single_backend(ctx, *, model_name, r1, checkpoint, overrides, onnx_path, seed, threads=None, runtime="onnxruntime", precision=None, plugin_libs=()):
    """The PyTorch model from --model/--r1/--checkpoint, or the ONNX model from --onnx (on ``runtime``:
    --backend, with OpenVINO's --precision)."""
    check_runtime_needs_onnx(runtime, onnx_path)
    if onnx_path is not None:
        from ..video.backends import exported_backend

        with warnings_as_lines():
            backend = exported_backend(onnx_path, backend=runtime, precision=precision, checkpoint=checkpoint, threads=threads, needed_by=f"{ctx.info_name} --onnx",
                                       plugin_libs=plugin_libs)
        check_against_manifest(ctx, backend, model_name, r1, overrides)
    else:
        from ..video.backends import torch_backends

        set_torch_threads(threads)
        backend = torch_backends(model_name, [r1], checkpoint=checkpoint, overrides=overrides, seed=seed)[0]
    warn_random(backend)
    return backend


def check_runtime_needs_onnx(runtime: str, onnx_paths) -> None:
    if runtime != "onnxruntime" and not onnx_paths:
        raise click.UsageError(f"--backend {runtime} runs exported models: give --onnx M.onnx (export it with 'sta-deploy export')")


def set_torch_threads(threads) -> None:
    """--threads for PyTorch too: on a shared or small machine one thread is often the fastest."""
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))


def parse_r1_list(ctx, param, value):
    if value is None:
        return None
    try:
        values = [int(part) for part in str(value).replace(" ", "").split(",") if part]
    except ValueError:
        raise click.BadParameter(f"expected r1 values separated by commas, e.g. 32,48,64; got {value!r}") from None
    if not values or any(v < 0 for v in values):
        raise click.BadParameter(f"expected r1 values >= 0, got {value!r}")
    return values
