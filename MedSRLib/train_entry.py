"""The ``medsr-train`` console script: runs ``training`` (the papers' training recipes) from a clone.

``training/`` lives beside ``MedSRLib/`` in the repository and is not installed into site-packages
(its top-level name is too generic to claim there). With an editable install of a clone
(``pip install -e ".[training]"``), this entry point finds it next to the installed MedSRLib and
runs ``training.__main__.main``; ``python -m training`` from the clone's root does the same.

Without the clone, or without the ``training`` extra (pyyaml, tensorboard, pytorch-msssim), it
prints one line saying what to install and exits with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

#: Third-party modules that only the ``training`` extra installs.
_EXTRA_MODULES = ("yaml", "tensorboard", "pytorch_msssim")
EXIT_USER_ERROR = 2


def _repository_root() -> Path | None:
    """The clone that holds this MedSRLib, when ``training/`` sits beside it (editable install)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "training" / "__init__.py").is_file() else None


def missing_extra_modules() -> list[str]:
    """The modules of the ``training`` extra that cannot be imported here."""
    import importlib.util

    return [name for name in _EXTRA_MODULES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``medsr-train``; returns the exit status."""
    root = _repository_root()
    if root is None:
        print(
            "medsr-train: error: training runs from a clone of the MedSR repository: clone it and run "
            "`pip install -e \".[training]\"` there (a wheel install has no training/ package)",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    missing = missing_extra_modules()
    if missing:
        print(
            f"medsr-train: error: the 'training' extra is not installed (missing {', '.join(missing)}); "
            f"run `pip install -e \".[training]\"` in {root}",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from training.__main__ import main as training_main

    return int(training_main(argv) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
