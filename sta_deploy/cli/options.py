"""Option groups shared by every subcommand, so that flags read the same everywhere."""

from __future__ import annotations

import contextlib
import functools

from pathlib import Path

import click

OVERRIDE_NAMES = ("embed_dim", "depth", "depths", "num_heads", "num_classes", "num_frames", "img_size", "window_size")


def int_list(ctx, param, value):
    """'16,7,7' -> (16, 7, 7); a single number stays an int (ViT's --num-heads 12)."""
    if value is None:
        return None
    try:
        parts = tuple(int(part) for part in str(value).split(","))
    except ValueError:
        raise click.BadParameter(f"expected an integer or integers separated by commas, got {value!r}") from None
    return parts[0] if len(parts) == 1 and param.name == "num_heads" else parts


def apply_options(func, options):
    """Decorate ``func`` with ``options`` in the order they are listed (the order --help shows)."""
    for option in reversed(options):
        func = option(func)
    return func


def arch_options(func):
    """Architecture overrides, collected into one ``overrides`` dict argument."""
    func = apply_options(
        func,
        [
            click.option("--embed-dim", type=int, default=None, help="Override the preset's embedding width."),
            click.option("--depth", type=int, default=None, help="Override the preset's number of blocks."),
            click.option("--depths", default=None, callback=int_list, help="Swin: blocks per stage, e.g. 2,2,6,2."),
            click.option("--num-heads", default=None, callback=int_list, help="Override the head count (Swin: one per stage, e.g. 3,6,12,24)."),
            click.option("--window-size", default=None, callback=int_list, help="Swin: window T,H,W, e.g. 16,7,7 for the SSv2 Swin-B."),
            click.option("--num-classes", type=int, default=None, help="Override the number of classes (default 400, or the checkpoint's)."),
            click.option("--num-frames", type=int, default=None, help="Override the clip length in frames (default 16)."),
            click.option("--img-size", type=int, default=None, help="Override the frame size in pixels (default 224)."),
        ],
    )

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        overrides = {key: kwargs.pop(key) for key in OVERRIDE_NAMES}
        kwargs["overrides"] = {key: value for key, value in overrides.items() if value is not None}
        return func(*args, **kwargs)

    return wrapper


def model_name_options(func):
    """--model and --r1."""
    return apply_options(
        func,
        [
            click.option("--model", "-m", "model_name", default="vit_b", show_default=True, help="Registry name (see 'sta-deploy models')."),
            click.option("--r1", type=int, default=0, show_default=True, help="Tokens STA drops per group at each stage (0 = unpruned)."),
        ],
    )


def checkpoint_option(func):
    return click.option(
        "--checkpoint",
        type=click.Path(),
        default=None,
        help="Weights: VideoMAE .pth, Hugging Face folder or sta_deploy file. Without it: random weights.",
    )(func)


def model_options(func):
    """--model, --r1, --checkpoint and the architecture overrides."""
    return model_name_options(checkpoint_option(arch_options(func)))


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")(func)


def server_options(func):
    """A Triton server instead of a local model: ``url``, ``served_model``, ``shared_memory``."""
    return apply_options(func, [
        click.option("--url", default=None, help="Send the clips to a Triton server (http://HOST:PORT or grpc://HOST:PORT; the serve extra) instead of running a model here."),
        click.option("--model-name", "served_model", default=None, help="With --url: the served model [default: the server's video ensemble, else its only model]."),
        click.option("--shared-memory", is_flag=True, help="With --url: pass input tensors through system shared memory (/dev/shm) instead of the request body; the server must run on this host."),
    ])


RANDOM_WEIGHTS_WARNING = (
    "warning: no --checkpoint given: {name} uses random weights (shapes, speed and parity are real, predictions are not)"
)


BACKENDS = ("onnxruntime", "openvino")
# predict and evaluate also run TensorRT engines (validate has --engine, bench --trtexec).
VIDEO_BACKENDS = (*BACKENDS, "tensorrt")


def _precision_option():
    from ..runtime.openvino import PRECISIONS

    return click.option(
        "--precision", type=click.Choice(PRECISIONS), default=None,
        help="With --backend openvino: inference precision, f32 or bf16 (CPUs with AVX512-BF16 or AMX) [default: f32].",
    )


def backend_options(func):
    """--backend (ONNX Runtime or OpenVINO) and --precision (OpenVINO's inference precision hint)."""
    return apply_options(
        func,
        [
            click.option(
                "--backend", type=click.Choice(BACKENDS), default="onnxruntime", show_default=True,
                help="Runtime for the exported model; openvino needs pip install 'sta-deploy[openvino]'.",
            ),
            _precision_option(),
        ],
    )


def video_backend_options(func):
    """--backend (ONNX Runtime, OpenVINO or a TensorRT engine), --precision (OpenVINO's) and --plugin-lib."""
    return apply_options(
        func,
        [
            click.option(
                "--backend", type=click.Choice(VIDEO_BACKENDS), default="onnxruntime", show_default=True,
                help="Runtime for the exported model; openvino needs pip install 'sta-deploy[openvino]'; tensorrt runs the engine "
                "'sta-deploy build M.onnx' wrote beside each --onnx M.onnx (M.plan; TensorRT and an NVIDIA GPU).",
            ),
            _precision_option(),
            click.option(
                "--plugin-lib", "plugin_libs", multiple=True, type=click.Path(dir_okay=False),
                help="With --backend tensorrt: the STA plugin library of --sta-impl plugin engines (repeatable).",
            ),
        ],
    )


def check_plugin_libs_option(backend: str, plugin_libs) -> tuple:
    if plugin_libs and backend != "tensorrt":
        raise click.UsageError("--plugin-lib loads TensorRT plugins: add --backend tensorrt")
    return tuple(str(Path(p).resolve()) for p in plugin_libs)


def backend_precision(backend: str, precision) -> str | None:
    """The precision to run at: OpenVINO's (default f32); --precision without --backend openvino is refused."""
    if backend != "openvino":
        if precision is not None:
            raise click.UsageError("--precision is OpenVINO's inference precision; add --backend openvino")
        return None
    return precision or "f32"


@contextlib.contextmanager
def warnings_as_lines():
    """Python warnings raised inside (e.g. OpenVINO's bf16 fallback) as one 'warning: ...' line on stderr."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        click.echo(f"warning: {' '.join(str(message).split())}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield
