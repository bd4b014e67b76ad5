"""Slicer for the tests: slicer-core's **real MRML** plus shims for what only the application has.

PyPI ``slicer-core`` (Kitware; installed by the ``test`` extra) provides Slicer's real MRML library
(scene, volume/storage/transform/subject-hierarchy nodes, the Volumes logic, real readers and writers)
and Slicer's own ``slicer/util.py``. Every MRML object in the tests is real.

This folder holds only what slicer-core does not have (``shims/``, each says where it mirrors Slicer):

* ``slicer.app`` and the application's scene set-up (slice views, subject-hierarchy items):
  ``shims/application.py``;
* Qt/CTK-dependent ``slicer.util`` pieces (dialogs, ``loadUI``, the IO manager's ``loadVolume``/
  ``saveNode``, ``pip_install``): ``shims/util_app.py``;
* ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` (no GUI connectors),
  ``slicer.packaging`` (installs recorded, never run), ``slicer.i18n``;
* the PyTorch extension's ``PyTorchUtils`` (``PyTorchUtils.py``: installs recorded, never run).

``activate()`` imports the real ``slicer``, installs the shims, puts the MedSR module folder on
``sys.path`` (as Slicer does for a loaded scripted module) and returns the imported ``MedSR`` module;
``reset()`` gives every test a fresh scene, testing mode on, and no recorded dialogs or installs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

DOUBLE_DIR = Path(__file__).resolve().parent
SHIMS_DIR = DOUBLE_DIR / "shims"
REPO_ROOT = DOUBLE_DIR.parent.parent
MODULE_DIR = REPO_ROOT / "MedSR"
#: ``slicer.<name>`` submodules that only the application has, replaced by ``shims/<name>.py``.
SHIMMED_SUBMODULES = ("i18n", "ScriptedLoadableModule", "parameterNodeWrapper", "packaging")
#: ``slicer.util`` functions that need Qt or the application, replaced by ``shims/util_app.py``.
SHIMMED_UTIL_FUNCTIONS = ("errorDisplay", "warningDisplay", "infoDisplay", "confirmOkCancelDisplay",
                          "showStatusMessage", "tryWithErrorDisplay", "pip_install", "loadUI", "mainWindow",
                          "loadVolume", "saveNode")


def _loadShim(name: str, moduleName: str):
    spec = importlib.util.spec_from_file_location(moduleName, SHIMS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[moduleName] = module
    spec.loader.exec_module(module)
    return module


def realMRMLAvailable() -> bool:
    """True when slicer-core (Slicer's real MRML for Python) is installed."""
    return importlib.util.find_spec("slicer_core") is not None


def installShims():
    """Import the real ``slicer`` (slicer-core) and add the application pieces it lacks (once)."""
    if not realMRMLAvailable():
        pytest.skip("needs slicer-core (Slicer's real MRML; pip install -e '.[test]')")
    import slicer

    if getattr(slicer, "medsrShimsInstalled", False):
        return slicer
    application = _loadShim("application", "slicer_double_application")
    slicer.app = application.Application()
    slicer.modules = type("Modules", (), {})()
    slicer.selfTests = {}
    application.newScene()
    for name in SHIMMED_SUBMODULES:
        setattr(slicer, name, _loadShim(name, f"slicer.{name}"))
    utilApp = _loadShim("util_app", "slicer_double_util_app")
    sharedData = Path(os.environ.get("MEDSR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    utilApp.protectedFolders.extend({(REPO_ROOT.parent / "shared").resolve(), sharedData.resolve()})  # inputs only
    for name in SHIMMED_UTIL_FUNCTIONS:
        setattr(slicer.util, name, getattr(utilApp, name))
    slicer.util.shim = utilApp  # the recorded dialogs / pip calls: slicer.util.shim.displayedMessages
    slicer.newScene = application.newScene
    slicer.sliceLayers = application.sliceLayers  # shim only: what the slice views show
    slicer.medsrShimsInstalled = True
    return slicer


def activate():
    """Real ``slicer`` + shims; the MedSR module folder and this folder on ``sys.path``; returns ``MedSR``."""
    installShims()
    for folder in (str(MODULE_DIR), str(DOUBLE_DIR)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return importlib.import_module("MedSR")


def reset() -> None:
    """Fresh application scene, testing mode on, recorded dialogs/installs cleared."""
    import PyTorchUtils
    import slicer

    slicer.newScene()
    slicer.app.setTestingEnabled(True)
    slicer.util.shim.resetRecords()
    slicer.packaging.installCalls.clear()
    PyTorchUtils.installTorchCalls.clear()
    PyTorchUtils.installResult = None


@pytest.fixture
def medsr():
    """The MedSR module imported on real MRML, with a fresh scene (import into a test file to use)."""
    module = activate()
    reset()
    return module
