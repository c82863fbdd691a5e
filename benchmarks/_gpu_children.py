"""Child processes of benchmarks/gpu_suite.py: timings of one (model, r1), and the C++ app check.

Each runs in its own process so that the suite can stop it when its share of the time budget is
spent; timing rows are appended to a JSON-lines file as soon as each is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(run, sync, *, min_s: float = 2.0, max_iters: int = 50, warmup: int = 3) -> float:
    """Mean seconds per ``run()`` over at least ``min_s`` (or ``max_iters`` calls), after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    sync()
    start, iters = time.perf_counter(), 0
    while iters < max_iters and (iters < 3 or time.perf_counter() - start < min_s):
        run()
        iters += 1
    sync()
    return (time.perf_counter() - start) / iters


def emit(rows_file, row: dict) -> None:
    print(json.dumps(row), flush=True)
    if rows_file:
        with open(rows_file, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def torch_rows(model, batches, device, base: dict, rows_file) -> None:
    """PyTorch eager with fp16 autocast (CUDA)."""
    import torch

    model = model.to(device).eval()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for batch in batches:
        video = torch.randn(batch, *model.config.input_shape, device=device)

        def run():
            with torch.inference_mode(), torch.autocast(device_type=device, dtype=torch.float16, enabled=device == "cuda"):
                model(video)

        seconds = timed(run, sync)
        emit(rows_file, {**base, "batch": batch, "path": "pytorch eager (fp16 autocast)", "ms": seconds * 1e3, "clips_per_s": batch / seconds})
    model.to("cpu")
    if device == "cuda":
        torch.cuda.empty_cache()


def ort_rows(path: Path, batches, device, base: dict, rows_file) -> None:
    """ONNX Runtime on the CUDA EP, fp16 export, inputs and outputs bound on the device."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the pip wheels torch brought
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), providers=providers)
    if session.get_providers()[0] != providers[0]:
        emit(rows_file, {**base, "path": "onnxruntime cuda fp16", "error": f"session fell back to {session.get_providers()}"})
        return
    input_meta = session.get_inputs()[0]
    for batch in batches:
        video = np.random.default_rng(0).standard_normal((batch, *input_meta.shape[1:]), dtype=np.float32)
        value = ort.OrtValue.ortvalue_from_numpy(video, "cuda" if device == "cuda" else "cpu", 0)
        binding = session.io_binding()
        binding.bind_ortvalue_input(input_meta.name, value)
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda" if device == "cuda" else "cpu")
        seconds = timed(lambda: session.run_with_iobinding(binding), binding.synchronize_outputs)
        emit(rows_file, {**base, "batch": batch, "path": "onnxruntime cuda fp16" if device == "cuda" else "onnxruntime cpu fp16", "ms": seconds * 1e3, "clips_per_s": batch / seconds})


def trtexec_rows(paths: dict, batches, plugin_lib, base: dict, rows_file) -> None:
    """trtexec (pinned flags) on the fp16 export, and on the plugin-mode fp16 export with the plugin."""
    from sta_deploy.runtime.trtexec import find_trtexec, parse_summary, trtexec_command

    try:
        find_trtexec()
    except Exception as error:  # noqa: BLE001 - TensorRTUnavailable: no trtexec here
        emit(rows_file, {**base, "path": "tensorrt (trtexec)", "skipped": str(error)})
        return
    for label, path, libs in (("tensorrt fp16", paths["onnx"], ()), ("tensorrt fp16 + STA plugin", paths.get("plugin"), (plugin_lib,) if plugin_lib else ())):
        if path is None:
            emit(rows_file, {**base, "path": label, "skipped": "no plugin library (--plugin-lib or STA_PLUGIN_LIB)"})
            continue
        for batch in batches:
            command = trtexec_command(path, plugin_libs=libs, extra=[f"--shapes=video:{batch}x3x16x224x224"])
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                emit(rows_file, {**base, "batch": batch, "path": label, "error": " | ".join(done.stdout.strip().splitlines()[-2:])[:300]})
                continue
            summary = parse_summary(done.stdout)
            ms = summary["gpu_compute_ms"]["mean"]
            emit(rows_file, {**base, "batch": batch, "path": label, "ms": ms, "clips_per_s": batch * 1000.0 / ms, "throughput_qps": summary["throughput_qps"]})


def time_child(args) -> int:
    import torch

    import sta_deploy
    from sta_deploy.export.onnx_export import export_onnx

    model_name, r1 = args.child_time[0], int(args.child_time[1])
    batches = [int(b) for b in args.batches.split(",")]
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible to torch", file=sys.stderr)
        return 1
    base = {"model": model_name, "r1": r1, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    model = sta_deploy.create_model(model_name, r1=r1, seed=0)
    torch_rows(model, batches, device, base, args.rows)
    with tempfile.TemporaryDirectory() as folder:
        paths = {"onnx": Path(folder) / f"{model_name}_r{r1}_fp16.onnx"}
        export_onnx(model, paths["onnx"], dtype="fp16", dynamic_batch=True)
        ort_rows(paths["onnx"], batches, device, base, args.rows)
        if device == "cuda":
            if args.plugin_lib and r1 > 0:
                paths["plugin"] = Path(folder) / f"{model_name}_r{r1}_fp16_plugin.onnx"
                export_onnx(model, paths["plugin"], dtype="fp16", dynamic_batch=True, sta_impl="plugin")
            trtexec_rows(paths, batches, args.plugin_lib, base, args.rows)
    return 0


def app_child(args) -> int:
    """examples/classify (TensorRT backend) on an engine of a small export vs ONNX Runtime on the same views: same top-5."""
    import sta_deploy
    from sta_deploy.export.onnx_export import export_onnx
    from sta_deploy.runtime.onnxrt import onnx_session
    from sta_deploy.runtime.trt import build_engine
    from sta_deploy.video.predict import average_views, top_k

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = sta_deploy.create_model("vit_s", r1=48, seed=0)
        export_onnx(model, folder / "vit_s_r48.onnx")
        plan = build_engine(folder / "vit_s_r48.onnx", folder / "vit_s_r48.plan")
        views = np.random.default_rng(0).standard_normal((3, *model.config.input_shape), dtype=np.float32)
        np.save(folder / "views.npy", views)
        session = onnx_session(folder / "vit_s_r48.onnx", providers=["CPUExecutionProvider"])
        logits = np.concatenate([session.run(None, {"video": views[i : i + 1]})[0] for i in range(len(views))])
        expected, _ = top_k(average_views(logits, "logits"), 5)
        command = [args.child_app, str(plan), str(folder / "views.npy"), "--backend", "tensorrt", "--average", "logits", "--top", "5", "--json"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    print(done.stdout + done.stderr)
    if done.returncode != 0:
        return done.returncode
    printed = [int(entry["class"]) for entry in json.loads(done.stdout)["results"][0]["top"]]
    print(f"onnxruntime top-5 {expected}; classify printed {printed[:5]}")
    return 0 if printed[:5] == expected else 1


def main(args) -> int:
    return app_child(args) if args.child_app else time_child(args)
