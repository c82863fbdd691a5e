"""Errors for video input: every one names the file, so a batch run can report it and go on."""

from __future__ import annotations

from ..errors import StaDeployError


class VideoError(StaDeployError):
    """A clip that cannot be used; ``path`` is the file (or frame folder) and ``reason`` the cause."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnreadableVideoError(VideoError):
    """Missing, not a video, no video stream, or a decoder error."""


class EmptyVideoError(VideoError):
    """A readable container (or folder) with no frames at all."""


class VideoTooShortError(VideoError):
    """Fewer frames than the sampling protocol accepts (``--min-frames``)."""


def require(module: str, package: str, purpose: str):
    """Import an optional dependency or raise one line naming the pip install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{purpose} needs {package}: pip install {package} (or pip install 'sta-deploy[video]')") from None
