"""Real-video input for sta_deploy: decoding, test-time sampling, predictions, kept-token pictures, evaluation.

Needs the ``video`` extra (``pip install 'sta-deploy[video]'``: PyAV, Pillow, matplotlib, tqdm);
each of those is imported only when it is used, with a one-line error naming the install.

    from sta_deploy.video import load_views, protocol_for, torch_backends, predict_clip
    backend = torch_backends("vit_b", [48], checkpoint="videomae-base-finetuned-kinetics")[0]
    protocol = protocol_for("vit", num_frames=16, img_size=224, dataset="k400", views="1x1")
    predict_clip(backend, "clip.mp4", protocol).classes
"""

from __future__ import annotations

_LAZY = {
    "read_clip": "decode",
    "frame_count": "decode",
    "FrameSet": "decode",
    "SamplingProtocol": "sampling",
    "protocol_for": "sampling",
    "parse_views": "sampling",
    "load_views": "clips",
    "ClipViews": "clips",
    "Backend": "backends",
    "TorchBackend": "backends",
    "OnnxBackend": "backends",
    "OpenVinoBackend": "backends",
    "exported_backend": "backends",
    "calibration_clips": "calibration",
    "torch_backends": "backends",
    "predict_clip": "predict",
    "predict_files": "predict",
    "protocol_for_backend": "predict",
    "visualize_clip": "visualize",
    "render_kept": "visualize",
    "render_gif": "visualize",
    "evaluate": "evaluate",
    "BackendRecipe": "backend_recipe",
    "ray_producer": "ray_evaluate",
    "read_labelled_list": "dataset",
    "resolve_labels": "labels",
    "read_labels_file": "labels",
    "moving_shapes": "synthetic",
    "write_video": "synthetic",
    "write_frame_folder": "synthetic",
    "VideoError": "errors",
    "UnreadableVideoError": "errors",
    "EmptyVideoError": "errors",
    "VideoTooShortError": "errors",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
