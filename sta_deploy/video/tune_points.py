"""The points of a ``tune`` sweep: (r1, backend, precision), the default r1 values, and the artifact
each point runs (exported once into the sweep folder, reused when its manifest still matches).

Precisions per backend and what runs:

* onnxruntime: ``fp32`` / ``fp16`` / ``int8`` = ``export --dtype`` fp32 / fp16 / int8 (dynamic int8).
* openvino: ``fp32`` / ``bf16`` = the fp32 export at OpenVINO's f32 / bf16 inference precision;
  ``int8`` = ``sta-deploy quantize`` (NNCF, calibrated on the sweep's own clips) of the fp32 export.
* tensorrt: ``fp32`` / ``fp16`` / ``bf16`` = an engine built (``sta-deploy build [--fp16|--bf16]``) from
  the fp32 export; needs TensorRT and an NVIDIA GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..export.recipes import RUNTIME_PRECISIONS as BACKEND_PRECISIONS  # what a recipe can describe
DEFAULT_STEPS = 8  # points of the default r1 sweep, 0 and the largest valid r1 included


@dataclass(frozen=True, order=True)
class Point:
    r1: int
    precision: str
    backend: str

    @property
    def key(self) -> str:
        return f"r{self.r1}_{self.backend}_{self.precision}"

    @property
    def export_dtype(self) -> str:
        """The ``export --dtype`` of the ONNX file this point needs (OpenVINO int8 starts from fp32)."""
        return self.precision if self.backend == "onnxruntime" else "fp32"

    def describe(self) -> str:
        names = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT"}
        return f"r1 = {self.r1}, {names[self.backend]} {self.precision}"


def check_precisions(backend: str, precisions) -> tuple[str, ...]:
    allowed = BACKEND_PRECISIONS.get(backend)
    if allowed is None:
        raise ConfigError(f"backend {backend!r} is not one of {', '.join(BACKEND_PRECISIONS)}")
    bad = [p for p in precisions if p not in allowed]
    if bad:
        raise ConfigError(f"precision {bad[0]} is not available on {backend}; choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(precisions))


def valid_r1_values(model_name: str, overrides: dict) -> list[int]:
    """Every r1 the model accepts (0 first), found by asking the FLOPs counter, which checks the schedule."""
    from ..models.flops import count_flops

    count_flops(model_name, 0, **overrides)  # an unknown model or override fails here, in one line
    valid, r1 = [0], 1
    while r1 - valid[-1] <= 64:  # Swin accepts multiples of 8 only: stop 64 past the last valid one
        try:
            count_flops(model_name, r1, **overrides)
            valid.append(r1)
        except ConfigError:
            pass
        r1 += 1
    return valid


def default_r1_sweep(model_name: str, overrides: dict, steps: int = DEFAULT_STEPS) -> list[int]:
    """0 to the largest valid r1 in equal steps (a multiple of the model's r1 granularity), plus the
    paper's r1 values for the preset when they are valid here."""
    from ..models.registry import get_entry

    valid = valid_r1_values(model_name, overrides)
    if len(valid) == 1:
        return valid
    granularity = math.gcd(*valid[1:])
    largest = valid[-1]
    step = granularity * max(1, math.ceil(largest / granularity / (steps - 1)))
    chosen = set(range(0, largest, step)) | {largest}
    chosen |= set(get_entry(model_name).paper_r1) & set(valid)
    return sorted(r for r in chosen if r in set(valid))


def check_r1_values(model_name: str, overrides: dict, values) -> list[int]:
    from ..models.flops import count_flops

    for r1 in values:
        count_flops(model_name, r1, **overrides)  # ConfigError naming the largest valid r1
    return sorted(set(values) | {0})  # r1 = 0 is the reference of the speed-up and the accuracy cost


def sweep_points(r1_values, backend: str, precisions) -> list[Point]:
    """Every (r1, precision) pair, and always (0, fp32): the unpruned baseline on this backend."""
    points = {Point(r1, precision, backend) for r1 in r1_values for precision in precisions}
    points.add(Point(0, "fp32", backend))
    return sorted(points)


def onnx_file_name(model_name: str, point: Point) -> str:
    if point.backend == "openvino" and point.precision == "int8":
        return f"{model_name}_r{point.r1}_openvino_int8.onnx"
    suffix = "" if point.export_dtype == "fp32" else f"_{point.export_dtype}"
    return f"{model_name}_r{point.r1}{suffix}.onnx"


def point_from_dict(data: dict) -> Point:
    return Point(int(data["r1"]), str(data["precision"]), str(data["backend"]))


def exports_folder(out_dir) -> Path:
    return Path(out_dir) / "exports"
