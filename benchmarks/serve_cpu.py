"""Serving overhead on CPU: the same exported model through a real Triton server (nvidia-pytriton's
tritonserver, Python backend, dynamic batching) and called in-process, interleaved in one run.

    python benchmarks/serve_cpu.py                              # vit_s at r1 = 0 and 48, concurrency 1/4/8
    python benchmarks/serve_cpu.py --model vit_b --rounds 2
    python benchmarks/serve_cpu.py --servers 1x2,1x2p2 --transport http,shm

For every r1 and every round: the in-process session (batch 1, back to back), then each Triton
server configuration with each client transport at each concurrency (that many client threads,
each sending single-clip requests).  Every one of these cells starts with ``--segment-warmup``
untimed calls (default 1): a path's first call after the others ran can be slower (its caches and
pages went to the other process), and would otherwise be charged to whichever path runs first in a
round; the JSON keeps those calls' latencies (``warmup_latencies_ms``) beside the timed ones.  A configuration is INSTANCESxTHREADS[pSIZES] (``--servers
1x2,2x1,1x2p1+2``: one model instance with 2 ONNX Runtime threads, the latency set-up; two
instances with one thread each, Triton's usual throughput knob on a CPU; ``p1+2``: the dynamic
batcher's preferred batch sizes 1 and 2, for CPUs where large batches are slower per clip).  A
transport is ``http`` (the clip in the request body) or ``shm`` (the clip in a system shared
memory region, HTTP carrying only its name: ``Connection(shared_memory=True)``).  Every cell also
records the CPU seconds spent by the client process, tritonserver and its Python-backend stubs
(from /proc), to show where the machine's cores go.  ``--batch-bound`` (default 2,8) also times the
in-process session on batches of those sizes: a dynamic batcher can only gain what batching gains,
so where those run slower per clip than batch 1, no server beats in-process batch 1 at any
concurrency.  The c=1 overhead is judged on the first
configuration and transport, the throughput at the largest concurrency on the best one (named in
the target).  Every target also carries its value round by round (throughput ratios against the
in-process rate of the same round; for the r1 ratio, the served ratio minus the in-process one of
the same round), printed as a range: on a 2-core machine the rounds differ by more than the targets'
margins, and the range says whether a verdict is a coin flip.  Prints a
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
    parser.add_argument("--segment-warmup", type=int, default=1,
                        help="untimed calls before every timed cell of every round (in-process runs or single requests): "
                             "the path's first call after the other paths ran is slow, and would count against whichever path runs first")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="ONNX Runtime threads in-process")
    parser.add_argument("--servers", default=f"1x{os.cpu_count() or 2},{os.cpu_count() or 2}x1",
                        help="Triton configurations INSTANCESxTHREADS[pSIZES] (SIZES: preferred batch sizes joined by +), comma-separated; the first is the c=1 overhead's")
    parser.add_argument("--transport", default="http", help="client transports, comma-separated: http (request body), shm (system shared memory)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--batch-bound", default="2,8",
                        help="also time the in-process session on batches of these sizes (comma-separated; empty: none): "
                             "the most a dynamic batcher could gain over batch 1 on this CPU")
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


def server_config(label: str) -> dict:
    """'1x2' -> one instance, 2 threads; '1x2p1+2' -> also preferred batch sizes 1 and 2."""
    shape, _, preferred = label.partition("p")
    instances, threads = (int(v) for v in shape.split("x"))
    return {"instances": instances, "threads": threads, "preferred_batch": [int(v) for v in preferred.split("+")] if preferred else None}


def build_repository(paths: dict, workdir: Path, label: str, max_batch: int) -> Path:
    repository = workdir / f"repository_{label.replace('+', '_')}"
    shutil.rmtree(repository, ignore_errors=True)
    repository.mkdir(parents=True)
    for path in paths.values():
        part = write_repository(path, workdir / f"part_{path.stem}", platform="python", max_batch=max_batch, force=True, **server_config(label)).root
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


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15 of stat)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def cpu_snapshot(server) -> dict:
    """CPU seconds so far: this (client) process, tritonserver, its Python-backend stubs."""
    pid = server.process.pid
    return {"client": time.process_time(), "tritonserver": cpu_seconds(pid), "stubs": sum(cpu_seconds(child) for child in children(pid))}


def through_triton(url: str, model: str, clip, concurrency: int, requests: int, shared_memory: bool = False) -> tuple[list[float], float]:
    """(per-request latencies, wall seconds) of ``concurrency`` threads x ``requests`` requests."""
    connections = [Connection(url, timeout=600, shared_memory=shared_memory) for _ in range(concurrency)]
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


def measure(args, servers: dict, sessions: dict, clip, r1_values, concurrency) -> tuple[dict, dict]:
    """({(r1, mode): {"latencies": [...], "clips": n, "seconds": wall, "cpu": {process: seconds}}}, warm-up latencies)
    over interleaved rounds."""
    results: dict = {}
    warmups: dict = {}  # "r1 mode": the untimed calls' latencies, kept to show the cold-call effect

    def add(key, latencies, wall, cpu=None, clips=None):
        clips = len(latencies) if clips is None else clips  # a batch cell's latencies are per batch
        entry = results.setdefault(key, {"latencies": [], "clips": 0, "seconds": 0.0, "cpu": {}, "round_rates": []})
        entry["round_rates"].append(clips / wall)  # this round's clips/s, for the spread between rounds
        entry["latencies"] += latencies
        entry["clips"] += clips
        entry["seconds"] += wall
        for process, seconds in (cpu or {}).items():
            entry["cpu"][process] = entry["cpu"].get(process, 0.0) + seconds

    for round_index in range(args.rounds):
        for r1 in r1_values:
            warmups.setdefault(f"{r1} in-process", []).extend(in_process(sessions[r1], clip, args.segment_warmup))
            cpu_before = time.process_time()
            latencies = in_process(sessions[r1], clip, args.runs)
            add((r1, "in-process"), latencies, sum(latencies), {"in-process": time.process_time() - cpu_before})
            for batch in args.batch_bounds:  # what batching itself gains or loses on this CPU, no server involved
                clips = np.repeat(clip, batch, axis=0)
                in_process(sessions[r1], clips, args.segment_warmup)
                cpu_before = time.process_time()
                latencies = in_process(sessions[r1], clips, max(1, args.runs // batch))
                add((r1, batch_mode(batch)), latencies, sum(latencies), {"in-process": time.process_time() - cpu_before}, clips=batch * len(latencies))
            for label, server in servers.items():
                for transport in args.transports:
                    for level in concurrency:
                        requests = args.requests * (2 if level == 1 else 1)
                        if args.segment_warmup:
                            warm, _ = through_triton(server.http_url, f"{args.model}_r{r1}", clip, 1, args.segment_warmup, shared_memory=transport == "shm")
                            warmups.setdefault(f"{r1} {mode_name(label, transport, level)}", []).extend(warm)
                        before = cpu_snapshot(server)
                        latencies, wall = through_triton(server.http_url, f"{args.model}_r{r1}", clip, level, requests, shared_memory=transport == "shm")
                        after = cpu_snapshot(server)
                        add((r1, mode_name(label, transport, level)), latencies, wall, {k: after[k] - before[k] for k in after})
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    return results, warmups


def batch_mode(batch: int) -> str:
    return f"in-process batch {batch}"


def mode_name(label: str, transport: str, level: int) -> str:
    return f"triton {label} {transport} c={level}"


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def summarise(results: dict, r1_values, modes) -> list[dict]:
    rows = []
    for r1 in r1_values:
        base = results[(r1, "in-process")]
        base_p50 = percentile(base["latencies"], 50)
        base_rate = base["clips"] / base["seconds"]
        base_rounds = base["round_rates"]
        for mode in ["in-process"] + modes:
            entry = results[(r1, mode)]
            p50 = percentile(entry["latencies"], 50)
            rate = entry["clips"] / entry["seconds"]
            rows.append({
                "r1": r1, "mode": mode, "requests": entry["clips"], "clips_per_s": round(rate, 3),
                "p50_ms": round(p50, 1), "p99_ms": round(percentile(entry["latencies"], 99), 1),
                "latency_vs_in_process": round(p50 / base_p50, 3), "throughput_vs_in_process": round(rate / base_rate, 3),
                "clips_per_s_by_round": [round(v, 4) for v in entry["round_rates"]],
                "throughput_vs_in_process_by_round": [round(v / b, 3) for v, b in zip(entry["round_rates"], base_rounds)],
                "cpu_s_per_clip": {process: round(seconds / entry["clips"], 3) for process, seconds in entry["cpu"].items()},
            })
    return rows


def targets(rows: list[dict], r1_values, setups, concurrency) -> list[dict]:
    """``setups``: the (server label, transport) pairs, the first judged for the c=1 overhead."""
    def row(r1, mode):
        return next(r for r in rows if r["r1"] == r1 and r["mode"] == mode)

    checks = []
    top = max(concurrency)
    first = f"{setups[0][0]} {setups[0][1]}"
    for r1 in r1_values:
        overhead = row(r1, mode_name(*setups[0], 1))["latency_vs_in_process"] - 1.0
        checks.append({"target": f"r1={r1}: overhead at concurrency 1 ({first}) <= 10%", "value": round(overhead, 3), "met": overhead <= 0.10})
        best = max(setups, key=lambda setup: row(r1, mode_name(*setup, top))["throughput_vs_in_process"])
        chosen = row(r1, mode_name(*best, top))
        ratio = chosen["throughput_vs_in_process"]
        checks.append({"target": f"r1={r1}: throughput at concurrency {top} ({' '.join(best)}) >= in-process batch 1", "value": ratio, "met": ratio >= 1.0,
                       "by_round": chosen["throughput_vs_in_process_by_round"]})
    base = r1_values[0]
    for r1 in r1_values[1:]:
        local = row(r1, "in-process")["clips_per_s"] / row(base, "in-process")["clips_per_s"]
        for setup in setups:
            for level in concurrency:
                mode = mode_name(*setup, level)
                served = row(r1, mode)["clips_per_s"] / row(base, mode)["clips_per_s"]
                # per round: the served ratio minus the in-process one measured in the same round
                gaps = [round(s_r / s_b - l_r / l_b, 3) for s_r, s_b, l_r, l_b in zip(
                    row(r1, mode)["clips_per_s_by_round"], row(base, mode)["clips_per_s_by_round"],
                    row(r1, "in-process")["clips_per_s_by_round"], row(base, "in-process")["clips_per_s_by_round"])]
                checks.append({
                    "target": f"r1={r1}/r1={base} throughput ratio, {mode} vs in-process ({local:.3f}): within 0.03",
                    "value": round(served, 3), "met": abs(served - local) <= 0.03, "gap_by_round": gaps,
                })
    return checks


def table(rows: list[dict]) -> str:
    lines = ["| r1 | mode | requests | clips/s | p50 ms | p99 ms | p50 vs in-process | clips/s vs in-process | CPU s/clip |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = r["cpu_s_per_clip"]
        cpu_text = ", ".join(f"{process} {seconds:.2f}" for process, seconds in cpu.items())
        lines.append(f"| {r['r1']} | {r['mode']} | {r['requests']} | {r['clips_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['latency_vs_in_process']:.3f} | {r['throughput_vs_in_process']:.3f} | {cpu_text} |")
    return "\n".join(lines)


def run_cells(args, paths: dict, r1_values, concurrency, labels) -> tuple[dict, dict]:
    """Build the repositories, start one server per configuration, warm every path up, measure."""
    workdir = Path(args.workdir)
    repositories = {label: build_repository(paths, workdir, label, args.max_batch) for label in labels}
    sessions = {r1: onnx_session(path, providers=["CPUExecutionProvider"], threads=args.threads) for r1, path in paths.items()}
    shape = [int(d) for d in json.loads(paths[r1_values[0]].with_name(paths[r1_values[0]].stem + ".manifest.json").read_text())["inputs"][0]["shape"][1:]]
    clip = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    with contextlib.ExitStack() as stack:
        servers = {label: stack.enter_context(TritonServer(repository, http_port=free_port(), grpc_port=free_port()))
                   for label, repository in repositories.items()}
        for r1 in r1_values:  # warm-up: every path once (every instance of a multi-instance server)
            in_process(sessions[r1], clip, 1)
            for label, server in servers.items():
                for transport in args.transports:
                    through_triton(server.http_url, f"{args.model}_r{r1}", clip, server_config(label)["instances"], 1, shared_memory=transport == "shm")
        return measure(args, servers, sessions, clip, r1_values, concurrency)


def main(argv=None) -> int:
    args = parse_args(argv)
    r1_values = [int(v) for v in args.r1.split(",")]
    concurrency = [int(v) for v in args.concurrency.split(",")]
    labels = args.servers.split(",")
    args.transports = args.transport.split(",")
    args.batch_bounds = [int(v) for v in args.batch_bound.split(",") if v]
    if set(args.transports) - {"http", "shm"}:
        raise SystemExit(f"--transport: http and/or shm, got {args.transport!r}")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    started, load = time.time(), os.getloadavg()
    paths = export_models(args.model, r1_values, Path(args.workdir))
    results, warmups = run_cells(args, paths, r1_values, concurrency, labels)
    setups = [(label, transport) for label in labels for transport in args.transports]
    rows = summarise(results, r1_values, [batch_mode(batch) for batch in args.batch_bounds] + [mode_name(*setup, level) for setup in setups for level in concurrency])
    checks = targets(rows, r1_values, setups, concurrency)
    print(table(rows))
    for r1 in r1_values:  # the ceiling of the concurrency target: a batcher can only gain what batching gains
        bounds = [row for row in rows if row["r1"] == r1 and row["mode"].startswith("in-process batch ")]
        if bounds:
            best = max(bounds, key=lambda row: row["throughput_vs_in_process"])
            sizes = ", ".join(row["mode"].split()[-1] for row in bounds)
            rates = ", ".join(format(row["throughput_vs_in_process"], ".3f") for row in bounds)
            print(f"note   r1={r1}: in-process batches of {sizes} run at {rates} of batch 1's clips/s"
                  + ("" if best["throughput_vs_in_process"] > 1.0 else ": batching gains nothing on this CPU, so no server beats batch 1 at any concurrency"))
    for check in checks:
        spread = check.get("by_round") or check.get("gap_by_round")
        sign = "+" if "gap_by_round" in check else ""  # gaps are signed, throughput ratios are not
        rounds = f"  (rounds {min(spread):{sign}.3f} .. {max(spread):{sign}.3f}, median {statistics.median(spread):{sign}.3f})" if spread else ""
        print(f"{'met   ' if check['met'] else 'MISSED'} {check['target']}: {check['value']}{rounds}")
    payload = {
        "benchmark": "serve_cpu", "model": args.model, "r1": r1_values, "concurrency": concurrency, "rounds": args.rounds,
        "in_process_runs_per_round": args.runs, "requests_per_thread_per_round": args.requests,
        "segment_warmup_calls": args.segment_warmup, "ort_threads": args.threads, "servers": args.servers,
        "max_batch": args.max_batch, "transports": args.transports, "batch_bounds": args.batch_bounds,
        "transport": "one clip per request, float32 (1, 3, T, H, W); http: in the HTTP body; shm: in a system shared memory region named in the HTTP request",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": [round(v, 2) for v in load]},
        "versions": versions(), "seconds": round(time.time() - started, 1), "rows": rows, "targets": checks,
        "latency_summary_ms": {f"{r['r1']} {r['mode']}": r["p50_ms"] for r in rows},
        "latencies_ms": {f"{r1} {mode}": [round(v * 1000.0, 1) for v in entry["latencies"]] for (r1, mode), entry in results.items()},
        "warmup_latencies_ms": {key: [round(v * 1000.0, 1) for v in values] for key, values in warmups.items()},
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"serve_cpu_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out} ({payload['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
