"""examples/classify (C++: FFmpeg + OpenVINO) vs ``sta-deploy predict --onnx`` (Python: PyAV + PyTorch
resize + ONNX Runtime): time per clip to decode and sample (preprocessing) and to run the views.

Both run the same exported model on the same generated clips with the same protocol (K400: 16
frames at stride 4, 5x3 views).  Python is timed in-process exactly as ``predict --onnx`` runs a
clip (``load_views`` + ``tensors`` for preprocessing, ``OnnxBackend.run`` for the model); the app
reports both times per clip in its ``--json`` output.  The two alternate round by round (one app
process per round, its first clip an untimed warm-up, as Python's), because shared machines are
noisy and only numbers taken together mean something.

    cmake -S examples/classify -B build/classify && cmake --build build/classify -j
    python benchmarks/classify_cpp.py --app build/classify/classify            # vit_s r1=48, 4 clips, 3 rounds

Prints a table and writes JSON (default benchmarks/results/classify_cpp_<model>.json).
"""

from __future__ import annotations

import argparse
from importlib import metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sta_deploy import create_model
from sta_deploy.export.manifest import versions
from sta_deploy.export.onnx_export import export_onnx
from sta_deploy.video.backends import OnnxBackend
from sta_deploy.video.clips import load_views
from sta_deploy.video.predict import average_views, protocol_for_backend
from sta_deploy.video.protocol_file import write_protocol_file
from sta_deploy.video.synthetic import moving_shapes, write_video

CLIP_SHAPES = [(".mp4", 360, 640), (".webm", 360, 640), (".mp4", 240, 320), (".webm", 480, 640), (".mkv", 360, 480), (".avi", 240, 320)]


def make_clips(folder: Path, count: int, frames: int) -> list[Path]:
    """``count`` generated clips (H.264 / VP9 / MPEG-4) of ``frames`` frames, plus a warm-up clip first."""
    paths = []
    for index in range(count + 1):
        suffix, height, width = CLIP_SHAPES[(index - 1) % len(CLIP_SHAPES)] if index else (".mp4", 240, 320)
        name = "warmup" if index == 0 else f"clip{index}"
        paths.append(write_video(folder / f"{name}{suffix}", moving_shapes(frames, height, width, seed=index, kind=index)))
    return paths


def python_times(backend, protocol, clips: list[Path]) -> dict[str, dict]:
    """Per clip (the first one untimed): preprocessing and model seconds, as predict --onnx spends them."""
    times = {}
    for index, clip in enumerate(clips):
        start = time.perf_counter()
        views = load_views(clip, protocol).tensors()
        decoded = time.perf_counter()
        logits, _ = backend.run(views)
        scores = average_views(logits, protocol.average)
        done = time.perf_counter()
        if index:
            times[clip.name] = {"preprocess": decoded - start, "model": done - decoded, "top1": int(scores.argmax())}
    return times


def cpp_times(app: Path, model: Path, clips: list[Path], views: str, threads: int | None) -> dict[str, dict]:
    """Per clip (the first one untimed), from one app process: its own preprocessing and model seconds."""
    command = [str(app), str(model), *map(str, clips), "--json", "--top", "1", "--views", views] + (["--threads", str(threads)] if threads else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"classify failed: {done.stderr.strip()}")
    results = json.loads(done.stdout)["results"]
    return {Path(r["path"]).name: {"preprocess": r["decode_seconds"], "model": r["seconds"], "top1": r["top"][0]["class"]} for r in results[1:]}


def summarise(rounds: dict[str, list[dict]]) -> dict[str, dict]:
    """Median over rounds per clip, then the mean over clips, in milliseconds."""
    summary = {}
    for impl, per_round in rounds.items():
        clips = per_round[0].keys()
        parts = {}
        for part in ("preprocess", "model"):
            parts[part] = statistics.fmean(statistics.median(r[clip][part] for r in per_round) for clip in clips) * 1000.0
        parts["total"] = parts["preprocess"] + parts["model"]
        summary[impl] = {key: round(value, 1) for key, value in parts.items()}
    return summary


def print_table(summary: dict, per_clip: dict) -> None:
    python, cpp = summary["python"], summary["cpp"]
    print(f"\n{'ms per clip (mean of per-clip medians)':<40} {'Python':>10} {'C++':>10} {'C++ / Python':>14}")
    for part in ("preprocess", "model", "total"):
        print(f"{part:<40} {python[part]:>10.1f} {cpp[part]:>10.1f} {cpp[part] / python[part]:>14.3f}")
    print("\nper clip, median ms (preprocess + model):")
    for clip, row in per_clip.items():
        print(f"  {clip:<14} Python {row['python']['preprocess']:7.1f} + {row['python']['model']:7.1f}   C++ {row['cpp']['preprocess']:7.1f} + {row['cpp']['model']:7.1f}")


def per_clip_medians(rounds: dict[str, list[dict]]) -> dict[str, dict]:
    clips = rounds["python"][0].keys()
    return {
        clip: {impl: {part: round(statistics.median(r[clip][part] for r in rounds[impl]) * 1000.0, 1) for part in ("preprocess", "model")} for impl in rounds}
        for clip in clips
    }


def prepare_model(args, folder: Path) -> Path:
    """The export (a seeded random-weight one unless --onnx) with its protocol file beside it, where the app looks."""
    model = Path(args.onnx) if args.onnx else folder / f"{args.model}_r{args.r1}.onnx"
    if not args.onnx:
        export_onnx(create_model(args.model, r1=args.r1, seed=0), model)
    write_protocol_file(model)
    return model


def classify_version(app: Path) -> str:
    return subprocess.run([str(app), "--version"], capture_output=True, text=True).stdout.strip()


def top1_agrees(rounds: dict[str, list[dict]]) -> bool:
    return all(p[clip]["top1"] == c[clip]["top1"] for p, c in zip(rounds["python"], rounds["cpp"]) for clip in p)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", required=True, help="the built classify executable")
    parser.add_argument("--model", default="vit_s")
    parser.add_argument("--r1", type=int, default=48)
    parser.add_argument("--onnx", default=None, help="an existing export instead (its protocol file is written beside it)")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=250, help="frames per clip (10 s at 25 fps)")
    parser.add_argument("--views", default="5x3")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="threads for both sides (PyTorch, ONNX Runtime, OpenVINO) [default: each one's own]")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as temp:
        model = prepare_model(args, Path(temp))
        clips = make_clips(Path(temp), args.clips, args.frames)
        if args.threads:
            torch.set_num_threads(args.threads)
        backend = OnnxBackend(model, threads=args.threads)
        protocol = protocol_for_backend(backend, views=args.views)
        print(f"{backend.describe()}; {protocol.describe()}; {args.clips} clips of {args.frames} frames; {args.rounds} rounds", flush=True)
        rounds: dict[str, list[dict]] = {"python": [], "cpp": []}
        for number in range(args.rounds):
            order = ["python", "cpp"] if number % 2 == 0 else ["cpp", "python"]
            for impl in order:
                rounds[impl].append(python_times(backend, protocol, clips) if impl == "python" else cpp_times(Path(args.app), model, clips, args.views, args.threads))
            print(f"  round {number + 1}/{args.rounds} done", flush=True)
    agree = top1_agrees(rounds)
    summary, per_clip = summarise(rounds), per_clip_medians(rounds)
    print_table(summary, per_clip)
    print(f"\ntop-1 agrees on every clip and round: {agree}")
    payload = {
        "command": " ".join(["python", "benchmarks/classify_cpp.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": args.model if not args.onnx else str(args.onnx), "r1": args.r1, "views": args.views, "clips": args.clips, "frames": args.frames,
        "rounds": args.rounds, "threads": args.threads, "summary_ms": summary, "per_clip_ms": per_clip, "top1_agrees": agree,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "versions": {**versions(), "openvino": metadata.version("openvino"), "classify": classify_version(Path(args.app))},
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"classify_cpp_{args.model}.json")
    out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
