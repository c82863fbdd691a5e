"""``sta-deploy validate MODEL.onnx --engine MODEL.plan``: a TensorRT engine against PyTorch."""

from __future__ import annotations

import numpy as np


def validate_engine(onnx_path, plan_path, *, checkpoint=None, clips=4, inputs=None, seed=0, tolerances=None, plugin_libs=()):
    from .manifest import read_manifest, rebuild_reference
    from .tensorrt_backend import EngineRunner
    from .trt_parse import check_plugin_libs
    from .validate import compare_outputs, load_clips, run_reference, seeded_clips

    manifest = read_manifest(onnx_path)
    check_plugin_libs(onnx_path, plugin_libs)  # a plugin-mode export's engine cannot load without its library
    runner = EngineRunner(plan_path, plugin_libs=plugin_libs)  # fails in one line without TensorRT or a GPU
    model = rebuild_reference(manifest, checkpoint)
    shape = tuple(model.config.input_shape)
    data = [seeded_clips(clips, shape, seed)] if clips else []
    if inputs is not None:
        data.append(load_clips(inputs, shape))
    data = np.concatenate(data)
    batch = 1 if manifest["dynamic_batch"] else manifest["batch_size"]
    logits, kept = [], [[], [], []]
    for start in range(0, len(data), batch):
        chunk = data[start : start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        out = runner.run(chunk)
        logits.append(out["logits"][:real])
        for stage in range(3):
            if f"kept_stage{stage}" in out:
                kept[stage].append(np.sort(out[f"kept_stage{stage}"][:real], axis=-1))
    got_kept = [np.concatenate(k) for k in kept] if kept[0] else None
    ref_logits, ref_kept = run_reference(model, data, got_kept is not None)
    return compare_outputs(ref_logits, np.concatenate(logits), ref_kept, got_kept, dtype=manifest["dtype"], backend="tensorrt", tolerances=tolerances)
