"""Time estimates before a run: MACs / achieved throughput of the device and precision."""

from __future__ import annotations

import math

import torch

from ..errors import OptionError
from .options import _is_int
from .precision import resolve_precision

#: Achieved fp32 MAC/s per CPU thread of the fast path (inference rewrites + channels_last), one
#: thread of an AVX-512 AMD EPYC beside a busy core, 512 x 512 slices (benchmarks/RESULTS.md):
#: idman-small 43, mdrn 42, dridsr 51-78, w2amsn-small 77 GMAC/s; paper configurations 94-115 GMAC/s.
CPU_MACS_PER_SECOND_PER_THREAD = 5.0e10
#: bf16 autocast over the fp32 fast path on a CPU with native bf16 (1.5-2.6x measured on the shipped
#: networks, benchmarks/RESULTS.md); applied when the precision resolves to bf16 on the CPU.
CPU_BF16_SPEEDUP = 1.8
#: Conservative achieved MAC/s on a CUDA GPU with fp16 autocast (a fraction of any recent GPU's peak).
CUDA_MACS_PER_SECOND = 4.0e12
#: Conservative achieved MAC/s on Apple-silicon MPS in fp32.
MPS_MACS_PER_SECOND = 3.0e11


def achieved_macs_per_second(device: str | torch.device, precision: str = "auto", *, model: str | None = None,
                             scale: int | None = None) -> float:
    """The documented achieved throughput (MAC/s) :func:`estimate_seconds` assumes for ``device``'s type:
    CPU = :data:`CPU_MACS_PER_SECOND_PER_THREAD` x ``torch.get_num_threads()`` (x :data:`CPU_BF16_SPEEDUP`
    when ``precision`` runs bf16 there, for ``model`` at ``scale`` when given); CUDA and MPS constants."""
    kind = torch.device(device).type
    if kind == "cuda":
        return CUDA_MACS_PER_SECOND
    if kind == "mps":
        return MPS_MACS_PER_SECOND
    bf16 = resolve_precision(precision, torch.device("cpu"), model=model, scale=scale) == "bf16"
    return CPU_MACS_PER_SECOND_PER_THREAD * max(1, torch.get_num_threads()) * (CPU_BF16_SPEEDUP if bf16 else 1.0)


def estimate_seconds(
    *, macs_per_lr_pixel: float, lr_pixels_total: int, device: str | torch.device, ensemble: bool,
    precision: str = "auto", model: str | None = None, scale: int | None = None,
) -> float:
    """Rough network run time in seconds: MACs / :func:`achieved_macs_per_second` (x8 with ensemble).

    Covers the network only (not reading, writing or model loading); interpolation models (0 MACs) give 0.
    """
    if not (math.isfinite(macs_per_lr_pixel) and macs_per_lr_pixel >= 0):
        raise OptionError(f"macs_per_lr_pixel must be a non-negative number; got {macs_per_lr_pixel!r}")
    if not (_is_int(lr_pixels_total) and lr_pixels_total >= 0):
        raise OptionError(f"lr_pixels_total must be a non-negative integer; got {lr_pixels_total!r}")
    passes = 8 if ensemble else 1
    return float(macs_per_lr_pixel) * int(lr_pixels_total) * passes / achieved_macs_per_second(device, precision, model=model, scale=scale)


