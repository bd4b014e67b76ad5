"""Models: the interface (:mod:`.base`), the registry that discovers the model files
(:mod:`.registry`), shared blocks (:mod:`.blocks`), generic inference rewrites (:mod:`.rewrites`),
weights and cards (:mod:`.weights`), and one file per paper (each with its own inference rewrites).

Use :func:`get_model` / :func:`list_models`; they import every model file on first use.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

#: Public names and the submodule that defines each. They are imported on first use (PEP 562), so
#: torch-free submodules (:mod:`.cards`, read by ``medsr models``) load without importing torch.
_LAZY_NAMES = {
    "ModelSpec": "base",
    "count_macs": "base",
    "default_model": "registry",
    "discover": "registry",
    "get_model": "registry",
    "list_models": "registry",
    "register": "registry",
}


__getattr__ = lazy_getattr(__name__, _LAZY_NAMES)


__all__ = sorted(_LAZY_NAMES)
