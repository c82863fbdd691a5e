"""``sta-deploy bench``: time an exported model on ONNX Runtime (CPU, or CUDA with onnxruntime-gpu) or OpenVINO (CPU)."""

from __future__ import annotations

import json

import click

from .options import backend_options, backend_precision, json_option, warnings_as_lines


@click.command()
@click.argument("model_path", type=click.Path(dir_okay=False))
@click.option("--runs", type=click.IntRange(1), default=10, show_default=True, help="Timed runs (the median is reported).")
@click.option("--warmup", type=click.IntRange(0), default=2, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=click.IntRange(1), default=None, help="ONNX Runtime intra-op (OpenVINO: inference) threads [default: all cores].")
@click.option("--optimization", type=click.Choice(["disable", "basic", "extended", "all"]), default="all", show_default=True, help="ONNX Runtime graph optimisation level.")
@click.option("--batch", type=click.IntRange(1), default=None, help="Batch size for a --dynamic-batch model [default: the exported batch].")
@click.option("--profile", is_flag=True, help="Also profile the nodes and report STA's share of the time.")
@click.option("--trtexec", "use_trtexec", is_flag=True, help="Time with trtexec instead (TensorRT and a GPU required).")
@click.option("--plugin-lib", "plugin_libs", multiple=True, type=click.Path(dir_okay=False), help="With --trtexec: plugin library for --dynamicPlugins (repeatable).")
@backend_options
@json_option
def bench(model_path, runs, warmup, threads, optimization, batch, profile, use_trtexec, plugin_libs, backend, precision, as_json):
    """Median latency and clips/s of MODEL_PATH (an exported .onnx), next to its GFLOPs."""
    from pathlib import Path

    if not Path(model_path).is_file():
        raise click.BadParameter(f"{model_path} does not exist", param_hint="MODEL_PATH")
    precision = backend_precision(backend, precision)
    if use_trtexec and backend != "onnxruntime":
        raise click.UsageError("--trtexec times TensorRT; drop --backend")
    if backend == "openvino":
        _bench_openvino(model_path, precision=precision, runs=runs, warmup=warmup, threads=threads, batch=batch, profile=profile, as_json=as_json)
        return
    if use_trtexec:
        from ..bench import trtexec_bench

        result = trtexec_bench(model_path, plugin_libs=plugin_libs)
        click.echo(json.dumps(result, indent=2) if as_json else result["table"])
        return
    from ..bench import sta_time_share, time_session
    from ..export.manifest import manifest_flops, read_verified_manifest
    from ..runtime.onnxrt import onnx_session
    from ..validate import seeded_clips

    manifest = read_verified_manifest(model_path, needed_by="bench")
    batch = batch or manifest["batch_size"]
    if not manifest["dynamic_batch"] and batch != manifest["batch_size"]:
        raise click.BadParameter(f"the model was exported with a static batch of {manifest['batch_size']}", param_hint="--batch")
    input_shape = manifest["inputs"][0]["shape"][1:]
    video = seeded_clips(batch, input_shape)
    session = onnx_session(model_path, threads=threads, optimization=optimization)
    timing = time_session(Path(model_path).name, session, video, warmup=warmup, runs=runs)
    report = manifest_flops(manifest)
    result = {
        "model": manifest["model"],
        "r1": manifest["r1"],
        "provider": session.get_providers()[0],
        "optimization": optimization,
        "threads": threads,
        "gflops_per_clip": report.gflops,
        **timing.as_dict(),
    }
    if profile:
        from .. import _progress

        with _progress.step("profiling the nodes (ONNX Runtime profiler)"):
            result["sta_share"] = sta_time_share(model_path, video, threads=threads)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{manifest['model']} r1={manifest['r1']} on {result['provider']} (optimization {optimization}, batch {batch}, {runs} runs)")
    click.echo(f"median {timing.median_ms:.1f} ms   p90 {timing.p90_ms:.1f} ms   {timing.clips_per_s:.2f} clips/s   {report.gflops:.1f} GFLOPs/clip")
    if profile:
        share = result["sta_share"]
        click.echo(f"STA nodes: {share['sta_us'] / 1000:.2f} ms of {(share['sta_us'] + share['other_us']) / 1000:.1f} ms node time ({share['sta_fraction']:.2%})")


def _bench_openvino(model_path, *, precision, runs, warmup, threads, batch, profile, as_json):
    from ..bench import openvino_bench
    from ..export.manifest import manifest_flops, read_manifest
    from ..runtime.openvino import check_openvino_model_file
    from ..validate import seeded_clips

    check_openvino_model_file(model_path)
    manifest = read_manifest(model_path)
    batch = batch or manifest["batch_size"]
    if not manifest["dynamic_batch"] and batch != manifest["batch_size"]:
        raise click.BadParameter(f"the model was exported with a static batch of {manifest['batch_size']}", param_hint="--batch")
    video = seeded_clips(batch, manifest["inputs"][0]["shape"][1:])
    with warnings_as_lines():
        result = openvino_bench(model_path, video, precision=precision, threads=threads, runs=runs, warmup=warmup, profile=profile)
    flops = manifest_flops(manifest)
    result = {"model": manifest["model"], "r1": manifest["r1"], "dtype": manifest["dtype"], "gflops_per_clip": flops.gflops, **result}
    if as_json:
        click.echo(json.dumps(result))
        return
    cache = f"cache {result['cache_dir']}" if result["cache_dir"] else "no cache"
    click.echo(f"{manifest['model']} r1={manifest['r1']} ({manifest['dtype']}) on {result['provider']} (batch {batch}, {runs} runs; compiled in {result['compile_s']:.2f} s, {cache})")
    click.echo(f"median {result['median_ms']:.1f} ms   p90 {result['p90_ms']:.1f} ms   {result['clips_per_s']:.2f} clips/s   {flops.gflops:.1f} GFLOPs/clip")
    if profile:
        share = result["sta_share"]
        click.echo(f"STA nodes: {share['sta_us'] / 1000:.2f} ms of {(share['sta_us'] + share['other_us']) / 1000:.1f} ms node time ({share['sta_fraction']:.2%}, OpenVINO performance counters)")
