"""Shared helpers for the core test suite (small model geometries, random clips)."""

from __future__ import annotations

import torch

# A small VideoMAE geometry that runs in milliseconds: 8 temporal slices x 16 patches = 128 tokens.
SMALL = dict(embed_dim=64, depth=6, num_heads=4, img_size=64, num_frames=16)
SMALL_NUM_TEMPORAL = 8
SMALL_NUM_SPATIAL = 16


def random_video(batch: int, *, frames: int = 16, size: int = 64, channels: int = 3, seed: int = 0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, frames, size, size, generator=generator, dtype=dtype)


def expected_tokens_per_stage(num_temporal: int, num_spatial: int, r1: int) -> list[int]:
    """Tokens left after each of the three STA stages, by hand: groups halve, r1 dropped per group."""
    tokens = []
    groups, size = num_temporal, num_spatial
    for _ in range(3):
        kept_per_group = size - r1
        tokens.append(groups * kept_per_group)
        # Two neighbouring groups merge for the next stage.
        size = 2 * kept_per_group
        groups //= 2
    return tokens


def onnxruntime_engine_class():
    """A stand-in for ``runtime.trt.EngineRunner`` whose 'plan' is a JSON file naming an ONNX graph that
    ONNX Runtime runs: the engine's batching (``run_clips``) is the real runner's.  For testing the
    code around engines without a GPU; it says nothing about TensorRT."""
    import json

    from sta_deploy.runtime.onnxrt import onnx_session
    from sta_deploy.runtime.trt import EngineRunner

    class OnnxRuntimeEngine(EngineRunner):
        closed = 0
        batches: list = []

        def __init__(self, plan_path, plugin_libs=()):
            self.session = onnx_session(json.loads(open(plan_path).read())["onnx"])
            self.output_names = [o.name for o in self.session.get_outputs()]

        def run(self, video):
            type(self).batches.append(video.shape[0])
            return dict(zip(self.output_names, self.session.run(None, {"video": video})))

        def close(self):
            type(self).closed += 1

    return OnnxRuntimeEngine
