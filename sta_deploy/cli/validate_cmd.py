"""``sta-deploy validate``: an exported model against the PyTorch reference its manifest describes."""

from __future__ import annotations

import json

import click

from .options import backend_options, backend_precision, json_option, warnings_as_lines


@click.command()
@click.argument("onnx_path", type=click.Path(dir_okay=False))
@click.option("--checkpoint", type=click.Path(), default=None, help="Weights the model was exported from [default: the manifest's path].")
@click.option("--clips", type=click.IntRange(0), default=4, show_default=True, help="Seeded random clips to compare on.")
@click.option("--inputs", type=click.Path(dir_okay=False), default=None, help="A .npy of real clips, shape (N, 3, T, H, W).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random clips.")
@click.option("--atol", type=float, default=None, help="Largest allowed logits |diff| [fp32: 1e-4, fp16: 5e-2].")
@click.option("--min-kept", type=float, default=None, help="Smallest fraction of clips whose kept tokens match the reference up to near-ties, per stage [fp32: 1.0, fp16: 0.9, int8: 0.75].")
@click.option("--engine", type=click.Path(dir_okay=False), default=None, help="A TensorRT engine built from ONNX_PATH to validate instead of ONNX Runtime.")
@click.option("--plugin-lib", "plugin_libs", multiple=True, type=click.Path(dir_okay=False), help="With --engine: plugin library the engine needs (repeatable).")
@click.option("--save-inputs", type=click.Path(dir_okay=False), default=None, help="Also write the clips as Polygraphy input data (JSON), for 'polygraphy run --load-inputs'.")
@click.option("--save-outputs", type=click.Path(dir_okay=False), default=None, help="Also write the PyTorch reference's outputs as Polygraphy RunResults (JSON), for '--load-outputs'.")
@backend_options
@json_option
def validate(onnx_path, checkpoint, clips, inputs, seed, atol, min_kept, engine, plugin_libs, save_inputs, save_outputs, backend, precision, as_json):
    """Compare ONNX Runtime (or OpenVINO, or a TensorRT --engine) with PyTorch: logits, top-1/5, kept tokens.

    The backend's token choices are replayed in the reference stage by stage: swaps of near-tied
    scores (within a rounding margin: fp32 1e-5, fp16 2e-2, OpenVINO bf16 6.25e-2, int8 1e-1
    relative) pass, real mismatches fail (--engine: an engine built with 'sta-deploy build
    --selection-outputs'; other engines are compared plainly, and the report says so).  Exits 1 on a
    real mismatch, logits beyond tolerance (fp32: max |diff| 1e-4, top-1 100%) or any NaN/inf.
    """
    from pathlib import Path

    if not Path(onnx_path).is_file():
        raise click.BadParameter(f"{onnx_path} does not exist", param_hint="ONNX_PATH")
    tolerances = {"max_abs": atol, "kept": min_kept}
    if engine is not None and (save_inputs or save_outputs):
        raise click.UsageError("--save-inputs/--save-outputs write the PyTorch reference for any backend: run them without --engine")
    precision = backend_precision(backend, precision)
    if engine is not None and backend != "onnxruntime":
        raise click.UsageError("--engine validates a TensorRT engine; drop --backend")
    if backend == "openvino":
        from ..validate import validate_openvino

        with warnings_as_lines():
            report = validate_openvino(onnx_path, precision=precision, checkpoint=checkpoint, clips=clips, inputs=inputs, seed=seed, tolerances=tolerances)
    elif engine is not None:
        from ..validate import validate_engine

        report = validate_engine(onnx_path, engine, checkpoint=checkpoint, clips=clips, inputs=inputs, seed=seed, tolerances=tolerances, plugin_libs=plugin_libs)
    else:
        from .. import _progress
        from ..validate import validate_onnx

        with _progress.step("validating on ONNX Runtime against PyTorch"):
            report = validate_onnx(
                onnx_path, checkpoint=checkpoint, clips=clips, inputs=inputs, seed=seed, tolerances=tolerances, save_inputs=save_inputs, save_outputs=save_outputs
            )
    click.echo(json.dumps(report.as_dict()) if as_json else report.table())
    if not report.passed:
        raise click.ClickException("validation failed: " + "; ".join(report.failures))
