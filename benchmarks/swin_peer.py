"""Unpruned Video Swin export efficiency against a peer: torchvision's ``swin3d_t`` exported the same way.

Both are exported to ONNX (batch 1, 3x32x224^2, opset 18, static shapes, torch.onnx dynamo with its
optimiser) and timed interleaved on ONNX Runtime CPU with the same threads (medians, and minima:
on a shared machine other processes only ever add time).  The architectures are the same (swin3d_t
is Video Swin-T; our module names follow it), so both do the same FLOPs and the time ratio is the
per-FLOP efficiency ratio.  torchvision may not install beside our torch: ``--peer-python`` names
the interpreter of a separate environment that has torch, torchvision, onnx and onnxscript; the peer
export runs there in a subprocess.

    python benchmarks/swin_peer.py --peer-python /path/to/other/venv/bin/python

Prints a table and writes JSON (default benchmarks/results/swin_peer_swin_t.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_cpu import interleaved_timings, ort_runner  # noqa: E402

import sta_deploy  # noqa: E402
from sta_deploy.bench import op_type_times  # noqa: E402
from sta_deploy.export.manifest import versions  # noqa: E402
from sta_deploy.export.onnx_export import export_onnx  # noqa: E402
from sta_deploy.models.flops import count_flops  # noqa: E402
from sta_deploy.validate import seeded_clips  # noqa: E402

# Runs in the peer environment: argv = output path, frames, image size.
PEER_EXPORT = """
import sys, torch, torchvision
out, frames, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = torchvision.models.video.swin3d_t(weights=None).eval()
example = torch.zeros(1, 3, frames, size, size)
with torch.no_grad():
    torch.onnx.export(model, (example,), out, input_names=["video"], output_names=["logits"], opset_version=18,
                      dynamo=True, optimize=True, verbose=False)
print(torch.__version__, torchvision.__version__)
"""


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", required=True, help="python of an environment with torchvision (and onnxscript)")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--profile-runs", type=int, default=2, help="runs of the per-op-type profile (0: none)")
    parser.add_argument("--out", default="benchmarks/results/swin_peer_swin_t.json")
    return parser.parse_args(argv)


def export_peer(peer_python: str, path: Path, frames: int, size: int) -> str:
    done = subprocess.run([peer_python, "-c", PEER_EXPORT, str(path), str(frames), str(size)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or not path.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"the peer export with {peer_python} failed: {' | '.join(tail)}")
    return done.stdout.strip().splitlines()[-1]


def main(argv=None):
    args = parse_args(argv)
    ours = sta_deploy.create_model("swin_t", r1=0, seed=0)
    _, frames, size, _ = ours.config.input_shape
    gflops = count_flops("swin_t", 0).gflops  # the same architecture: the same FLOPs
    with tempfile.TemporaryDirectory() as folder:
        paths = {"sta-deploy swin_t": Path(folder) / "ours.onnx", "torchvision swin3d_t": Path(folder) / "peer.onnx"}
        export_onnx(ours, paths["sta-deploy swin_t"])
        peer_versions = export_peer(args.peer_python, paths["torchvision swin3d_t"], frames, size)
        video = seeded_clips(1, ours.config.input_shape)
        runners = {name: ort_runner(path, video, threads=args.threads) for name, path in paths.items()}
        times = interleaved_timings(runners, warmup=1, runs=args.runs)
        profiles = {name: op_type_times(path, video, threads=args.threads, runs=args.profile_runs) for name, path in paths.items()} if args.profile_runs else {}
    rows = []
    for name, values in times.items():
        median, best = statistics.median(values), min(values)
        rows.append({"export": name, "gflops": gflops, "median_ms": median, "min_ms": best, "gflops_per_s": gflops / (median / 1000.0), "gflops_per_s_min": gflops / (best / 1000.0)})
    print(f"\nswin_t r1=0 on ONNX Runtime CPU, batch 1, {args.threads} threads, {args.runs} interleaved runs")
    print(f"{'export':<22} {'median ms':>10} {'min ms':>8} {'GFLOP/s':>8}")
    for row in rows:
        print(f"{row['export']:<22} {row['median_ms']:>10.0f} {row['min_ms']:>8.0f} {row['gflops_per_s']:>8.1f}")
    ratio = rows[0]["median_ms"] / rows[1]["median_ms"]
    print(f"ours / peer time: {ratio:.3f} (median), {rows[0]['min_ms'] / rows[1]['min_ms']:.3f} (min)")
    for name, profile in profiles.items():
        print(f"\n{name}: ms per run by op type (profiler on, optimisations off)")
        for op_type, ms in list(profile.items())[:10]:
            print(f"  {op_type:<22}{ms:>9.1f}")
    result = {
        "model": "swin_t", "threads": args.threads, "runs": args.runs, "rows": rows, "time_ratio_ours_over_peer": ratio,
        "machine": {"processor": platform.processor(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "versions": versions(), "peer_versions": peer_versions, "op_type_ms": profiles, "raw_ms": times,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
