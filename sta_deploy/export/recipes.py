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
    [overrides]              # optional architecture overrides
    num_classes = 174
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPE_KEYS = {"model", "r1", "dtype", "opset", "batch", "dynamic_batch", "with_kept", "output", "overrides", "sta_impl", "description"}


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
    return recipe


def published_recipes(folder) -> list[Path]:
    return sorted(Path(folder).glob("*.toml"))
