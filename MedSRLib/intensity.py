"""Modality-aware mapping between a volume's units and the networks' [0, 1] domain, and back.

One :class:`IntensityMapping` is fitted per volume, so every slice of it shares the same mapping:

* **CT**: a fixed window ``[-1024, 3071]`` HU mapped linearly to ``[0, 1]`` (the 12-bit CT range;
  the design notes, networks.md section 11.2, ask for a fixed, stated HU window). Values outside
  the window are *not* clipped on the way in, so ``from_unit(to_unit(x))`` is exact.
* **MR**: robust per-volume limits: ``low = 0`` (MR magnitude is non-negative), or
  ``min(0, 0.5th percentile)`` when negative values exist; ``high`` = the 99.5th percentile of the
  finite voxels (networks.md 11.2: per-volume [0, 99.5th percentile] -> [0, 1]). Values above
  ``high`` map above 1 and are restored exactly.

Degenerate inputs never crash nor produce NaN: ``high <= low`` (a constant volume) uses a unit width
``high = low + 1``; NaN maps to ``low`` and +/-Inf to the finite max/min (with a warning at fit time).

Outputs keep the input's units and dtype by default: integer dtypes are rounded and clipped to the
dtype's range (int16 HU stays int16 HU); float outputs are returned as is.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .volume import Volume

__all__ = ["CT_WINDOW_HU", "MR_HIGH_PERCENTILE", "MR_LOW_PERCENTILE", "IntensityMapping", "guess_modality"]

#: CT window in HU mapped to [0, 1] (4096 levels of 12-bit CT, air at 0).
CT_WINDOW_HU: tuple[float, float] = (-1024.0, 3071.0)
#: MR upper limit: this percentile of the finite voxels maps to 1.
MR_HIGH_PERCENTILE = 99.5
#: MR lower limit when the volume has negative values: min(0, this percentile) maps to 0.
MR_LOW_PERCENTILE = 0.5
#: guess_modality: a minimum at or below this (HU of air is -1000) suggests CT.
CT_MIN_THRESHOLD = -500.0

_MODALITIES = ("CT", "MR")


def _check_modality(modality: Any) -> str:
    key = str(modality).strip().upper() if modality is not None else ""
    if key not in _MODALITIES:
        raise ValueError(f"modality must be 'CT' or 'MR'; got {modality!r}")
    return key


def _is_integer_valued(values: np.ndarray) -> bool:
    if np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_:
        return True
    return bool(np.all(np.floor(values) == values))


def guess_modality(volume: Volume) -> str:
    """``'CT'`` or ``'MR'`` for a volume, from its metadata when known, else from its values.

    Order: ``volume.modality`` (``'CT'``/``'MR'``), then ``metadata['dicom_modality']``; otherwise a
    heuristic on the finite voxels: CT when the minimum is <= -500 (air is -1000 HU; MR magnitude
    images are non-negative) and either the values are integers (stored HU) or at least 0.5 % of the
    voxels are <= -500 (float-scaled HU with air in the field of view); MR otherwise. A CT crop without
    air is guessed MR: pass the modality explicitly in that case.
    """
    for known in (volume.modality, volume.metadata.get("dicom_modality")):
        if isinstance(known, str) and known.strip().upper() in _MODALITIES:
            return known.strip().upper()
    values = np.asarray(volume.array)
    finite = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values.ravel()
    if finite.size == 0 or float(finite.min()) > CT_MIN_THRESHOLD:
        return "MR"
    if _is_integer_valued(finite) or float(np.percentile(finite, 0.5)) <= CT_MIN_THRESHOLD:
        return "CT"
    return "MR"


@dataclass(frozen=True)
class IntensityMapping:
    """Linear map ``unit = (value - low) / (high - low)`` fitted once per volume, and its inverse.

    Attributes:
        modality: ``'CT'`` or ``'MR'``.
        low: value (input units: HU for CT) mapped to 0.
        high: value mapped to 1 (always > ``low``).
        nan_value: what NaN is replaced with before mapping (``low``).
        posinf_value: what +Inf is replaced with (the finite maximum of the fitted volume).
        neginf_value: what -Inf is replaced with (the finite minimum of the fitted volume).
    """

    modality: str
    low: float
    high: float
    nan_value: float
    posinf_value: float
    neginf_value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", _check_modality(self.modality))
        for name in ("low", "high", "nan_value", "posinf_value", "neginf_value"):
            value = float(getattr(self, name))
            if not np.isfinite(value):
                raise ValueError(f"IntensityMapping.{name} must be finite; got {value}")
            object.__setattr__(self, name, value)
        if not self.high > self.low:
            raise ValueError(f"IntensityMapping.high ({self.high}) must be greater than low ({self.low})")

    @classmethod
    def fit(cls, array: np.ndarray, *, modality: str) -> "IntensityMapping":
        """Fit the mapping of a whole volume ``array`` (any shape, any real dtype; not modified).

        Warns (``RuntimeWarning``) when the array has NaN or Inf values; see the module docstring.
        """
        modality = _check_modality(modality)
        values = np.asarray(array)
        if values.dtype == np.bool_:
            values = values.astype(np.uint8)
        if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
            raise ValueError(f"IntensityMapping.fit needs a real-valued array; got dtype {values.dtype}")
        if np.issubdtype(values.dtype, np.floating):
            finite_mask = np.isfinite(values)
            n_bad = int(values.size - np.count_nonzero(finite_mask))
            finite = values[finite_mask] if n_bad else values.ravel()
        else:
            n_bad, finite = 0, values.ravel()
        if finite.size:
            fmin, fmax = float(finite.min()), float(finite.max())
        else:
            fmin = fmax = 0.0
        if modality == "CT":
            low, high = CT_WINDOW_HU
        else:
            low = 0.0
            if fmin < 0:
                low = min(0.0, float(np.percentile(finite, MR_LOW_PERCENTILE)))
            high = float(np.percentile(finite, MR_HIGH_PERCENTILE)) if finite.size else low + 1.0
            if not high > low:
                high = low + 1.0
        if n_bad:
            warnings.warn(
                f"{n_bad} NaN/Inf voxels: NaN is treated as {low:g}, +Inf as {fmax:g} and -Inf as {fmin:g}",
                RuntimeWarning,
                stacklevel=2,
            )
        return cls(modality=modality, low=low, high=high, nan_value=low, posinf_value=fmax, neginf_value=fmin)

    @property
    def width(self) -> float:
        """``high - low`` in input units (> 0)."""
        return self.high - self.low

    def to_unit(self, array: np.ndarray) -> np.ndarray:
        """Input units -> float32 in the networks' domain (``low`` -> 0, ``high`` -> 1; not clipped).

        Any shape (a slice ``(h, w)``, a stack ``(n, h, w)``, a volume); NaN/Inf replaced first.
        Computed in float64, returned float32.
        """
        values = np.asarray(array, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            values = np.nan_to_num(values, nan=self.nan_value, posinf=self.posinf_value, neginf=self.neginf_value)
        return ((values - self.low) / self.width).astype(np.float32)

    def from_unit(self, unit_array: np.ndarray, *, dtype: Any = np.float32) -> np.ndarray:
        """Networks' domain -> input units, as ``dtype``.

        Integer dtypes are rounded to nearest and clipped to the dtype's range; float dtypes are not
        clipped. NaN in ``unit_array`` maps to ``low`` and +/-Inf to the dtype's (or the mapping's)
        limits, so the output never holds NaN.
        """
        dtype = np.dtype(dtype)
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise ValueError(f"from_unit dtype must be an integer or float dtype; got {dtype}")
        unit = np.asarray(unit_array, dtype=np.float64)
        values = unit * self.width + self.low
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            values = np.nan_to_num(values, nan=self.low, posinf=float(info.max), neginf=float(info.min))
            return np.clip(np.rint(values), info.min, info.max).astype(dtype)
        if not np.all(np.isfinite(values)):
            values = np.nan_to_num(values, nan=self.low, posinf=self.posinf_value, neginf=self.neginf_value)
        return values.astype(dtype)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able description (for metadata and reports)."""
        return {
            "modality": self.modality,
            "low": self.low,
            "high": self.high,
            "rule": "CT fixed HU window" if self.modality == "CT" else
            f"MR [min(0, p{MR_LOW_PERCENTILE:g}) if negative else 0, p{MR_HIGH_PERCENTILE:g}]",
        }


# ----------------------------------------------------------------------------------- 2D images

#: Integer-valued 2D images with values in 0..this are 8-bit display images (divided by 255).
EIGHT_BIT_MAX = 255.0


def image_to_unit(image: np.ndarray, *, modality: str | None = None) -> np.ndarray:
    """The one 2D-image normaliser (``medsr evaluate``, comparison panels, training): a raw
    ``(h, w)`` image -> float64 ``(h, w)`` in [0, 1] (clipped).

    * **8-bit display images** (every finite value an integer in 0..255: PNG/JPEG, COVID-CT,
      Alzheimer) are divided by 255 whatever ``modality`` says: their grey levels were already
      windowed for display, they are not HU or scanner units.
    * Other images (DICOM, NIfTI slices) use :class:`IntensityMapping` for ``modality`` (``'CT'``: the
      fixed HU window; ``'MR'``: the image's robust percentiles); ``modality=None`` guesses it from
      the values (:func:`guess_modality`: air at -1000 HU means CT).
    """
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() >= 0 and finite.max() <= EIGHT_BIT_MAX and np.all(finite == np.round(finite)):
        unit = values / EIGHT_BIT_MAX
    else:
        if modality is None:
            modality = guess_modality(Volume(values[None], (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)))
        unit = IntensityMapping.fit(values[None], modality=modality).to_unit(values[None])[0]
    return np.clip(unit, 0.0, 1.0)
