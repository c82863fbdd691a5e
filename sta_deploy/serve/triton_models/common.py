"""What every Python-backend model here shares: its parameters, its files, error responses, and a
self-test of the stub's tensor conversion (numpy 2 in the stub's environment made tensors come back
empty, with no error; a model that would answer that way refuses to load instead)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def pb_utils():
    import triton_python_backend_utils  # only inside Triton's Python-backend stub

    return triton_python_backend_utils


def model_setup(args) -> tuple[dict, dict, Path]:
    """(model config, parameters as plain strings, the version folder) from ``initialize``'s args."""
    config = json.loads(args["model_config"])
    params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    folder = Path(args["model_repository"]) / str(args["model_version"])
    return config, params, folder


def check_tensor_round_trip(utils) -> None:
    """Raise when the stub would answer empty tensors: numpy 2 in its environment (seen with
    nvidia-pytriton 0.7's stub: the responses arrive empty, with no error), or an array that does not
    survive ``pb_utils.Tensor``."""
    if int(np.__version__.split(".")[0]) >= 2 and not getattr(utils, "SUPPORTS_NUMPY_2", False):
        raise RuntimeError(
            f"numpy {np.__version__} in the Python backend's environment ({np.__file__}): this stub answers empty tensors "
            "with numpy 2; install numpy<2 there (pip install 'numpy<2')"
        )
    probe = np.arange(12, dtype=np.float32).reshape(3, 4)
    try:
        back = utils.Tensor("probe", probe).as_numpy()
        same = back.shape == probe.shape and np.array_equal(back, probe)
    except Exception as error:  # the binding itself may raise on an incompatible numpy
        same, back = False, error
    if not same:
        raise RuntimeError(
            f"the Python backend's tensors do not round-trip with numpy {np.__version__} (got {back!r:.80}); "
            "Triton's python-backend stub needs numpy < 2 in its environment: pip install 'numpy<2'"
        )


def error_response(utils, message: str):
    return utils.InferenceResponse(output_tensors=[], error=utils.TritonError(message))


def input_array(utils, request, name: str):
    tensor = utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise ValueError(f"missing input '{name}'")
    return tensor.as_numpy()


def check_nonempty(outputs: dict) -> dict:
    """Outputs about to be sent: an empty one is a bug, never an answer."""
    empty = [name for name, value in outputs.items() if np.asarray(value).size == 0]
    if empty:
        raise RuntimeError(f"output(s) {', '.join(empty)} came out empty; refusing to send an empty answer")
    return outputs


def tensors(utils, outputs: dict) -> list:
    return [utils.Tensor(name, np.ascontiguousarray(value)) for name, value in check_nonempty(outputs).items()]
