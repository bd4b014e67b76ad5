"""The one validated options type of a run: :class:`EngineOptions`.

The ``medsr`` flags (:func:`MedSRLib.cli`), the :func:`MedSRLib.pipeline.super_resolve` keywords and
the Slicer module's parameters are derived from its fields (:func:`option_fields`); a value is
validated once, here, whatever the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputSizeError, OptionError

if TYPE_CHECKING:  # torch is imported only when a run needs it, so ``medsr models`` stays torch-free
    import torch

#: The precisions a run accepts; ``'auto'`` is resolved per machine by :mod:`.precision`.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _threads_value(text: str) -> int | str:
    """``--threads`` value: ``'auto'`` or an integer (validated by :class:`EngineOptions`)."""
    text = text.strip().lower()
    return text if text == "auto" else int(text) if text.lstrip("-").isdigit() else text


def _cli(flag: str, help: str, type: Any = str, metavar: str | None = None,
         choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Field metadata from which ``medsr`` builds the flag (``type`` bool = a store_true switch)."""
    return {"flag": flag, "help": help, "type": type, "metavar": metavar, "choices": choices}


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """How :func:`run_slices` runs a network (every field is validated by name on construction).

    Attributes:
        device: ``'auto'`` (CUDA, then MPS, then CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'``.
        batch_size: slices per forward pass; None = the most the memory budget allows.
        memory_budget_mb: activation memory budget in MiB; None = :func:`default_memory_budget_bytes`.
        tile: LR tile side in px; None = no tiling unless one slice alone exceeds the budget.
        tile_overlap: overlap of neighbouring tiles in LR px (tiles must be >= 2 x overlap).
        ensemble: x8 geometric self-ensemble (flips x 90-degree rotations; 8x slower).
        precision: ``'auto'`` (deterministic per machine: fp16 autocast on CUDA; on a CPU the choice
            cached by ``medsr precision --measure``, else bf16 with AMX or AMD AVX512-BF16, else fp32;
            :mod:`MedSRLib.engine.precision`), ``'fp32'``, ``'bf16'`` (autocast; CPU or GPU), ``'fp16'``
            (autocast; GPU only).
        channels_last: run convolutions in channels_last memory format on CPU and CUDA.
        threads: CPU threads for the run (restored afterwards); None = PyTorch's current setting;
            ``'auto'`` = the cores other processes leave free (:func:`free_cpu_count`): on a shared
            machine more threads than free cores make every operation wait at OpenMP barriers (measured
            up to 70x slower for IDMAN with 2 threads beside one busy core).
        compile: run full batches through ``torch.compile`` (CPU / CUDA; first batch pays the
            compilation, tens of seconds; eager fallback with a warning if it fails).
    """

    device: str | torch.device = field(default="auto", metadata=_cli(
        "--device", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps"))
    batch_size: int | None = field(default=None, metadata=_cli(
        "--batch-size", "slices per batch (default: from the memory budget)", int))
    memory_budget_mb: float | None = field(default=None, metadata=_cli(
        "--memory-budget", "memory budget for activations, MiB (default: min(2 GiB, 25%% of free RAM); CUDA 4 GiB)",
        float, "MB"))
    tile: int | None = field(default=None, metadata=_cli(
        "--tile", "LR tile side in pixels for large slices (default: automatic)", int))
    tile_overlap: int = field(default=16, metadata=_cli(
        "--tile-overlap", "overlap of neighbouring tiles, LR pixels (default 16)", int))
    ensemble: bool = field(default=False, metadata=_cli(
        "--ensemble", "x8 geometric self-ensemble (8x slower, slightly better)", bool))
    precision: str = field(default="auto", metadata=_cli(
        "--precision", "auto (default; deterministic per machine: fp16 on CUDA; on a CPU the choice of "
        "`medsr precision --measure` if cached, else bf16 with AMX or AMD AVX512-BF16, else fp32), fp32, bf16, "
        "fp16 (GPU); the image path always runs in fp32", str, None, PRECISIONS))
    channels_last: bool = field(default=True, metadata={})  # a speed detail: not offered as a flag
    threads: int | str | None = field(default=None, metadata=_cli(
        "--threads", "CPU threads: N or auto (the cores other processes leave free); default: PyTorch's setting",
        _threads_value))
    compile: bool = field(default=False, metadata=_cli(
        "--compile", "run full batches through torch.compile (first batch pays the compilation)", bool))

    def __post_init__(self) -> None:
        from .device import _parse_device

        _parse_device(self.device)
        if self.batch_size is not None and not (_is_int(self.batch_size) and self.batch_size >= 1):
            raise OptionError(f"batch_size must be a positive integer or None (automatic); got {self.batch_size!r}")
        budget = self.memory_budget_mb
        if budget is not None and (
            isinstance(budget, bool)
            or not isinstance(budget, (int, float, np.integer, np.floating))
            or not math.isfinite(budget)
            or budget <= 0
        ):
            raise OptionError(f"memory_budget_mb must be a positive number of MiB or None (automatic); got {budget!r}")
        if not (_is_int(self.tile_overlap) and self.tile_overlap >= 0):
            raise OptionError(f"tile_overlap must be a non-negative integer (LR px); got {self.tile_overlap!r}")
        if self.tile is not None:
            if not (_is_int(self.tile) and self.tile >= 1):
                raise OptionError(f"tile must be a positive integer (LR px) or None (automatic); got {self.tile!r}")
            if self.tile < 2 * self.tile_overlap:
                raise InputSizeError(
                    f"tile {self.tile} px is smaller than 2 x tile_overlap ({2 * self.tile_overlap} px); "
                    "use a larger tile or a smaller tile_overlap"
                )
        for name in ("ensemble", "channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be True or False; got {getattr(self, name)!r}")
        if self.precision not in PRECISIONS:
            raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.threads is not None and self.threads != "auto" and not (_is_int(self.threads) and self.threads >= 1):
            raise OptionError(f"threads must be a positive integer, 'auto' or None; got {self.threads!r}")



def option_fields(*, offered_only: bool = False) -> dict[str, dict[str, Any]]:
    """``{field name: metadata}`` of :class:`EngineOptions` (``offered_only``: those with a CLI flag)."""
    return {f.name: dict(f.metadata) for f in fields(EngineOptions) if not offered_only or "flag" in f.metadata}


def engine_options(options: EngineOptions | None = None, **keywords: Any) -> EngineOptions:
    """``options`` with ``keywords`` (EngineOptions field names) replacing its values; unknown names raise
    :class:`OptionError` naming the valid ones (the pipeline's and Slicer's engine keywords go through here)."""
    if options is not None and not isinstance(options, EngineOptions):
        raise OptionError(f"options must be an EngineOptions; got {type(options).__name__}")
    known = {f.name for f in fields(EngineOptions)}
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise OptionError(f"unknown engine option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    base = {f.name: getattr(options, f.name) for f in fields(EngineOptions)} if options is not None else {}
    return EngineOptions(**{**base, **keywords})
