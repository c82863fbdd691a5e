"""The exported backbone on ONNX Runtime inside Triton's Python backend.

Used for plugin-mode exports (Triton's ONNX Runtime backend cannot load the STA custom op) and for
serving any ONNX export with the ``tritonserver`` of nvidia-pytriton, which ships only the Python
backend.  Requests that the dynamic batcher hands over together run as one batch (a static-batch
export runs in its batch size, the last chunk padded) and are split back per request.
"""

from __future__ import annotations

import os

import numpy as np

from .common import check_tensor_round_trip, error_response, input_array, model_setup, pb_utils, tensors

REFERENCE_LIBRARY = "libsta_stage_select_ref.so"


class TritonPythonModel:
    def initialize(self, args):
        utils = pb_utils()
        check_tensor_round_trip(utils)
        config, params, folder = model_setup(args)
        library = folder / REFERENCE_LIBRARY
        if library.is_file():  # plugin-mode export: the STA node's CPU reference travels with the model
            os.environ["STA_PLUGIN_REF_LIB"] = str(library)
        from sta_deploy.export.manifest import read_manifest
        from sta_deploy.runtime.onnxrt import onnx_session

        model = folder / "model.onnx"
        self.manifest = read_manifest(model)
        threads = int(params.get("ort_threads") or 0) or None
        try:
            self.session = onnx_session(model, providers=["CPUExecutionProvider"], threads=threads)
        except Exception as error:  # onnx, protobuf and onnxruntime raise their own types
            from sta_deploy.errors import first_line

            raise RuntimeError(f"cannot load {model}: {first_line(error)}") from None
        self.input_name = config["input"][0]["name"]
        self.output_names = [output["name"] for output in config["output"]]
        self.static_batch = None if self.manifest["dynamic_batch"] else int(self.manifest["batch_size"])
        self.clip_shape = tuple(int(d) for d in self.manifest["inputs"][0]["shape"][1:])

    def _clips(self, utils, request) -> np.ndarray:
        clips = input_array(utils, request, self.input_name)
        if clips.dtype != np.float32:
            raise ValueError(f"input '{self.input_name}' must be FP32, got {clips.dtype}")
        if clips.ndim != 1 + len(self.clip_shape) or tuple(clips.shape[1:]) != self.clip_shape:
            raise ValueError(f"input '{self.input_name}' must be (N, {', '.join(map(str, self.clip_shape))}), got {tuple(clips.shape)}")
        return clips

    def _run(self, clips: np.ndarray) -> dict:
        from sta_deploy.runtime.batching import run_in_batches

        def run_batch(chunk):
            return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: chunk})))

        return run_in_batches(run_batch, clips, batch=self.static_batch, step=max(1, len(clips)))

    def execute(self, requests):
        utils = pb_utils()
        responses, good, arrays = [None] * len(requests), [], []
        for index, request in enumerate(requests):
            try:
                arrays.append(self._clips(utils, request))
                good.append(index)
            except ValueError as error:
                responses[index] = error_response(utils, str(error))
        if good:
            try:
                outputs = self._run(np.concatenate(arrays))
            except Exception as error:  # ONNX Runtime raises its own types; every request gets the message
                for index in good:
                    responses[index] = error_response(utils, f"inference failed: {str(error).strip().splitlines()[0][:300]}")
                return responses
            start = 0
            for index, clips in zip(good, arrays):
                part = {name: value[start : start + len(clips)] for name, value in outputs.items()}
                start += len(clips)
                responses[index] = utils.InferenceResponse(output_tensors=tensors(utils, part))
        return responses

    def finalize(self):
        self.session = None
