"""Views -> the backbone model (called through Triton, in its batch size) -> the probabilities
averaged over the views as the backbone's protocol does, and the top-k classes with their labels.

The averaging and the ranking are ``sta_deploy.video.predict``'s, so the answer is the one
``sta-deploy predict`` prints for the same file."""

from __future__ import annotations

import json

import numpy as np

from .common import check_tensor_round_trip, error_response, input_array, model_setup, pb_utils, tensors


class TritonPythonModel:
    def initialize(self, args):
        check_tensor_round_trip(pb_utils())
        _, params, _ = model_setup(args)
        self.backbone = params["backbone"]
        self.backbone_input = params["backbone_input"]
        self.static_batch = int(params["backbone_static_batch"]) or None
        self.max_batch = int(params["backbone_max_batch"]) or 1
        self.average = params["average"]
        self.top = int(params["top_k"])
        self.labels = json.loads(params["labels"])

    def _logits(self, utils, views: np.ndarray) -> np.ndarray:
        from sta_deploy.runtime.batching import run_in_batches

        def run_batch(chunk):
            request = utils.InferenceRequest(
                model_name=self.backbone, requested_output_names=["logits"],
                inputs=[utils.Tensor(self.backbone_input, np.ascontiguousarray(chunk, dtype=np.float32))],
            )
            response = request.exec()
            if response.has_error():
                raise RuntimeError(f"model '{self.backbone}': {response.error().message()}")
            return {"logits": utils.get_output_tensor_by_name(response, "logits").as_numpy()}

        return run_in_batches(run_batch, views, batch=self.static_batch, step=self.max_batch)["logits"]

    def _one(self, utils, request):
        from sta_deploy.video.predict import average_views, top_k

        try:
            views = input_array(utils, request, "views")
            if views.ndim != 5 or len(views) == 0:
                raise ValueError(f"input 'views' must be (V, 3, T, H, W) with V >= 1, got {tuple(views.shape)}")
            scores = average_views(self._logits(utils, views), self.average)
        except (ValueError, RuntimeError) as error:
            return error_response(utils, str(error))
        classes, values = top_k(scores, self.top)
        outputs = {
            "probabilities": scores.astype(np.float64),
            "top_classes": np.array(classes, dtype=np.int64),
            "top_scores": np.array(values, dtype=np.float64),
            "top_labels": np.array([self.labels[c].encode() for c in classes], dtype=object),
            "num_views": np.array([len(views)], dtype=np.int64),
        }
        return utils.InferenceResponse(output_tensors=tensors(utils, outputs))

    def execute(self, requests):
        utils = pb_utils()
        return [self._one(utils, request) for request in requests]
