"""Models: the interface (:mod:`.base`), the registry that discovers the model files
(:mod:`.registry`), shared blocks (:mod:`.blocks`), generic inference rewrites (:mod:`.rewrites`),
weights and cards (:mod:`.weights`), and one file per paper (each with its own inference rewrites).

Use :func:`get_model` / :func:`list_models`; they import every model file on first use.
"""

from __future__ import annotations

from .base import ModelSpec, count_macs
from .registry import default_model, discover, get_model, list_models, register

__all__ = ["ModelSpec", "count_macs", "default_model", "discover", "get_model", "list_models", "register"]
