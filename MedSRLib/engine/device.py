"""Device choice: parse and resolve ``'auto'``/``'cpu'``/``'cuda[:N]'``/``'mps'``, move modules and
tensors, empty caches, recognise out-of-memory errors."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import DeviceError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _parse_device(device: str | torch.device) -> torch.device | None:
    """``torch.device`` for an explicit device, None for ``'auto'``; :class:`DeviceError` when malformed."""
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str):
        text = device.strip().lower()
        if text == "auto":
            return None
        try:
            parsed = torch.device(text)
        except (RuntimeError, ValueError):
            parsed = None
        if parsed is None:
            raise DeviceError(f"device {device!r} is not understood; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    else:
        raise DeviceError(f"device must be a string ('auto', 'cpu', 'cuda', 'cuda:N', 'mps'); got {device!r}")
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device type '{parsed.type}' is not supported; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return parsed


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device to run on: ``'auto'`` = CUDA, then MPS, then CPU; explicit ``'cpu'``, ``'cuda'``,
    ``'cuda:N'``, ``'mps'`` must be available, else :class:`~MedSRLib.errors.DeviceError`."""
    parsed = _parse_device(device)
    if parsed is None:
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device '{device}' was requested but CUDA is not available (CPU-only PyTorch or no NVIDIA "
                "driver); use device 'auto' or 'cpu'"
            )
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if parsed.index is None else parsed.index
        if not 0 <= index < count:
            raise DeviceError(f"device 'cuda:{index}' does not exist; this machine has cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    if parsed.type == "mps" and not _mps_available():
        raise DeviceError("device 'mps' was requested but Apple MPS is not available here; use 'auto' or 'cpu'")
    return torch.device(parsed.type)


def _move(obj: Any, device: torch.device, *, channels_last: bool = False) -> Any:
    """``obj`` on ``device``; a module's 4D weights are also put in channels_last (or back to contiguous)."""
    obj = obj.to(device)
    if isinstance(obj, nn.Module):
        obj = obj.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return obj


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _is_out_of_memory(exc: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(exc, (oom_type, torch.cuda.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


