"""Backbones with STA.  Importing this package registers every preset (each backbone module adds its own)."""

# ViT first: registration order is list_models()'s order.
from . import vit  # noqa: F401, I001 - imported for its registrations
from . import swin  # noqa: F401 - imported for its registrations
from .registry import create_model, get_entry, list_models, resolve_config

__all__ = ["create_model", "get_entry", "list_models", "resolve_config"]
