"""``sta-deploy build``: a TensorRT engine from an exported model (TensorRT and a GPU required)."""

from __future__ import annotations

import click


@click.command()
@click.argument("onnx_path", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Engine path [default: ONNX_PATH with .plan].")
@click.option("--fp16", is_flag=True, help="Allow FP16 kernels (TensorRT 10; TensorRT 11 is strongly typed: export --dtype fp16).")
@click.option("--bf16", is_flag=True, help="Allow BF16 kernels (TensorRT 10 only).")
@click.option("--plugin-lib", "plugin_libs", multiple=True, type=click.Path(dir_okay=False), help="Plugin library to load (repeatable).")
@click.option("--min-batch", type=int, default=None, help="Smallest batch of a --dynamic-batch model.")
@click.option("--opt-batch", type=int, default=None, help="Batch TensorRT tunes for.")
@click.option("--max-batch", type=int, default=None, help="Largest batch.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None, help="Timing cache file to read and update.")
@click.option("--parse-only", is_flag=True, help="Only check that TensorRT (or TensorRT-RTX, no GPU needed) parses and builds the graph.")
@click.option(
    "--selection-outputs",
    is_flag=True,
    help="Also output each STA stage's token selection (sta_selection_stage0..2), so that 'validate --engine' replays "
    "the engine's own choices and tells rounding near-ties from bugs.  Logits are unchanged; extra outputs cost a few KB.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing engine.")
def build(onnx_path, output, fp16, bf16, plugin_libs, min_batch, opt_batch, max_batch, timing_cache, parse_only, selection_outputs, force):
    """Build a TensorRT engine from ONNX_PATH with the TensorRT Python API."""
    import contextlib
    from pathlib import Path

    if not Path(onnx_path).is_file():
        raise click.BadParameter(f"{onnx_path} does not exist", param_hint="ONNX_PATH")
    output = output or str(Path(onnx_path).with_suffix(".plan"))
    with contextlib.ExitStack() as stack:
        source = _with_selection_outputs(stack, onnx_path, output) if selection_outputs else onnx_path
        _build(source, output, fp16, bf16, plugin_libs, (min_batch, opt_batch, max_batch), timing_cache, parse_only, force)


def _with_selection_outputs(stack, onnx_path, output):
    """A scratch copy of ``onnx_path`` (beside the engine, so that external weights hard-link) whose
    graph also outputs every STA stage's selection; the user's file is never touched."""
    from .._io import writable_folder
    from ..export.manifest import read_manifest
    from ..export.selection_graph import selection_copy

    manifest = read_manifest(onnx_path, needed_by="build --selection-outputs")
    if manifest["r1"] == 0:
        raise click.BadParameter(f"{onnx_path} is unpruned (r1 = 0): it has no STA selection to output; drop --selection-outputs")
    copy, names = stack.enter_context(selection_copy(onnx_path, manifest, folder=writable_folder(output)))
    missing = [stage for stage, name in enumerate(names) if name is None]
    if missing:
        raise click.ClickException(f"cannot find the token selection of STA stage(s) {missing} in {onnx_path}: re-export it with sta-deploy export")
    return copy


def _build(onnx_path, output, fp16, bf16, plugin_libs, batches, timing_cache, parse_only, force):
    from ..runtime.trt import build_engine
    from ..runtime.trt_parse import parse_check

    min_batch, opt_batch, max_batch = batches
    if parse_only:
        report = parse_check(onnx_path, plugin_libs=plugin_libs, batch_profile=(min_batch, opt_batch, max_batch))
        click.echo(f"{report.flavour} {report.version}: parsed {report.layers} layers, engine {report.engine_bytes / 1e6:.1f} MB; inputs {report.inputs}; outputs {report.outputs}")
        for layer in report.plugin_layers:
            shapes = ", ".join(f"{tuple(o['shape'])} {o['dtype']}" for o in layer["outputs"])
            click.echo(f"  plugin layer {layer['name']}: {shapes}")
        return
    build_engine(
        onnx_path,
        output,
        fp16=fp16,
        bf16=bf16,
        plugin_libs=plugin_libs,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        timing_cache=timing_cache,
        force=force,
    )
    click.echo(f"wrote {output}")
