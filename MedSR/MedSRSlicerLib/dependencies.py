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

#: The torch versions MedSRLib supports (pyproject.toml ``torch>=2.1``).
TORCH_VERSION = ">=2.1"
TORCH_REQUIREMENT = "torch" + TORCH_VERSION
#: pip requirements besides torch, one per line (the file Slicer's 5.12 template also ships).
REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
#: Packages Slicer itself provides: a requirement naming one of them is a packaging mistake.
PROVIDED_BY_SLICER = frozenset({"numpy", "simpleitk", "vtk", "pydicom", "pillow", "scipy", "torch"})


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


def ensureDependencies(requester: str = "MedSR") -> None:
    """Install what is missing after one confirmation; raise :class:`MissingDependencyError` if it stays missing.

    torch is installed by the PyTorch extension's ``PyTorchUtilsLogic.installTorch``; the rest by
    ``slicer.packaging.pip_ensure`` (5.12+) or ``slicer.util.pip_install``. In testing mode nothing is
    installed.
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
    if not slicer.util.confirmOkCancelDisplay(
        f"{requester} needs Python packages that are not installed yet. Install them now? "
        "This downloads from the internet and may take several minutes (PyTorch is large).",
        windowTitle=f"{requester}: install Python packages",
        detailedText="\n".join(missing),
    ):
        raise MissingDependencyError(f"Installation declined; MedSR cannot run without {', '.join(missing)}.")
    if torchLogic is not None:
        logging.info(f"{requester}: installing PyTorch through the PyTorch extension")
        if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_VERSION) is None:
            raise MissingDependencyError(
                "PyTorch was not installed. Install it with the 'PyTorch Util' module, restart Slicer, then try again."
            )
    if others:
        _pipInstall(others, requester)
    stillMissing = missingRequirements()
    if stillMissing:
        raise MissingDependencyError(
            f"These packages are still missing after installation: {', '.join(stillMissing)}; restart Slicer and try again."
        )


def _pipInstall(requirements: list[str], requester: str) -> None:
    try:
        packaging = importlib.import_module("slicer.packaging")  # Slicer >= 5.12 (a submodule: test the import)
    except ImportError:  # Slicer 5.10 / 5.11
        slicer.util.pip_install(requirements)
    else:  # the user was asked above
        packaging.pip_ensure(requirements, requester=requester, prompt_install=False)
