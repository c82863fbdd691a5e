"""``predict --url``: which served model, which sampling protocol, which labels."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .client import Connection, RemoteError, TritonBackend, TritonVideoBackend, parameters, predict_video_files


@dataclass
class RemoteSetup:
    backend: object  # TritonBackend | TritonVideoBackend
    protocol: object  # SamplingProtocol
    run_files: object  # predict_files-compatible function
    names: list
    label_source: str


def choose_model(connection: Connection, wanted: str | None) -> tuple[str, dict]:
    """``wanted``, else the server's one video ensemble, else its one model; (name, config)."""
    if wanted is not None:
        return wanted, connection.config(wanted)
    names = connection.models()
    configs = {name: connection.config(name) for name in names}
    ensembles = [name for name, config in configs.items() if config.get("platform") == "ensemble"]
    if len(ensembles) == 1:
        return ensembles[0], configs[ensembles[0]]
    if len(names) == 1:
        return names[0], configs[names[0]]
    listed = ", ".join(names) or "none"
    raise RemoteError(f"{connection.url} serves {len(names)} ready models ({listed}); choose one with --model-name")


def _ensemble_protocol(backend: TritonVideoBackend, views, stride, min_frames):
    protocol = backend.protocol
    asked = {"--views": (views, protocol.views), "--stride": (stride, protocol.stride), "--min-frames": (min_frames, protocol.min_frames)}
    for option, (given, served) in asked.items():
        if given is not None and str(given).lower() != str(served):
            raise ValueError(f"{option} {given}: the ensemble {backend.model} samples with {served} on the server ({protocol.describe()}); drop {option}")
    return protocol


def _server_labels(connection: Connection, backend: TritonVideoBackend):
    classify = backend.params.get("classify_model")
    if not classify:
        return None
    names = json.loads(parameters(connection.config(classify)).get("labels") or "null")
    return (names, f"{backend.params.get('labels_source', 'server')} (from the server)") if names else None


def remote_predict_setup(url, model=None, *, labels=None, dataset="k400", views=None, stride=None, min_frames=None, timeout=60.0, shared_memory=False) -> RemoteSetup:
    connection = Connection(url, timeout=timeout, shared_memory=shared_memory)
    try:
        return _setup(connection, model, labels, dataset, views, stride, min_frames)
    except BaseException:
        connection.close()
        raise


def _setup(connection, model, labels, dataset, views, stride, min_frames) -> RemoteSetup:
    from ..video.labels import resolve_labels
    from ..video.predict import predict_files, protocol_for_backend

    name, config = choose_model(connection, model)
    if config.get("platform") == "ensemble":
        backend = TritonVideoBackend(connection, name, config)
        protocol = _ensemble_protocol(backend, views, stride, min_frames)
        served = None if labels is not None else _server_labels(connection, backend)
        names, source = served or resolve_labels(backend.num_classes, labels_file=labels)
        return RemoteSetup(backend, protocol, predict_video_files, names, source)
    backend = TritonBackend(connection, name, config)
    protocol = protocol_for_backend(backend, dataset=dataset, views=views, stride=stride, min_frames=min_frames)
    names, source = resolve_labels(backend.num_classes, labels_file=labels, checkpoint=backend.checkpoint)
    return RemoteSetup(backend, protocol, predict_files, names, source)
