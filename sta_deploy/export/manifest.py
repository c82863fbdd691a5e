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


def read_manifest(onnx_path, *, needed_by: str = "validate") -> dict:
    """The manifest beside ``onnx_path``, checked by :func:`check_manifest`.

    ``needed_by`` names the command in the message when the manifest is missing.
    """
    from .._io import read_json_object

    path = manifest_path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no manifest {path.name} beside {onnx_path}; {needed_by} needs the manifest that 'sta-deploy export' writes (re-export the model)"
        )
    manifest = read_json_object(path, what="manifest", fix="re-export the model")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not an sta-deploy manifest; re-export the model")
    check_manifest(manifest, path)
    return manifest


def read_verified_manifest(onnx_path, *, needed_by: str) -> dict:
    """:func:`read_manifest`, and the model file must be the one the manifest describes (sha256)."""
    manifest = read_manifest(onnx_path, needed_by=needed_by)
    check_model_matches(onnx_path, manifest)
    return manifest


def check_model_matches(onnx_path, manifest: dict) -> None:
    """The .onnx must be the file its manifest describes (its sha256), not a later edit or a truncated copy."""
    from .._io import sha256_file

    expected = manifest.get("onnx_sha256")
    if expected and sha256_file(onnx_path) != expected:
        raise ValueError(f"{Path(onnx_path).name} does not match its manifest (sha256 {expected[:12]}...): re-export it")


# field -> (check, what it must be); every manifest 'sta-deploy export' writes passes
_FIELDS = {
    "model": (lambda v: isinstance(v, str) and v != "", "a model name"),
    "r1": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "config": (lambda v: isinstance(v, dict), "an object"),
    "dtype": (lambda v: v in ("fp32", "fp16", "int8"), "one of fp32, fp16, int8"),
    "sta_impl": (lambda v: v in ("onnx", "plugin"), "onnx or plugin"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "dynamic_batch": (lambda v: isinstance(v, bool), "true or false"),
    "inputs": (lambda v: isinstance(v, list) and len(v) >= 1 and all(_is_tensor_spec(t) for t in v), "a list of {name, shape, dtype}"),
    "outputs": (lambda v: isinstance(v, list) and len(v) >= 1 and all(_is_tensor_spec(t) for t in v), "a list of {name, shape, dtype}"),
    "onnx_sha256": (lambda v: isinstance(v, str) and len(v) == 64, "a sha256 hex digest"),
    "weights": (lambda v: isinstance(v, dict) and v.get("source") in ("random-init", "checkpoint"), "an object with source random-init or checkpoint"),
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_tensor_spec(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("name"), str) and isinstance(value.get("shape"), list)


def check_manifest(manifest, path="manifest") -> None:
    """One schema check for every reader: a one-line error naming the first bad field."""
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} holds a JSON {type(manifest).__name__}, not a manifest object; re-export the model")
    for name, (valid, expected) in _FIELDS.items():
        if name not in manifest:
            raise ValueError(f"{path} has no '{name}' field; re-export the model")
        if not valid(manifest[name]):
            raise ValueError(f"{path}: field '{name}' is {json.dumps(manifest[name])[:60]}, expected {expected}; re-export the model")
    weights = manifest["weights"]
    if weights["source"] == "checkpoint" and not (isinstance(weights.get("sha256"), str) and weights.get("path")):
        raise ValueError(f"{path}: field 'weights' names a checkpoint without its path and sha256; re-export the model")
    batch_dim = manifest["inputs"][0]["shape"][0] if manifest["inputs"][0]["shape"] else None
    if manifest["dynamic_batch"] != isinstance(batch_dim, str) or (not manifest["dynamic_batch"] and batch_dim != manifest["batch_size"]):
        raise ValueError(
            f"{path}: field 'batch_size' ({manifest['batch_size']}, dynamic_batch {json.dumps(manifest['dynamic_batch'])}) "
            f"disagrees with its input shape {manifest['inputs'][0]['shape']}; re-export the model"
        )


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
