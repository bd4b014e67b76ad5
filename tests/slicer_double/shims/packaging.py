"""``slicer.packaging`` double (Slicer >= 5.12): requirement checks are real, installs are recorded.

Behaviour from slicer-conventions.md 5.2 (Slicer/Slicer ``Base/Python/slicer/packaging.py``):
``pip_ensure`` does nothing when every requirement is met; **in testing mode with
``skip_in_testing=True`` it logs and returns without installing**; otherwise it asks
(``confirmOkCancelDisplay``), raises ``RuntimeError("User declined package installation")`` when
declined, and installs (here: appended to :data:`installCalls`).
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

from packaging.requirements import Requirement

import slicer

#: Requirement lists ``pip_ensure``/``pip_install`` would have installed.
installCalls: list[list[str]] = []


def load_requirements(path) -> list[Requirement]:
    lines = Path(path).read_text().splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines
            if line.split("#")[0].strip() and not line.strip().startswith("-")]


def pip_check(requirement) -> bool:
    requirement = requirement if isinstance(requirement, Requirement) else Requirement(str(requirement))
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(version, prereleases=True)


def pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
               requester=None, skip_in_testing=True, show_progress=True):
    missing = [str(r) for r in requirements if not pip_check(r)]
    if not missing:
        return None
    if skip_in_testing and slicer.app.testingEnabled():
        logging.info(f"Testing mode: not installing {missing} requested by {requester}")
        return None
    if prompt_install and not slicer.util.confirmOkCancelDisplay(f"{requester} needs: {', '.join(missing)}"):
        raise RuntimeError("User declined package installation")
    installCalls.append(missing)
    return missing


def pip_install(requirements, **kwargs) -> None:
    installCalls.append(list(requirements) if not isinstance(requirements, str) else requirements.split())
