"""``sta-deploy quantize``: int8 for OpenVINO (NNCF post-training quantization, STA kept in float32),
calibrated on real clips, written with a manifest and validated."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import BACKENDS, json_option, warnings_as_lines
from .video_options import sampling_options

RANDOM_CALIBRATION_WARNING = (
    "warning: no --calib given: calibrating on {count} seeded random clips (seed {seed}); int8 ranges measured on noise "
    "are not those of real video, so pass videos or a clips.npy for a model you deploy"
)


@click.command()
@click.argument("model_path", type=click.Path(dir_okay=False))
@click.argument("more_calib", nargs=-1, type=click.Path(), metavar="[CLIPS]...")
@click.option("--backend", type=click.Choice(BACKENDS), default="openvino", show_default=True, help="Runtime the int8 model is for (OpenVINO).")
@click.option("--calib", "calib", multiple=True, type=click.Path(), help="Calibration data: a .npy of model inputs (N, 3, T, H, W), or videos / frame folders (repeatable; extra CLIPS after MODEL_PATH count too).")
@click.option("--calib-size", type=click.IntRange(1), default=16, show_default=True, help="Clips to calibrate on: the first N of a .npy, views spread over the videos, or N seeded random clips without --calib.")
@click.option("-o", "--output", default=None, help="Output model [default: MODEL_int8.onnx]; '.onnx' is added when missing.")
@sampling_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random calibration clips (only without --calib).")
@click.option("--no-validate", is_flag=True, help="Skip the OpenVINO vs PyTorch check of the int8 model.")
@click.option("--clips", type=int, default=4, show_default=True, help="Random clips for the validation.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@json_option
def quantize(model_path, more_calib, backend, calib, calib_size, output, dataset, views, stride, min_frames, seed, no_validate, clips, force, as_json):
    """Quantize the fp32 export MODEL_PATH to int8 for OpenVINO, STA's nodes kept in float32.

    Calibration clips are decoded and sampled as the model sees them at inference (the backbone's
    protocol: --dataset, --views); without --calib, seeded random clips with a warning.  Writes
    MODEL_int8.onnx (QuantizeLinear/DequantizeLinear around the blocks' products) with its manifest,
    then validates it on OpenVINO at the int8 thresholds (exit 1 when it misses them).

    \b
    Examples:
      sta-deploy quantize vit_b_r48.onnx --calib clips/*.mp4 -o vit_b_r48_int8
      sta-deploy quantize vit_b_r48.onnx --calib calib_clips.npy --calib-size 32
    """
    from ..export.manifest import read_manifest
    from ..export.quantize_openvino import check_source, import_nncf, quantize_openvino

    if backend != "openvino":
        raise click.UsageError("int8 for ONNX Runtime is 'sta-deploy export --dtype int8' (dynamic quantization); quantize is for --backend openvino")
    if not Path(model_path).is_file():
        raise click.BadParameter(f"{model_path} does not exist", param_hint="MODEL_PATH")
    manifest = read_manifest(model_path)
    check_source(model_path, manifest)  # a plugin-mode or non-fp32 export is refused before any work
    import_nncf()
    sampling = {"dataset": dataset, "views": views, "stride": stride, "min_frames": min_frames}
    data, source = _calibration(manifest, [*calib, *more_calib], calib_size, seed, sampling)
    if not as_json:
        click.echo(f"quantizing {model_path} for OpenVINO on {source} (NNCF, STA's nodes in float32)")
    result = quantize_openvino(model_path, output, calibration=data, calibration_source=source, force=force)
    payload = {"path": str(result.path), "manifest": str(result.manifest_path), "ignored_nodes": result.ignored_nodes, "calibration": source}
    if not as_json:
        click.echo(f"wrote {result.path} and {result.manifest_path.name} ({result.ignored_nodes} STA nodes kept in float32)")
    if no_validate:
        if as_json:
            click.echo(json.dumps(payload))
        return
    from ..validate import validate_openvino

    with warnings_as_lines():
        report = validate_openvino(result.path, clips=clips)
    if as_json:
        click.echo(json.dumps({**payload, "validation": report.as_dict()}))
    else:
        click.echo(report.table())
    if not report.passed:
        raise click.ClickException(f"validation failed ({'; '.join(report.failures)}); the int8 model is kept at {result.path}")


def _calibration(manifest, paths, limit, seed, sampling):
    """(clips, description) from .npy files and videos, or seeded random clips with a warning."""
    import numpy as np

    input_shape = manifest["inputs"][0]["shape"][1:]
    if not paths:
        from ..validate import seeded_clips

        click.echo(RANDOM_CALIBRATION_WARNING.format(count=limit, seed=seed), err=True)
        return seeded_clips(limit, input_shape, seed), f"{limit} seeded random clips (seed {seed})"
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise click.BadParameter(f"{missing[0]} does not exist", param_hint="--calib")
    arrays, videos = [], [p for p in paths if not str(p).endswith(".npy")]
    for path in (p for p in paths if str(p).endswith(".npy")):
        from ..validate import load_clips

        arrays.append(load_clips(path, input_shape))
    if videos:
        from ..video.calibration import calibration_clips, manifest_protocol

        protocol = manifest_protocol(manifest, **sampling)
        clips, failures = calibration_clips(videos, protocol, limit=limit)
        for path, reason in failures:
            click.echo(f"warning: calibration clip {path} skipped ({reason})", err=True)
        arrays.append(clips)
    data = np.concatenate(arrays)[:limit]
    parts = [f"{len(paths) - len(videos)} .npy file(s)"] if len(paths) > len(videos) else []
    if videos:
        parts.append(f"{len(videos)} video(s), {protocol.describe()}")
    return data, f"{len(data)} clips from {' and '.join(parts)}"
