"""Video Swin on ONNX Runtime CPU: does the pruned export's speed follow its FLOPs?

One interleaved run (same clip, same threads, medians, variants alternating run by run) of swin_t at
several r1, with STA's share of the pruned time, a per-op-type profile of the unpruned and one pruned
graph, and the design's own limit: the time the pruned graph would take if every node that runs on
kept tokens (linears, norms, element-wise ops and copies of token tensors inside the pruned stages and
the head) scaled with its stage's kept fraction while everything else (window attention on full
windows, patch mergings on refilled grids, the patch embedding) stayed, plus STA's own nodes.

    python benchmarks/swin_cpu.py                        # swin_t at r1 = 0/192/256/320
    python benchmarks/swin_cpu.py --runs 5 --skip-eager
    python benchmarks/swin_cpu.py --skip-eager --openvino f32,bf16   # OpenVINO beside ONNX Runtime
    python benchmarks/swin_cpu.py --skip-eager --kernel      # + --window-attention kernel exports

Prints a table and writes JSON (default benchmarks/results/swin_cpu_<model>.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
from pathlib import Path

import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_cpu import interleaved_timings, ort_runner, paired_ratios, torch_runner  # noqa: E402

import sta_deploy  # noqa: E402
from sta_deploy.bench import node_scopes, node_times, op_type_times, sta_time_share  # noqa: E402
from sta_deploy.export.manifest import versions  # noqa: E402
from sta_deploy.export.onnx_export import export_onnx  # noqa: E402
from sta_deploy.models.flops import count_flops  # noqa: E402
from sta_deploy.runtime.openvino import openvino_model, openvino_sta_share  # noqa: E402
from sta_deploy.validate import seeded_clips  # noqa: E402

# Window attention works on full (filled) windows by design: its products of two activations, its
# softmax, the bias + mask Add, the window gathers and the Concat of the mask types' outputs never
# shrink with pruning.  (A MatMul with a weight is a linear.)
WINDOW_OPS = {"MatMul", "Softmax", "FusedMatMul", "Gather", "Split", "Concat"}
_FEATURES = re.compile(r"model\.features\.(\d+)")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swin_t")
    parser.add_argument("--r1", default="0,192,256,320", help="comma-separated r1 values; 0 is always added")
    parser.add_argument("--profile-r1", type=int, default=256, help="the pruned r1 whose per-op profile is printed")
    parser.add_argument("--runs", type=int, default=9)
    # One untimed round left every ONNX Runtime session's first timed run 2.3-2.8x slower (the run of
    # 2026-12-03 with OpenVINO beside it); from the second round on the runs settle.
    parser.add_argument("--warmup", type=int, default=2, help="untimed interleaved rounds before the timed ones")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-eager", action="store_true", help="leave PyTorch eager out")
    parser.add_argument("--openvino", default="", help="also time OpenVINO at these precisions, comma-separated: f32, bf16")
    parser.add_argument("--kernel", action="store_true", help="also time --window-attention kernel exports (kept-query attention)")
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def output_ranks(path) -> dict[str, int]:
    """Rank of every tensor after shape inference."""
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    infos = list(inferred.graph.value_info) + list(inferred.graph.output)
    return {info.name: len(info.type.tensor_type.shape.dim) for info in infos}


def kept_fraction(scope: str, model) -> float:
    """The share of its stage's tokens a node of the unpruned graph would see at ``model``'s r1, or 1
    for a node whose work does not shrink (patch embedding, patch mergings, stage 1, anything else)."""
    schedule, grids = model.schedule, model.config.grids
    if not schedule.enabled:
        return 1.0
    last_stage = model.config.num_stages - 1
    found = _FEATURES.search(scope)
    if found:
        index = int(found.group(1))
        stage = index // 2
        if index % 2 or stage == 0:
            return 1.0  # a patch merging (refilled full grid) or the unpruned first stage
    elif "model.norm" in scope or "model.head" in scope:
        stage = last_stage
    else:
        return 1.0
    return schedule.tokens_per_stage[min(stage, 3) - 1] / math.prod(grids[stage])


def design_limit_ms(unpruned_path, unpruned_times, model, sta_ms: float) -> float:
    """See the module docstring: the unpruned node times, token-wise ones scaled, plus STA's time."""
    scopes = node_scopes(unpruned_path)
    ranks = output_ranks(unpruned_path)
    graph = onnx.load(str(unpruned_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    for node in graph.node:  # tensors computed from weights only (a slice of the qkv weight) are weights too
        if all(name in weights for name in node.input if name):
            weights.update(node.output)
    nodes = {node.name: node for node in graph.node}
    total_us = 0.0
    for node, (op_type, mean_us) in unpruned_times.items():
        inputs = nodes[node].input if node in nodes else ()
        linear = op_type in ("MatMul", "Gemm") and any(name in weights for name in inputs)
        rank = ranks.get(nodes[node].output[0], 0) if node in nodes else 0
        # Rank-4 Transposes are the head-major q/k/v of the (kept) tokens before the window gather and
        # the attention output after the gather back; full windows are rank 5 inside the attention.
        token_wise = linear or (op_type not in WINDOW_OPS and (rank <= 3 or (rank == 4 and op_type == "Transpose")))
        total_us += mean_us * (kept_fraction(scopes.get(node, ""), model) if token_wise else 1.0)
    return total_us / 1000.0 + sta_ms


def measure(args, r1_values):
    with tempfile.TemporaryDirectory() as folder:
        models, paths = {}, {}
        for r1 in r1_values:
            models[r1] = sta_deploy.create_model(args.model, r1=r1, seed=0)
            paths[r1] = Path(folder) / f"{args.model}_r{r1}.onnx"
            export_onnx(models[r1], paths[r1])
            print(f"exported r1={r1}", file=sys.stderr)
        video = seeded_clips(1, models[0].config.input_shape)
        runners = {f"ort r1={r1}": ort_runner(paths[r1], video, threads=args.threads) for r1 in r1_values}
        kernel_paths = {}
        if args.kernel:
            for r1 in r1_values:
                kernel_paths[r1] = Path(folder) / f"{args.model}_r{r1}_kernel.onnx"
                export_onnx(models[r1], kernel_paths[r1], window_attention="kernel")
                runners[f"kernel r1={r1}"] = ort_runner(kernel_paths[r1], video, threads=args.threads)
        if not args.skip_eager:
            runners.update({f"torch r1={r1}": torch_runner(models[r1], video) for r1 in r1_values})
        precisions = [p for p in args.openvino.split(",") if p]
        for precision in precisions:
            runners.update({f"ov-{precision} r1={r1}": ov_runner(paths[r1], video, precision, args.threads) for r1 in r1_values})
        times = interleaved_timings(runners, warmup=args.warmup, runs=args.runs)
        shares = {r1: sta_time_share(paths[r1], video, threads=args.threads, runs=3) for r1 in r1_values if r1 > 0}
        for r1, kernel_path in kernel_paths.items():
            if r1 > 0:  # the segments' profiles and the kernel's timings, merged
                shares[r1]["kernel"] = sta_time_share(kernel_path, video, threads=args.threads, runs=3)["sta_fraction"]
        for precision in precisions:
            for r1 in r1_values:
                if r1 > 0:
                    profiled = openvino_model(paths[r1], precision=precision, threads=args.threads, cache_dir=False, profile=True)
                    shares[r1][f"ov-{precision}"] = openvino_sta_share(profiled, node_scopes(paths[r1]), video, runs=3)["sta_fraction"]
        unpruned_nodes = node_times(paths[0], video, threads=args.threads, runs=3)
        profiles = {r1: op_type_times(paths[r1], video, threads=args.threads, runs=3) for r1 in (0, args.profile_r1) if r1 in paths}
        unprofiled_ms = sum(median_us for _, median_us in unpruned_nodes.values()) / 1000.0
        limits = {}
        for r1 in r1_values:
            if r1 > 0:
                # STA's time from the same kind of profile as the unpruned one (optimisations off)
                sta_us = sta_time_share(paths[r1], video, threads=args.threads, runs=3, optimization="disable")["sta_us"]
                limit = design_limit_ms(paths[0], unpruned_nodes, models[r1], sta_us / 1000.0)
                limits[r1] = limit / unprofiled_ms  # a ratio: both sides measured with the profiler on
    return times, shares, profiles, limits


def ov_runner(path, video, precision: str, threads: int):
    model = openvino_model(path, precision=precision, threads=threads, cache_dir=False)
    return lambda: model.run(video)


def summary_rows(args, r1_values, times, shares, limits):
    median = {name: statistics.median(values) for name, values in times.items()}
    fastest = {name: min(values) for name, values in times.items()}  # on a shared machine load only adds time
    flops = {r1: count_flops(args.model, r1).gflops for r1 in r1_values}
    rows = []
    for r1 in r1_values:
        ort_ms = median[f"ort r1={r1}"]
        row = {
            "r1": r1,
            "gflops": flops[r1],
            "flops_ratio": flops[r1] / flops[0],
            "ort_ms": ort_ms,
            "ort_ratio": ort_ms / median["ort r1=0"],
            "ort_min_ms": fastest[f"ort r1={r1}"],
            "ort_min_ratio": fastest[f"ort r1={r1}"] / fastest["ort r1=0"],
            # each round's pruned time over the same round's unpruned one: drifts in machine speed
            # that span several runs cancel within a round
            "ort_paired_ratio": statistics.median(paired_ratios(times["ort r1=0"], times[f"ort r1={r1}"])),
            "design_limit_ratio": limits.get(r1),
            "sta_share": shares.get(r1, {}).get("sta_fraction"),
        }
        for name in median:
            if name.startswith("ov-") and name.endswith(f" r1={r1}"):
                label = name.split()[0]
                row[f"{label}_ms"] = median[name]
                row[f"{label}_ratio"] = median[name] / median[f"{label} r1=0"]
                row[f"{label}_sta_share"] = shares.get(r1, {}).get(label)
        if f"kernel r1={r1}" in median:
            row.update(
                kernel_ms=median[f"kernel r1={r1}"],
                kernel_ratio=median[f"kernel r1={r1}"] / median["kernel r1=0"],
                kernel_paired_ratio=statistics.median(paired_ratios(times["kernel r1=0"], times[f"kernel r1={r1}"])),
                # against the plain r1 = 0 export of the same round (the r1 = 0 graphs are the same)
                kernel_paired_vs_plain_unpruned=statistics.median(paired_ratios(times["ort r1=0"], times[f"kernel r1={r1}"])),
                kernel_sta_share=shares.get(r1, {}).get("kernel"),
                kernel_vs_plain=median[f"kernel r1={r1}"] / ort_ms,  # the kernel export's time over the plain one's, same r1
            )
        if f"torch r1={r1}" in median:
            row.update(torch_ms=median[f"torch r1={r1}"], torch_ratio=median[f"torch r1={r1}"] / median["torch r1=0"])
        rows.append(row)
    return rows


def print_report(args, rows, profiles):
    print(f"\n{args.model}, batch 1, {args.threads} threads, median of {args.runs} interleaved runs ({platform.processor() or platform.machine()})")
    print(f"{'r1':>4} {'GFLOPs':>7} {'FLOPs':>6} {'ORT ms':>7} {'ratio':>6} {'min ms':>7} {'ratio':>6} {'paired':>6} {'limit':>6} {'STA':>6} {'eager':>6}")
    for row in rows:
        limit = "" if row["design_limit_ratio"] is None else f"{row['design_limit_ratio']:.3f}"
        share = "" if row["sta_share"] is None else f"{row['sta_share']:.2%}"
        eager = f"{row['torch_ratio']:.3f}" if "torch_ratio" in row else ""
        print(f"{row['r1']:>4} {row['gflops']:>7.1f} {row['flops_ratio']:>6.3f} {row['ort_ms']:>7.0f} {row['ort_ratio']:>6.3f} {row['ort_min_ms']:>7.0f} {row['ort_min_ratio']:>6.3f} {row['ort_paired_ratio']:>6.3f} {limit:>6} {share:>6} {eager:>6}")
    for label in sorted({key[: -len("_ratio")] for row in rows for key in row if key.startswith("ov-") and key.endswith("_ratio")}):
        print(f"\nOpenVINO {label[3:]}: " + "; ".join(
            f"r1={row['r1']} {row[label + '_ms']:.0f} ms ratio {row[label + '_ratio']:.3f}"
            + ("" if row.get(label + "_sta_share") is None else f" STA {row[label + '_sta_share']:.2%}")
            for row in rows
        ))
    if any("kernel_ms" in row for row in rows):
        print("\n--window-attention kernel (kept-query attention; same interleaved run): " + "; ".join(
            f"r1={row['r1']} {row['kernel_ms']:.0f} ms ratio {row['kernel_ratio']:.3f} paired {row['kernel_paired_ratio']:.3f}"
            f" vs plain {row['kernel_vs_plain']:.3f}"
            + ("" if row["r1"] == 0 else f"; paired vs plain r1=0 {row['kernel_paired_vs_plain_unpruned']:.3f}")
            + ("" if row.get("kernel_sta_share") is None else f" STA {row['kernel_sta_share']:.2%}")
            for row in rows
        ))
    if profiles:
        columns = sorted(profiles)
        print("\nms per run by op type (profiler on, optimisations off): " + " | ".join(f"r1={r1}" for r1 in columns))
        names = sorted({name for profile in profiles.values() for name in profile}, key=lambda name: -profiles[columns[0]].get(name, 0.0))
        for name in names[:14]:
            print(f"  {name:<22}" + "".join(f"{profiles[r1].get(name, 0.0):>9.1f}" for r1 in columns))


def main(argv=None):
    args = parse_args(argv)
    r1_values = sorted({0, *(int(v) for v in args.r1.split(","))})
    torch.set_num_threads(args.threads)
    times, shares, profiles, limits = measure(args, r1_values)
    rows = summary_rows(args, r1_values, times, shares, limits)
    print_report(args, rows, profiles)
    out_path = Path(args.out or f"benchmarks/results/swin_cpu_{args.model}.json")
    result = {
        "model": args.model,
        "threads": args.threads,
        "runs": args.runs,
        "warmup_rounds": args.warmup,
        "machine": {"processor": platform.processor(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "versions": versions(),
        "rows": rows,
        "op_type_ms": {str(r1): profile for r1, profile in profiles.items()},
        "raw_ms": times,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
