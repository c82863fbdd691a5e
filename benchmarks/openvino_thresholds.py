"""What OpenVINO's precisions do to STA's outputs: the measurements behind the f32/bf16/int8 rows of the
README's validation thresholds.

For each model and r1: export (random weights, kept outputs), quantize with NNCF (calibrated on seeded
random clips, seed 1), then run the same validation clips (seed 0) through PyTorch once and through
OpenVINO f32, bf16 (where the CPU has it) and int8, and record every metric ``validate`` checks.

    python benchmarks/openvino_thresholds.py                               # vit_s r1 = 48, 64 (16 clips)
    python benchmarks/openvino_thresholds.py --model vit_b --r1 48 --clips 8

Writes benchmarks/results/openvino_thresholds_<model>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

import sta_deploy
from sta_deploy.export.manifest import read_manifest, versions
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.export.quantize_openvino import quantize_openvino
from sta_deploy.runtime.openvino import cpu_has_bf16, import_openvino, openvino_model, run_clips
from sta_deploy.runtime.pytorch import run_model
from sta_deploy.validate import TOLERANCES, compare_outputs, openvino_tolerance_key, seeded_clips


def measure(model_name: str, r1: int, clips: int, calib: int, threads: int, folder: Path) -> dict:
    model = sta_deploy.create_model(model_name, r1=r1, seed=0)
    path = folder / f"{model_name}_r{r1}.onnx"
    export_onnx(model, path, with_kept=True)
    shape = model.config.input_shape
    int8 = quantize_openvino(path, calibration=seeded_clips(calib, shape, seed=1), calibration_source=f"{calib} seeded random clips (seed 1)").path
    data = seeded_clips(clips, shape, seed=0)
    ref_logits, ref_kept = run_model(model, data, True)
    has_bf16 = cpu_has_bf16(import_openvino().Core())
    runs = {"f32": (path, "f32"), "int8": (int8, "f32")}
    if has_bf16:
        runs.update({"bf16": (path, "bf16"), "int8+bf16": (int8, "bf16")})
    rows = {}
    for label, (file, precision) in runs.items():
        compiled = openvino_model(file, precision=precision, threads=threads, cache_dir=False)
        manifest = read_manifest(file)
        logits, kept = run_clips(compiled, manifest, data)
        key = openvino_tolerance_key(manifest["dtype"], precision)
        report = compare_outputs(ref_logits, logits, ref_kept, kept, dtype=key, backend=compiled.description)
        rows[label] = {**report.as_dict(), "tolerance_row": key}
        print(f"{model_name} r1={r1} {label}: {report.failures or 'PASS'}", file=sys.stderr)
        print(report.table(), file=sys.stderr)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_s")
    parser.add_argument("--r1", default="48,64")
    parser.add_argument("--clips", type=int, default=16, help="validation clips (seed 0)")
    parser.add_argument("--calib", type=int, default=8, help="calibration clips for int8 (seed 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for r1 in (int(v) for v in args.r1.split(",")):
            results[f"r1={r1}"] = measure(args.model, r1, args.clips, args.calib, args.threads, Path(folder))
    out = Path(args.out or f"benchmarks/results/openvino_thresholds_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": args.model, "clips": args.clips, "calibration_clips": args.calib, "tolerances": TOLERANCES, "versions": versions(), "results": results}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
