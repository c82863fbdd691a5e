"""ONNX Runtime CPU benchmark: pruned vs unpruned, ONNX Runtime vs PyTorch eager, ORT options.

Everything is measured side by side in one run, with the variants interleaved run by run, because
shared machines are noisy and only ratios taken together mean something.

    python benchmarks/ort_cpu.py                       # vit_b at r1 = 0/32/48/64, batch 1
    python benchmarks/ort_cpu.py --model vit_s --runs 20 --out benchmarks/results/vit_s.json

Prints a table and writes JSON (default benchmarks/results/ort_cpu_<model>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import sta_deploy
from sta_deploy.bench import sta_time_share
from sta_deploy.export.manifest import versions
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.models.flops import count_flops
from sta_deploy.runtime.onnxrt import onnx_session
from sta_deploy.validate import seeded_clips


def interleaved_timings(runners: dict, *, warmup: int, runs: int, pause_s: float = 0.0) -> dict[str, list[float]]:
    """Time every runner once per round, ``runs`` rounds, after ``warmup`` untimed rounds.

    ``pause_s``: idle time before every timed call.  A runtime's worker threads keep spinning for a
    while after its call returns, on the cores the next runner needs; when the runners belong to
    different runtimes (ONNX Runtime, OpenVINO, PyTorch) that slows whichever call comes next.
    """
    for _ in range(warmup):
        for run in runners.values():
            run()
    times = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            if pause_s > 0:
                time.sleep(pause_s)
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def paired_ratios(unpruned_ms: list[float], pruned_ms: list[float]) -> list[float]:
    """Each round's pruned / unpruned time, sorted.  The two runs of a round are seconds apart, so a
    slow spell of the machine (longer than one run) cancels in them, where it shifts the ratio of two
    medians."""
    return sorted(pruned / unpruned for unpruned, pruned in zip(unpruned_ms, pruned_ms))


def ort_runner(path, video, **session_kwargs):
    session = onnx_session(path, providers=["CPUExecutionProvider"], **session_kwargs)
    feed = {session.get_inputs()[0].name: video}
    return lambda: session.run(None, feed)


def torch_runner(model, video):
    tensor = torch.from_numpy(video)

    def run():
        with torch.inference_mode():
            model(tensor)

    return run


def transformer_optimized(path: Path, model) -> tuple[Path, dict] | None:
    """ONNX Runtime's transformer optimizer (attention/LayerNorm/GELU fusion) applied offline."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:
        return None
    optimized = optimize_model(
        str(path), model_type="vit", num_heads=model.config.num_heads, hidden_size=model.config.embed_dim, opt_level=1
    )
    out = path.with_name(path.stem + "_fused.onnx")
    optimized.save_model_to_file(str(out))
    return out, optimized.get_fused_operator_statistics()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--r1", default="0,32,48,64", help="comma-separated r1 values; 0 is always added")
    parser.add_argument("--runs", type=int, default=10, help="timed rounds (median reported), >= 10")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-options", action="store_true", help="skip the ORT options study")
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def options_study(paths, models, video, r1_values, args):
    """Graph optimisation levels, one thread, int8 and ORT's transformer optimizer at r1 = 0 and 48."""
    study, fusion = {}, None
    for r1 in (0, 48) if 48 in r1_values else (0, r1_values[-1]):
        for level in ("disable", "basic", "extended", "all"):
            study[f"r1={r1} opt={level}"] = ort_runner(paths[r1], video, optimization=level, threads=args.threads)
        study[f"r1={r1} opt=all threads=1"] = ort_runner(paths[r1], video, threads=1)
        int8_path = paths[r1].with_name(paths[r1].stem + "_int8.onnx")
        export_onnx(models[r1], int8_path, dtype="int8")
        study[f"r1={r1} int8 dynamic quantization"] = ort_runner(int8_path, video, threads=args.threads)
        fused = transformer_optimized(paths[r1], models[r1])
        if fused is not None:
            fused_path, fusion = fused
            study[f"r1={r1} transformer-optimizer"] = ort_runner(fused_path, video, threads=args.threads)
    return interleaved_timings(study, warmup=1, runs=max(5, args.runs // 2)), fusion


def measure(args, r1_values):
    """Export every r1, then time ORT and eager interleaved, the options study and STA's share."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        models, paths = {}, {}
        for r1 in r1_values:
            models[r1] = sta_deploy.create_model(args.model, r1=r1, seed=0)
            paths[r1] = folder / f"{args.model}_r{r1}.onnx"
            export_onnx(models[r1], paths[r1])
            print(f"exported r1={r1}", file=sys.stderr)
        video = seeded_clips(1, models[0].config.input_shape)
        runners = {}
        for r1 in r1_values:
            runners[f"ort r1={r1}"] = ort_runner(paths[r1], video, threads=args.threads)
            runners[f"torch r1={r1}"] = torch_runner(models[r1], video)
        main_times = interleaved_timings(runners, warmup=args.warmup, runs=args.runs)
        option_times, fusion = ({}, None) if args.skip_options else options_study(paths, models, video, r1_values, args)
        shares = {r1: sta_time_share(paths[r1], video, threads=args.threads) for r1 in r1_values if r1 > 0}
    return main_times, option_times, fusion, shares


def summary_rows(model_name, r1_values, median, shares):
    flops = {r1: count_flops(model_name, r1).gflops for r1 in r1_values}
    rows = []
    for r1 in r1_values:
        ort_ms, torch_ms = median[f"ort r1={r1}"], median[f"torch r1={r1}"]
        rows.append(
            {
                "r1": r1,
                "gflops": flops[r1],
                "flops_ratio": flops[r1] / flops[0],
                "ort_ms": ort_ms,
                "ort_clips_per_s": 1000.0 / ort_ms,
                "ort_ratio": ort_ms / median["ort r1=0"],
                "torch_ms": torch_ms,
                "torch_ratio": torch_ms / median["torch r1=0"],
                "ort_speedup_vs_torch": torch_ms / ort_ms,
                "sta_share": shares.get(r1, {}).get("sta_fraction"),
            }
        )
    return rows


def print_table(args, rows, option_times, median, fusion):
    print(f"\n{args.model}, batch 1, {args.threads} threads, median of {args.runs} interleaved runs ({platform.processor() or platform.machine()})")
    print(f"{'r1':>4} {'GFLOPs':>8} {'FLOPs':>6} {'ORT ms':>8} {'ratio':>6} {'clips/s':>8} {'eager ms':>9} {'ratio':>6} {'ORT/eager':>9} {'STA time':>8}")
    for row in rows:
        share = "" if row["sta_share"] is None else f"{row['sta_share']:.2%}"
        print(
            f"{row['r1']:>4} {row['gflops']:>8.1f} {row['flops_ratio']:>6.3f} {row['ort_ms']:>8.0f} {row['ort_ratio']:>6.3f} "
            f"{row['ort_clips_per_s']:>8.2f} {row['torch_ms']:>9.0f} {row['torch_ratio']:>6.3f} {row['ort_speedup_vs_torch']:>8.2f}x {share:>8}"
        )
    if option_times:
        print("\nONNX Runtime options (median ms):")
        for name in option_times:
            print(f"  {name:<36} {median[name]:>8.0f}")
        if fusion:
            print(f"  transformer optimizer fused: { {k: v for k, v in fusion.items() if v} }")


def main(argv=None):
    args = parse_args(argv)
    r1_values = sorted({0, *(int(v) for v in args.r1.split(","))})
    torch.set_num_threads(args.threads)
    out_path = Path(args.out or f"benchmarks/results/ort_cpu_{args.model}.json")
    main_times, option_times, fusion, shares = measure(args, r1_values)
    median = {name: statistics.median(values) for name, values in {**main_times, **option_times}.items()}
    rows = summary_rows(args.model, r1_values, median, shares)
    print_table(args, rows, option_times, median, fusion)
    result = {
        "model": args.model,
        "batch": 1,
        "threads": args.threads,
        "runs": args.runs,
        "machine": {"processor": platform.processor(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "versions": versions(),
        "rows": rows,
        "options_ms": {name: median[name] for name in option_times},
        "fusion": fusion,
        "raw_ms": {**main_times, **option_times},
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
