"""sta-deploy: STA token pruning (Ding et al., ICCV 2023) for video transformers, and its deployment.

Public API::

    import sta_deploy
    model = sta_deploy.create_model("vit_b", r1=48)          # random weights
    model = sta_deploy.create_model("vit_b", r1=48, checkpoint="videomae_vit_b_k400.pth")
    logits, kept = model(video, return_kept=True)              # video: (B, 3, 16, 224, 224)
    sta_deploy.count_flops("vit_b", r1=48).gflops              # 115.8, the paper's 116
    sta_deploy.export_onnx(model, "vit_b_r48.onnx"); sta_deploy.validate_onnx("vit_b_r48.onnx")

Layout (lower layers never import higher ones; an import-linter contract in pyproject.toml checks it):
``sta``/``schedule``/``errors``/``_io`` -> ``models/`` -> ``plugin/`` -> ``export/``, ``runtime/`` ->
``validate``/``bench``/``video/`` -> ``serve/`` -> ``cli/``.
"""

from ._version import __version__
from .errors import CheckpointError, ConfigError, StaDeployError

_LAZY = {
    "create_model": ("sta_deploy.models.registry", "create_model"),
    "list_models": ("sta_deploy.models.registry", "list_models"),
    "count_flops": ("sta_deploy.models.flops", "count_flops"),
    "FlopsReport": ("sta_deploy.models.flops", "FlopsReport"),
    "save_checkpoint": ("sta_deploy.models.checkpoints", "save_checkpoint"),
    "read_checkpoint": ("sta_deploy.models.vit_checkpoints", "read_checkpoint"),
    "export_onnx": ("sta_deploy.export.onnx_export", "export_onnx"),
    "validate_onnx": ("sta_deploy.validate", "validate_onnx"),
    "validate_engine": ("sta_deploy.validate", "validate_engine"),
    "onnx_session": ("sta_deploy.runtime.onnxrt", "onnx_session"),
    "validate_openvino": ("sta_deploy.validate", "validate_openvino"),
    "openvino_model": ("sta_deploy.runtime.openvino", "openvino_model"),
    "quantize_openvino": ("sta_deploy.export.quantize_openvino", "quantize_openvino"),
}


def __getattr__(name):
    # Heavy or optional pieces load on first use so that `import sta_deploy` stays quick.
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        return getattr(importlib.import_module(module_name), attribute)
    raise AttributeError(f"module 'sta_deploy' has no attribute {name!r}")


__all__ = [
    "__version__",
    "create_model",
    "list_models",
    "count_flops",
    "FlopsReport",
    "save_checkpoint",
    "read_checkpoint",
    "export_onnx",
    "validate_onnx",
    "validate_engine",
    "onnx_session",
    "validate_openvino",
    "openvino_model",
    "quantize_openvino",
    "StaDeployError",
    "ConfigError",
    "CheckpointError",
]
