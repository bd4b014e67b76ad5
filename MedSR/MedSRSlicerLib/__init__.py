"""Helpers of the MedSR Slicer module: node adapters, dependency handling, progress reporting.

Slicer loads every ``*.py`` directly in a module folder as a module, so helper code lives in this
package sub-folder (slicer-conventions.md 1.3). Nothing here does numerics: geometry goes through
``MedSRLib.geometry``, super-resolution through ``MedSRLib.pipeline``.

Importing this package makes ``MedSRLib`` importable when MedSR runs from a source checkout (module
folder added to Slicer's "Additional module paths"): an installed extension has ``MedSRLib`` beside
the module in ``qt-scripted-modules``; a checkout has it one folder above ``MedSR/``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _ensureMedSRLibImportable() -> None:
    if importlib.util.find_spec("MedSRLib") is not None:
        return
    checkoutRoot = Path(__file__).resolve().parents[2]
    if (checkoutRoot / "MedSRLib" / "__init__.py").is_file():
        sys.path.append(str(checkoutRoot))


_ensureMedSRLibImportable()
