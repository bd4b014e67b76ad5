"""Precision choice: what ``precision='auto'`` means on a device, decided without timing anything.

``'auto'`` is a pure function of the machine (the same command on the same machine always runs the
same precision, whatever the load):

* CUDA: fp16 autocast (10 mantissa bits, better than bf16's 7 for [0, 1] images; an fp16 overflow is
  redone in fp32 by the runner).
* MPS: fp32.
* CPU: a per-machine choice cached by ``medsr precision --measure`` (:func:`measure_cpu_precision`)
  when one exists for this CPU model and PyTorch version; else a rule on the CPU vendor and ISA
  (:func:`cpu_rule_precision`): AMX-BF16 -> bf16; AVX512-BF16 on AMD -> bf16 (an AMD EPYC ran bf16
  convolutions 1.9x faster than fp32, the shipped networks 1.5-2.6x); AVX512-BF16 on Intel without
  AMX -> fp32 (an Intel Xeon VM ran them at 0.5x fp32); everything else fp32 (emulated bf16 is
  slower than fp32).

The layers on each network's image path stay in fp32 (the models' inference rewrites; on a CPU bf16
runs without autocast, see :func:`MedSRLib.models.rewrites.reduced_precision_copy`), so bf16's error
on the shipped networks is small beside the networks' own error. Given the network (``model``,
``scale``), ``'auto'`` also keeps fp32 for a shipped network whose measured bf16 error on real CT
exceeds :data:`BF16_MAX_HU` (:data:`BF16_MEASURED_MAX_HU`; ``tests/test_engine_bf16_native.py``). Use ``'fp32'`` for outputs that must not depend on the
CPU model. The precision that ran is recorded by :class:`MedSRLib.engine.Predictor`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import OptionError
from .options import PRECISIONS

logger = logging.getLogger("MedSRLib.engine")

_AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_NAMES: dict[torch.dtype | None, str] = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

#: ``medsr precision --measure`` picks bf16 when bf16 convolutions measure at least this much faster.
CPU_BF16_MIN_GAIN = 1.3
#: Environment variable naming the cache folder (default: the user cache folder, see :func:`cache_dir`).
CACHE_ENV = "MEDSR_CACHE_DIR"
_CACHE_FILE = "precision.json"


@dataclass(frozen=True)
class CpuInfo:
    """What the precision rule reads about the CPU (Linux ``/proc/cpuinfo``; empty elsewhere).

    Attributes:
        vendor: ``vendor_id`` (``'GenuineIntel'``, ``'AuthenticAMD'``, ...) or ``''``.
        model: ``model name`` or ``''``.
        flags: the ISA flags (``'avx512_bf16'``, ``'amx_bf16'``, ...).
    """

    vendor: str
    model: str
    flags: frozenset[str]

    @property
    def key(self) -> str:
        """Cache key: CPU model, bf16-related flags and the PyTorch version (kernels change with it)."""
        bf16 = ",".join(sorted(self.flags & {"avx512_bf16", "amx_bf16", "amx_tile"}))
        return f"{self.vendor}|{self.model}|{bf16}|torch {torch.__version__}"


_CPUINFO_PATH = "/proc/cpuinfo"


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """The first CPU's vendor, model name and flags from ``/proc/cpuinfo`` (empty when unreadable)."""
    fields: dict[str, str] = {}
    try:
        with open(_CPUINFO_PATH, encoding="ascii", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return CpuInfo(fields.get("vendor_id", ""), fields.get("model name", ""), frozenset(fields.get("flags", "").split()))


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware: x86 with AVX512-BF16 or AMX-BF16."""
    return bool(cpu_info().flags & {"avx512_bf16", "amx_bf16"})


def cpu_rule_precision(info: CpuInfo | None = None) -> str:
    """``'bf16'`` or ``'fp32'`` for ``info`` (default: this CPU) by vendor and ISA (module docstring)."""
    info = cpu_info() if info is None else info
    if "amx_bf16" in info.flags:
        return "bf16"
    if "avx512_bf16" in info.flags and info.vendor == "AuthenticAMD":
        return "bf16"
    return "fp32"


def cache_dir() -> Path:
    """Where per-machine choices are cached: ``$MEDSR_CACHE_DIR``, else ``$XDG_CACHE_HOME/medsr``,
    else ``~/.cache/medsr`` (``%LOCALAPPDATA%/medsr`` on Windows)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "medsr"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "medsr"


def _read_cache() -> dict[str, Any]:
    path = cache_dir() / _CACHE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_cpu_precision(info: CpuInfo | None = None) -> str | None:
    """The choice ``medsr precision --measure`` cached for this CPU and PyTorch, or None."""
    entry = _read_cache().get((cpu_info() if info is None else info).key)
    choice = entry.get("precision") if isinstance(entry, dict) else None
    return choice if choice in ("fp32", "bf16") else None


def auto_cpu_precision() -> tuple[str, str]:
    """``(precision, source)`` of ``'auto'`` on this CPU; source is ``'cache'`` or ``'rule'``."""
    cached = cached_cpu_precision()
    return (cached, "cache") if cached is not None else (cpu_rule_precision(), "rule")


def dense_conv_gflops(channels: int, side: int, *, channels_last: bool = True, bf16: bool = False, reps: int = 5) -> float:
    """Best GFLOP/s (2 x MACs / min time over ``reps``, after a warm-up) of one dense 3x3
    ``channels -> channels`` convolution on a ``1 x channels x side x side`` CPU input, under
    inference_mode (bf16: autocast), at the current thread count. Used by ``medsr precision
    --measure`` and the machine-limit probe of ``benchmarks/``; never by ``'auto'``."""
    conv = nn.Conv2d(channels, channels, 3, padding=1).eval()
    x = torch.randn(1, channels, side, side)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        conv(x)
        for _ in range(reps):
            start = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - start)
    return 2.0 * channels * channels * 9 * side * side / best / 1e9


def measure_cpu_precision(*, rounds: int = 3, save: bool = True) -> dict[str, Any]:
    """Measure bf16 against fp32 convolutions on this CPU and (``save``) cache the choice for ``'auto'``.

    The gain is the median over ``rounds`` of the bf16 / fp32 GFLOP/s of a 64-channel 3x3 convolution on
    a 128 x 128 map; bf16 is chosen when the CPU has native bf16 and the gain is at least
    :data:`CPU_BF16_MIN_GAIN`. Returns the cache entry (``precision``, ``bf16_gain``, ``cpu``, ``key``,
    ``rule``, ``path``).
    """
    info = cpu_info()
    gains = sorted(
        dense_conv_gflops(64, 128, bf16=True) / dense_conv_gflops(64, 128, bf16=False) for _ in range(max(1, rounds))
    )
    gain = gains[len(gains) // 2]
    choice = "bf16" if cpu_has_native_bf16() and gain >= CPU_BF16_MIN_GAIN else "fp32"
    entry = {"precision": choice, "bf16_gain": round(gain, 3), "cpu": info.model, "rule": cpu_rule_precision(info),
             "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = cache_dir() / _CACHE_FILE
    if save:
        data = _read_cache()
        data[info.key] = entry
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2), encoding="utf-8")
        except OSError as exc:
            raise OptionError(f"cannot write the precision cache {path} ({exc.strerror}); set {CACHE_ENV} to a writable folder") from exc
    return {**entry, "key": info.key, "path": str(path)}


#: Largest max-abs difference (HU) from fp32 that ``'auto'`` accepts for bf16 on a CPU.
BF16_MAX_HU = 8.0
#: Measured max-abs bf16 - fp32 difference (HU) of the shipped networks on real CT: the larger of two
#: crops of the TotalSegmentator example CT (``tests/test_engine_bf16_native.py`` re-measures them)
#: and, where measured, two whole 512 x 512 slices (``benchmarks/bench_compare.py``, AMD EPYC).
#: ``'auto'`` runs a (model, scale) above :data:`BF16_MAX_HU` in fp32 on a CPU.
BF16_MEASURED_MAX_HU: dict[tuple[str, int], float] = {
    # dridsr, mdrn, srda-small: 4 whole slices, with the fused bf16 body (models/fused.py; dridsr's
    # concatenations as accumulating convolutions raised x3/x4 from 4.3/5.0), MDRN's attention scale in fp32
    ("dridsr", 2): 4.6, ("dridsr", 3): 5.9, ("dridsr", 4): 6.9,
    ("mdrn", 2): 7.5, ("mdrn", 4): 7.0, ("mdrn", 8): 19.0,  # x2: aggregation in bf16, fuse conv as a sum; statistic by GEMM
    ("idman-small", 2): 5.6, ("idman-small", 4): 7.7,  # streams in fp32 (idman._reduced_groups; were 8.8 / 9.0), MAB gate folded
    ("srda-small", 4): 4.7,  # whole slices, with its last upsampler stage + tail folded in fp32
    # w2amsn: residual stream in fp32 between its blocks and the global attention in fp32 (were 9.4 / 5.6 / 5.9);
    # fused blocks (ReLUs in the convs, attention folded into its 1x1 conv, fuse conv as a sum of parts)
    ("w2amsn-small", 2): 6.9, ("w2amsn-s", 2): 4.9, ("w2amsn-s", 4): 4.6,
}


def bf16_allowed(model: str | None, scale: int | None) -> bool:
    """False for a shipped (model, scale) whose measured bf16 error exceeds :data:`BF16_MAX_HU`."""
    return BF16_MEASURED_MAX_HU.get((str(model), int(scale or 0)), 0.0) <= BF16_MAX_HU


def resolve_precision(precision: str, device: torch.device, *, model: str | None = None, scale: int | None = None) -> str:
    """The precision that runs for ``precision`` on ``device``: ``'fp32'``, ``'bf16'`` or ``'fp16'``
    (deterministic; :class:`OptionError` for ``'fp16'`` on a CPU or an unknown name). With ``model``
    and ``scale``, ``'auto'`` on a CPU keeps fp32 for a network whose bf16 error exceeds :data:`BF16_MAX_HU`."""
    if precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        if device.type != "cpu":
            return "fp32"
        choice = auto_cpu_precision()[0]
        return "fp32" if choice == "bf16" and model is not None and not bf16_allowed(model, scale) else choice
    if precision == "fp16" and device.type == "cpu":
        raise OptionError("precision 'fp16' needs a GPU; on CPU use 'bf16' (fast with AVX512-BF16/AMX) or 'fp32'")
    return precision


def autocast_dtype(precision: str, device: torch.device, *, model: str | None = None, scale: int | None = None) -> torch.dtype | None:
    """Reduced dtype for ``precision`` on ``device`` (None = plain fp32); ``model``, ``scale`` as for
    :func:`resolve_precision`."""
    return _AUTOCAST_DTYPES[resolve_precision(precision, device, model=model, scale=scale)]


def precision_name(dtype: torch.dtype | None) -> str:
    """``'fp32'``, ``'bf16'`` or ``'fp16'`` for an autocast dtype (None = fp32)."""
    return _NAMES[dtype]
