"""Test double of 3D Slicer's Python surface (``slicer``, ``qt``, ``ctk``, ``PyTorchUtils``).

``activate()`` puts this folder and the MedSR module folder on ``sys.path`` (as Slicer does for a
loaded scripted module) and returns the imported ``MedSR`` module; ``reset()`` gives every test a
fresh scene, testing mode on, and no recorded dialogs or installs.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

DOUBLE_DIR = Path(__file__).resolve().parent
REPO_ROOT = DOUBLE_DIR.parent.parent
MODULE_DIR = REPO_ROOT / "MedSR"


def activate():
    """Make ``import slicer`` resolve to the double and return the imported MedSR module."""
    for folder in (str(MODULE_DIR), str(DOUBLE_DIR)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return importlib.import_module("MedSR")


def reset() -> None:
    """Fresh scene, testing mode on, recorded dialogs/installs cleared."""
    import PyTorchUtils
    import slicer
    import slicer.packaging

    slicer.mrmlScene.Clear()
    slicer.app.setTestingEnabled(True)
    slicer.util.resetRecords()
    slicer.packaging.installCalls.clear()
    PyTorchUtils.installTorchCalls.clear()
    PyTorchUtils.installResult = None


@pytest.fixture
def medsr():
    """The MedSR module imported on the double, with a fresh scene (import into a test file to use)."""
    module = activate()
    reset()
    return module
