"""Export a (pruned) model to a static-shape ONNX file with a manifest, atomically.

Pruning with a fixed ``r1`` becomes TopK + Gather/GatherElements with constant k, so every tensor
shape is known at export time (the batch dimension may be left symbolic with ``dynamic_batch``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .manifest import MANIFEST_VERSION, manifest_path, versions

DEFAULT_OPSET = 18
SUPPORTED_OPSETS = range(18, 24)
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2  # protobuf's 2 GiB limit, with headroom for the graph
INPUT_NAME = "video"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.float32}


@dataclass
class ExportResult:
    path: Path
    manifest_path: Path
    manifest: dict


class _ExportGraph(nn.Module):
    """Fixes the exported signature: float32 video in, float32 logits (and kept positions) out."""

    def __init__(self, model: nn.Module, with_kept: bool, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.with_kept = with_kept
        self.dtype = dtype

    def forward(self, video):
        out = self.model(video.to(self.dtype), return_kept=self.with_kept)
        if self.with_kept:
            logits, kept = out
            return (logits.float(), *kept)
        return out.float()


def output_names(with_kept: bool) -> list[str]:
    return ["logits", *([f"kept_stage{i}" for i in range(3)] if with_kept else [])]


def _check_opset(opset):
    if opset is None:
        return DEFAULT_OPSET
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(
            f"opset {opset} is not supported; use one of {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1} "
            f"(default {DEFAULT_OPSET}; LayerNormalization needs >= 17 and the exporter emits >= 18)"
        )
    return opset


def check_export_options(path, *, batch_size: int = 1, opset: int | None = None, dtype: str = "fp32", sta_impl: str = "onnx", force: bool = True) -> int:
    """Every check of :func:`export_onnx`'s options that needs no model, so that a bad option fails in
    one line before any work (building vit_h alone takes ~10 s).  Returns the opset to use."""
    from ._io import writable_folder

    path = Path(path)
    opset = _check_opset(opset)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use fp32, fp16 or int8")
    if sta_impl not in ("onnx", "plugin"):
        raise ValueError(f"sta_impl {sta_impl!r} is not supported; use 'onnx' or 'plugin'")
    if sta_impl == "plugin":
        from .plugin_export import plugin_export_context  # noqa: F401 - fails with a clear message if absent
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be an integer >= 1, got {batch_size!r}")
    if path.suffix != ".onnx":
        raise ValueError(f"output {path} must end in .onnx")
    if not force:
        for existing in (path, manifest_path(path)):
            if existing.exists():
                raise FileExistsError(f"{existing} already exists; pass --force to overwrite it")
    writable_folder(path)
    return opset


def _tensor_spec(value_info) -> dict:
    tensor_type = value_info.type.tensor_type
    import onnx

    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor_type.shape.dim]
    return {"name": value_info.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name}


def export_onnx(
    model: nn.Module,
    path,
    *,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    opset: int | None = None,
    with_kept: bool = False,
    dtype: str = "fp32",
    sta_impl: str = "onnx",
    force: bool = True,
    weights: dict | None = None,
    extra_manifest: dict | None = None,
) -> ExportResult:
    """Export ``model`` (from :func:`sta_deploy.create_model`) to ``path`` with a manifest beside it.

    Args:
        batch_size: the static batch (also the example batch when ``dynamic_batch``).
        dynamic_batch: leave the batch dimension symbolic (``batch``); every other dim stays static.
        opset: ONNX opset (default 18).
        with_kept: add int64 outputs ``kept_stage0..2`` (the positions of ``return_kept``).
        dtype: ``fp32``, ``fp16`` (weights and activations; STA's scores stay fp32; I/O stays fp32) or
            ``int8`` (ONNX Runtime dynamic quantization of the blocks' matrix products, for CPUs).
        sta_impl: ``onnx`` (pure ONNX selection) or ``plugin`` (one TensorRT plugin node per stage).
        force: overwrite existing files; otherwise refuse before doing any work.
        weights: what the manifest records about the weights (``{"source": "random-init", "seed": 0}``
            or ``{"source": "checkpoint", "path": ..., "sha256": ...}``); inferred when omitted.

    Nothing is written at ``path`` unless the whole export and its checks succeed.
    """
    import onnx

    from .graph_checks import check_static_shapes

    path = Path(path)
    opset = check_export_options(path, batch_size=batch_size, opset=opset, dtype=dtype, sta_impl=sta_impl, force=force)
    if sta_impl == "plugin" and model.r1 == 0:
        sta_impl = "onnx"  # r1 = 0 prunes nothing: no selection step for the plugin to replace
    meta_path = manifest_path(path)
    data_path = path.with_name(path.name + ".data")
    from . import _progress
    from ._io import close_staging, open_staging

    config = model.config
    torch_dtype = DTYPES[dtype]
    if dtype != "fp32":
        # nn.Module.to converts in place: cast a copy, never the caller's model.
        model = copy.deepcopy(model)
    graph_module = _ExportGraph(model, with_kept, torch_dtype).eval()
    if dtype != "fp32":
        graph_module = graph_module.to(torch_dtype)
    example = torch.zeros(batch_size, *config.input_shape)
    names = output_names(with_kept)
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=1024)
        dynamic_shapes = {"video": {0: batch}}
        # torch.export specialises a dimension whose example value is 1; trace with 2.
        example = torch.zeros(max(batch_size, 2), *config.input_shape)

    # Locks the output (one writer), removes partials of writers that are gone, re-checks --force.
    staging = open_staging(path, refuse_existing=() if force else (path, meta_path))
    try:
        staged = staging / path.name
        _progress.begin(f"tracing and optimising {model.name} with torch.onnx")
        with torch.no_grad(), warnings.catch_warnings(), _quiet_exporter_logs():
            warnings.simplefilter("ignore")
            context = _sta_impl_context(sta_impl)
            with context:
                program = torch.onnx.export(
                    graph_module,
                    (example,),
                    input_names=[INPUT_NAME],
                    output_names=names,
                    opset_version=opset,
                    dynamo=True,
                    dynamic_shapes=dynamic_shapes,
                    optimize=True,
                    verbose=False,
                    custom_translation_table=_custom_translations(sta_impl),
                )
        _progress.end()
        if program is None:  # pragma: no cover - torch always returns the program when f is omitted
            raise RuntimeError("torch.onnx.export returned no program")
        parameter_bytes = sum(p.numel() * p.element_size() for p in graph_module.parameters())
        use_external = parameter_bytes > EXTERNAL_DATA_THRESHOLD
        _progress.begin("writing the model")
        program.save(str(staged), external_data=use_external)
        proto = onnx.load(str(staged), load_external_data=False)
        _strip_trace_metadata(proto)
        onnx.save(proto, str(staged))  # external data, if any, stays where the exporter put it
        if sta_impl == "plugin":
            from .plugin_export import finalize_plugin_graph

            proto = finalize_plugin_graph(proto)
            onnx.save(proto, str(staged), save_as_external_data=use_external, location=data_path.name if use_external else None)
        _progress.end(f"{sum(f.stat().st_size for f in staging.iterdir()) / 1e6:.1f} MB")
        proto.producer_name = "sta-deploy"
        if dtype == "int8":
            _progress.begin("quantizing to int8 with ONNX Runtime")
            proto = _quantize_dynamic_int8(staged, use_external)
        _progress.begin("checking static shapes and the graph with onnx.checker")
        report = check_static_shapes(proto, dynamic_batch=dynamic_batch, batch_dim_name=None)
        if not report.ok:
            raise RuntimeError(f"exported graph is not static: {report.summary()}")
        # (plugin mode: the node's schema was registered by plugin_export, so the checker knows it)
        try:
            onnx.checker.check_model(str(staged), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RuntimeError(f"onnx.checker rejected the exported graph: {first[:300]}") from None
        _progress.end()
        if use_external:
            staged_data = staging / data_path.name
            if not staged_data.exists():  # torch names the data file after the model; normalise it
                candidates = [p for p in staging.iterdir() if p != staged]
                if len(candidates) != 1:
                    raise RuntimeError(f"unexpected external data files: {candidates}")
                candidates[0].rename(staged_data)
        from ._io import sha256_file

        manifest = {
            "format": "sta_deploy.manifest",
            "manifest_version": MANIFEST_VERSION,
            "model": model.name,
            "family": config.family,
            "config": config.as_dict(),
            "r1": model.r1,
            "schedule": model.schedule.as_dict(),
            "dtype": dtype,
            "sta_impl": sta_impl,
            "opset": opset,
            "batch_size": batch_size,
            "dynamic_batch": dynamic_batch,
            "inputs": [_tensor_spec(v) for v in proto.graph.input],
            "outputs": [_tensor_spec(v) for v in proto.graph.output],
            "onnx_file": path.name,
            "onnx_sha256": sha256_file(staged),
            "external_data": data_path.name if use_external else None,
            "weights": weights or _weights_record(model),
            "op_counts": report.op_counts,
            "versions": versions(),
            **(extra_manifest or {}),
        }
        (staging / meta_path.name).write_text(json.dumps(manifest, indent=2) + "\n")
        # Move the data first so that a model file never points at missing weights.
        if use_external:
            os.replace(staging / data_path.name, data_path)
        elif data_path.exists():
            data_path.unlink()  # a stale file from an earlier large export
        # Manifest, then model: if placing the model fails, take the new manifest back out so
        # that no manifest ever describes a file that is not there.
        os.replace(staging / meta_path.name, meta_path)
        try:
            os.replace(staged, path)
        except BaseException:
            meta_path.unlink(missing_ok=True)
            raise
    finally:
        _progress.abandon()  # a step cut short by an error prints no "done" line
        close_staging(staging)
    return ExportResult(path=path, manifest_path=meta_path, manifest=manifest)


KEPT_METADATA = {"namespace"}


def _strip_trace_metadata(proto) -> None:
    """Drop the exporter's stack traces (they leak local paths and bloat the file); keep module scopes."""
    for node in proto.graph.node:
        kept = [prop for prop in node.metadata_props if prop.key in KEPT_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


@contextlib.contextmanager
def _quiet_exporter_logs():
    """The exporter logs optional-op registration noise (e.g. torchvision ops) at WARNING."""
    logger = logging.getLogger("torch.onnx")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _sta_impl_context(sta_impl: str):
    if sta_impl == "plugin":
        from .plugin_export import plugin_export_context

        return plugin_export_context()
    return contextlib.nullcontext()


def _quantize_dynamic_int8(staged: Path, use_external: bool):
    """ONNX Runtime dynamic int8 quantization of the blocks' MatMul/Gemm (weights int8, activations
    quantized per run).  STA's own nodes stay float32 so the token selection keeps full precision.
    For ONNX Runtime on CPUs (VNNI); TensorRT wants fp16/fp32 graphs instead."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .bench import STA_SCOPE

    proto = onnx.load(str(staged), load_external_data=False)
    sta_nodes = [node.name for node in proto.graph.node if any(p.key == "namespace" and STA_SCOPE in p.value for p in node.metadata_props)]
    quantized = staged.with_name("int8_" + staged.name)
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice (pre-processing, shape inference) at WARNING
    try:
        quantize_dynamic(
            str(staged),
            str(quantized),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=sta_nodes,
            use_external_data_format=use_external,
        )
    finally:
        root.setLevel(previous)
    for leftover in staged.parent.iterdir():
        if leftover != quantized and not leftover.name.startswith("int8_"):
            leftover.unlink()
    os.replace(quantized, staged)
    proto = onnx.load(str(staged), load_external_data=False)
    onnx.save(proto, str(staged))
    return proto


def _custom_translations(sta_impl: str):
    if sta_impl != "plugin":
        return None
    from .plugin_export import custom_translation_table

    return custom_translation_table()


def _weights_record(model) -> dict:
    from .checkpoints import checkpoint_sha256

    checkpoint = getattr(model, "checkpoint_path", None)
    if checkpoint is None:
        return {"source": "random-init", "seed": getattr(model, "init_seed", None)}
    return {"source": "checkpoint", "path": str(Path(checkpoint).resolve()), "sha256": checkpoint_sha256(checkpoint), "layout": model.checkpoint_layout}
