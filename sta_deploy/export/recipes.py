"""Export recipes: one TOML file per published configuration (the top-level ``export/`` folder).

A recipe holds the arguments of ``sta-deploy export``::

    model = "vit_b"
    r1 = 48
    dtype = "fp32"          # or "fp16"
    opset = 18
    batch = 1
    dynamic_batch = false
    with_kept = false
    output = "vit_b_r48.onnx"
    seed = 0                # random weights only (no --checkpoint)
    backend = "onnxruntime" # optional: the runtime the export is for, with
    precision = "fp32"      # its precision (see RUNTIME_PRECISIONS)
    [overrides]              # optional architecture overrides
    num_classes = 174
    [quantize]               # backend = "openvino", precision = "int8" only
    calib = ["clips/a.mp4"]  # NNCF calibration clips, sampled as 'sta-deploy quantize' does
    calib_size = 16
    views = "1x1"            # and dataset, stride, min_frames: the sampling protocol

``backend`` / ``precision`` make a recipe describe a whole deployable configuration (``sta-deploy tune``
writes one):

* onnxruntime fp32 / fp16 / int8: the export at that ``dtype`` (int8 = ONNX Runtime dynamic int8).
* openvino fp32 / bf16: the fp32 export, run at OpenVINO's f32 / bf16 inference precision.
* openvino int8: the fp32 export written as ``<output stem>_fp32.onnx``, then NNCF-quantized to ``output``
  on the ``[quantize]`` clips (what ``sta-deploy quantize`` does).
* tensorrt fp32 / fp16 / bf16: the fp32 export; the engine is built from it with ``sta-deploy build``
  (``--fp16`` / ``--bf16``) on the GPU machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPE_KEYS = {"model", "r1", "dtype", "opset", "batch", "dynamic_batch", "with_kept", "output", "overrides", "sta_impl", "window_attention", "description",
               "seed", "backend", "precision", "quantize"}
RUNTIME_PRECISIONS = {
    "onnxruntime": ("fp32", "fp16", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
    "tensorrt": ("fp32", "fp16", "bf16"),
}
QUANTIZE_KEYS = {"calib", "calib_size", "dataset", "views", "stride", "min_frames"}


def load_recipe(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist; see the export/ folder for the published ones")
    try:
        recipe = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"recipe {path} is not valid TOML: {error}") from None
    unknown = sorted(set(recipe) - RECIPE_KEYS)
    if unknown:
        raise ValueError(f"recipe {path} has unknown keys {', '.join(unknown)}; allowed: {', '.join(sorted(RECIPE_KEYS))}")
    if "model" not in recipe:
        raise ValueError(f"recipe {path} does not name a model (model = \"vit_b\")")
    _check_runtime(recipe, path)
    return recipe


def _check_runtime(recipe: dict, path) -> None:
    """backend / precision / [quantize] agree with each other and with dtype; dtype is filled in."""
    if "backend" not in recipe and "precision" not in recipe:
        if "quantize" in recipe:
            raise ValueError(f"recipe {path} has a [quantize] table but no backend = \"openvino\", precision = \"int8\"")
        return
    backend = recipe.get("backend", "onnxruntime")
    allowed = RUNTIME_PRECISIONS.get(backend)
    if allowed is None:
        raise ValueError(f"recipe {path}: backend {backend!r} is not one of {', '.join(RUNTIME_PRECISIONS)}")
    precision = recipe.setdefault("precision", "fp32")
    if precision not in allowed:
        raise ValueError(f"recipe {path}: precision {precision!r} is not available on {backend}; choose from {', '.join(allowed)}")
    dtype = precision if backend == "onnxruntime" else "fp32"
    # TensorRT 11 builds strongly typed networks: its fp16 engine comes from the fp16 export
    allowed_dtypes = (dtype, "fp16") if (backend, precision) == ("tensorrt", "fp16") else (dtype,)
    if recipe.setdefault("dtype", dtype) not in allowed_dtypes:
        raise ValueError(f"recipe {path}: dtype {recipe['dtype']!r} contradicts {backend} {precision} (which exports {dtype}); drop dtype")
    quantize = recipe.get("quantize")
    if (backend, precision) == ("openvino", "int8"):
        if not isinstance(quantize, dict) or not quantize.get("calib"):
            raise ValueError(f"recipe {path}: openvino int8 needs a [quantize] table with calib = [clip paths] to calibrate on")
        unknown = sorted(set(quantize) - QUANTIZE_KEYS)
        if unknown:
            raise ValueError(f"recipe {path}: [quantize] has unknown keys {', '.join(unknown)}; allowed: {', '.join(sorted(QUANTIZE_KEYS))}")
    elif quantize is not None:
        raise ValueError(f"recipe {path}: [quantize] is for backend = \"openvino\", precision = \"int8\" only")


def published_recipes(folder) -> list[Path]:
    return sorted(Path(folder).glob("*.toml"))
