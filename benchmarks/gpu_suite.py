"""The GPU checks and timings in one command, for the day a machine with an NVIDIA GPU is at hand.

    python benchmarks/gpu_suite.py                     # everything, inside a 10-minute budget
    python benchmarks/gpu_suite.py --budget 1800 --models vit_b,vit_l --r1 0,32,48,64

1. Set-up (time-boxed): uses this Python when it already has CUDA torch and onnxruntime-gpu, else
   builds .venv-gpu (pip: torch from PyPI, which is the CUDA build, onnxruntime-gpu, nvcc from
   nvidia-cuda-nvcc-cu12 where none is installed, and this repository without its onnxruntime pin).
2. Checks that skip without a GPU: tests/test_plugin_gpu_kernel.py (kernel == CPU reference),
   tests/test_tensorrt.py's engine test and tests/test_validate_engine_replay.py (when TensorRT
   imports), tests/test_examples.py, and the C++
   app examples/classify when a built binary is found (STA_CLASSIFY or build/classify/).
3. Timings of vit_l and vit_b (random weights) at r1 = 0/32/48/64 (vit_l's r1 = 0 and 64 first: the
   paper's comparison), batch 1 and 32: PyTorch eager with fp16 autocast, ONNX Runtime CUDA EP on an
   fp16 export (device-side I/O binding), and trtexec without and with the STA plugin when present.

Every step runs in a child process with a timeout taken from what is left of the budget; a step that
does not fit is recorded as skipped.  Writes benchmarks/results/gpu_suite.json and prints a table next
to the paper's throughput (ViT-L 16x224 on a V100 with AMP: 19.5 clips/s unpruned, ~47 at r1 = 64).
Without an NVIDIA GPU it prints one line and exits 0; ``--rehearse-on-cpu`` runs every step here
instead (timings on the CPU, GPU tests skipping), to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_PATH = "pytorch eager (fp16 autocast)"  # the paper's setting (PyTorch with AMP)
PAPER = {"model": "vit_l", "gpu": "V100, AMP", "clips_per_s": {0: 19.5, 64: 47.0}}
BASE_DEPS = ["numpy>=1.24", "click>=8.1", "safetensors>=0.4", "onnx>=1.16", "onnxscript>=0.2", "onnxruntime-extensions>=0.12",
             "pytest>=8", "hypothesis>=6", "tomli>=2"]
PROBE = (
    "import json, shutil, torch, onnxruntime as ort\n"
    "print(json.dumps({'cuda': torch.cuda.is_available(), 'ort_cuda': 'CUDAExecutionProvider' in ort.get_available_providers(),"
    " 'torch': torch.__version__, 'nvcc': shutil.which('nvcc')}))"
)


def gpu_names() -> list[str]:
    """GPUs nvidia-smi lists (none when it is missing or fails)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split(":", 1)[1].split("(UUID")[0].strip() for line in done.stdout.splitlines() if line.startswith("GPU ")] if done.returncode == 0 else []


class Suite:
    """Runs steps as child processes inside one time budget and records each one's outcome."""

    def __init__(self, budget_s: float):
        self.deadline = time.monotonic() + budget_s
        self.steps: list[dict] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, command: list[str], *, cap: float, env=None, cwd=ROOT, need: float = 20.0):
        """``command`` with a timeout of ``min(cap, time left)``; None when it did not finish in time or there was no time."""
        timeout = min(cap, self.left() - 5)
        if timeout < need:
            self.steps.append({"step": name, "status": "skipped", "detail": "no time left in the budget"})
            return None
        start = time.monotonic()
        print(f"[{self.left():5.0f} s left] {name}", file=sys.stderr, flush=True)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
        except subprocess.TimeoutExpired:
            self.steps.append({"step": name, "status": "timeout", "seconds": round(time.monotonic() - start, 1), "detail": f"stopped after {timeout:.0f} s"})
            return None
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        self.steps.append({"step": name, "status": status, "seconds": round(time.monotonic() - start, 1), "detail": " | ".join(tail)[-600:]})
        return done


def probe(python: str) -> dict | None:
    try:
        done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=120)
        return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def pip_nvcc(python: str) -> str | None:
    code = "import nvidia.cuda_nvcc as m, os; print(os.path.join(list(m.__path__)[0], 'bin', 'nvcc'))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    found = done.stdout.strip()
    return found if done.returncode == 0 and Path(found).is_file() else None


def set_up(suite: Suite, install: bool) -> tuple[str, dict]:
    """(python to run the rest with, environment) -- this one if it has CUDA torch and onnxruntime-gpu."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    found = probe(sys.executable)
    if found and found["cuda"] and found["ort_cuda"]:
        suite.steps.append({"step": "set-up", "status": "ok", "detail": f"this Python already has CUDA torch {found['torch']} and onnxruntime-gpu"})
        python = sys.executable
    elif not install:
        suite.steps.append({"step": "set-up", "status": "skipped", "detail": f"--no-install; this Python has {found}"})
        python = sys.executable
    else:
        venv = ROOT / ".venv-gpu"
        python = str(venv / "bin" / "python")
        if not Path(python).is_file():
            suite.run("create .venv-gpu", [sys.executable, "-m", "venv", str(venv)], cap=60)
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        have = probe(python) or {}
        if not have.get("cuda"):
            suite.run("pip install torch (CUDA build)", [*pip, "torch"], cap=300, need=60)
        if not have.get("ort_cuda"):
            suite.run("pip install onnxruntime-gpu and the package", [*pip, "onnxruntime-gpu", *BASE_DEPS], cap=150, need=30)
            suite.run("pip install -e . (no onnxruntime pin)", [*pip, "--no-deps", "-e", str(ROOT)], cap=60)
    if shutil.which("nvcc") is None and not os.environ.get("CUDACXX") and not Path("/usr/local/cuda/bin/nvcc").is_file():
        if install and pip_nvcc(python) is None:
            suite.run("pip install nvcc (nvidia-cuda-nvcc-cu12)", [python, "-m", "pip", "install", "-q", "nvidia-cuda-nvcc-cu12"], cap=90)
        nvcc = pip_nvcc(python)
        if nvcc:
            env["CUDACXX"] = nvcc
    return python, env


def run_checks(suite: Suite, python: str, env: dict) -> None:
    tests = ["tests/test_plugin_gpu_kernel.py", "tests/test_tensorrt.py::test_engine_build_and_validate_on_gpu",
             "tests/test_validate_engine_replay.py", "tests/test_examples.py"]
    suite.run("GPU tests (kernel vs CPU reference, TensorRT engine and its replay, C++ example)", [python, "-m", "pytest", "-q", "-rs", *tests], cap=240, env=env)
    binary = os.environ.get("STA_CLASSIFY") or next((str(p) for p in (ROOT / "build/classify/classify", ROOT / "examples/classify/build/classify") if p.is_file()), None)
    if binary is None:
        suite.steps.append({"step": "C++ app examples/classify", "status": "skipped", "detail": "no built binary (set STA_CLASSIFY or build into build/classify)"})
        return
    suite.run("C++ app examples/classify vs ONNX Runtime", [python, __file__, "--child-app", binary], cap=240, env=env)


def run_timings(suite: Suite, python: str, env: dict, args) -> list[dict]:
    """One child per (model, r1), the paper's comparison first; each appends JSON rows to a file."""
    r1_values = [int(v) for v in args.r1.split(",")]
    models = args.models.split(",")
    order = [(m, r) for m in models for r in r1_values if (m, r) in (("vit_l", 0), ("vit_l", 64))]
    order += [(m, r) for m in models for r in r1_values if (m, r) not in order]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        for model, r1 in order:
            out = Path(folder) / f"{model}_{r1}.jsonl"
            command = [python, __file__, "--child-time", model, str(r1), "--batches", args.batches, "--rows", str(out), "--plugin-lib", args.plugin_lib or "",
                       "--device", args.device]
            suite.run(f"timings {model} r1={r1}", command, cap=240, env=env, need=45)
            if out.is_file():
                rows += [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return rows


def table(rows: list[dict], gpus: list[str]) -> str:
    """Markdown: clips/s per path, and each r1's speed-up over r1 = 0 beside the paper's."""
    rows = [row for row in rows if "clips_per_s" in row]  # (skipped and failed paths are in the JSON)
    if not rows:
        return f"GPU: {', '.join(gpus)}; no timings (see the steps below)"
    paths = sorted({row["path"] for row in rows})
    lines = [f"GPU: {', '.join(gpus)}; random weights, 16x224 clips",
             "| model | r1 | batch | " + " | ".join(f"{p} clips/s" for p in paths) + " | PyTorch AMP speed-up vs r1 = 0 | paper (V100, AMP) |",
             "|---|---|---|" + "---|" * len(paths) + "---|---|"]
    keyed = {(r["model"], r["r1"], r["batch"], r["path"]): r["clips_per_s"] for r in rows}
    for model, r1, batch in sorted({(r["model"], r["r1"], r["batch"]) for r in rows}):
        cells = [f"{keyed[(model, r1, batch, p)]:.1f}" if (model, r1, batch, p) in keyed else "" for p in paths]
        base, mine = keyed.get((model, 0, batch, TORCH_PATH)), keyed.get((model, r1, batch, TORCH_PATH))
        speedup = f"{mine / base:.2f}x" if base and mine else ""
        paper = PAPER["clips_per_s"].get(r1) if model == PAPER["model"] else None
        paper_cell = f"{paper} clips/s ({paper / PAPER['clips_per_s'][0]:.2f}x)" if paper else ""
        lines.append(f"| {model} | {r1} | {batch} | " + " | ".join(cells) + f" | {speedup} | {paper_cell} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=570, help="seconds for everything (default: inside 10 minutes)")
    parser.add_argument("--models", default="vit_b,vit_l")
    parser.add_argument("--r1", default="0,32,48,64")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--plugin-lib", default=os.environ.get("STA_PLUGIN_LIB"), help="libsta_stage_select_trt.so for trtexec with the plugin")
    parser.add_argument("--no-install", action="store_true", help="use this Python as it is")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu_suite.json"))
    parser.add_argument("--child-time", nargs=2, metavar=("MODEL", "R1"), help=argparse.SUPPRESS)
    parser.add_argument("--child-app", metavar="BINARY", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rehearse-on-cpu", action="store_true",
        help="run the whole suite here without a GPU (this Python, timings on the CPU, GPU tests skip): a check of the "
        "script itself before a GPU machine's minutes are spent on it; e.g. --models vit_s --r1 0,48 --batches 1",
    )
    args = parser.parse_args(argv)
    if args.child_time or args.child_app:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import _gpu_children

        return _gpu_children.main(args)
    gpus = gpu_names()
    if args.rehearse_on_cpu:
        gpus, args.device, args.no_install = ["none (a CPU rehearsal: not GPU numbers)"], "cpu", True
    if not gpus:
        print("gpu_suite: no NVIDIA GPU here (nvidia-smi lists none); nothing to run")
        return 0
    suite = Suite(args.budget)
    python, env = set_up(suite, install=not args.no_install)
    run_checks(suite, python, env)
    rows = run_timings(suite, python, env, args)
    text = table(rows, gpus)
    print(text)
    for step in suite.steps:
        print(f"{step['step']}: {step['status']} {step.get('detail', '')}")
    result = {"gpus": gpus, "rehearsal": args.rehearse_on_cpu, "budget_s": args.budget, "steps": suite.steps, "rows": rows, "table": text, "paper": PAPER}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
