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

Around the network (:class:`NetworkIntensity`, used by the pipeline for every batch of slices):

* **CT padding**: voxels below :data:`CT_PADDING_BELOW_HU` (-1500 HU; scanners pad outside the field
  of view with -2000, -2048 or -3024 HU, and nothing physical is below air, -1000 HU) are *padding*:
  they enter the network as air (-1024 HU) and are restored in the output on the ``s x s`` blocks
  they cover, with their original value.
* **Extreme values**: the networks' input is clipped to :data:`NETWORK_INPUT_RANGE` (``[-1, 4]`` in
  the [0, 1] domain: CT -5119..15356 HU; MR ``low - width .. low + 4 width``), so one 3e38 voxel
  cannot wipe a slice.
* **Physically possible range** (default on; ``clip_output=False`` / ``--keep-raw-values`` keeps the
  network's raw values): CT outputs >= :data:`CT_MIN_HU` (-1024 HU) outside padding; MR outputs
  >= 0 when the input has no negative value.
* **Checks**: NaN/Inf in a network output, or a constant (wiped) output slice for a non-constant
  input slice, raise :class:`~MedSRLib.errors.NetworkOutputError` naming the slice.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .volume import Volume

__all__ = [
    "CT_MIN_HU",
    "CT_PADDING_BELOW_HU",
    "CT_WINDOW_HU",
    "MR_HIGH_PERCENTILE",
    "MR_LOW_PERCENTILE",
    "NETWORK_INPUT_RANGE",
    "IntensityMapping",
    "NetworkIntensity",
    "guess_modality",
]

#: CT window in HU mapped to [0, 1] (4096 levels of 12-bit CT, air at 0).
CT_WINDOW_HU: tuple[float, float] = (-1024.0, 3071.0)
#: MR upper limit: this percentile of the finite voxels maps to 1.
MR_HIGH_PERCENTILE = 99.5
#: MR lower limit when the volume has negative values: min(0, this percentile) maps to 0.
MR_LOW_PERCENTILE = 0.5
#: guess_modality: a minimum at or below this (HU of air is -1000) suggests CT.
CT_MIN_THRESHOLD = -500.0

#: CT voxels below this (HU) are padding outside the scanner's field of view, not tissue or air.
CT_PADDING_BELOW_HU = -1500.0
#: Lowest physically possible CT value (air) kept in outputs outside padding.
CT_MIN_HU = -1024.0
#: Network input clip, in the [0, 1] domain (see the module docstring).
NETWORK_INPUT_RANGE: tuple[float, float] = (-1.0, 4.0)

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
def _nearest_source(n_in: int, n_out: int) -> np.ndarray:
    """Index of the input sample whose cell holds each of ``n_out`` output samples (field of view kept:
    output ``i`` at input coordinate ``(i + 0.5) n_in / n_out - 0.5``)."""
    return np.minimum((np.arange(n_out) + 0.5) * n_in // n_out, n_in - 1).astype(np.int64)


@dataclass(frozen=True)
class NetworkIntensity:
    """The intensity rules around a network for one volume (see the module docstring).

    Attributes:
        mapping: the volume's :class:`IntensityMapping`.
        output_min: lowest value (input units) an output may hold outside padding; None = no limit.
        pad_below: values below this are CT padding (None: no padding handling, MR).
        clip_output: apply ``output_min`` (False keeps the network's raw values).
    """

    mapping: IntensityMapping
    output_min: float | None
    pad_below: float | None
    clip_output: bool = True

    @classmethod
    def for_volume(cls, array: np.ndarray, mapping: IntensityMapping, *, clip_output: bool = True) -> "NetworkIntensity":
        """The rules for a volume ``array`` (any shape) mapped with ``mapping``."""
        if mapping.modality == "CT":
            return cls(mapping=mapping, output_min=CT_MIN_HU, pad_below=CT_PADDING_BELOW_HU, clip_output=bool(clip_output))
        values = np.asarray(array)
        if np.issubdtype(values.dtype, np.floating):
            finite = values[np.isfinite(values)]
            lowest = float(finite.min()) if finite.size else 0.0
        else:
            lowest = float(values.min()) if values.size else 0.0
        return cls(mapping=mapping, output_min=0.0 if lowest >= 0 else None, pad_below=None,
                   clip_output=bool(clip_output))

    def padding(self, stack: np.ndarray) -> np.ndarray | None:
        """Boolean mask of CT padding voxels of ``stack`` (input units), or None when there is none."""
        if self.pad_below is None:
            return None
        with np.errstate(invalid="ignore"):
            mask = np.asarray(stack) < self.pad_below
        return mask if mask.any() else None

    def to_network(self, stack: np.ndarray) -> np.ndarray:
        """Input-unit slices ``(n, h, w)`` -> float32 network input: padding as air, extremes clipped."""
        values = np.asarray(stack)
        mask = self.padding(values)
        if mask is not None:
            values = np.where(mask, CT_MIN_HU, values)
        unit = self.mapping.to_unit(values)
        return np.clip(unit, *NETWORK_INPUT_RANGE).astype(np.float32, copy=False)

    def from_network(self, unit: np.ndarray, stack_in: np.ndarray, *, dtype: Any, first_slice: int = 0) -> np.ndarray:
        """Network output ``(n, s h, s w)`` in [0, 1] -> input units as ``dtype``, with the rules applied.

        Args:
            unit: the network's output for the input slices ``stack_in`` ``(n, h, w)`` (input units).
            dtype: output dtype (integers rounded and clipped to the dtype's range).
            first_slice: index of ``stack_in[0]`` along the slice axis (named in errors).

        Raises:
            NetworkOutputError: NaN/Inf in the output, or a constant output slice whose input is not.
        """
        from .errors import NetworkOutputError

        unit = np.asarray(unit)
        stack_in = np.asarray(stack_in)
        finite = np.isfinite(unit).reshape(unit.shape[0], -1).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise NetworkOutputError(
                f"the network returned NaN/Inf for slice {first_slice + bad} (of the slice axis); the weights or "
                "the precision are broken: try --precision fp32, other weights, or the bicubic model"
            )
        flat_out = unit.reshape(unit.shape[0], -1)
        flat_in = self.to_network(stack_in).reshape(stack_in.shape[0], -1)
        wiped = (np.ptp(flat_out, axis=1) == 0) & (np.ptp(flat_in, axis=1) > 1e-6)
        if wiped.any():
            bad = int(np.flatnonzero(wiped)[0])
            raise NetworkOutputError(
                f"the network returned a constant slice {first_slice + bad} (value {float(flat_out[bad, 0]):.4g}) for a "
                "non-constant input; the weights are broken: check them or use the bicubic model"
            )
        if self.clip_output and self.output_min is not None:
            unit = np.maximum(unit, (self.output_min - self.mapping.low) / self.mapping.width)
        out = self.mapping.from_unit(unit, dtype=dtype)
        mask = self.padding(stack_in)
        if mask is not None:  # nearest input voxel of each output voxel (integer factors: np.repeat)
            rows = _nearest_source(stack_in.shape[1], unit.shape[1])
            cols = _nearest_source(stack_in.shape[2], unit.shape[2])
            up = mask[:, rows][:, :, cols]
            values = stack_in[:, rows][:, :, cols]
            out[up] = values[up].astype(out.dtype)
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-able description (for the provenance record)."""
        return {
            "network_input_clip_unit": list(NETWORK_INPUT_RANGE),
            "output_min": self.output_min if self.clip_output else None,
            "clip_output": self.clip_output,
            "ct_padding_below_hu": self.pad_below,
        }
