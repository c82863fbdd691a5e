"""``validate --save-inputs/--save-outputs``: the clips and the PyTorch reference in Polygraphy's formats.

With them, Polygraphy compares any backend with our reference, e.g.::

    polygraphy run X.onnx --onnxrt --load-inputs in.json --load-outputs ref.json --atol logits:1e-4 --rtol logits:0

Inputs are Polygraphy's data-loader format (a JSON list of ``{input name: array}`` feeds, one per
iteration); outputs a ``RunResults`` with one runner whose iterations hold the tensors the export
has (``logits`` and, for ``--with-kept`` exports, ``kept_stage0..2``).  Each feed is one batch of
the exported size (the last padded with copies of its last clip), one clip for ``--dynamic-batch``.
The outputs are the plain reference, without the replay: Polygraphy compares tensors as they are,
so a near-tie that another runtime breaks the other way shows up there as a kept-token difference.
"""

from __future__ import annotations

import numpy as np

from .batching import padded_batches

RUNNER_NAME = "sta-deploy-pytorch-reference"


def _polygraphy():
    try:
        from polygraphy.comparator import RunResults
        from polygraphy.json import save_json
    except ImportError:
        raise ImportError("--save-inputs/--save-outputs write Polygraphy's formats: pip install polygraphy") from None
    return RunResults, save_json


def feed_batches(data: np.ndarray, manifest: dict) -> list[np.ndarray]:
    """``data`` split into the batches the export takes (static batch: padded with the last clip)."""
    size = 1 if manifest["dynamic_batch"] else manifest["batch_size"]
    return [np.ascontiguousarray(chunk) for chunk, _ in padded_batches(data, size)]


def reference_outputs(model, manifest: dict, batches: list[np.ndarray]) -> list[dict]:
    """The plain PyTorch reference's outputs per feed, for every output the export has."""
    from .pytorch import run_model

    names = [output["name"] for output in manifest["outputs"]]
    with_kept = any(name.startswith("kept_stage") for name in names)
    iterations = []
    for batch in batches:
        logits, kept = run_model(model, batch, with_kept, batch_size=1)
        values = {"logits": logits.astype(np.float32), **{f"kept_stage{i}": k.astype(np.int64) for i, k in enumerate(kept or [])}}
        iterations.append({name: values[name] for name in names})
    return iterations


def save_polygraphy_data(model, manifest: dict, data: np.ndarray, *, inputs_path=None, outputs_path=None) -> None:
    """Write ``data`` as Polygraphy input feeds to ``inputs_path`` and the reference's outputs to ``outputs_path``."""
    RunResults, save_json = _polygraphy()
    batches = feed_batches(data, manifest)
    if inputs_path is not None:
        input_name = manifest["inputs"][0]["name"]
        save_json([{input_name: batch} for batch in batches], str(inputs_path), description="input data")
    if outputs_path is not None:
        results = RunResults()
        results.add(reference_outputs(model, manifest, batches), runner_name=RUNNER_NAME)
        results.save(str(outputs_path))
