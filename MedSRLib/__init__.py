"""MedSRLib: deep-network super-resolution of CT and MR volumes, slice by slice, with exact geometry.

Pure Python (no ``import slicer``): the 3D Slicer module MedSR, the ``medsr`` CLI and training all
use it. Conventions: numpy arrays are (z, y, x); physical space is ITK LPS in mm; Slicer's RAS
appears only in :mod:`MedSRLib.geometry`. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import MedSRError
from .volume import Volume

__all__ = ["MedSRError", "Volume", "__version__"]
