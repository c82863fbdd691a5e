"""Helpers of the Triton serving tests: tiny exports, a repository holding several of them, finding
server processes that should be gone."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

TINY = dict(embed_dim=32, depth=3, num_heads=2, img_size=64, num_frames=16, num_classes=6)
R1 = 4

HAS_TRITON = importlib.util.find_spec("pytriton") is not None and importlib.util.find_spec("tritonclient") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="nvidia-pytriton and tritonclient are not installed (pip install -e '.[serve]')")
needs_schema = pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="tritonclient (Triton's model-config schema) is not installed")
can_build_reference = shutil.which("cmake") is not None and importlib.util.find_spec("onnxruntime_extensions") is not None


def tiny_export(folder: Path, name: str, **options) -> Path:
    """A seeded tiny ViT at r1=4 exported as ``folder/name.onnx`` (``options``: export_onnx's)."""
    from sta_deploy import create_model
    from sta_deploy.export.onnx_export import export_onnx

    model = create_model("vit_s", r1=R1, seed=0, **TINY)
    path = folder / f"{name}.onnx"
    export_onnx(model, path, **options)
    return path


class TinyExports:
    """Tiny exports made once per session, on first use: ``get("tiny")`` (dynamic batch, kept outputs),
    ``get("tiny_b2")`` (static batch 2), ``get("tiny_plugin")`` (plugin-mode, dynamic batch, kept)."""

    OPTIONS = {
        "tiny": dict(dynamic_batch=True, with_kept=True),
        "tiny_b2": dict(batch_size=2),
        "tiny_plugin": dict(dynamic_batch=True, with_kept=True, sta_impl="plugin"),
    }

    def __init__(self, folder: Path):
        self.folder = folder
        self.made: dict[str, Path] = {}

    def get(self, name: str) -> Path:
        if name not in self.made:
            self.made[name] = tiny_export(self.folder, name, **self.OPTIONS[name])
        return self.made[name]


def merge_repositories(parts: list[Path], into: Path) -> Path:
    """One repository holding the models of several generated ones."""
    into.mkdir(parents=True, exist_ok=True)
    for part in parts:
        for model in part.iterdir():
            if (model / "config.pbtxt").is_file():
                shutil.move(str(model), into / model.name)
    return into


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (a repository path: tritonserver and its stubs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command and "pytest" not in command:
            found.append(int(entry.name))
    return found
