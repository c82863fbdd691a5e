"""Serving overhead on CPU: the same exported model through a real Triton server (nvidia-pytriton's
tritonserver, Python backend, dynamic batching) and called in-process, interleaved in one run.

    python benchmarks/serve_cpu.py                              # vit_s at r1 = 0 and 48, concurrency 1/4/8
    python benchmarks/serve_cpu.py --model vit_b --rounds 2

For every r1 and every round: the in-process session (batch 1, back to back), then each Triton
server configuration at each concurrency (that many client threads over HTTP, each sending
single-clip requests).  A configuration is INSTANCESxTHREADS (``--servers 1x2,2x1``: one model
instance with 2 ONNX Runtime threads, the latency set-up; two instances with one thread each,
Triton's usual throughput knob on a CPU, which runs two clips at once instead of splitting one
clip's matrix products over both cores).  The c=1 overhead is judged on the first configuration, the
throughput at the largest concurrency on the best one (named in the target).  Prints a
table, writes JSON (default benchmarks/results/serve_cpu_<model>.json) and says whether the targets
are met: overhead at concurrency 1 <= 10% of the in-process latency; throughput at concurrency 8 >=
in-process batch-1 throughput; the r1 = R / r1 = 0 throughput ratio through Triton within 0.03 of
the in-process one.  Needs the serve extra (pip install -e '.[serve]').
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sta_deploy.export.manifest import versions  # noqa: E402
from sta_deploy.runtime.onnxrt import onnx_session  # noqa: E402
from sta_deploy.serve.client import Connection  # noqa: E402
from sta_deploy.serve.repository import write_repository  # noqa: E402
from sta_deploy.serve.server import TritonServer, free_port  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_s")
    parser.add_argument("--r1", default="0,48", help="comma-separated; the first is the ratio's baseline")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--runs", type=int, default=4, help="in-process runs per round")
    parser.add_argument("--requests", type=int, default=3, help="requests per client thread per round (concurrency 1: x2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="ONNX Runtime threads in-process")
    parser.add_argument("--servers", default=f"1x{os.cpu_count() or 2},{os.cpu_count() or 2}x1",
                        help="Triton configurations INSTANCESxTHREADS, comma-separated; the first is the c=1 overhead's")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--workdir", default=str(ROOT / "out" / "serve_cpu"))
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def export_models(model_name: str, r1_values, workdir: Path) -> dict:
    """{r1: .onnx} dynamic-batch exports, seeded random weights (reused when already there)."""
    from sta_deploy import create_model
    from sta_deploy.export.onnx_export import export_onnx

    paths = {}
    for r1 in r1_values:
        path = workdir / f"{model_name}_r{r1}.onnx"
        if not path.is_file():
            export_onnx(create_model(model_name, r1=r1, seed=0), path, dynamic_batch=True)
        paths[r1] = path
    return paths


def build_repository(paths: dict, workdir: Path, server: tuple[int, int], max_batch: int) -> Path:
    instances, threads = server
    repository = workdir / f"repository_{instances}x{threads}"
    shutil.rmtree(repository, ignore_errors=True)
    repository.mkdir(parents=True)
    for path in paths.values():
        part = write_repository(path, workdir / f"part_{path.stem}", platform="python", instances=instances, threads=threads,
                                max_batch=max_batch, force=True).root
        shutil.move(str(part / path.stem), repository / path.stem)
        shutil.rmtree(part)
    return repository


def in_process(session, clip, runs: int) -> list[float]:
    feed = {session.get_inputs()[0].name: clip}
    latencies = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        latencies.append(time.perf_counter() - start)
    return latencies


def through_triton(url: str, model: str, clip, concurrency: int, requests: int) -> tuple[list[float], float]:
    """(per-request latencies, wall seconds) of ``concurrency`` threads x ``requests`` requests."""
    connections = [Connection(url, timeout=600) for _ in range(concurrency)]
    barrier = threading.Barrier(concurrency + 1)
    latencies, failures = [], []

    def client(connection):
        barrier.wait(timeout=120)
        for _ in range(requests):
            start = time.perf_counter()
            try:
                connection.infer(model, {"video": clip}, ["logits"])
            except Exception as error:  # reported, and the benchmark stops
                failures.append(str(error))
                return
            latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in connections]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=120)
    start = time.perf_counter()
    for thread in threads:
        thread.join(timeout=1800)
    wall = time.perf_counter() - start
    for connection in connections:
        connection.close()
    if failures or len(latencies) != concurrency * requests:
        raise RuntimeError(f"{len(failures)} request(s) failed: {failures[:1]}")
    return latencies, wall


def measure(args, servers: dict, sessions: dict, clip, r1_values, concurrency) -> dict:
    """{(r1, mode): {"latencies": [...], "clips": n, "seconds": wall}} over interleaved rounds."""
    results: dict = {}

    def add(key, latencies, wall):
        entry = results.setdefault(key, {"latencies": [], "clips": 0, "seconds": 0.0})
        entry["latencies"] += latencies
        entry["clips"] += len(latencies)
        entry["seconds"] += wall

    for round_index in range(args.rounds):
        for r1 in r1_values:
            latencies = in_process(sessions[r1], clip, args.runs)
            add((r1, "in-process"), latencies, sum(latencies))
            for label, server in servers.items():
                for level in concurrency:
                    requests = args.requests * (2 if level == 1 else 1)
                    latencies, wall = through_triton(server.http_url, f"{args.model}_r{r1}", clip, level, requests)
                    add((r1, f"triton {label} c={level}"), latencies, wall)
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    return results


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def summarise(results: dict, r1_values, labels, concurrency) -> list[dict]:
    rows = []
    for r1 in r1_values:
        base = results[(r1, "in-process")]
        base_p50 = percentile(base["latencies"], 50)
        base_rate = base["clips"] / base["seconds"]
        for mode in ["in-process"] + [f"triton {label} c={c}" for label in labels for c in concurrency]:
            entry = results[(r1, mode)]
            p50 = percentile(entry["latencies"], 50)
            rate = entry["clips"] / entry["seconds"]
            rows.append({
                "r1": r1, "mode": mode, "requests": entry["clips"], "clips_per_s": round(rate, 3),
                "p50_ms": round(p50, 1), "p99_ms": round(percentile(entry["latencies"], 99), 1),
                "latency_vs_in_process": round(p50 / base_p50, 3), "throughput_vs_in_process": round(rate / base_rate, 3),
            })
    return rows


def targets(rows: list[dict], r1_values, labels, concurrency) -> list[dict]:
    def row(r1, mode):
        return next(r for r in rows if r["r1"] == r1 and r["mode"] == mode)

    checks = []
    top = max(concurrency)
    for r1 in r1_values:
        overhead = row(r1, f"triton {labels[0]} c=1")["latency_vs_in_process"] - 1.0
        checks.append({"target": f"r1={r1}: overhead at concurrency 1 ({labels[0]}) <= 10%", "value": round(overhead, 3), "met": overhead <= 0.10})
        best = max(labels, key=lambda label: row(r1, f"triton {label} c={top}")["throughput_vs_in_process"])
        ratio = row(r1, f"triton {best} c={top}")["throughput_vs_in_process"]
        checks.append({"target": f"r1={r1}: throughput at concurrency {top} ({best}) >= in-process batch 1", "value": ratio, "met": ratio >= 1.0})
    base = r1_values[0]
    for r1 in r1_values[1:]:
        local = row(r1, "in-process")["clips_per_s"] / row(base, "in-process")["clips_per_s"]
        for label in labels:
            for level in concurrency:
                mode = f"triton {label} c={level}"
                served = row(r1, mode)["clips_per_s"] / row(base, mode)["clips_per_s"]
                checks.append({
                    "target": f"r1={r1}/r1={base} throughput ratio, {mode} vs in-process ({local:.3f}): within 0.03",
                    "value": round(served, 3), "met": abs(served - local) <= 0.03,
                })
    return checks


def table(rows: list[dict]) -> str:
    lines = ["| r1 | mode | requests | clips/s | p50 ms | p99 ms | p50 vs in-process | clips/s vs in-process |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['r1']} | {r['mode']} | {r['requests']} | {r['clips_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['latency_vs_in_process']:.3f} | {r['throughput_vs_in_process']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    r1_values = [int(v) for v in args.r1.split(",")]
    concurrency = [int(v) for v in args.concurrency.split(",")]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    paths = export_models(args.model, r1_values, workdir)
    configs = {label: tuple(int(v) for v in label.split("x")) for label in args.servers.split(",")}
    repositories = {label: build_repository(paths, workdir, config, args.max_batch) for label, config in configs.items()}
    sessions = {r1: onnx_session(path, providers=["CPUExecutionProvider"], threads=args.threads) for r1, path in paths.items()}
    shape = [int(d) for d in json.loads(paths[r1_values[0]].with_name(paths[r1_values[0]].stem + ".manifest.json").read_text())["inputs"][0]["shape"][1:]]
    clip = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    with contextlib.ExitStack() as stack:
        servers = {label: stack.enter_context(TritonServer(repository, http_port=free_port(), grpc_port=free_port()))
                   for label, repository in repositories.items()}
        for r1 in r1_values:  # warm-up: every path once (every instance of a multi-instance server)
            in_process(sessions[r1], clip, 1)
            for label, server in servers.items():
                through_triton(server.http_url, f"{args.model}_r{r1}", clip, configs[label][0], 1)
        results = measure(args, servers, sessions, clip, r1_values, concurrency)
    labels = list(configs)
    rows = summarise(results, r1_values, labels, concurrency)
    checks = targets(rows, r1_values, labels, concurrency)
    print(table(rows))
    for check in checks:
        print(f"{'met   ' if check['met'] else 'MISSED'} {check['target']}: {check['value']}")
    payload = {
        "benchmark": "serve_cpu", "model": args.model, "r1": r1_values, "concurrency": concurrency, "rounds": args.rounds,
        "in_process_runs_per_round": args.runs, "requests_per_thread_per_round": args.requests, "ort_threads": args.threads, "servers": args.servers,
        "max_batch": args.max_batch, "transport": "HTTP, one clip per request, float32 (1, 3, T, H, W)",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "versions": versions(), "seconds": round(time.time() - started, 1), "rows": rows, "targets": checks,
        "latency_summary_ms": {f"{r['r1']} {r['mode']}": r["p50_ms"] for r in rows},
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"serve_cpu_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out} ({payload['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
