"""Triton's ``config.pbtxt``: written from plain dicts, checked against Triton's own schema.

The schema is the ``ModelConfig`` protobuf that ``tritonclient`` ships
(``tritonclient.grpc.model_config_pb2``): :func:`check_config` parses a config with it, so a field
name, an enum or a nesting that Triton would refuse fails here, on a machine without Triton.
"""

from __future__ import annotations

import json


class Enum(str):
    """A protobuf enum value (``TYPE_FP32``, ``KIND_CPU``): written without quotes."""


DTYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
    "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL", "bytes": "TYPE_STRING",
}
# Triton's wire names (the KServe v2 protocol) of the same types
WIRE_DTYPES = {"TYPE_FP32": "FP32", "TYPE_FP16": "FP16", "TYPE_FP64": "FP64", "TYPE_INT64": "INT64", "TYPE_INT32": "INT32",
               "TYPE_INT8": "INT8", "TYPE_UINT8": "UINT8", "TYPE_BOOL": "BOOL", "TYPE_STRING": "BYTES"}


def triton_dtype(numpy_name: str) -> Enum:
    try:
        return Enum(DTYPES[numpy_name])
    except KeyError:
        raise ValueError(f"no Triton data type for {numpy_name!r}") from None


def _scalar(value) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a protobuf text string: double quotes, backslash escapes


def _lines(message: dict, indent: int) -> list[str]:
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", *_lines(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{pad}{key} [")
            for position, item in enumerate(value):
                comma = "," if position < len(value) - 1 else ""
                lines += [f"{pad}  {{", *_lines(item, indent + 2), f"{pad}  }}{comma}"]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def to_pbtxt(config: dict) -> str:
    """Protobuf text of a model config given as nested dicts and lists.

    Map fields (``parameters``, warm-up ``inputs``, ensemble ``input_map``) are written as lists of
    ``{"key": ..., "value": ...}`` messages, the form protobuf's text format reads for maps."""
    return "\n".join(_lines(config, 0)) + "\n"


def parameters(values: dict) -> list[dict]:
    """Triton ``parameters`` (string values only) from a plain dict."""
    return [{"key": key, "value": {"string_value": str(value)}} for key, value in values.items()]


def schema():
    """Triton's ``ModelConfig`` message class, from tritonclient (the serve extra)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ImportError("checking config.pbtxt against Triton's schema needs tritonclient: pip install 'sta-deploy[serve]'") from None
    return model_config_pb2.ModelConfig


def check_config(text: str, where: str = "config.pbtxt"):
    """Parse ``text`` as Triton's ``ModelConfig``; the parsed message, or a one-line ValueError naming
    the file and the offending field."""
    from google.protobuf import text_format

    message = schema()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ValueError(f"{where} does not parse as Triton's ModelConfig: {error}") from None
    return message


def read_config(path) -> dict:
    """A ``config.pbtxt`` as a dict (protobuf's JSON form: ``maxBatchSize``, ``input``, ...)."""
    from pathlib import Path

    from google.protobuf.json_format import MessageToDict

    return MessageToDict(check_config(Path(path).read_text(), str(path)))
