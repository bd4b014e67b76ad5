"""Run-level safeguards: memory estimates before reading or allocating, and truthful interrupts.

* :func:`available_memory_bytes` / :func:`check_memory`: refuse (``ResourceError``) a read or a run whose
  estimated memory exceeds what the machine has available, with both numbers in the message.
* :func:`estimate_run_bytes`: input + output + working memory of a super-resolution run, from the
  input shape ``(z, y, x)``, dtypes and the scale, before anything is allocated.
* :func:`install_termination_handler`: SIGTERM is handled like SIGINT (raises ``KeyboardInterrupt``),
  so a terminated run cleans its temporary files up and exits 130.
* (the CLI's ``interrupt_message`` says "nothing was written" only when this process has written
  nothing: the writer records each file it renames into place.)
"""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np

from .errors import OptionError, ResourceError

__all__ = [
    "WORKING_BYTES",
    "available_memory_bytes",
    "check_memory",
    "check_run_arguments",
    "check_run_memory",
    "explain_model_choice",
    "estimate_run_bytes",
    "install_cli_warnings",
    "install_termination_handler",
]

#: Working memory of a run besides input and output (one batch of activations, float copies), bytes.
WORKING_BYTES = 512 * 2**20


def available_memory_bytes() -> int | None:
    """Host RAM available to a new allocation, bytes: psutil, else Linux ``MemAvailable``, else half the
    physical RAM, else None (unknown). The one memory probe (the engine's batch budget uses it too)."""
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (AttributeError, ValueError, OSError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(needed_bytes: float, what: str, *, available: int | None = None, advice: str = "") -> None:
    """Raise :class:`ResourceError` when ``needed_bytes`` exceed the available memory.

    Args:
        needed_bytes: the estimate, bytes.
        what: what needs it (``"reading x.nrrd (20000 x 20000 x 4 int16)"``).
        available: bytes available (default :func:`available_memory_bytes`; unknown -> no check).
        advice: what to do instead (appended after ``;``).
    """
    available = available_memory_bytes() if available is None else available
    if available is None or needed_bytes <= available:
        return
    hint = advice or "use a machine with more memory or a smaller input"
    raise ResourceError(f"{what} needs about {_gib(needed_bytes)} of memory but {_gib(available)} is available; {hint}")


def estimate_run_bytes(shape_zyx: Any, input_dtype: Any, scale: int, *, slice_axis: int = 0,
                       output_dtype: Any = None) -> int:
    """Input + output + working bytes of super-resolving a ``(z, y, x)`` volume in-plane by ``scale``.

    The output has ``scale**2`` times the input's voxels (the two axes other than ``slice_axis``),
    stored as ``output_dtype`` (default: the input's).
    """
    n_in = int(np.prod([int(n) for n in shape_zyx], dtype=np.float64))
    in_size = np.dtype(input_dtype).itemsize
    out_size = np.dtype(output_dtype if output_dtype is not None else input_dtype).itemsize
    return int(n_in * in_size + n_in * scale * scale * out_size + WORKING_BYTES)


def check_run_memory(volume: Any, scale: int, *, slice_axis: int = 0, output_dtype: Any = None,
                     available: int | None = None) -> None:
    """Refuse a run that cannot fit in memory, before the output is allocated (see :func:`estimate_run_bytes`)."""
    needed = estimate_run_bytes(volume.shape, volume.array.dtype, scale, slice_axis=slice_axis, output_dtype=output_dtype)
    out_shape = [n * (scale if a != slice_axis else 1) for a, n in enumerate(volume.shape)]
    check_memory(
        needed,
        f"x{scale} of a {'x'.join(map(str, volume.shape))} (z,y,x) volume (output {'x'.join(map(str, out_shape))})",
        available=available,
        advice="choose a smaller --scale or crop the input",
    )


def check_run_arguments(volume: Any, *, scale: Any, modality: Any = None, allow_untrained: Any = False) -> None:
    """Validate the public arguments of a run before any work, naming the bad value.

    Raises:
        TypeError: ``volume`` is not a :class:`~MedSRLib.volume.Volume`.
        OptionError: ``scale`` not a positive finite integer, ``modality`` not ``'CT'``/``'MR'``/None,
            ``allow_untrained`` not a bool.
    """
    from .volume import Volume

    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a MedSRLib Volume (MedSRLib.io.read_volume); got {type(volume).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer, float, np.floating)) \
            or not np.isfinite(scale) or int(scale) != scale or int(scale) < 1:
        raise OptionError(f"scale must be a positive integer such as 2 or 4; got {scale!r}")
    if modality is not None and (not isinstance(modality, str) or modality.strip().upper() not in ("CT", "MR")):
        raise OptionError(f"modality must be 'CT', 'MR' or None; got {modality!r}")
    if not isinstance(allow_untrained, (bool, np.bool_)):
        raise OptionError(f"allow_untrained must be True or False; got {allow_untrained!r}")


def explain_model_choice(spec: Any, *, modality: str, scale: int, weights: Any = None, defaulted: bool = False) -> list[str]:
    """Say which model runs and why, before the run (one line each; the CLI prints them as warnings).

    Raises:
        OptionError: ``weights`` given for a model that has none (``bicubic``, ``nearest``).
    """
    notes = []
    if weights is not None and not spec.learned:
        raise OptionError(f"--weights applies to trained networks; model '{spec.name}' has no weights: drop --weights "
                          "or choose a network with --model")
    if defaulted and not spec.learned:
        notes.append(f"no trained network for {modality} x{scale} ships with MedSR: running {spec.name} "
                     "(see `medsr models` for the scales that have weights)")
    elif spec.learned and spec.modality not in ("any", modality):
        notes.append(f"model '{spec.name}' was trained on {spec.modality} but the input is {modality}; "
                     "results may be poor: choose a network for this modality or pass --modality")
    return notes


def install_termination_handler() -> None:
    """Handle SIGTERM like SIGINT (``KeyboardInterrupt``) in the main thread; no-op elsewhere."""

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, _terminate)
    except (ValueError, OSError, AttributeError):  # not the main thread / platform without SIGTERM
        pass


def install_cli_warnings() -> None:
    """Print Python warnings as one ``medsr: warning: <message>`` line; turn ITK's multi-line warnings
    (build paths, object addresses) off -- the readers check and name what they reported."""
    import warnings

    def _one_line(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        import sys

        text = " ".join(str(message).split())
        print(f"medsr: warning: {text}", file=file or sys.stderr)

    warnings.showwarning = _one_line
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalWarningDisplay(False)
    except (ImportError, AttributeError):
        pass
