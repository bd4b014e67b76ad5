"""Argument checks shared by every network: input tensors and constructor options.

Each raises a :class:`~MedSRLib.errors.MedSRError` subclass whose one-line message names the model or
option and says what to do.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InputSizeError, ModelInputError, OptionError


def check_lr_input(x: torch.Tensor, *, model: str, min_size: int = 1) -> None:
    """Raise unless ``x`` is an ``N x 1 x H x W`` floating-point tensor with ``H, W >= min_size``.

    :class:`ModelInputError` for a wrong rank, channel count or dtype; :class:`InputSizeError` when too small.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ModelInputError(
            f"{model} expects an N x 1 x H x W tensor; got {shape}; add the batch/channel axes (x[None, None])"
        )
    if x.shape[1] != 1:
        raise ModelInputError(f"{model} expects 1 (grey) channel; got {x.shape[1]} channels; pass one channel at a time")
    if not x.is_floating_point():
        raise ModelInputError(f"{model} expects a floating-point tensor in [0, 1]; got {x.dtype}; use x.float()")
    h, w = int(x.shape[2]), int(x.shape[3])
    if min(h, w) < min_size:
        raise InputSizeError(f"{model} needs slices of at least {min_size} x {min_size} pixels; got {h} x {w}")


def positive_int(name: str, value: object) -> int:
    """``value`` if it is a positive int (not bool), else :class:`OptionError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive integer; got {value!r}")
    return value


def choice(name: str, value: object, allowed: Sequence[object]) -> None:
    """:class:`OptionError` naming ``name`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise OptionError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
