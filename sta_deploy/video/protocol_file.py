"""An exported model's sampling protocols as a small JSON file, for apps that decode and sample clips
themselves (examples/classify, the C++ app).

The file is built from the model's manifest with the same functions ``predict --onnx`` uses, so the
app samples exactly what the model was evaluated with: frames, stride or segments, views, crop size,
resize rounding, mean/std and the view-averaging rule for each dataset protocol, plus the model's
input tensor and class names.  ``MODEL.onnx`` (or the ``MODEL.plan`` built from it) reads
``MODEL.protocol.json`` beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .labels import resolve_labels
from .sampling import DATASETS, checkpoint_normalisation, protocol_for

PROTOCOL_FORMAT = "sta_deploy.protocol"
PROTOCOL_VERSION = 1


def protocol_path(model_path) -> Path:
    """``model.onnx`` / ``model.plan`` -> ``model.protocol.json`` (same folder)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".protocol.json")


def protocol_document(onnx_path, *, labels_file=None, checkpoint=None) -> dict:
    """The protocol file's content for the export ``onnx_path`` (read from its manifest).

    ``checkpoint`` stands in for the one the manifest records (its ``preprocessor_config.json``
    mean/std and ``config.json`` class names are used when it is a Hugging Face folder), as with
    ``predict --onnx --checkpoint``.
    """
    from ..export.manifest import manifest_config, read_manifest
    from ..models.registry import resolve_config

    manifest = read_manifest(onnx_path)
    config = resolve_config(manifest["model"], **manifest_config(manifest))
    weights = manifest.get("weights", {})
    checkpoint = checkpoint or (weights.get("path") if weights.get("source") == "checkpoint" else None)
    mean, std = checkpoint_normalisation(checkpoint) or (None, None)
    protocols = {
        dataset: protocol_for(config.family, num_frames=config.num_frames, img_size=config.img_size, dataset=dataset, mean=mean, std=std).as_dict()
        for dataset in DATASETS
    }
    names, label_source = resolve_labels(config.num_classes, labels_file=labels_file, checkpoint=checkpoint)
    return {
        "format": PROTOCOL_FORMAT,
        "version": PROTOCOL_VERSION,
        "model": manifest["model"],
        "r1": manifest["r1"],
        "family": config.family,
        "num_classes": config.num_classes,
        "onnx_file": Path(onnx_path).name,
        "onnx_sha256": manifest.get("onnx_sha256"),
        "input": manifest["inputs"][0],
        "protocols": protocols,
        "labels": names,
        "labels_source": label_source,
    }


def write_protocol_file(onnx_path, output=None, *, labels_file=None, checkpoint=None) -> tuple[Path, dict]:
    """Write :func:`protocol_document` to ``output`` (default :func:`protocol_path`), atomically;
    returns the path and the document."""
    from .._io import atomic_path

    output = Path(output) if output is not None else protocol_path(onnx_path)
    document = protocol_document(onnx_path, labels_file=labels_file, checkpoint=checkpoint)
    with atomic_path(output) as temp:
        temp.write_text(json.dumps(document, indent=1) + "\n")
    return output, document
