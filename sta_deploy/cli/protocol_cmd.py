"""``sta-deploy protocol``: write an export's sampling protocols for the C++ app (examples/classify)."""

from __future__ import annotations

import click


@click.command()
@click.argument("onnx_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Where to write [default: MODEL.protocol.json beside the model].")
@click.option("--labels", type=click.Path(dir_okay=False), default=None, help="Class names to include, one per line [default: the checkpoint's id2label, else class indices].")
@click.option("--checkpoint", type=click.Path(), default=None, help="The checkpoint the model was exported from, if it moved (its mean/std and class names).")
def protocol(onnx_path, output, labels, checkpoint):
    """Write MODEL.protocol.json: how clips are sampled for this export (frames, stride or segments,
    views, crop size, mean/std, view averaging, for K400 and SSv2), its input tensor and class names.

    examples/classify reads it beside MODEL.onnx or MODEL.plan, so the C++ app samples clips exactly
    as 'sta-deploy predict --onnx MODEL.onnx' does.

    \b
    Example:
      sta-deploy protocol vit_b_r48.onnx      # writes vit_b_r48.protocol.json
    """
    from ..video.protocol_file import write_protocol_file

    written, document = write_protocol_file(onnx_path, output, labels_file=labels, checkpoint=checkpoint)
    k400 = document["protocols"]["k400"]
    click.echo(
        f"{written}: {document['model']} r1={document['r1']}, {k400['num_frames']} frames of {k400['crop_size']}px, "
        f"protocols {', '.join(document['protocols'])}; labels: {document['labels_source']}"
    )
