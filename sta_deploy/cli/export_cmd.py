"""``sta-deploy export``: a static-shape ONNX file, its manifest, and a validation run."""

from __future__ import annotations

from pathlib import Path

import click

from .options import arch_options, checkpoint_option, RANDOM_WEIGHTS_WARNING

# CLI parameter name -> recipe key
RECIPE_FIELDS = {
    "model_name": "model",
    "r1": "r1",
    "dtype": "dtype",
    "opset": "opset",
    "batch": "batch",
    "dynamic_batch": "dynamic_batch",
    "with_kept": "with_kept",
    "output": "output",
    "sta_impl": "sta_impl",
    "window_attention": "window_attention",
    "seed": "seed",
}


@click.command()
@click.option("--recipe", type=click.Path(dir_okay=False), default=None, help="A TOML recipe from export/; other options override it.")
@click.option("--model", "-m", "model_name", default="vit_b", show_default=True, help="Registry name (see 'sta-deploy models').")
@click.option("--r1", type=int, default=0, show_default=True, help="Tokens STA drops per group at each stage (0 = unpruned).")
@checkpoint_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Output .onnx path [default: MODEL_rR1[_fp16].onnx].")
@click.option("--batch", type=int, default=1, show_default=True, help="Static batch size.")
@click.option("--dynamic-batch", is_flag=True, help="Leave the batch dimension symbolic (all other dims static).")
@click.option("--opset", type=int, default=None, help="ONNX opset [default: 18].")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True, help="Precision (STA scores stay fp32); int8 = ONNX Runtime dynamic quantization, for CPUs.")
@click.option("--with-kept", is_flag=True, help="Add int64 outputs kept_stage0..2 with the kept token positions.")
@click.option("--sta-impl", type=click.Choice(["onnx", "plugin"]), default="onnx", show_default=True, help="Pure-ONNX selection or the TensorRT plugin node.")
@click.option(
    "--window-attention",
    type=click.Choice(["onnx", "kernel"]),
    default="onnx",
    show_default=True,
    help="Video Swin: full windows in plain ONNX, or one KeptWindowAttention node per block that attends the kept queries only (ONNX Runtime CPU, fp32).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights when no --checkpoint is given.")
@click.option("--no-validate", is_flag=True, help="Skip the ONNX Runtime vs PyTorch check after export.")
@click.option("--clips", type=click.IntRange(1), default=2, show_default=True, help="Random clips for the post-export validation.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@arch_options
@click.pass_context
def export(ctx, recipe, model_name, r1, checkpoint, output, batch, dynamic_batch, opset, dtype, with_kept, sta_impl, window_attention, seed, no_validate, clips, force, overrides):
    """Export MODEL pruned with STA at R1 to a static-shape ONNX file (+ manifest), then validate it.

    \b
    Examples:
      sta-deploy export --model vit_b --r1 48
      sta-deploy export --recipe export/vit_b_r48.toml --checkpoint vit_b_k400.pth
      sta-deploy export --model vit_s --r1 64 --dtype fp16 --dynamic-batch -o vit_s.onnx
    """
    from ..models.registry import create_model

    values = dict(model_name=model_name, r1=r1, dtype=dtype, opset=opset, batch=batch, dynamic_batch=dynamic_batch, with_kept=with_kept, output=output, sta_impl=sta_impl, window_attention=window_attention, seed=seed)
    runtime = None
    if recipe is not None:
        values, overrides, runtime = _from_recipe(ctx, recipe, values, overrides)
    seed = values["seed"]
    if values["batch"] != 1 and values["dynamic_batch"] and ctx.get_parameter_source("batch") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--batch and --dynamic-batch are exclusive: pick a static batch or a symbolic one")
    suffix = "" if values["dtype"] == "fp32" else f"_{values['dtype']}"
    output = values["output"] or f"{values['model_name']}_r{values['r1']}{suffix}.onnx"
    final = None
    if runtime is not None and runtime[:2] == ("openvino", "int8"):
        final, output = output, str(Path(output).with_name(Path(output).stem + "_fp32.onnx"))  # NNCF quantizes the fp32 export

    from .. import _progress
    from .._io import output_lock
    from ..export.onnx_export import check_export_options, export_onnx

    # Every check that needs no model first (opset, batch, dtype, suffix, folder, --force), then
    # the output's lock for the whole command: a second export to the same file fails at once.
    check_export_options(output, force=force, **_option_values(values))
    ctx.with_resource(output_lock(output))
    # again under the lock: an export that finished meanwhile is not overwritten without --force
    check_export_options(output, force=force, **_option_values(values))
    with _progress.step(f"building {values['model_name']} r1={values['r1']}"):
        model = create_model(values["model_name"], r1=values["r1"], checkpoint=checkpoint, seed=seed, **overrides)
    if checkpoint is None:
        click.echo(RANDOM_WEIGHTS_WARNING.format(name=values["model_name"]), err=True)
    from ..export.onnx_export import export_onnx

    click.echo(f"exporting {values['model_name']} r1={values['r1']} {model.schedule.describe()} ({values['dtype']}, {values['sta_impl']}) -> {output}")
    if values["sta_impl"] == "plugin" and model.r1 == 0:
        click.echo("note: r1 = 0 prunes no token, so there is nothing for the STA plugin to replace: the graph is the unpruned model in plain ONNX")
    if values.get("window_attention") == "kernel" and model.r1 == 0:
        click.echo("note: r1 = 0 keeps every query, so there is nothing for the kept-query attention kernel to skip: the graph is the unpruned model in plain ONNX")
    result = export_onnx(
        model,
        output,
        batch_size=values["batch"],
        dynamic_batch=values["dynamic_batch"],
        opset=values["opset"],
        with_kept=values["with_kept"],
        dtype=values["dtype"],
        sta_impl=values["sta_impl"],
        window_attention=values["window_attention"],
        force=force,
    )
    manifest = result.manifest
    tokens = " -> ".join(str(t) for t in [manifest["schedule"]["tokens_in"], *manifest["schedule"]["tokens_per_stage"]])
    click.echo(f"wrote {result.path} (opset {manifest['opset']}, tokens {tokens}, static shapes ok) and {result.manifest_path.name}")
    if not no_validate:
        from ..validate import validate_onnx

        with _progress.step(f"validating on {clips} clips against PyTorch"):
            report = validate_onnx(result.path, checkpoint=checkpoint, clips=clips)
        click.echo(report.table())
        if not report.passed:
            raise click.ClickException(f"validation failed ({'; '.join(report.failures)}); the exported file is kept at {result.path}")
    if runtime is not None:
        _finish_runtime(runtime, result.path, final, force)


def _from_recipe(ctx, recipe, values, overrides):
    """Recipe values under the command line's; (values, overrides, (backend, precision, quantize) or None)."""
    from ..export.recipes import load_recipe

    loaded = load_recipe(recipe)
    for param, key in RECIPE_FIELDS.items():
        explicit = ctx.get_parameter_source(param) == click.core.ParameterSource.COMMANDLINE
        if key in loaded and not explicit:
            values[param] = loaded[key]
    overrides = {**loaded.get("overrides", {}), **overrides}
    runtime = (loaded["backend"], loaded["precision"], loaded.get("quantize")) if "backend" in loaded else None
    if runtime is not None and values["dtype"] != loaded["dtype"]:
        raise click.UsageError(f"--dtype {values['dtype']} contradicts the recipe's {runtime[0]} {runtime[1]} (an {loaded['dtype']} export); drop --dtype")
    return values, overrides, runtime


def _finish_runtime(runtime, path, final, force) -> None:
    """What the recipe's backend/precision needs beyond the ONNX export: OpenVINO int8 is quantized here;
    the others only say how to run (or build) it."""
    backend, precision, quantize = runtime
    if final is not None:
        from .._progress import step
        from ..export.manifest import read_manifest
        from ..export.quantize_openvino import import_nncf, quantize_openvino
        from ..video.calibration import calibration_clips, manifest_protocol

        import_nncf()
        sampling = {key: quantize[key] for key in ("dataset", "views", "stride", "min_frames") if key in quantize}
        protocol = manifest_protocol(read_manifest(path), **sampling)
        clips, failures = calibration_clips(quantize["calib"], protocol, limit=int(quantize.get("calib_size", 16)))
        for clip, reason in failures:
            click.echo(f"warning: calibration clip {clip} skipped ({reason})", err=True)
        source = f"{len(clips)} views of {len(quantize['calib'])} clips ({protocol.describe()})"
        with step(f"quantizing for OpenVINO int8 on {source}"):
            quantized = quantize_openvino(path, final, calibration=clips, calibration_source=source, force=force)
        click.echo(f"wrote {quantized.path} and {quantized.manifest_path.name} (OpenVINO int8 from {Path(path).name})")
    elif backend == "openvino":
        click.echo(f"run it with --backend openvino{' --precision bf16' if precision == 'bf16' else ''}")
    elif backend == "tensorrt":
        flag = {"fp32": "", "fp16": " --fp16", "bf16": " --bf16"}[precision]
        click.echo(f"build the TensorRT engine on the GPU machine: sta-deploy build {path}{flag}")


def _option_values(values: dict) -> dict:
    """check_export_options' keyword arguments from the command's (recipe-merged) values."""
    return dict(batch_size=values["batch"], opset=values["opset"], dtype=values["dtype"], sta_impl=values["sta_impl"],
                window_attention=values.get("window_attention", "onnx"))
