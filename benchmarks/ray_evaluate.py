"""``evaluate`` here vs ``evaluate --ray local`` on the same generated clips, in one run: clips/s of each.

    python benchmarks/ray_evaluate.py                       # vit_s, r1 0 and 48, 24 clips, 1x1 views
    python benchmarks/ray_evaluate.py --model vit_b --clips 48 --views 1x3

The clips are generated (moving shapes, 64 frames at 240x320, mp4) and decoded for real.  Both runs
use the same backends (seeded random weights) and write their own results file; the per-clip
predictions are checked to be equal.  Timed: the evaluate call (decode + every r1 + writing), and
for Ray separately the start of the private Ray (``ray.init``), which a long run pays once.  Local
runs PyTorch on ``--threads`` threads (default 1); Ray runs one decode task and
``--ray-workers`` inference actors of one thread each.  Prints a table, writes JSON (default
benchmarks/results/ray_evaluate_<model>.json).  Needs the video and ray extras.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # Ray's workers import this checkout

from sta_deploy.export.manifest import versions  # noqa: E402
from sta_deploy.video.backend_recipe import BackendRecipe  # noqa: E402
from sta_deploy.video.dataset import read_labelled_list  # noqa: E402
from sta_deploy.video.evaluate import evaluate  # noqa: E402
from sta_deploy.video.predict import protocol_for_backend  # noqa: E402
from sta_deploy.video.ray_evaluate import connected, ray_producer  # noqa: E402
from sta_deploy.video.synthetic import moving_shapes, write_video  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_s")
    parser.add_argument("--r1", default="48", help="comma-separated (r1 = 0 is added)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--views", default="1x1")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads of the local run (Ray's actors run one each)")
    parser.add_argument("--ray-workers", type=int, default=None, help="inference actors [default: half the CPUs]")
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def make_clips(folder: Path, count: int) -> Path:
    for index in range(count):
        label = index % 4
        target = folder / f"class_{label}" / f"clip{index:03d}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_video(target, moving_shapes(64, 240, 320, seed=index, kind=label, shapes=3))
    return folder


def timed_run(backends, labelled, protocol, results_path, produce=None) -> tuple[float, dict]:
    start = time.perf_counter()
    evaluate(backends, labelled, protocol, results_path=results_path, progress=False, log=lambda _: None, produce=produce)
    seconds = time.perf_counter() - start
    records = {}
    for line in Path(results_path).read_text().splitlines():
        item = json.loads(line)
        if "clip" in item:
            records[item["clip"]] = {r1: result["top5"] for r1, result in item.get("results", {}).items()}
    return seconds, records


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    recipe = BackendRecipe(args.model, tuple(int(v) for v in args.r1.split(",")), seed=0, threads=args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="ray_bench_"))
    try:
        return _compare(args, recipe, workdir, torch)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _compare(args, recipe, workdir: Path, torch) -> int:
    load_before = os.getloadavg()[0]  # other work on the machine shows in both runs' times
    labelled = read_labelled_list(make_clips(workdir / "clips", args.clips))
    backends = recipe.build()
    protocol = protocol_for_backend(backends[0], views=args.views)
    torch.set_num_threads(args.threads)
    local_s, local_records = timed_run(backends, labelled, protocol, workdir / "local.jsonl")
    start = time.perf_counter()
    with connected("local") as ray:
        init_s = time.perf_counter() - start
        cpus = int(ray.cluster_resources().get("CPU", 0))
        ray_recipe = BackendRecipe(recipe.model_name, recipe.r1_values, seed=0, threads=1)
        ray_s, ray_records = timed_run(backends, labelled, protocol, workdir / "ray.jsonl", ray_producer(ray_recipe, workers=args.ray_workers))
    if ray_records != local_records:
        print("error: --ray local gave other predictions than the local run", file=sys.stderr)
        return 1
    count = len(labelled.clips)
    rows = [
        {"run": f"local ({args.threads} PyTorch threads)", "seconds": local_s, "clips_per_s": count / local_s},
        {"run": f"--ray local ({cpus} CPUs; decode tasks + {args.ray_workers or max(1, cpus // 2)} actor(s) x 1 thread)", "seconds": ray_s,
         "clips_per_s": count / ray_s, "ray_init_seconds": init_s},
    ]
    print(f"{args.model}, r1 {', '.join(str(b.r1) for b in backends)}, {count} clips (64 frames, 240x320 mp4), {args.views} views; "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    print(f"{'run':<70} {'seconds':>8} {'clips/s':>8}")
    for row in rows:
        print(f"{row['run']:<70} {row['seconds']:>8.1f} {row['clips_per_s']:>8.2f}")
    load = os.getloadavg()[0]
    print(f"(+ {init_s:.1f} s to start the private Ray; predictions of the two runs are equal; load average {load_before:.1f} before, {load:.1f} after)")
    result = {"model": args.model, "r1": [b.r1 for b in backends], "clips": count, "views": args.views, "cpus": os.cpu_count(),
              "rows": rows, "predictions_equal": True, "load_average": [load_before, load], "versions": versions()}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"ray_evaluate_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
