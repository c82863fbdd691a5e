"""The JSON manifest written beside every exported model: building it, reading it, and rebuilding the
PyTorch reference it describes."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from .._version import __version__

MANIFEST_VERSION = 1
MANIFEST_FORMAT = "sta_deploy.manifest"


def manifest_path(onnx_path) -> Path:
    """``model.onnx`` -> ``model.manifest.json`` (same folder)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + ".manifest.json")


def versions() -> dict:
    import onnx
    import torch

    found = {"sta_deploy": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "python": platform.python_version()}
    try:
        import onnxruntime

        found["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - base dependency
        pass
    return found


def _tensor_spec(value_info) -> dict:
    import onnx

    tensor_type = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor_type.shape.dim]
    return {"name": value_info.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name}


def build_manifest(model, proto, report, *, dtype, sta_impl, opset, batch_size, dynamic_batch, onnx_file, onnx_sha256, external_data, weights, extra=None) -> dict:
    """The manifest of an export of ``model`` whose final graph is ``proto`` (``report``: its static-shape check)."""
    config = model.config
    return {
        "format": MANIFEST_FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "model": model.name,
        "family": config.family,
        "config": config.as_dict(),
        "r1": model.r1,
        "schedule": model.schedule.as_dict(),
        "dtype": dtype,
        "sta_impl": sta_impl,
        "opset": opset,
        "batch_size": batch_size,
        "dynamic_batch": dynamic_batch,
        "inputs": [_tensor_spec(v) for v in proto.graph.input],
        "outputs": [_tensor_spec(v) for v in proto.graph.output],
        "onnx_file": onnx_file,
        "onnx_sha256": onnx_sha256,
        "external_data": external_data,
        "weights": weights,
        "op_counts": report.op_counts,
        "versions": versions(),
        **(extra or {}),
    }


def write_manifest(manifest: dict, path) -> None:
    Path(path).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(onnx_path) -> dict:
    path = manifest_path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no manifest {path.name} beside {onnx_path}; validate needs the manifest that 'sta-deploy export' writes (re-export the model)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"manifest {path} is not valid JSON ({error}); re-export the model") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not an sta-deploy manifest; re-export the model")
    return manifest


def manifest_config(manifest: dict) -> dict:
    """The model's config fields as ``create_model``/``count_flops`` overrides.

    JSON turned the config's tuples (Swin window sizes, depths, heads) into lists.
    """
    return {key: tuple(value) if isinstance(value, list) else value for key, value in manifest["config"].items()}


def manifest_flops(manifest: dict):
    """:class:`sta_deploy.models.flops.FlopsReport` of the exported model (any backbone)."""
    from ..models.flops import count_flops

    return count_flops(manifest["model"], manifest["r1"], **manifest_config(manifest))


def rebuild_reference(manifest: dict, checkpoint=None):
    """The float32 PyTorch model the manifest describes (same weights: checkpoint or seeded random init)."""
    from ..models.checkpoints import checkpoint_sha256
    from ..models.registry import create_model

    weights = manifest["weights"]
    config = manifest_config(manifest)
    name = manifest["model"]
    r1 = manifest["r1"]
    if weights["source"] == "random-init":
        if checkpoint is not None:
            raise ValueError("this model was exported with random weights; drop --checkpoint (or re-export with it)")
        if weights.get("seed") is None:
            raise ValueError(
                "this model was exported from random weights without a seed, so its reference cannot be rebuilt; "
                "export it again with create_model(..., seed=N) or the CLI (which always seeds)"
            )
        return create_model(name, r1=r1, seed=weights["seed"], **config)
    checkpoint = checkpoint or weights.get("path")
    if checkpoint is None or not Path(checkpoint).exists():
        raise FileNotFoundError(
            f"the checkpoint this model was exported from ({weights.get('path')}) is not there; pass --checkpoint PATH"
        )
    digest = checkpoint_sha256(checkpoint)
    if digest != weights["sha256"]:
        raise ValueError(
            f"checkpoint {checkpoint} (sha256 {digest[:12]}...) is not the one the model was exported from "
            f"({weights['sha256'][:12]}...); pass the original file"
        )
    return create_model(name, r1=r1, checkpoint=checkpoint, **config)
