"""MedSR's Python packages inside Slicer: check without side effects; install only after asking.

* torch comes from the PyTorch extension (``PyTorchUtils``, fepegar/SlicerPyTorch), never from pip
  directly (slicer-conventions.md 1.5, 5.4);
* the other packages MedSRLib needs are listed in ``Resources/requirements.txt`` and installed with
  ``slicer.packaging.pip_ensure`` (Slicer >= 5.12) or ``slicer.util.pip_install`` (5.10, 5.11);
* numpy, SimpleITK, VTK, pydicom (and Pillow, scipy) ship with Slicer and are never (re)installed;
* nothing is installed at import time, and testing mode (``--testing``) never installs: it raises
  :class:`MissingDependencyError` instead (slicer-conventions.md 5.2, 5.5).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
from pathlib import Path

import slicer
from MedSRLib.errors import MedSRError

#: The torch versions MedSRLib runs on (pyproject.toml ``torch>=2.1``): an installed torch in this range is used.
TORCH_VERSION = ">=2.1"
TORCH_REQUIREMENT = "torch" + TORCH_VERSION
#: The torch versions MedSR asks the PyTorch extension to install: bounded above, because an unbounded request
#: installs the newest torch, and torch 2.13 installed through light-the-torch broke Slicer 5.12.2 on Windows
#: (an open light-the-torch issue). Raise the upper bound only after a release was tried in Slicer on
#: Windows, Linux and macOS (docs/slicer.md, "Manual checks").
TORCH_INSTALL_VERSION = ">=2.1,<2.13"
#: pip requirements besides torch, one per line (the file Slicer's 5.12 template also ships).
REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
#: Packages Slicer itself provides: a requirement naming one of them is a packaging mistake.
PROVIDED_BY_SLICER = frozenset({"numpy", "simpleitk", "vtk", "pydicom", "pillow", "scipy", "torch"})
#: MedSRLib dependencies that never run inside Slicer, so they are not installed there: tqdm (the command
#: line's progress bars) and pylibjpeg(-openjpeg) (MedSRLib's own DICOM reader; Slicer reads DICOM itself).
NOT_USED_IN_SLICER = frozenset({"tqdm", "pylibjpeg", "pylibjpeg-openjpeg"})


class MissingDependencyError(MedSRError):
    """A Python package MedSR needs is missing and was not installed (declined, testing mode, no PyTorch extension)."""


def readRequirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement strings of ``path`` (comments, blank lines and pip options skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def isSatisfied(requirement: str) -> bool:
    """True when the installed distribution meets ``requirement`` (read from metadata, not imported)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no 'packaging': presence is all we can check
        name, specifier = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0], None
    else:
        parsed = Requirement(requirement)
        name, specifier = parsed.name, parsed.specifier
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return specifier is None or specifier.contains(version, prereleases=True)


def missingRequirements() -> list[str]:
    """Every unmet requirement, torch first."""
    return [r for r in [TORCH_REQUIREMENT, *readRequirements()] if not isSatisfied(r)]


def checkDependencies() -> None:
    """Raise :class:`MissingDependencyError` naming what is missing; never installs anything."""
    missing = missingRequirements()
    if missing:
        raise MissingDependencyError(
            f"MedSR needs these Python packages, which are not installed: {', '.join(missing)}. "
            "Click 'Super-resolve volume' in the MedSR module to install them (you are asked first)."
        )


def ensureDependencies(requester: str = "MedSR", askConfirmation: bool = True) -> None:
    """Install what is missing; raise :class:`MissingDependencyError` if it stays missing.

    torch is installed by the PyTorch extension's ``PyTorchUtilsLogic.installTorch`` (versions
    :data:`TORCH_INSTALL_VERSION`); the rest by ``slicer.packaging.pip_ensure`` (5.12+) or
    ``slicer.util.pip_install``. In testing mode nothing is installed.

    Args:
        askConfirmation: True (the panel): one OK/Cancel dialog first. False (the batch script's
            ``--install-dependencies``, which is the user's consent): no dialog at all, so a headless run
            never blocks on a modal box.
    """
    missing = missingRequirements()
    if not missing:
        return
    if slicer.app.testingEnabled():
        raise MissingDependencyError(
            f"MedSR needs {', '.join(missing)}; Slicer runs in testing mode, which never installs packages."
        )
    torchMissing = missing[0] == TORCH_REQUIREMENT
    others = [r for r in missing if r != TORCH_REQUIREMENT]
    torchLogic = None
    if torchMissing:
        try:
            import PyTorchUtils
        except ModuleNotFoundError as error:
            raise MissingDependencyError(
                "MedSR needs the PyTorch extension: install 'PyTorch' from the Extensions Manager, restart Slicer, "
                "then try again."
            ) from error
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
        f"{requester} needs Python packages that are not installed yet. Install them now? "
        "This downloads from the internet and may take several minutes (PyTorch is large).",
        windowTitle=f"{requester}: install Python packages",
        detailedText="\n".join(missing),
    ):
        raise MissingDependencyError(f"Installation declined; MedSR cannot run without {', '.join(missing)}.")
    if torchLogic is not None:
        logging.info(f"{requester}: installing PyTorch through the PyTorch extension")
        if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_INSTALL_VERSION) is None:
            raise MissingDependencyError(
                "PyTorch was not installed. Install it with the 'PyTorch Util' module, restart Slicer, then try again."
            )
    if others:
        _pipInstall(others, requester, askConfirmation)
    stillMissing = missingRequirements()
    if stillMissing:
        raise MissingDependencyError(
            f"These packages are still missing after installation: {', '.join(stillMissing)}; restart Slicer and try again."
        )


def _pipInstall(requirements: list[str], requester: str, askConfirmation: bool = True) -> None:
    try:
        packaging = importlib.import_module("slicer.packaging")  # Slicer >= 5.12 (a submodule: test the import)
    except ImportError:  # Slicer 5.10 / 5.11
        slicer.util.pip_install(requirements)
    else:  # the user was asked above
        packaging.pip_ensure(requirements, requester=requester, prompt_install=False, prompt_restart=askConfirmation)
