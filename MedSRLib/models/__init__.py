"""Models: the registry (:mod:`.base`), shared blocks (:mod:`.blocks`), one file per paper.

Use :func:`get_model` / :func:`list_models`; importing this package registers every model.
"""

from __future__ import annotations

import importlib

from .base import ModelSpec, count_macs, default_model, get_model, list_models, register

#: Modules that register models when imported (one per paper, plus interpolation).
_MODEL_MODULES = ("interpolation", "idman", "dridsr", "w2amsn", "srda", "mdrn", "throughplane")
_loaded = False


def _load_all() -> None:
    """Import every model module once so that each registers its specs."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _MODEL_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:  # a paper's file not written yet
            if exc.name != f"{__name__}.{mod}":
                raise


__all__ = ["ModelSpec", "count_macs", "default_model", "get_model", "list_models", "register"]
