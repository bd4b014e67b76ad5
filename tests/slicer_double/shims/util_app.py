"""The parts of ``slicer.util`` that need the Slicer *application* (dialogs, Qt, the IO manager).

slicer-core ships Slicer's real ``slicer/util.py``; its array, matrix, node and scene helpers work on
real MRML and are used as they are. These functions replace only the ones that need what the wheel
lacks (``slicer.app``, Qt, ``qSlicerCoreIOManager``):

* dialogs never pop up: they are logged and appended to :data:`displayedMessages`;
  ``confirmOkCancelDisplay`` returns True in testing mode (as Slicer's does) and :data:`confirmAnswer`
  otherwise;
* ``loadVolume`` reads with Slicer's real reader (``vtkSlicerVolumesLogic.AddArchetypeVolume``, the
  call behind the application's volume reader); ``saveNode`` writes with a **new** real storage node
  (``CreateDefaultStorageNode``) for the target file -- never through the storage node the reader left
  on the node, which points at the input file (writing through it would overwrite the input);
* ``pip_install`` records its arguments in :data:`pipInstallCalls` and installs nothing;
* ``loadUI`` raises: widgets need Qt, which only the real application has.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import slicer

#: Every dialog text shown, as ``(kind, text)``; kinds: error, warning, info, confirm.
displayedMessages: list[tuple[str, str]] = []
#: What ``confirmOkCancelDisplay`` answers outside testing mode.
confirmAnswer = False
#: Arguments of every ``pip_install`` call (nothing is installed).
pipInstallCalls: list[Any] = []
#: Folders ``saveNode`` refuses to write into (the shared real data is read-only input).
protectedFolders: list[Path] = []


def resetRecords() -> None:
    """Forget recorded dialogs and pip calls (test isolation)."""
    global confirmAnswer
    displayedMessages.clear()
    pipInstallCalls.clear()
    confirmAnswer = False


def _record(kind: str, text: str, level: int) -> None:
    displayedMessages.append((kind, str(text)))
    logging.log(level, text)


def errorDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs) -> None:
    _record("error", text, logging.ERROR)


def warningDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs) -> None:
    _record("warning", text, logging.WARNING)


def infoDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs) -> None:
    _record("info", text, logging.INFO)


def confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs) -> bool:
    _record("confirm", text, logging.INFO)
    return True if slicer.app.testingEnabled() else confirmAnswer


def showStatusMessage(message, duration=0) -> None:
    logging.info(message)


@contextlib.contextmanager
def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
    """Show (record) the error, then re-raise it, as Slicer does (no wait cursor without Qt)."""
    try:
        yield
    except Exception as error:
        if show and not slicer.app.testingEnabled():
            errorDisplay(f"{message}\n\n{error}" if message else str(error))
        raise


def pip_install(requirements, **kwargs) -> None:
    """Recorded; installs nothing."""
    pipInstallCalls.append(requirements)


def loadUI(path):
    raise RuntimeError("no Qt outside the Slicer application: widgets load only in real Slicer")


def mainWindow():
    return None


def loadVolume(filename: str, properties: dict | None = None, returnNode: bool = False):
    """Read a scalar volume with Slicer's archetype reader (real MRML; LPS file -> RAS node)."""
    logic = slicer.vtkSlicerVolumesLogic()
    logic.SetMRMLScene(slicer.mrmlScene)
    name = (properties or {}).get("name") or os.path.basename(str(filename)).split(".")[0]
    node = logic.AddArchetypeVolume(str(filename), name)
    if node is None:
        raise RuntimeError(f"Failed to load node from file: {filename}")
    return node


def saveNode(node, filename: str, properties: dict | None = None) -> bool:
    """Write ``node`` to ``filename`` with a new real storage node; False when writing fails."""
    target = Path(filename).resolve()
    if any(folder in target.parents for folder in protectedFolders):
        raise RuntimeError(f"test double: refusing to write into protected input data: {target}")
    storageNode = node.CreateDefaultStorageNode()
    storageNode.SetFileName(str(target))
    return bool(storageNode.WriteData(node))
