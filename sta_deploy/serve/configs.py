"""The ``config.pbtxt`` contents of a generated repository, as dicts (see :mod:`.pbtxt`)."""

from __future__ import annotations

import json

from .pbtxt import Enum, parameters, triton_dtype
from .source import ExportSource

QUEUE_DELAY_US = 2000  # how long the dynamic batcher waits for more requests to join a batch
PLATFORM_FIELDS = {
    "tensorrt": {"platform": "tensorrt_plan", "default_model_filename": "model.plan"},
    "onnxruntime": {"platform": "onnxruntime_onnx", "default_model_filename": "model.onnx"},
    "python": {"backend": "python"},
}


def sta_parameters(source: ExportSource) -> dict:
    """The STA settings and the export's identity, readable by clients from the model config."""
    manifest = source.manifest
    config = manifest["config"]
    return {
        "sta_model": manifest["model"], "sta_family": manifest["family"], "sta_r1": manifest["r1"],
        "sta_schedule": json.dumps(manifest.get("schedule"), sort_keys=True), "sta_config": json.dumps(config, sort_keys=True),
        "sta_num_frames": config["num_frames"], "sta_img_size": config["img_size"], "sta_num_classes": config["num_classes"],
        "sta_dtype": manifest["dtype"], "sta_impl": manifest["sta_impl"], "export_batch_size": manifest["batch_size"],
        "export_dynamic_batch": str(bool(manifest["dynamic_batch"])).lower(), "manifest_sha256": source.manifest_sha256,
        "onnx_sha256": manifest.get("onnx_sha256", ""), "weights": json.dumps(manifest.get("weights"), sort_keys=True),
    }


def tensor_entries(specs, batched: bool, label_filename=None) -> list[dict]:
    entries = []
    for spec in specs:
        dims = [int(d) for d in (spec["shape"][1:] if batched else spec["shape"])]
        entry = {"name": spec["name"], "data_type": triton_dtype(spec["dtype"]), "dims": dims}
        if label_filename and spec["name"] == "logits":
            entry["label_filename"] = label_filename
        entries.append(entry)
    return entries


def batching(source: ExportSource, max_batch: int | None) -> tuple[int, list[str]]:
    """(max_batch_size, notes): a --dynamic-batch export batches up to ``max_batch`` (default 8);
    a static one is served as it is, with the reason."""
    if source.dynamic_batch:
        size = max_batch or 8
        notes = []
        if source.is_plan:
            notes.append(f"max_batch_size {size}: it must not exceed the engine's profile ('sta-deploy build --max-batch', default 8)")
        return size, notes
    reason = (
        f"static batch {source.static_batch} export: max_batch_size 0, no dynamic batching (every request is exactly "
        f"{source.static_batch} clip(s)); export with --dynamic-batch to let Triton batch requests"
    )
    if max_batch:
        reason += f"; --max-batch {max_batch} ignored"
    return 0, [reason]


def dynamic_batching(max_batch_size: int, preferred=None, queue_delay_us=None) -> dict:
    """The ``dynamic_batching`` block: ``preferred`` batch sizes (each 1..max_batch_size) are the sizes the
    batcher forms when it can (on a CPU with few cores, small batches can be faster per clip than
    large ones); ``queue_delay_us`` how long it waits for more requests."""
    block = {}
    if preferred:
        sizes = sorted(set(int(size) for size in preferred))
        if sizes[0] < 1 or sizes[-1] > max_batch_size:
            raise ValueError(f"--preferred-batch {','.join(map(str, sizes))}: every size must be 1..{max_batch_size} (the max_batch_size); lower them or raise --max-batch")
        block["preferred_batch_size"] = sizes
    delay = QUEUE_DELAY_US if queue_delay_us is None else int(queue_delay_us)
    if delay < 0:
        raise ValueError(f"--queue-delay-us must be >= 0, got {delay}")
    block["max_queue_delay_microseconds"] = delay
    return block


def warmup(source: ExportSource, batched: bool) -> list[dict]:
    spec = source.input
    dims = [int(d) for d in (spec["shape"][1:] if batched else spec["shape"])]
    value = {"data_type": triton_dtype(spec["dtype"]), "dims": dims, "random_data": True}
    return [{"name": "random_clip", "batch_size": 1, "inputs": [{"key": spec["name"], "value": value}]}]


def backbone_config(source: ExportSource, *, name, platform, kind, max_batch=None, instances=1, openvino=False, threads=None, labels_file=None,
                    preferred_batch=None, queue_delay_us=None) -> tuple[dict, list[str]]:
    size, notes = batching(source, max_batch)
    if size == 0 and (preferred_batch or queue_delay_us is not None):
        notes.append("--preferred-batch/--queue-delay-us ignored: a static-batch export has no dynamic batcher")
    config = {"name": name, **PLATFORM_FIELDS[platform], "max_batch_size": size}
    config["input"] = tensor_entries([source.input], size > 0)
    config["output"] = tensor_entries(source.outputs, size > 0, label_filename=labels_file)
    if size > 0:
        config["dynamic_batching"] = dynamic_batching(size, preferred_batch, queue_delay_us)
    config["instance_group"] = [{"kind": Enum("KIND_GPU" if kind == "gpu" else "KIND_CPU"), "count": instances}]
    if openvino:
        if platform != "onnxruntime" or kind != "cpu":
            raise ValueError("--openvino is an accelerator of Triton's ONNX Runtime backend on CPU (--platform onnxruntime --kind cpu)")
        config["optimization"] = {"execution_accelerators": {"cpu_execution_accelerator": [{"name": "openvino"}]}}
    config["model_warmup"] = warmup(source, size > 0)
    values = sta_parameters(source)
    if platform == "python":
        values["ort_threads"] = threads or 0
    config["parameters"] = parameters(values)
    return config, notes


def video_input_dims(source: ExportSource) -> list[int]:
    config = source.manifest["config"]
    return [-1, 3, int(config["num_frames"]), int(config["img_size"]), int(config["img_size"])]


def preprocess_config(source: ExportSource, *, name, instances, protocol) -> dict:
    return {
        "name": name, "backend": "python", "max_batch_size": 0,
        "input": [{"name": "video_bytes", "data_type": Enum("TYPE_STRING"), "dims": [1]}],
        "output": [
            {"name": "views", "data_type": Enum("TYPE_FP32"), "dims": video_input_dims(source)},
            {"name": "frames", "data_type": Enum("TYPE_INT64"), "dims": [1]},
        ],
        "instance_group": [{"kind": Enum("KIND_CPU"), "count": instances}],
        "parameters": parameters({"protocol": json.dumps(protocol.as_dict(), sort_keys=True)}),
    }


def _result_outputs(num_classes: int, top: int) -> list[dict]:
    return [
        {"name": "probabilities", "data_type": Enum("TYPE_FP64"), "dims": [num_classes]},
        {"name": "top_classes", "data_type": Enum("TYPE_INT64"), "dims": [top]},
        {"name": "top_scores", "data_type": Enum("TYPE_FP64"), "dims": [top]},
        {"name": "top_labels", "data_type": Enum("TYPE_STRING"), "dims": [top]},
        {"name": "num_views", "data_type": Enum("TYPE_INT64"), "dims": [1]},
    ]


def classify_config(source: ExportSource, *, name, backbone, max_batch_size, instances, protocol, labels, top) -> dict:
    values = {
        "backbone": backbone, "backbone_input": source.input["name"],
        "backbone_static_batch": 0 if max_batch_size else source.static_batch, "backbone_max_batch": max_batch_size,
        "average": protocol.average, "top_k": top, "labels": json.dumps(labels),
    }
    return {
        "name": name, "backend": "python", "max_batch_size": 0,
        "input": [{"name": "views", "data_type": Enum("TYPE_FP32"), "dims": video_input_dims(source)}],
        "output": _result_outputs(source.num_classes, top),
        "instance_group": [{"kind": Enum("KIND_CPU"), "count": instances}],
        "parameters": parameters(values),
    }


def _maps(names) -> list[dict]:
    return [{"key": name, "value": name} for name in names]


def ensemble_config(source: ExportSource, *, name, preprocess, classify, protocol, top, labels_source) -> dict:
    outputs = _result_outputs(source.num_classes, top) + [{"name": "frames", "data_type": Enum("TYPE_INT64"), "dims": [1]}]
    steps = [
        {"model_name": preprocess, "model_version": -1, "input_map": _maps(["video_bytes"]), "output_map": _maps(["views", "frames"])},
        {"model_name": classify, "model_version": -1, "input_map": _maps(["views"]),
         "output_map": _maps(["probabilities", "top_classes", "top_scores", "top_labels", "num_views"])},
    ]
    values = {**sta_parameters(source), "protocol": json.dumps(protocol.as_dict(), sort_keys=True), "labels_source": labels_source, "classify_model": classify}
    return {
        "name": name, "platform": "ensemble", "max_batch_size": 0,
        "input": [{"name": "video_bytes", "data_type": Enum("TYPE_STRING"), "dims": [1]}],
        "output": outputs,
        "ensemble_scheduling": {"step": steps},
        "parameters": parameters(values),
    }
