"""The ``medsr-train`` console script: runs ``training`` (the papers' training recipes) from a clone.

``training/`` lives beside ``MedSRLib/`` in the repository and is not installed into site-packages
(its top-level name is too generic to claim there). With an editable install of a clone
(``pip install -e ".[training]"``), this entry point finds it next to the installed MedSRLib and
runs it as a program (``runpy``, like ``python -m training``); ``python -m training`` from the clone's root does the same.

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
    return _run_training_program(root, list(sys.argv[1:] if argv is None else argv))


def _run_training_program(root: Path, argv: list[str]) -> int:
    """Run ``python -m training ARGV`` from the clone, as a program (MedSRLib never imports training)."""
    import runpy

    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    saved_argv = sys.argv
    sys.argv = ["medsr-train", *argv]
    try:
        runpy.run_module("training", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved_argv
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
