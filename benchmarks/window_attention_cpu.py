"""Video Swin window attention alone: the KeptWindowAttention kernel against ONNX Runtime's plain graph.

For every block of a pruned swin_t (random weights, one seeded clip), the block's real attention
inputs are captured from a PyTorch forward pass; then, interleaved run by run on the same threads:

- ``kernel``: ``plugins/kept_window_attention`` on the kept queries only (what
  ``--window-attention kernel`` runs);
- ``ort``: ONNX Runtime on the same windows filled in full (q·kᵀ + bias, softmax, ·v over every
  slot: the attention of the plain export), from windows gathered beforehand;
- ``kernel all rows``: the kernel on every slot of every window, the same work as ``ort`` (the kernel's
  own speed, with no rows skipped).

Times are per stage (all of its blocks), medians of ``--runs``.

    python benchmarks/window_attention_cpu.py                       # swin_t r1 = 256, 2 threads
    python benchmarks/window_attention_cpu.py --threads 1 --runs 5

Prints a table and writes JSON (default benchmarks/results/window_attention_cpu_<model>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_cpu import interleaved_timings  # noqa: E402

import sta_deploy  # noqa: E402
from sta_deploy.export.manifest import versions  # noqa: E402
from sta_deploy.models import swin as swin_module  # noqa: E402
from sta_deploy.plugin.window_attention import kernel_forward  # noqa: E402
from sta_deploy.runtime.onnxrt import DENORMAL_AS_ZERO_KEY  # noqa: E402
from sta_deploy.validate import seeded_clips  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swin_t")
    parser.add_argument("--r1", type=int, default=256)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def capture_blocks(model, clip):
    """(stage, q, k, v, window_index, back_index, additive, window_type, scale) of every block."""
    captured, original = [], swin_module.SwinBlock.forward

    def capture(block, x, window_index, back_index):
        q, k, v = block.attn.head_major_qkv(block.norm1(x), block.geometry.has_padding)
        captured.append((q, k, v, window_index, back_index, block.additive_terms(), block.window_type, block.attn.scale))
        return original(block, x, window_index, back_index)

    swin_module.SwinBlock.forward = capture
    try:
        with torch.no_grad():
            model(clip)
    finally:
        swin_module.SwinBlock.forward = original
    stages = [stage for stage, depth in enumerate(model.config.depths) for _ in range(depth)]
    # contiguous copies, as ONNX Runtime hands the kernel its buffers (a strided view would be copied
    # inside every timed call)
    return [(stage, *(np.ascontiguousarray(t.numpy()) if isinstance(t, torch.Tensor) else t for t in block)) for stage, block in zip(stages, captured)]


def kernel_call(q, k, v, window_index, back_index, additive, window_type, scale, threads: int):
    """The kernel on these arrays into one output buffer allocated here, as the segmented session
    reuses its buffers from run to run."""
    window_index, back_index = (np.ascontiguousarray(index, dtype=np.int64) for index in (window_index, back_index))
    out = np.empty((q.shape[0], q.shape[1], back_index.shape[-1], q.shape[3]), dtype=np.float32)
    arrays = (q, k, v, window_index, back_index, np.ascontiguousarray(additive, dtype=np.float32))
    operands = [(a.ctypes.data, a.shape) for a in arrays]

    def call(arrays=arrays):  # holds the arrays: the operands are bare pointers into them
        kernel_forward(operands, window_type, scale, (out.ctypes.data, out.shape), threads=threads)

    return call


def plain_attention_session(heads: int, windows: int, volume: int, head_dim: int, threads: int):
    """ONNX Runtime: softmax(q kᵀ + additive) v over (1, heads, windows, V, hd) windows."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    shape = [1, heads, windows, volume, head_dim]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in "qkv"]
    inputs.append(helper.make_tensor_value_info("additive", TensorProto.FLOAT, [1, heads, 1, volume, volume]))
    nodes = [
        helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 1, 2, 4, 3]),
        helper.make_node("MatMul", ["q", "k_t"], ["scores"]),
        helper.make_node("Add", ["scores", "additive"], ["biased"]),
        helper.make_node("Softmax", ["biased"], ["weights"], axis=-1),
        helper.make_node("MatMul", ["weights", "v"], ["attended"]),
    ]
    output = helper.make_tensor_value_info("attended", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "window_attention", inputs, [output]), opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # the kernel runs between this session's runs: idle workers must not spin on its cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry(DENORMAL_AS_ZERO_KEY, "1")  # as sta_deploy's own sessions do
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def stage_runners(blocks, threads: int) -> dict:
    """Per stage: the three ways of computing its blocks' attention, each a no-argument callable."""
    runners = {}
    # only pruned stages get KeptWindowAttention nodes (one window index per sample there)
    for stage in sorted({block[0] for block in blocks if block[4].ndim == 2}):
        mine = [block for block in blocks if block[0] == stage]
        kernel_calls, all_rows_calls, ort_calls = [], [], []
        for _, q, k, v, window_index, back_index, additive, window_type, scale in mine:
            heads, volume, head_dim = q.shape[1], additive.shape[-1], q.shape[-1]
            windows = window_index.shape[-1] // volume
            all_slots = np.arange(window_index.shape[-1]).reshape(window_index.shape[:-1] + (-1,))
            kernel_calls.append(kernel_call(q, k, v, window_index, back_index, additive, window_type, scale, threads))
            all_rows_calls.append(kernel_call(q, k, v, window_index, all_slots, additive, window_type, scale, threads))
            rows = window_index.reshape(-1)  # batch 1: the same slots for every sample
            gathered = {name: np.ascontiguousarray(t[:, :, rows].reshape(1, heads, windows, volume, head_dim)) for name, t in zip("qkv", (q * scale, k, v))}
            # one (heads, V, V) term broadcast over the windows, as the plain graph adds each mask type's
            # term to its group of windows (a term per window would cost ONNX Runtime extra memory traffic)
            gathered["additive"] = np.ascontiguousarray(additive[:1, :, None])
            session = plain_attention_session(heads, windows, volume, head_dim, threads)
            ort_calls.append(lambda s=session, feed=gathered: s.run(None, feed))
        for name, calls in (("kernel", kernel_calls), ("kernel all rows", all_rows_calls), ("ort", ort_calls)):
            runners[(stage, name)] = lambda calls=calls: [call() for call in calls]
        kept = sum(block[5].shape[-1] for block in mine) / sum(block[4].shape[-1] for block in mine)
        runners[(stage, "kept")] = kept
    return runners


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = sta_deploy.create_model(args.model, r1=args.r1, seed=0).eval()
    clip = torch.from_numpy(seeded_clips(1, model.config.input_shape, seed=0))
    blocks = capture_blocks(model, clip)
    stages = stage_runners(blocks, args.threads)
    kept = {stage: value for (stage, name), value in stages.items() if name == "kept"}
    runners = {f"stage {stage + 1} {name}": run for (stage, name), run in stages.items() if name != "kept"}
    times = interleaved_timings(runners, warmup=args.warmup, runs=args.runs)
    median = {name: statistics.median(values) for name, values in times.items()}
    rows = []
    print(f"{args.model} r1 = {args.r1}, {args.threads} threads, median of {args.runs} (ms per stage, all its blocks)")
    print(f"{'stage':>5} {'blocks':>6} {'kept':>5} {'kernel':>8} {'ort':>8} {'kernel/ort':>10} {'all rows':>9} {'all rows/ort':>12}")
    for stage, fraction in kept.items():
        row = dict(
            stage=stage + 1, blocks=sum(1 for block in blocks if block[0] == stage), kept_fraction=fraction,
            kernel_ms=median[f"stage {stage + 1} kernel"], ort_ms=median[f"stage {stage + 1} ort"],
            kernel_all_rows_ms=median[f"stage {stage + 1} kernel all rows"],
        )
        row["kernel_over_ort"] = row["kernel_ms"] / row["ort_ms"]
        row["all_rows_over_ort"] = row["kernel_all_rows_ms"] / row["ort_ms"]
        rows.append(row)
        print(f"{row['stage']:>5} {row['blocks']:>6} {fraction:>5.2f} {row['kernel_ms']:>8.1f} {row['ort_ms']:>8.1f} "
              f"{row['kernel_over_ort']:>10.3f} {row['kernel_all_rows_ms']:>9.1f} {row['all_rows_over_ort']:>12.3f}")
    total = {name: sum(row[f"{name}_ms"] for row in rows) for name in ("kernel", "ort", "kernel_all_rows")}
    print(f"all pruned stages: kernel {total['kernel']:.1f} ms, ort {total['ort']:.1f} ms ({total['kernel'] / total['ort']:.3f}), "
          f"kernel all rows {total['kernel_all_rows']:.1f} ms ({total['kernel_all_rows'] / total['ort']:.3f})")
    result = dict(
        model=args.model, r1=args.r1, threads=args.threads, runs=args.runs, warmup=args.warmup,
        cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(), versions=versions(),
        stages=rows, total_ms=total, times_ms=times,
    )
    out = Path(args.out or f"benchmarks/results/window_attention_cpu_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
