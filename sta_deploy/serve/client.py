"""The client side: ``sta-deploy predict CLIP --url http://HOST:PORT`` through ``tritonclient``.

Two kinds of served model:

* a backbone (raw views): clips are decoded and sampled here, exactly as a local predict does, and
  the views go to Triton in the model's batch size (:class:`TritonBackend`);
* a ``--with-preprocess`` ensemble: the encoded file goes to Triton, which decodes, samples, runs the
  backbone, averages and ranks (:func:`predict_video_files`).

Either way the answer is a :class:`sta_deploy.video.predict.PredictionRun`, printed by the same code
as a local predict.  Every call has a timeout; an unreachable or dying server is an error, never a hang,
and an empty answer is an error, never a result.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..runtime.batching import kept_outputs, run_in_batches
from ..video.backends import Backend
from ..video.errors import VideoError
from ..video.predict import Prediction, PredictionRun, top_k

SERVE_EXTRA = "pip install 'sta-deploy[serve]'"


class RemoteError(RuntimeError):
    """The server could not be reached, or answered an error (the message is one line)."""


def _one_line(error) -> str:
    text = error.message() if hasattr(error, "message") and callable(error.message) else str(error)
    return " ".join(str(text or type(error).__name__).split())[:500]


class Connection:
    """One tritonclient client (HTTP or gRPC from the URL's scheme), with timeouts on every call.

    ``shared_memory=True`` sends numeric inputs through system shared memory regions
    (:mod:`sta_deploy.serve.shm`) instead of the request body: for a server on this host only.  The
    regions are unregistered and destroyed by :meth:`close` (also a context manager)."""

    def __init__(self, url: str, timeout: float = 60.0, shared_memory: bool = False):
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "grpc") or not parsed.hostname or not parsed.port:
            raise ValueError(f"--url must look like http://HOST:PORT or grpc://HOST:PORT, got {url!r}")
        self.url, self.scheme, self.timeout = url, parsed.scheme, timeout
        address = f"{parsed.hostname}:{parsed.port}"
        try:
            if self.scheme == "http":
                import tritonclient.http as module

                self.client = module.InferenceServerClient(address, connection_timeout=timeout, network_timeout=timeout)
            else:
                import tritonclient.grpc as module

                self.client = module.InferenceServerClient(address)
        except ImportError:
            raise ImportError(f"--url needs tritonclient: {SERVE_EXTRA}") from None
        self.module = module
        self.regions = None
        if shared_memory:
            from .shm import InputRegions

            self.regions = InputRegions(self.client, self._call, {} if self.scheme == "http" else {"client_timeout": timeout})

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _call(self, what: str, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as error:  # tritonclient, gevent and grpc raise many types; all become one line
            raise RemoteError(f"{what} at {self.url}: {_one_line(error)}") from None

    def models(self) -> list[str]:
        index = self._call("listing models", self.client.get_model_repository_index)
        entries = index if isinstance(index, list) else [{"name": m.name, "state": m.state} for m in index.models]
        return [entry["name"] for entry in entries if entry.get("state", "READY") == "READY"]

    def config(self, model: str) -> dict:
        if self.scheme == "http":
            return self._call(f"model '{model}'", self.client.get_model_config, model)
        from google.protobuf.json_format import MessageToDict

        answer = self._call(f"model '{model}'", self.client.get_model_config, model, client_timeout=self.timeout)
        return MessageToDict(answer.config, preserving_proto_field_name=True)

    def statistics(self, model: str) -> dict:
        if self.scheme == "http":
            return self._call("statistics", self.client.get_inference_statistics, model)
        return self._call("statistics", self.client.get_inference_statistics, model, as_json=True, client_timeout=self.timeout)

    def infer(self, model: str, inputs: dict, outputs: list[str]) -> dict:
        """``{name: array}`` in, ``{name: array}`` out; an empty output is an error."""
        tensors = []
        for name, value in inputs.items():
            value = np.asarray(value)
            wire = "BYTES" if value.dtype == object else self.module.np_to_triton_dtype(value.dtype)
            tensor = self.module.InferInput(name, list(value.shape), wire)
            if self.regions is not None and value.dtype != object:
                region = self.regions.region_for(name, value)
                tensor.set_shared_memory(region.name, value.nbytes)
            else:
                tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        requested = [self.module.InferRequestedOutput(name) for name in outputs]
        extra = {} if self.scheme == "http" else {"client_timeout": self.timeout}
        result = self._call(f"model '{model}'", self.client.infer, model, tensors, outputs=requested, **extra)
        answer = {}
        for name in outputs:
            try:
                value = result.as_numpy(name)
            except ValueError:  # tritonclient reshaping an empty buffer to the announced shape
                value = None
            if value is None or value.size == 0:
                raise RemoteError(f"model '{model}' at {self.url} answered an empty '{name}' (a broken server: see its log)")
            answer[name] = value
        return answer

    def close(self) -> None:
        """Release the shared-memory regions (each attempted, even with the server gone), then the client."""
        try:
            if self.regions is not None:
                self.regions.release()
        finally:
            self.client.close()


def parameters(config: dict) -> dict:
    return {key: value.get("string_value", "") for key, value in (config.get("parameters") or {}).items()}


@dataclass(frozen=True)
class RemoteConfig:
    """The served model's architecture as its config parameters tell it (what a Backend needs)."""

    family: str
    num_frames: int
    img_size: int
    num_classes: int

    def as_dict(self) -> dict:
        return {"num_frames": self.num_frames, "img_size": self.img_size, "num_classes": self.num_classes}


def _remote_config(params: dict, model: str) -> RemoteConfig:
    try:
        return RemoteConfig(params["sta_family"], int(params["sta_num_frames"]), int(params["sta_img_size"]), int(params["sta_num_classes"]))
    except KeyError:
        raise RemoteError(f"model '{model}' was not written by 'sta-deploy triton-repo' (no sta_* parameters in its config)") from None


def _backend_fields(connection: Connection, model: str, params: dict) -> dict:
    weights = json.loads(params.get("weights") or "{}")
    path = weights.get("path") if weights.get("source") == "checkpoint" else None
    return dict(
        model_name=params.get("sta_model", model), r1=int(params.get("sta_r1", 0)), config=_remote_config(params, model),
        source=f"{connection.url} model {model}", checkpoint=path if path and Path(path).exists() else None,
        random_weights=weights.get("source") == "random-init",
    )


class TritonBackend(Backend):
    """A served backbone as a :class:`~sta_deploy.video.backends.Backend`: views in, logits out."""

    kind = "triton"

    def __init__(self, connection: Connection, model: str, config: dict):
        params = parameters(config)
        super().__init__(**_backend_fields(connection, model, params))
        self.connection, self.model, self.params = connection, model, params
        self.max_batch = int(config.get("max_batch_size") or 0)
        self.static_batch = None if self.max_batch else int(params.get("export_batch_size") or 1)
        self.input_name = config["input"][0]["name"]
        self.output_names = [output["name"] for output in config["output"]]

    @property
    def has_kept(self) -> bool:
        return "kept_stage0" in self.output_names

    def outputs(self, clips: np.ndarray) -> dict:
        def run_batch(chunk):
            return self.connection.infer(self.model, {self.input_name: chunk}, self.output_names)

        return run_in_batches(run_batch, clips, batch=self.static_batch, step=max(1, self.max_batch))

    def _run(self, clips, with_kept):
        outputs = self.outputs(clips)
        return outputs["logits"], (kept_outputs(outputs) if with_kept else None)

    def close(self) -> None:
        self.connection.close()


class TritonVideoBackend(Backend):
    """A served ``--with-preprocess`` ensemble: encoded files in, averaged probabilities out."""

    kind = "triton"

    def __init__(self, connection: Connection, model: str, config: dict):
        from .triton_models.preprocess import protocol_from_dict

        params = parameters(config)
        super().__init__(**_backend_fields(connection, model, params))
        self.connection, self.model, self.params = connection, model, params
        self.protocol = protocol_from_dict(json.loads(params["protocol"]))

    @property
    def has_kept(self) -> bool:
        return False

    def predict_clip(self, path, top: int) -> Prediction:
        path = Path(path)
        if not path.is_file():
            raise VideoError(path, "not a file (the server decodes encoded videos; frame folders need the backbone model)")
        start = time.perf_counter()
        try:
            answer = self.connection.infer(self.model, {"video_bytes": np.array([path.read_bytes()], dtype=object)}, ["probabilities", "num_views", "frames"])
        except RemoteError as error:
            reason = video_reason(str(error))
            if reason is None:
                raise
            raise VideoError(path, f"{reason} (server)") from None
        seconds = time.perf_counter() - start
        self.seconds += seconds
        classes, scores = top_k(answer["probabilities"].astype(np.float64), top)
        return Prediction(str(path), classes, scores, int(answer["num_views"][0]), int(answer["frames"][0]), seconds)

    def close(self) -> None:
        self.connection.close()


def video_reason(message: str) -> str | None:
    """The preprocess model's complaint about a video in a server error, or None for other errors."""
    for marker in ("video: ", "empty video"):
        if marker in message:
            return message[message.index(marker) :].removeprefix("video: ")
    return None


def predict_video_files(backend: TritonVideoBackend, paths, protocol, *, top: int = 5, on_result=None, views_folder=None) -> PredictionRun:
    """:func:`sta_deploy.video.predict.predict_files` for an ensemble: the files go to the server."""
    if views_folder is not None:
        raise ValueError("--save-views needs the views on this side: send the clips to the backbone model (--model-name NAME) instead of the ensemble")
    run = PredictionRun()
    for path in paths:
        try:
            result = backend.predict_clip(path, top)
            run.predictions.append(result)
        except VideoError as error:
            run.failures.append((str(path), error.reason))
            result = None
        if on_result is not None:
            on_result(path, result, run.failures[-1][1] if result is None else None)
    return run
