"""Export a (pruned) model to a static-shape ONNX file with a manifest, atomically.

Pruning with a fixed ``r1`` becomes TopK + Gather/GatherElements with constant k, so every tensor
shape is known at export time (the batch dimension may be left symbolic with ``dynamic_batch``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import _progress
from .._io import close_staging, open_staging, sha256_file, writable_folder
from ..errors import first_line
from .manifest import build_manifest, manifest_path, write_manifest

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
    window_attention: str = "onnx",
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
        window_attention: Video Swin only: ``onnx`` (full windows in plain ONNX) or ``kernel`` (one
            ``KeptWindowAttention`` node per block of the pruned stages, attending the kept queries
            only; ONNX Runtime CPU with the kernel of ``plugins/kept_window_attention``; fp32; r1 = 0
            gives the plain graph, since every query is kept).
        force: overwrite existing files; otherwise refuse before doing any work.
        weights: what the manifest records about the weights (``{"source": "random-init", "seed": 0}``
            or ``{"source": "checkpoint", "path": ..., "sha256": ...}``); inferred when omitted.

    Nothing is written at ``path`` unless the whole export and its checks succeed.
    """
    path = Path(path)
    opset = check_export_options(
        path, opset=opset, dtype=dtype, sta_impl=sta_impl, batch_size=batch_size, force=force, window_attention=window_attention
    )
    if window_attention == "kernel" and model.config.family != "swin":
        raise ValueError(f"--window-attention kernel applies to Video Swin models only; {model.name} has no window attention (drop the flag)")
    if sta_impl == "plugin" and model.r1 == 0:
        sta_impl = "onnx"  # r1 = 0 prunes nothing: no selection step for the plugin to replace
    if window_attention == "kernel" and model.r1 == 0:
        window_attention = "onnx"  # r1 = 0 keeps every query: nothing for the kernel to skip
    graph_module = _export_graph(model, with_kept, dtype)
    # Locks the output (one writer), removes partials of writers that are gone, re-checks --force.
    staging = open_staging(path, refuse_existing=() if force else (path, manifest_path(path)))
    try:
        staged = staging / path.name
        use_external = _trace_to_file(
            graph_module, staged, model.config.input_shape, batch_size, dynamic_batch, opset, sta_impl, with_kept, window_attention
        )
        # one node per block of the pruned stages (those after an STA stage); unpruned stages keep plain attention
        kernel_nodes = sum(model.config.depths[1:]) if window_attention == "kernel" else 0
        proto, report = _finish_graph(staged, use_external, dtype, sta_impl, dynamic_batch, kernel_nodes)
        data_path = path.with_name(path.name + ".data")
        if use_external:
            _name_external_data(staging, staged, data_path.name)
        manifest = build_manifest(
            model, proto, report, dtype=dtype, sta_impl=sta_impl, opset=opset, batch_size=batch_size, dynamic_batch=dynamic_batch,
            onnx_file=path.name, onnx_sha256=sha256_file(staged), external_data=data_path.name if use_external else None,
            weights=weights or _weights_record(model), extra={**({"window_attention": "kernel"} if kernel_nodes else {}), **(extra_manifest or {})},
        )
        write_manifest(manifest, staging / manifest_path(path).name)
        _place_outputs(staging, path, use_external)
    finally:
        _progress.abandon()  # a step cut short by an error prints no "done" line
        close_staging(staging)
    return ExportResult(path=path, manifest_path=manifest_path(path), manifest=manifest)


def check_export_options(
    path, *, batch_size: int = 1, opset: int | None = None, dtype: str = "fp32", sta_impl: str = "onnx", force: bool = True,
    window_attention: str = "onnx",
) -> int:
    """Every check of :func:`export_onnx`'s options that needs no model, so that a bad option fails in
    one line before any work (building vit_h alone takes ~10 s).  Returns the opset to use."""
    path = Path(path)
    opset = _check_opset(opset)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use fp32, fp16 or int8")
    if sta_impl not in ("onnx", "plugin"):
        raise ValueError(f"sta_impl {sta_impl!r} is not supported; use 'onnx' or 'plugin'")
    if window_attention not in ("onnx", "kernel"):
        raise ValueError(f"window attention {window_attention!r} is not supported; use 'onnx' or 'kernel'")
    if window_attention == "kernel" and sta_impl == "plugin":
        raise ValueError("--window-attention kernel and --sta-impl plugin cannot be combined yet (the kernel runs on ONNX Runtime, the plugin in TensorRT); use --sta-impl onnx")
    if window_attention == "kernel" and dtype != "fp32":
        raise ValueError(f"--window-attention kernel computes in float32 and cannot be exported as {dtype}; export fp32 or use --window-attention onnx")
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


def _export_graph(model: nn.Module, with_kept: bool, dtype: str) -> nn.Module:
    if dtype != "fp32":
        # nn.Module.to converts in place: cast a copy, never the caller's model.
        model = copy.deepcopy(model)
    graph_module = _ExportGraph(model, with_kept, DTYPES[dtype]).eval()
    return graph_module.to(DTYPES[dtype]) if dtype != "fp32" else graph_module


def _trace_to_file(graph_module, staged: Path, input_shape, batch_size, dynamic_batch, opset, sta_impl, with_kept, window_attention) -> bool:
    """torch.onnx (dynamo) export of ``graph_module`` to ``staged``; returns whether weights went to external data."""
    example = torch.zeros(batch_size, *input_shape)
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = {"video": {0: torch.export.Dim("batch", min=1, max=1024)}}
        # torch.export specialises a dimension whose example value is 1; trace with 2.
        example = torch.zeros(max(batch_size, 2), *input_shape)
    _progress.begin(f"tracing and optimising {graph_module.model.name} with torch.onnx")
    with torch.no_grad(), warnings.catch_warnings(), _quiet_exporter_logs(), _sta_impl_context(sta_impl), _window_attention_context(window_attention):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph_module,
            (example,),
            input_names=[INPUT_NAME],
            output_names=output_names(with_kept),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            verbose=False,
            custom_translation_table=_custom_translations(sta_impl, window_attention),
        )
    _progress.end()
    if program is None:  # pragma: no cover - torch always returns the program when f is omitted
        raise RuntimeError("torch.onnx.export returned no program")
    parameter_bytes = sum(p.numel() * p.element_size() for p in graph_module.parameters())
    use_external = parameter_bytes > EXTERNAL_DATA_THRESHOLD
    _progress.begin("writing the model")
    program.save(str(staged), external_data=use_external)
    return use_external


def _finish_graph(staged: Path, use_external: bool, dtype: str, sta_impl: str, dynamic_batch: bool, kernel_nodes: int = 0):
    """Strip trace metadata, finalise plugin nodes, quantize, then check static shapes and run onnx.checker."""
    import onnx

    from .graph_checks import check_static_shapes

    proto = onnx.load(str(staged), load_external_data=False)
    _strip_trace_metadata(proto)
    onnx.save(proto, str(staged))  # external data, if any, stays where the exporter put it
    if sta_impl == "plugin" or kernel_nodes:
        if sta_impl == "plugin":
            from ..plugin.export import finalize_plugin_graph

            proto = finalize_plugin_graph(proto)
        if kernel_nodes:
            from ..plugin.window_attention_export import finalize_window_attention_graph

            proto = finalize_window_attention_graph(proto, kernel_nodes)
        location = staged.name + ".data" if use_external else None
        onnx.save(proto, str(staged), save_as_external_data=use_external, location=location)
    _progress.end(f"{sum(f.stat().st_size for f in staged.parent.iterdir()) / 1e6:.1f} MB")
    proto.producer_name = "sta-deploy"
    if dtype == "int8":
        from .quantize import quantize_dynamic_int8

        _progress.begin("quantizing to int8 with ONNX Runtime")
        proto = quantize_dynamic_int8(staged, use_external)
    _progress.begin("checking static shapes and the graph with onnx.checker")
    report = check_static_shapes(proto, dynamic_batch=dynamic_batch, batch_dim_name=None)
    if not report.ok:
        raise RuntimeError(f"exported graph is not static: {report.summary()}")
    # (plugin mode: the node's schema was registered by plugin.export, so the checker knows it)
    try:
        onnx.checker.check_model(str(staged), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise RuntimeError(f"onnx.checker rejected the exported graph: {first_line(error)}") from None
    _progress.end()
    return proto, report


def _name_external_data(staging: Path, staged: Path, data_name: str) -> None:
    """torch names the external data file after the model; give it the name the final model expects."""
    if (staging / data_name).exists():
        return
    candidates = [p for p in staging.iterdir() if p != staged]
    if len(candidates) != 1:
        raise RuntimeError(f"unexpected external data files: {candidates}")
    candidates[0].rename(staging / data_name)


def _place_outputs(staging: Path, path: Path, use_external: bool) -> None:
    """Move data, manifest, then model from the staging folder to their final names."""
    data_path = path.with_name(path.name + ".data")
    meta_path = manifest_path(path)
    # Move the data first so that a model file never points at missing weights.
    if use_external:
        os.replace(staging / data_path.name, data_path)
    elif data_path.exists():
        data_path.unlink()  # a stale file from an earlier large export
    # Manifest, then model: if placing the model fails, take the new manifest back out so
    # that no manifest ever describes a file that is not there.
    os.replace(staging / meta_path.name, meta_path)
    try:
        os.replace(staging / path.name, path)
    except BaseException:
        meta_path.unlink(missing_ok=True)
        raise


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
        from ..plugin.export import plugin_export_context

        return plugin_export_context()
    return contextlib.nullcontext()


def _window_attention_context(window_attention: str):
    if window_attention == "kernel":
        from ..plugin.window_attention_export import window_attention_export_context

        return window_attention_export_context()
    return contextlib.nullcontext()


def _custom_translations(sta_impl: str, window_attention: str = "onnx"):
    table = {}
    if sta_impl == "plugin":
        from ..plugin.export import custom_translation_table

        table.update(custom_translation_table())
    if window_attention == "kernel":
        from ..plugin.window_attention_export import custom_translation_table as window_attention_translations

        table.update(window_attention_translations())
    return table or None


def _weights_record(model) -> dict:
    from ..models.checkpoints import checkpoint_sha256

    checkpoint = getattr(model, "checkpoint_path", None)
    if checkpoint is None:
        return {"source": "random-init", "seed": getattr(model, "init_seed", None)}
    return {"source": "checkpoint", "path": str(Path(checkpoint).resolve()), "sha256": checkpoint_sha256(checkpoint), "layout": model.checkpoint_layout}
