"""int8 for OpenVINO: NNCF post-training (static) quantization of an fp32 export, STA kept in float32.

The result is again an ONNX file (QuantizeLinear/DequantizeLinear pairs around the blocks' matrix
products) with a manifest beside it, so that OpenVINO runs it directly like every other export and
``validate`` rebuilds the same PyTorch reference.  The STA subgraph (the ``sta_stages`` scope) is NNCF's
ignored scope: token scores, transitions and selection keep full precision, as in the ONNX Runtime
int8 export (:mod:`.quantize`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import sha256_file, writable_folder
from ..errors import ConfigError, first_line
from ..plugin.names import count_plugin_nodes, count_window_attention_nodes
from .manifest import check_model_matches, manifest_path, read_manifest, versions, write_manifest
from .quantize import sta_node_names

INSTALL_HINT = "pip install 'sta-deploy[openvino]'"


@dataclass
class QuantizeResult:
    path: Path
    manifest_path: Path
    manifest: dict
    ignored_nodes: int  # STA nodes NNCF left in float32
    calibration_clips: int


def default_output(source) -> Path:
    """``X.onnx`` -> ``X_int8.onnx`` beside it."""
    source = Path(source)
    return source.with_name(source.stem + "_int8.onnx")


def output_path(output, source) -> Path:
    """``-o X_int8`` and ``-o X_int8.onnx`` both mean ``X_int8.onnx``."""
    if output is None:
        return default_output(source)
    output = Path(output)
    return output if output.suffix == ".onnx" else output.with_name(output.name + ".onnx")


def check_source(source, manifest: dict) -> None:
    """An unchanged fp32, pure-ONNX export: the only kind NNCF can calibrate and OpenVINO can run."""
    check_model_matches(source, manifest)
    if manifest.get("sta_impl") == "plugin" or count_plugin_nodes(source):
        raise ConfigError(f"{source} is a plugin-mode export (STAStageSelect nodes); quantize an export made with --sta-impl onnx")
    if count_window_attention_nodes(source):
        raise ConfigError(f"{source} is a --window-attention kernel export (KeptWindowAttention nodes); quantize an export made with --window-attention onnx")
    if manifest["dtype"] != "fp32":
        raise ConfigError(f"{source} is a {manifest['dtype']} export; quantize the fp32 export instead")


def calibration_batches(clips: np.ndarray, manifest: dict) -> list[np.ndarray]:
    """``clips`` (N, C, T, H, W) in the export's batch size (the last batch padded by repetition)."""
    expected = tuple(manifest["inputs"][0]["shape"][1:])
    clips = np.asarray(clips)
    if clips.ndim != len(expected) + 1 or tuple(clips.shape[1:]) != expected:
        raise ConfigError(f"calibration clips have shape {tuple(clips.shape)}; expected (N, {', '.join(map(str, expected))}) for this model")
    if len(clips) == 0:
        raise ConfigError("no calibration clips")
    clips = np.ascontiguousarray(clips, dtype=np.float32)
    batch = 1 if manifest["dynamic_batch"] else int(manifest["batch_size"])
    batches = []
    for start in range(0, len(clips), batch):
        chunk = clips[start : start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
        batches.append(chunk)
    return batches


def import_nncf():
    try:
        import nncf
    except ImportError:
        raise ImportError(f"NNCF is not installed (int8 for OpenVINO needs it): {INSTALL_HINT}") from None
    return nncf


@contextlib.contextmanager
def _quiet_nncf(nncf):
    """NNCF logs every decision at INFO and draws progress bars on stdout: keep stdout for our output."""
    previous = logging.getLogger("nncf").level
    nncf.set_log_level(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        nncf.set_log_level(previous)


def nncf_quantize(proto, batches: list[np.ndarray], input_name: str, ignored: list[str], *, fast_bias_correction: bool = True):
    """NNCF's ONNX post-training quantization of ``proto`` (transformer preset), ``ignored`` left in float32."""
    nncf = import_nncf()
    dataset = nncf.Dataset(batches, lambda chunk: {input_name: chunk})
    with _quiet_nncf(nncf):
        try:
            return nncf.quantize(
                proto,
                dataset,
                model_type=nncf.ModelType.TRANSFORMER,
                ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
                subset_size=len(batches),
                fast_bias_correction=fast_bias_correction,
            )
        except Exception as error:  # NNCF wraps backend errors in its own types, with long messages
            raise RuntimeError(f"NNCF could not quantize the model: {first_line(error)}") from None


def quantize_openvino(source, output=None, *, calibration: np.ndarray, calibration_source: str, force: bool = False) -> QuantizeResult:
    """Quantize the fp32 export ``source`` to int8 for OpenVINO, calibrated on ``calibration`` clips.

    ``calibration_source`` says what the clips are (recorded in the manifest, e.g. "4 videos" or
    "8 seeded random clips").  Writes ``output`` (default ``X_int8.onnx``) and its manifest atomically.
    """
    import onnx

    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"model {source} does not exist")
    manifest = read_manifest(source)
    check_source(source, manifest)
    path = output_path(output, source)
    if path.resolve() == source.resolve():
        raise ConfigError(f"-o {path} is the model being quantized; choose another output")
    if not force:
        for existing in (path, manifest_path(path)):
            if existing.exists():
                raise FileExistsError(f"{existing} already exists; pass --force to overwrite it")
    batches = calibration_batches(calibration, manifest)
    proto = onnx.load(str(source))
    ignored = sta_node_names(proto)
    quantized = nncf_quantize(proto, batches, manifest["inputs"][0]["name"], ignored)
    quantized.producer_name = "sta-deploy"
    record = {
        "method": "nncf post-training static quantization (transformer preset)",
        "backend": "openvino",
        "source": source.name,
        "source_sha256": manifest.get("onnx_sha256"),
        "ignored_scope": "sta_stages",
        "ignored_nodes": len(ignored),
        "calibration": {"clips": int(len(calibration)), "source": calibration_source},
    }
    new_manifest = _write(quantized, path, manifest, record)
    return QuantizeResult(path, manifest_path(path), new_manifest, len(ignored), int(len(calibration)))


def _write(proto, path: Path, source_manifest: dict, record: dict) -> dict:
    """``proto`` and its manifest to ``path`` through a staging folder: data, manifest, then model."""
    import onnx

    from .graph_checks import check_static_shapes
    from .onnx_export import _place_outputs

    report = check_static_shapes(proto, dynamic_batch=source_manifest["dynamic_batch"], batch_dim_name=None)
    if not report.ok:
        raise RuntimeError(f"quantized graph is not static: {report.summary()}")
    use_external = _weight_bytes(proto) > 1_800_000_000  # protobuf's 2 GB limit, with room for the graph
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=writable_folder(path)))
    try:
        staged = staging / path.name
        data_name = path.name + ".data"
        onnx.save(proto, str(staged), save_as_external_data=use_external, location=data_name if use_external else None)
        manifest = dict(
            source_manifest,
            dtype="int8",
            onnx_file=path.name,
            onnx_sha256=sha256_file(staged),
            external_data=data_name if use_external else None,
            op_counts=report.op_counts,
            versions=_versions(),
            quantization=record,
        )
        write_manifest(manifest, staging / manifest_path(path).name)
        _place_outputs(staging, path, use_external)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _weight_bytes(proto) -> int:
    return sum(len(init.raw_data) or init.ByteSize() for init in proto.graph.initializer)


def _versions() -> dict:
    found = versions()
    for name in ("nncf", "openvino"):
        with contextlib.suppress(ImportError):
            found[name] = __import__(name).__version__
    return found
