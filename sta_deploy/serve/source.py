"""What ``triton-repo`` and ``serve`` are given: an exported ONNX model with its manifest, or a
TensorRT engine whose ONNX/manifest is given or found beside it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..export.manifest import manifest_path, read_manifest

PLATFORMS = ("python", "onnxruntime", "tensorrt")


@dataclass
class ExportSource:
    path: Path  # the .onnx or .plan that is served
    onnx_path: Path  # the ONNX whose manifest describes it
    manifest: dict
    manifest_sha256: str

    @property
    def is_plan(self) -> bool:
        return self.path.suffix == ".plan"

    @property
    def plugin_mode(self) -> bool:
        return self.manifest.get("sta_impl") == "plugin"

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.manifest.get("dynamic_batch"))

    @property
    def static_batch(self) -> int:
        return int(self.manifest.get("batch_size") or 1)

    @property
    def input(self) -> dict:
        return self.manifest["inputs"][0]

    @property
    def outputs(self) -> list[dict]:
        return self.manifest["outputs"]

    @property
    def num_classes(self) -> int:
        return int(self.manifest["config"]["num_classes"])

    @property
    def external_files(self) -> list[Path]:
        """Files beside the ONNX that hold its tensors (exports above 2 GB)."""
        name = self.manifest.get("external_data")
        return [self.onnx_path.with_name(name)] if name else []


def resolve_export(path, onnx=None) -> ExportSource:
    """The served file and its manifest; one-line errors naming what is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (give an exported .onnx or a TensorRT .plan)")
    if path.suffix == ".plan":
        onnx_path = Path(onnx) if onnx is not None else path.with_suffix(".onnx")
        if not onnx_path.is_file():
            raise FileNotFoundError(
                f"{path} is a TensorRT engine; its ONNX export and manifest are needed for the tensor names and shapes: "
                f"pass --onnx MODEL.onnx (not found beside it as {onnx_path.name})"
            )
    elif path.suffix == ".onnx":
        if onnx is not None and Path(onnx).resolve() != path.resolve():
            raise ConfigError("--onnx is for TensorRT engines; EXPORT is already an ONNX model")
        onnx_path = path
    else:
        raise ConfigError(f"{path} is neither an .onnx export nor a TensorRT .plan")
    manifest = read_manifest(onnx_path)
    digest = hashlib.sha256(manifest_path(onnx_path).read_bytes()).hexdigest()
    return ExportSource(path=path, onnx_path=onnx_path, manifest=manifest, manifest_sha256=digest)


def choose_platform(source: ExportSource, kind: str, platform: str | None) -> str:
    """Which Triton backend serves the model: ``tensorrt`` for engines, ``onnxruntime`` for pure-ONNX
    exports, ``python`` (ONNX Runtime + the STA custom op, CPU) for plugin-mode ONNX."""
    if source.is_plan:
        if platform not in (None, "tensorrt"):
            raise ConfigError(f"{source.path} is a TensorRT engine: it is served by the tensorrt_plan platform, not {platform}")
        if kind != "gpu":
            raise ConfigError("a TensorRT engine runs on a GPU: pass --kind gpu (or serve the ONNX export on CPU)")
        return "tensorrt"
    if source.manifest.get("window_attention") == "kernel":
        raise ConfigError(
            f"{source.path} is a --window-attention kernel export (KeptWindowAttention nodes), which no Triton backend loads yet; "
            "export it with --window-attention onnx to serve it"
        )
    if platform == "tensorrt":
        raise ConfigError("--platform tensorrt needs a TensorRT engine: build one with 'sta-deploy build' and pass the .plan")
    if source.plugin_mode:
        if kind == "gpu" and platform != "python":
            raise ConfigError(
                "a plugin-mode ONNX model runs on GPU as a TensorRT engine (Triton's ONNX Runtime backend cannot load the "
                "STAStageSelect custom op): 'sta-deploy build --plugin-lib ...' and pass the .plan, or use --kind cpu"
            )
        if platform == "onnxruntime":
            raise ConfigError("Triton's ONNX Runtime backend cannot load the STAStageSelect custom op of a plugin-mode model; use --platform python")
        return "python"
    return platform or "onnxruntime"
