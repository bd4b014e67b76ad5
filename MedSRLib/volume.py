"""The one in-memory volume type of MedSRLib.

Conventions (the whole library uses them; see docs/ARCHITECTURE.md):

* ``array`` is a numpy array indexed ``array[k, j, i]`` = (z, y, x), i.e. the reverse of ITK's index
  order, exactly as ``SimpleITK.GetArrayFromImage`` and Slicer's ``arrayFromVolume`` return it.
* ``spacing`` (mm), ``origin`` (mm) and the columns of ``direction`` are in ITK index order (i, j, k)
  and in ITK's **LPS** physical space: physical point of voxel (i, j, k) =
  ``origin + direction @ (spacing * [i, j, k])``; ``direction[:, a]`` is the unit LPS vector of array
  index axis ``a`` (0 = i = numpy axis 2).
* Slicer works in **RAS**; conversions live in :mod:`MedSRLib.geometry` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Volume:
    """A 3D scalar image with its physical geometry.

    Attributes:
        array: ``(z, y, x)`` numpy array (any real dtype). Never modified in place by MedSRLib.
        spacing: voxel size in mm, ITK order ``(sx, sy, sz)`` = sizes along index axes (i, j, k).
        origin: LPS position in mm of the centre of voxel (0, 0, 0).
        direction: 3x3 LPS direction cosines; column ``a`` is the unit vector of index axis ``a``.
        modality: ``"CT"``, ``"MR"`` or ``None`` when unknown.
        metadata: what a writer or a report may need from the source (``"source_path"``,
            ``"format"``, ``"series_uid"``, ``"rescale"``, DICOM tags, ...). Plain JSON-able values.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    modality: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise ValueError(f"Volume.array must be 3D (z, y, x); got shape {arr.shape}")
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        object.__setattr__(self, "array", arr)
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", direction)
        if len(self.spacing) != 3 or len(self.origin) != 3:
            raise ValueError("Volume.spacing and Volume.origin must have 3 values (ITK order i, j, k)")
        if not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"Volume.spacing must be positive and finite; got {self.spacing}")
        if not all(np.isfinite(o) for o in self.origin):
            raise ValueError(f"Volume.origin must be finite; got {self.origin}")
        if not np.all(np.isfinite(direction)):
            raise ValueError(f"Volume.direction must be finite; got {direction.tolist()}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(nz, ny, nx)``."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def size(self) -> tuple[int, int, int]:
        """ITK size ``(nx, ny, nz)`` (index order i, j, k)."""
        return tuple(reversed(self.array.shape))  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, **changes: Any) -> "Volume":
        """A copy with another array (and optionally other fields); geometry is kept unless changed."""
        return replace(self, array=array, **changes)

    def index_to_physical(self, ijk: np.ndarray) -> np.ndarray:
        """LPS mm of continuous ITK indices ``ijk`` (shape ``(..., 3)``, order i, j, k)."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return np.asarray(self.origin) + (ijk * np.asarray(self.spacing)) @ self.direction.T
