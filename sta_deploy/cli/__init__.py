"""Command-line interface (``sta-deploy``)."""

from .app import cli, main

__all__ = ["cli", "main"]
