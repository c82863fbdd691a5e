"""User-facing error types.

Every error a user can cause (unknown model, impossible ``r1``, a checkpoint that does not fit,
a corrupt file) is a :class:`StaDeployError`.  It subclasses :class:`ValueError` so that callers
who only know the standard library still catch it, and the CLI prints its message as one line.
"""


class StaDeployError(ValueError):
    """Base class of the errors sta_deploy raises for bad input; the message names the fix."""


class ConfigError(StaDeployError):
    """An impossible model configuration: unknown preset, bad override, impossible r1, bad input shape."""


class CheckpointError(StaDeployError):
    """A checkpoint that cannot be read or does not fit the architecture.

    ``missing``, ``unexpected`` and ``mismatched`` hold the full key lists when the file was
    readable but its contents do not fit (the message shows only the first few of each).
    """

    def __init__(self, message, *, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


class OutputBusyError(StaDeployError):
    """Another sta-deploy process is writing the same output right now (it holds the output's lock)."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name when it has none).

    Third-party libraries (protobuf, onnx, onnxruntime, torch, TensorRT) raise multi-line messages;
    the CLI promises one line, so every wrapper quotes this.
    """
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]
