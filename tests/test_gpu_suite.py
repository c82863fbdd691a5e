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
