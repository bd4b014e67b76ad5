"""The model list and model cards for the panel, read from a cached JSON file (no torch import).

Listing MedSRLib's registry imports torch and every network (about 4 s the first time in Slicer), and a
model's card and weights lookup used to run on the GUI thread each time a model was selected. The
panel needs only metadata, so the metadata is cached in ``MedSR/Resources/models.json``, written from
MedSRLib's registry by::

    python MedSR/MedSRSlicerLib/model_catalog.py          # from the repository root

``tests/test_slicer_model_catalog.py`` fails when the file differs from the registry (a model, scale,
weights file or card changed), so the cache cannot go stale unnoticed. Running a model still goes
through MedSRLib (the cache is never used to compute anything).

Catalog format (JSON object): ``{"format": 3, "models": [model, ...], "throughPlane": [model, ...],
"throughPlaneDefaults": {"MR": name, "CT": name}}``, each list in registry order (``list_models()`` and
``list_models(through_plane=True)``), the defaults ``default_model(modality, plane="through")``, each model
``{"name", "network", "config", "paper", "modality", "scales": [int], "learned": bool, "description",
"weights": {"<scale>": bool}, "cards": {"<scale>": card or null}}`` where a card holds what the panel
shows: ``{"scale", "trainingData", "metrics": {name: value}, "intendedUse"}`` (a through-plane network
serves every factor in ``scales`` from one weights file, so its entries are the same for each factor).
The full card text is not cached: the panel reads it from MedSRLib (``cards.card_text``, torch-free).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Optional

#: The cached catalog (a module resource, packaged by MedSR/CMakeLists.txt).
CATALOG_FILE = Path(__file__).resolve().parent.parent / "Resources" / "models.json"
FORMAT = 3
#: The modalities whose default through-plane network the catalog records.
MODALITIES = ("MR", "CT")


class CatalogModel:
    """One model of the catalog: registry name, paper, modality, scales, shipped weights and cards."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.name: str = entry["name"]
        self.network: str = entry["network"]
        self.config: str = entry["config"]
        self.paper: str = entry["paper"]
        self.modality: str = entry["modality"]
        self.scales: tuple[int, ...] = tuple(int(s) for s in entry["scales"])
        self.learned: bool = bool(entry["learned"])
        self.description: str = entry["description"]
        self._weights: dict[str, bool] = entry["weights"]
        self._cards: dict[str, Optional[dict[str, Any]]] = entry["cards"]

    def hasWeights(self, scale: int) -> bool:
        """True when trained weights for ``scale`` are shipped (always False for interpolation)."""
        return bool(self._weights.get(str(int(scale)), False))

    def card(self, scale: int) -> Optional[dict[str, Any]]:
        """What the panel shows of the model card at ``scale``, or None when no card is shipped."""
        return self._cards.get(str(int(scale)))


def _cardSummary(card: Optional[dict[str, Any]], scale: int) -> Optional[dict[str, Any]]:
    if card is None:
        return None
    training = card.get("training") or {}
    return {
        "scale": card.get("scale", scale),
        "trainingData": training.get("data"),
        # scalar validation numbers only (a through-plane card's per-factor tables are in its full text)
        "metrics": {k: v for k, v in (card.get("metrics") or {}).items()
                    if k != "convention" and isinstance(v, (int, float, str))},
        "intendedUse": card.get("intended_use"),
    }


def _entry(spec: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "network": spec.network,
        "config": spec.config,
        "paper": spec.paper,
        "modality": spec.modality,
        "scales": [int(s) for s in spec.scales],
        "learned": bool(spec.learned),
        "description": spec.description,
        "weights": {str(s): bool(spec.learned and spec.has_weights(s)) for s in spec.scales},
        "cards": {str(s): _cardSummary(spec.card(s) if spec.learned else None, s) for s in spec.scales},
    }


def build() -> dict[str, Any]:
    """The catalog from MedSRLib's registry (imports torch and every network; run offline, not in the GUI)."""
    from MedSRLib.models import default_model, list_models

    return {
        "format": FORMAT,
        "models": [_entry(spec) for spec in list_models()],
        "throughPlane": [_entry(spec) for spec in list_models(through_plane=True)],
        "throughPlaneDefaults": {m: default_model(m, plane="through").name for m in MODALITIES},
    }


def dumps(catalog: dict[str, Any]) -> str:
    """The catalog as the text stored in :data:`CATALOG_FILE` (stable: sorted keys, one indent)."""
    return json.dumps(catalog, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


@functools.lru_cache(maxsize=None)
def _read(path: str) -> dict[str, Any]:
    catalog = json.loads(Path(path).read_text(encoding="utf-8"))
    if catalog.get("format") != FORMAT:
        raise ValueError(f"{path}: catalog format {catalog.get('format')!r}, expected {FORMAT}")
    return catalog


@functools.lru_cache(maxsize=None)
def _load(path: str, key: str) -> tuple[CatalogModel, ...]:
    return tuple(CatalogModel(entry) for entry in _read(path)[key])


def models(path: Path = CATALOG_FILE) -> tuple[CatalogModel, ...]:
    """Every catalogued in-plane model, in registry order (read once per process)."""
    return _load(str(path), "models")


def throughPlaneModels(path: Path = CATALOG_FILE) -> tuple[CatalogModel, ...]:
    """Every catalogued through-plane network (``tp-*``; one weights file serves every factor)."""
    return _load(str(path), "throughPlane")


def find(name: str, path: Path = CATALOG_FILE) -> Optional[CatalogModel]:
    """The catalogued model called ``name`` (case-insensitive), or None."""
    for model in models(path):
        if model.name == str(name).lower():
            return model
    return None


def defaultThroughPlane(modality: str, path: Path = CATALOG_FILE) -> str:
    """MedSRLib's through-plane network for ``modality`` (``default_model(modality, plane="through")``;
    an unknown modality gets MR's, as MedSRLib does)."""
    defaults = _read(str(path))["throughPlaneDefaults"]
    return defaults.get(str(modality or "MR").upper(), defaults["MR"])


def findThroughPlane(name: str, path: Path = CATALOG_FILE) -> Optional[CatalogModel]:
    """The catalogued through-plane network called ``name`` (case-insensitive), or None."""
    for model in throughPlaneModels(path):
        if model.name == str(name).lower():
            return model
    return None


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's MedSRLib
    CATALOG_FILE.write_text(dumps(build()), encoding="utf-8")
    print(f"wrote {CATALOG_FILE}")
