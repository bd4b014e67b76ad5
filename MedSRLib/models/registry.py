"""The one model registry, filled by discovering the model files.

Every module of this package is imported on first use of :func:`get_model` / :func:`list_models`
(:func:`discover`); a model file registers its :class:`~MedSRLib.models.base.ModelSpec` objects
with :func:`register` at import. Adding a network therefore means adding its file: there is no list
of model modules to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelNotFoundError

if TYPE_CHECKING:
    from .base import ModelSpec

_PACKAGE = __name__.rsplit(".", 1)[0]
_PACKAGE_DIR = Path(__file__).resolve().parent
_discovered = False


def discover() -> None:
    """Import every module of the models package once, so that each registers its specs."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in sorted(pkgutil.iter_modules([str(_PACKAGE_DIR)]), key=lambda i: i.name):
        if not info.ispkg and not info.name.startswith("_"):
            importlib.import_module(f"{_PACKAGE}.{info.name}")


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model name '{spec.name}' is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_model(name: str) -> ModelSpec:
    """The spec registered under ``name`` (case-insensitive), or :class:`ModelNotFoundError`."""
    discover()
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise ModelNotFoundError(f"unknown model '{name}'; registered models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def list_models(*, through_plane: bool = False) -> list[ModelSpec]:
    """Every registered in-plane spec (interpolation models first, then networks by name), or with
    ``through_plane=True`` the through-plane networks (:attr:`ModelSpec.multi_scale`, ``tp-*``)."""
    discover()
    return sorted((s for s in _REGISTRY.values() if s.multi_scale == through_plane), key=lambda s: (s.learned, s.name))


def default_model(modality: str | None, scale: int | None = None, *, plane: str = "in") -> ModelSpec:
    """The model used when none is chosen.

    ``plane='in'``: the preferred trained network for ``modality`` and integer ``scale``
    (:data:`DEFAULT_PREFERENCE`); if no preferred network has weights at that scale, ``bicubic``
    (always available) is returned.
    ``plane='through'``: the through-plane network of ``modality`` (:data:`DEFAULT_THROUGH_PLANE`),
    whether or not its weights are shipped (the run then refuses with a one-line error: a thick-slice
    volume never silently falls back to another method).
    """
    modality = (modality or "MR").upper()
    if plane == "through":
        return get_model(DEFAULT_THROUGH_PLANE.get(modality, DEFAULT_THROUGH_PLANE["MR"]))
    if plane != "in":
        raise ValueError(f"plane must be 'in' or 'through'; got {plane!r}")
    if scale is None:
        raise ValueError("an in-plane default model needs the scale")
    for name in DEFAULT_PREFERENCE.get(modality, ()):
        try:
            spec = get_model(name)
        except ModelNotFoundError:
            continue
        if int(scale) in spec.scales and spec.has_weights(scale):
            return spec
    return get_model("bicubic")


#: The through-plane network per modality (one multi-factor weights file each).
DEFAULT_THROUGH_PLANE: dict[str, str] = {"MR": "tp-dridsr", "CT": "tp-dridsr-ct"}

#: Preferred default networks per modality (first with shipped weights at the scale wins).
DEFAULT_PREFERENCE: dict[str, tuple[str, ...]] = {
    "CT": ("dridsr", "idman-small"),
    "MR": ("mdrn", "w2amsn-s", "srda-small"),
}


