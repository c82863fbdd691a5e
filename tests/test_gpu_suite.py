"""benchmarks/gpu_suite.py runs every GPU check and timing on a machine with an NVIDIA GPU; without one it
must say so in one line and exit 0 (it runs in CI that way)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_gpu_suite_without_a_gpu_says_so_in_one_line_and_exits_0(tmp_path):
    """benchmarks/gpu_suite.py on a machine without nvidia-smi (PATH emptied): one line, exit 0, nothing written."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_suite.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "gpu.json")], capture_output=True, text=True, timeout=120,
                          env={"PATH": str(tmp_path), "HOME": str(tmp_path)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["gpu_suite: no NVIDIA GPU here (nvidia-smi lists none); nothing to run"]
    assert done.stderr == "" and not (tmp_path / "gpu.json").exists()


def test_gpu_suite_rehearsal_on_the_cpu_runs_every_step_and_writes_the_table(tmp_path):
    """``--rehearse-on-cpu``: the whole suite (set-up, the GPU tests, which skip here, and a timing child
    with its fp16 export, PyTorch and ONNX Runtime rows) run end to end without a GPU, so that a GPU
    machine's few minutes are not spent finding a bug in the script; then the table from its rows."""
    import importlib.util
    import json

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "suite.json"
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "gpu_suite.py"), "--rehearse-on-cpu", "--models", "vit_s", "--r1", "48", "--batches", "1",
         "--budget", "900", "--out", str(out)],
        capture_output=True, text=True, timeout=960, cwd=root,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["rehearsal"] is True and "CPU rehearsal" in result["gpus"][0]
    status = {step["step"]: step["status"] for step in result["steps"]}
    assert status["timings vit_s r1=48"] == "ok", result["steps"]
    assert next(v for k, v in status.items() if k.startswith("GPU tests")) == "ok", result["steps"]
    rows = result["rows"]
    assert {row["path"] for row in rows} == {"pytorch eager (fp16 autocast)", "onnxruntime cpu fp16"}
    for row in rows:
        assert (row["model"], row["r1"], row["batch"], row["device"]) == ("vit_s", 48, 1, "cpu")
        assert row["ms"] > 0 and abs(row["clips_per_s"] - 1000.0 / row["ms"]) < 1e-6 * row["clips_per_s"]
    assert "| vit_s | 48 | 1 |" in result["table"]

    spec = importlib.util.spec_from_file_location("gpu_suite", root / "benchmarks" / "gpu_suite.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    base = [dict(row, r1=0, clips_per_s=row["clips_per_s"] / 2) for row in rows]  # a made-up r1 = 0 at half the speed
    lines = suite.table(rows + base, ["cpu"]).splitlines()
    assert "onnxruntime cpu fp16 clips/s" in lines[1] and "pytorch eager (fp16 autocast) clips/s" in lines[1]
    assert "| 2.00x |" in next(line for line in lines if line.startswith("| vit_s | 48 | 1 |"))  # PyTorch's speed-up over r1 = 0
