"""``sta-deploy serve``: a real Triton Inference Server on this machine (CPU, Python backend)."""

from __future__ import annotations

import click


@click.command()
@click.argument("target", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=8002, show_default=True, help="Prometheus metrics (0: off).")
@click.option("--name", default=None, help="EXPORT: model name [default: the file name].")
@click.option("--with-preprocess", is_flag=True, help="EXPORT: also serve the video-bytes ensemble (see triton-repo).")
@click.option("--views", default=None, metavar="TxS", help="EXPORT with --with-preprocess: views per clip [default: the protocol's].")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=None, help="EXPORT: dynamic batch limit [default: 8].")
@click.option("--instances", type=click.IntRange(1, 64), default=1, show_default=True, help="EXPORT: model instances.")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="EXPORT: ONNX Runtime threads per instance.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for every model to be ready.")
def serve(target, host, http_port, grpc_port, metrics_port, name, with_preprocess, views, max_batch, instances, threads, timeout):
    """Serve TARGET (a repository from 'sta-deploy triton-repo', or an .onnx export) with Triton.

    Runs the tritonserver of nvidia-pytriton (pip install 'sta-deploy[serve]'): CPU, Python backend
    only, so an export is served through ONNX Runtime inside a Python-backend model.  Prints the URLs,
    waits until every model is ready, and stops cleanly on Ctrl-C or SIGTERM.

    \b
    Examples:
      sta-deploy serve vit_b_r48.onnx --with-preprocess --views 1x3
      sta-deploy predict clip.mp4 --url http://127.0.0.1:8000
    """
    from ..serve.launch import serve_forever

    serve_forever(
        target, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, echo=click.echo, timeout=timeout,
        export_options=dict(name=name, with_preprocess=with_preprocess, views=views, max_batch=max_batch, instances=instances, threads=threads),
    )
