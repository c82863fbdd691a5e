"""Encoded video bytes -> the backbone's input views, with ``sta_deploy.video``'s decoding and the
sampling protocol the repository was written for (``protocol.json`` beside this model)."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from .common import check_tensor_round_trip, error_response, input_array, model_setup, pb_utils, tensors


def protocol_from_dict(data: dict):
    from sta_deploy.video.sampling import SamplingProtocol

    return SamplingProtocol(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})


def video_bytes(array) -> bytes:
    values = np.asarray(array, dtype=object).reshape(-1)
    if values.size != 1:
        raise ValueError(f"input 'video_bytes' must hold one encoded video, got {values.size} elements")
    data = values[0]
    data = data if isinstance(data, bytes) else bytes(data)
    if not data:
        raise ValueError("empty video: input 'video_bytes' has 0 bytes")
    return data


def views_of(data: bytes, protocol) -> tuple[np.ndarray, int]:
    """(views (V, 3, T, S, S) float32, total frames) of one encoded clip; VideoError when unusable."""
    from sta_deploy.video.clips import load_views

    handle, name = tempfile.mkstemp(prefix="sta_clip_", suffix=".video")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        clip = load_views(name, protocol)
        return clip.tensors(), clip.total_frames
    finally:
        os.unlink(name)


class TritonPythonModel:
    def initialize(self, args):
        check_tensor_round_trip(pb_utils())
        _, _, folder = model_setup(args)
        self.protocol = protocol_from_dict(json.loads((folder / "protocol.json").read_text()))

    def _one(self, utils, request):
        from sta_deploy.video.errors import VideoError

        try:
            views, frames = views_of(video_bytes(input_array(utils, request, "video_bytes")), self.protocol)
        except VideoError as error:
            return error_response(utils, f"video: {error.reason}")
        except ValueError as error:
            return error_response(utils, str(error))
        return utils.InferenceResponse(output_tensors=tensors(utils, {"views": views, "frames": np.array([frames], dtype=np.int64)}))

    def execute(self, requests):
        utils = pb_utils()
        return [self._one(utils, request) for request in requests]
