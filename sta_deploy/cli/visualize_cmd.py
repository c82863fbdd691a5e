"""``sta-deploy visualize``: which tokens STA kept in a clip, drawn like Figure 4 of the paper."""

from __future__ import annotations

import json

import click

from .video_options import onnx_option, sampling_options, single_backend
from .options import json_option, model_options


def _colour(ctx, param, value):
    try:
        parts = tuple(int(v) for v in str(value).split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(0 <= v <= 255 for v in parts):
        raise click.BadParameter(f"expected R,G,B with values 0-255, e.g. 255,255,255; got {value!r}")
    return parts


@click.command()
@click.argument("clip", type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="PNG to write.")
@click.option("--gif", type=click.Path(dir_okay=False), default=None, help="Also write an animation over the frames (input and the three stages side by side).")
@model_options
@onnx_option
@sampling_options(with_views=False)
@click.option("--zoom", type=click.IntRange(1, 8), default=1, show_default=True, help="Enlarge every pixel (useful for small input sizes).")
@click.option("--columns", "max_columns", type=click.IntRange(0, 64), default=8, show_default=True, help="Most temporal slices to show (evenly spaced; 0: all).")
@click.option("--mask-color", default="255,255,255", show_default=True, callback=_colour, help="R,G,B of the dropped patches.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights when no --checkpoint is given.")
@click.option("--threads", type=int, default=None, help="CPU threads for PyTorch / ONNX Runtime [default: their own choice].")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@json_option
@click.pass_context
def visualize(ctx, clip, output, gif, model_name, r1, checkpoint, overrides, onnx_path, dataset, stride, min_frames, zoom, max_columns, mask_color, seed, threads, force, as_json):
    """Draw the tokens STA keeps in CLIP: the sampled frames in a row per STA stage, dropped patches masked.

    One view is drawn: the centre clip and the centre crop of the --dataset protocol.  With --onnx the
    model must have been exported with --with-kept.

    \b
    Examples:
      sta-deploy visualize clip.mp4 -o kept.png --model vit_b --r1 64 --checkpoint k400.pth
      sta-deploy visualize clip.mp4 -o kept.png --gif kept.gif --onnx vit_b_r64.onnx
    """
    from pathlib import Path

    from .._io import atomic_path, writable_folder
    from ..video.predict import protocol_for_backend
    from ..video.visualize import render_gif, visualize_clip

    for path in (output, gif):
        if path is not None and Path(path).exists() and not force:
            raise click.ClickException(f"{path} already exists; pass --force to overwrite it")
        if path is not None:
            writable_folder(path)  # before any work; a missing folder is created when writing
    backend = single_backend(ctx, model_name=model_name, r1=r1, checkpoint=checkpoint, overrides=overrides, onnx_path=onnx_path, seed=seed, threads=threads)
    if not backend.has_kept:
        raise click.ClickException(f"{backend.source} has no kept_stage outputs; re-export it with 'sta-deploy export --with-kept'")
    protocol = protocol_for_backend(backend, dataset=dataset, views="1x1", stride=stride, min_frames=min_frames)
    figure, views = visualize_clip(backend, clip, protocol, zoom=zoom, max_columns=max_columns, mask_color=mask_color)
    with atomic_path(output) as temp:
        figure.image.save(temp, format="PNG", optimize=True)
    if gif is not None:
        with atomic_path(gif) as temp:
            render_gif(views.pixels[0], figure.kept, backend.config, temp, zoom=zoom, mask_color=mask_color)
    if as_json:
        click.echo(json.dumps({"clip": clip, "output": output, "gif": gif, "model": backend.model_name, "r1": backend.r1,
                               "kept_fraction": figure.kept_fraction, "kept_tokens": figure.kept_tokens, "frames": figure.frame_indices}))
        return
    click.echo(f"{figure.caption}")
    click.echo(f"wrote {output}" + (f" and {gif}" if gif else ""))
