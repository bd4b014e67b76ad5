"""Batched slice inference: device choice, batch and tile from a memory budget, autocast, OOM fallback,
x8 self-ensemble, progress and cancel.

:func:`run_slices` runs a network ``N x 1 x h x w -> N x 1 x (s h) x (s w)`` (float, intensities in
[0, 1]) over a stack of 2D slices ``(n, h, w)`` (numpy order: slice, row = y, column = x), reading one
batch at a time and writing each result straight into ``out[start:stop]``.

Memory model (an estimate): a one-time probe per module runs it on ``1 x 1 x a x a`` and
``1 x 1 x 2a x 2a`` inputs (``a = max(32, min_lr_size)``) and records the peak bytes of tensors alive
at once (every aten op's outputs, tracked by storage, on any device);
the slope is the activation bytes per LR pixel, the intercept the size-independent part (e.g.
weights cast to bf16). A batch of ``b`` slices (or tiles) of ``h x w`` LR pixels is then assumed to
need ``intercept + 1.25 * slope * b*h*w + host buffers`` bytes; the 1.25 covers allocator slack and
convolution workspaces the probe does not see. Default budget: CPU / MPS ``min(2048 MiB, 25 % of the
available RAM)``; CUDA ``min(4096 MiB, 50 % of the free GPU memory)``.

Tiling: slices larger than the budget allows (or than ``tile``) are cut into ``tile x tile`` LR tiles
overlapping by at least ``tile_overlap`` LR px, spread evenly; the tiles' outputs are blended with
separable weights that are 0 within ``tile_overlap / 4`` LR px of an inner tile edge, rise as
``sin^2`` over the middle half of the overlap, and sum to exactly 1 at every output pixel. The tiled
result therefore equals the untiled one (to float rounding) for any network whose receptive-field
radius is at most ``tile_overlap / 4`` LR px (4 px for the default 16). Deeper networks see slightly
different context near seams (the blend hides it), and networks with global pooling (channel
attention over the whole slice: RCAN-style CA, CCA) are not exactly tile-invariant at all: their
statistics are computed per tile.

Precision: ``'auto'`` is fp16 autocast on CUDA, bf16 autocast on CPUs where it pays (native bf16,
x86 AVX512-BF16 or AMX-BF16, *and* a one-time 50 ms probe that measures bf16 convolutions at least
1.3x faster than fp32: :func:`cpu_bf16_pays`) and fp32 elsewhere (MPS, other CPUs); ``'fp32'``
forces full precision everywhere. Why a probe: on an AMD EPYC (AVX512-BF16) bf16 convolutions ran
1.9x faster than fp32 and the shipped networks 1.5-2.6x faster, while on an Intel Xeon VM that also
reports AVX512-BF16 (no AMX) they ran at half the fp32 speed (``benchmarks/RESULTS.md``). Its error against fp32 on the
shipped networks is small beside the networks' own error because the layers on the image path (the
ones that read the image and those after the global skip; each network's ``full_precision_layers``)
stay in fp32 (``reparam.prepare_for_inference``): on real CT slices in HU (shipped weights, 256^2
TotalSeg crops; ``tests/test_engine_bf16_accuracy.py`` pins dridsr and mdrn) RMSE 0.2-1.1 HU and max 1.4-5 HU (3.1-3.8 and 15-27 HU with every
layer in bf16), against the networks' own 16-45 HU RMSE to the true slices. Use ``precision='fp32'``
for outputs that must not depend on the CPU model. An fp16 overflow (inf/nan output from a finite
input) is redone in fp32 for the rest of the run, with a warning. Outputs are float32.

Speed (CPU): the module runs under ``torch.inference_mode`` in channels_last; a batch holds at most
:data:`_CPU_BATCH_PIXELS` LR pixels (one 256 x 256 slice: on a CPU larger batches are not faster, only
bigger). Importing this module sets ``THP_MEM_ALLOC_ENABLE=1`` unless already set, so PyTorch backs
its large CPU tensors with transparent huge pages: every fresh 512 x 512 x 64 activation otherwise
pays ~16k page faults (measured 1.3-1.5x slower end to end on our VMs); it takes effect when set
before PyTorch's first allocation of 2 MiB or more. ``compile=True`` runs full batches through
``torch.compile`` (eager fallback with a warning when compiling fails). It is off by default: on our
CPU it did not pay once the exact rewrites below are applied (512^2 slices, one thread: MDRN x2 3.5
vs 2.0 s/slice eager, dridsr x2 1.8 vs 1.4, w2amsn-small x2 2.35 vs 2.29; before the rewrites MDRN
gained 1.4x); it is unmeasured on GPUs. Callers should apply the exact inference
re-parameterisations of :func:`MedSRLib.models.reparam.prepare_for_inference` to a freshly loaded
module before calling :func:`run_slices` (the engine itself never changes a module's structure). ``benchmarks/`` measures all of this.

Out of memory (``torch.OutOfMemoryError`` or an allocator "out of memory" error): the cache is emptied
and the batch halved; at batch 1 the tile side is halved (tiling starts) down to
``max(2 * tile_overlap, min_lr_size, 32)``; then the run continues on the CPU with a
``RuntimeWarning`` (also logged). Finished slices are kept; the failed batch is redone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time

# Transparent huge pages for PyTorch's large CPU tensors (module docstring); must precede torch's first
# allocation of >= 2 MiB to take effect, hence before ``import torch`` where possible.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import (
    CancelledError,
    DeviceError,
    InputSizeError,
    ModelOutputError,
    OptionError,
    ScaleError,
    UnsupportedImageError,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

_MIB = 1 << 20
#: Probe side (LR px) of the memory probe (also run at twice this side).
_PROBE_SIDE = 32
#: Factor on the probed activation bytes (allocator slack, convolution workspaces).
_MEMORY_SAFETY = 1.25
#: Smallest tile the automatic / OOM tiling goes down to (LR px), besides ``2 * tile_overlap``.
_MIN_AUTO_TILE = 32
#: On CPU an automatic batch holds at most this many LR pixels (one 256 x 256 slice): measured on 2
#: cores, batching 512 x 512 slices is not faster (dridsr x2: 2.19 s/slice at batch 1, 2.38 at 2-8)
#: while memory grows by one slice's activations per slice; 128 x 128 slices gain nothing past 4.
_CPU_BATCH_PIXELS = 1 << 16

#: Achieved fp32 MAC/s per CPU thread of the fast path (prepare_for_inference + channels_last), one
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


# --------------------------------------------------------------------------------------------- device


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


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware: x86 with AVX512-BF16 or AMX-BF16, read from the
    CPU flags of ``/proc/cpuinfo`` (Linux). False elsewhere and when unknown (emulated bf16 is slower
    than fp32, so 'auto' must not pick it on a guess)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


#: 'auto' runs bf16 on a CPU only when bf16 convolutions measure at least this much faster than fp32.
CPU_BF16_MIN_GAIN = 1.3


def dense_conv_gflops(channels: int, side: int, *, channels_last: bool = True, bf16: bool = False, reps: int = 5) -> float:
    """Best GFLOP/s (2 x MACs / min time over ``reps``, after a warm-up) of one dense 3x3
    ``channels -> channels`` convolution on a ``1 x channels x side x side`` CPU input, under
    inference_mode (bf16: autocast), at the current thread count. The machine-limit probe of
    ``benchmarks/`` and :func:`cpu_bf16_pays` both use it."""
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


def _conv_bf16_gain() -> float:
    """bf16 / fp32 speed of a 64-channel 3x3 convolution on a 96 x 96 channels_last map (~50 ms)."""
    return dense_conv_gflops(64, 96, bf16=True) / dense_conv_gflops(64, 96, bf16=False)


@functools.lru_cache(maxsize=1)
def cpu_bf16_pays() -> bool:
    """True when 'auto' should run bf16 on this CPU: it computes bf16 natively
    (:func:`cpu_has_native_bf16`) *and* a one-time probe measures bf16 convolutions at least
    :data:`CPU_BF16_MIN_GAIN` x faster than fp32. The flag alone is not enough: on an AMD EPYC with
    AVX512-BF16 bf16 ran 1.9x faster than fp32, on an Intel Xeon VM with AVX512-BF16 (no AMX) 0.5x."""
    if not cpu_has_native_bf16():
        return False
    gain = _conv_bf16_gain()
    logger.info("engine: bf16 convolution runs %.2fx fp32 speed on this CPU; 'auto' uses %s", gain,
                "bf16" if gain >= CPU_BF16_MIN_GAIN else "fp32")
    return gain >= CPU_BF16_MIN_GAIN


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` on ``device`` (None = plain fp32)."""
    if precision == "auto":
        # CUDA: fp16 keeps 10 mantissa bits (bf16: 7), better for [0, 1] images; an fp16 overflow is
        # caught by _Forward, which then continues in fp32. CPU: bf16 where the hardware has it.
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_bf16_pays() else None
    if precision == "fp16" and device.type == "cpu":
        raise OptionError("precision 'fp16' needs a GPU; on CPU use 'bf16' (fast with AVX512-BF16/AMX) or 'fp32'")
    return _AUTOCAST_DTYPES[precision]


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


def _available_ram_bytes() -> int:
    """Available host RAM in bytes (:func:`MedSRLib.safety.available_memory_bytes`, else 8 GiB)."""
    from .safety import available_memory_bytes

    found = available_memory_bytes()
    return found if found is not None else 8 << 30


def default_memory_budget_bytes(device: torch.device) -> int:
    """The budget used when ``memory_budget_mb`` is None: CPU / MPS ``min(2048 MiB, 25 % of available
    RAM)``; CUDA ``min(4096 MiB, 50 % of the device's free memory)``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(min(4096 * _MIB, 0.5 * free))
    return int(min(2048 * _MIB, 0.25 * _available_ram_bytes()))


# -------------------------------------------------------------------------------------------- options


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class EngineOptions:
    """How :func:`run_slices` runs a network (every field is validated by name on construction).

    Attributes:
        device: ``'auto'`` (CUDA, then MPS, then CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'``.
        batch_size: slices per forward pass; None = the most the memory budget allows.
        memory_budget_mb: activation memory budget in MiB; None = :func:`default_memory_budget_bytes`.
        tile: LR tile side in px; None = no tiling unless one slice alone exceeds the budget.
        tile_overlap: overlap of neighbouring tiles in LR px (tiles must be >= 2 x overlap).
        ensemble: x8 geometric self-ensemble (flips x 90-degree rotations; 8x slower).
        precision: ``'auto'`` (fp16 autocast on CUDA, bf16 on CPUs where :func:`cpu_bf16_pays`, else fp32), ``'fp32'``, ``'bf16'``
            (autocast; CPU or GPU), ``'fp16'`` (autocast; GPU only).
        channels_last: run convolutions in channels_last memory format on CPU and CUDA.
        threads: CPU threads for the run (restored afterwards); None = PyTorch's current setting;
            ``'auto'`` = the cores other processes leave free (:func:`free_cpu_count`): on a shared
            machine more threads than free cores make every operation wait at OpenMP barriers (measured
            up to 70x slower for IDMAN with 2 threads beside one busy core).
        compile: run full batches through ``torch.compile`` (CPU / CUDA; first batch pays the
            compilation, tens of seconds; eager fallback with a warning if it fails).
    """

    device: str | torch.device = "auto"
    batch_size: int | None = None
    memory_budget_mb: float | None = None
    tile: int | None = None
    tile_overlap: int = 16
    ensemble: bool = False
    precision: str = "auto"
    channels_last: bool = True
    threads: int | str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
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


# ---------------------------------------------------------------------------------------------- tiles


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """LR start positions of tiles of side ``tile`` covering ``[0, length)``, evenly spread, with
    neighbours overlapping by at least ``overlap`` px (one tile when ``length <= tile``)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def balanced_tile(length: int, largest: int, overlap: int, *, minimum: int = 1) -> int:
    """The smallest tile side (<= ``largest``) that covers ``length`` with as few tiles as ``largest`` does.

    E.g. 512 px with at most 344 px tiles and 16 px overlap: 2 tiles of 264 px, not 2 of 344 px
    (1.06x instead of 1.8x the untiled area per axis pair)."""
    if length <= largest:
        return largest
    count = math.ceil((length - overlap) / (largest - overlap))
    return min(largest, max(minimum, 2 * overlap, math.ceil((length - overlap) / count) + overlap))


def _rise(u: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    """0 below ``centre - half_width``, 1 above ``centre + half_width``, ``sin^2`` ramp between."""
    if half_width <= 0:
        return (u >= centre).astype(np.float64)
    t = np.clip((u - centre + half_width) / (2.0 * half_width), 0.0, 1.0)
    return np.sin(0.5 * np.pi * t) ** 2


def tile_weights(starts: list[int], *, tile: int, length: int, overlap: int, scale: int) -> list[np.ndarray]:
    """Per tile, float32 blending weights over its ``scale * tile`` output pixels along one axis.

    Weights are evaluated at output-pixel centres (LR units ``(k + 0.5) / scale``); across tiles they
    sum to 1 at every output pixel, and a tile's weight is 0 within ``overlap / 4`` LR px of an inner edge.
    """
    u = (np.arange(length * scale) + 0.5) / scale
    ends = [min(s + tile, length) for s in starts]
    weights = []
    for i, (start, end) in enumerate(zip(starts, ends)):
        w = np.ones_like(u)
        if i > 0:
            w *= _rise(u, (start + ends[i - 1]) / 2.0, overlap / 4.0)
        if i + 1 < len(starts):
            w *= 1.0 - _rise(u, (starts[i + 1] + end) / 2.0, overlap / 4.0)
        weights.append(w[start * scale : end * scale].astype(np.float32))
    return weights


# -------------------------------------------------------------------------------------------- forward


class _Forward:
    """``N x 1 x h x w`` float32 on the device -> ``N x 1 x (s h) x (s w)`` float32 (autocast, ensemble)."""

    def __init__(
        self,
        module: nn.Module,
        *,
        scale: int,
        device: torch.device,
        dtype: torch.dtype | None,
        channels_last: bool,
        ensemble: bool,
    ) -> None:
        self.module, self.scale, self.device, self.dtype = module, scale, device, dtype
        self.channels_last, self.ensemble = channels_last, ensemble
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.compiled_shape: tuple[int, ...] | None = None

    def compile_for(self, shape: tuple[int, ...]) -> None:
        """Use ``torch.compile(module)`` for inputs of exactly ``shape`` (others run eagerly)."""
        if self.compiled is None:
            self.compiled = torch.compile(self.module, dynamic=False)
        self.compiled_shape = tuple(shape)

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is None or tuple(x.shape) != self.compiled_shape:
            return self.module(x)
        try:
            return self.compiled(x)
        except Exception as exc:  # noqa: BLE001 -- compilation problems: continue eagerly
            if _is_out_of_memory(exc):
                raise
            message = f"MedSR: torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); running eagerly"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            logger.warning(message)
            self.compiled = None
            return self.module(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ensemble:
            return self._once(x)
        total: torch.Tensor | None = None
        for flip in (False, True):
            for quarter_turns in range(4):
                xt = torch.rot90(x.flip(-1) if flip else x, quarter_turns, dims=(-2, -1))
                y = torch.rot90(self._once(xt), -quarter_turns, dims=(-2, -1))
                y = y.flip(-1) if flip else y
                total = y.clone() if total is None else total.add_(y)
        assert total is not None
        return total.div_(8.0)

    def _once(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        context = (
            torch.autocast(device_type=self.device.type, dtype=self.dtype)
            if self.dtype is not None
            else contextlib.nullcontext()
        )
        with context:
            y = self._network(x)
        if self.dtype == torch.float16 and isinstance(y, torch.Tensor) and not bool(torch.isfinite(y).all()):
            if bool(torch.isfinite(x).all()):  # the input is finite: fp16 overflowed
                message = "MedSR: fp16 autocast overflowed (inf/nan output); continuing in fp32"
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                logger.warning(message)
                self.dtype = None
                return self._once(x)
        n, _, h, w = x.shape
        expected = (n, 1, self.scale * h, self.scale * w)
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != expected:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ModelOutputError(
                f"the network returned {got} for input {tuple(x.shape)}; expected {expected} "
                f"(N x 1 x {self.scale}h x {self.scale}w): load the model built for scale x{self.scale}"
            )
        return y.float()


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storages alive at once, over every aten op run inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[tuple[str, int], tuple[int, list[weakref.ref]]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        result = func(*args, **(kwargs or {}))
        for t in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                nbytes, refs = self._live.get((str(t.device), storage.data_ptr()), (0, []))
                refs.append(weakref.ref(t))
                self._live[(str(t.device), storage.data_ptr())] = (max(nbytes, storage.nbytes()), refs)
        total = 0
        for key in list(self._live):
            nbytes, refs = self._live[key]
            refs[:] = [r for r in refs if r() is not None]
            if refs:
                total += nbytes
            else:
                del self._live[key]
        self.peak = max(self.peak, total)
        return result


def _peak_forward_bytes(forward: _Forward, side: int) -> int:
    """Peak bytes of live tensors (input included) while ``forward`` runs on one ``side x side`` slice."""
    x = _move(torch.rand(1, 1, side, side), forward.device)
    tracker = _LiveBytes()
    with tracker:
        forward(x)
    return tracker.peak + x.nelement() * x.element_size()


#: Probe results per module (weakly held): key -> (bytes per LR pixel, constant bytes).
_PROBES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], tuple[float, float]]] = weakref.WeakKeyDictionary()


def _activation_bytes(forward: _Forward, *, min_lr_size: int) -> tuple[float, float]:
    """``(bytes per LR pixel, constant bytes)`` of ``forward``'s activations, from two probe sizes
    (cached per module, device, precision, memory format, ensemble and scale)."""
    side = max(_PROBE_SIDE, int(min_lr_size))
    key = (str(forward.device), forward.dtype, forward.channels_last, forward.ensemble, forward.scale, side)
    cache = _PROBES.setdefault(forward.module, {})
    if key not in cache:
        small, large = _peak_forward_bytes(forward, side), _peak_forward_bytes(forward, 2 * side)
        per_pixel = (large - small) / (3.0 * side * side)
        if per_pixel <= 0:  # no size dependence seen: be conservative
            per_pixel = large / (4.0 * side * side)
        cache[key] = (per_pixel, max(0.0, small - per_pixel * side * side))
    return cache[key]


# ------------------------------------------------------------------------------------------------ run


def _busy_ticks() -> tuple[float, float]:
    """(all CPUs' busy clock ticks, this process's CPU ticks) from /proc (Linux)."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [float(v) for v in fh.readline().split()[1:]]
    with open("/proc/self/stat", encoding="ascii") as fh:
        own = fh.read().rsplit(")", 1)[1].split()
    return sum(fields[:8]) - fields[3] - fields[4], float(own[11]) + float(own[12])  # minus idle, iowait


def free_cpu_count(sample_seconds: float = 0.25) -> int:
    """CPUs this process may use minus those other processes kept busy over ``sample_seconds`` (>= 1).

    Linux: from /proc/stat and /proc/self/stat; elsewhere the usable CPU count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy0, own0 = _busy_ticks()
        start = time.perf_counter()
        time.sleep(sample_seconds)
        busy1, own1 = _busy_ticks()
        elapsed = time.perf_counter() - start
    except (OSError, ValueError, IndexError):
        return max(1, cores)
    total_cpus = os.cpu_count() or cores
    others = max(0.0, (busy1 - busy0) - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / elapsed
    others *= cores / total_cpus  # other load spread over all CPUs; our share of it
    return max(1, min(cores, math.floor(cores - others + 0.25)))


@contextlib.contextmanager
def _num_threads(threads: int | str | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    if threads == "auto":
        threads = free_cpu_count()
        logger.info("engine: %d CPU threads (free cores)", threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _Runner:
    """State of one :func:`run_slices` call: device, batch, tile (all may change on out-of-memory)."""

    def __init__(
        self,
        module: nn.Module,
        *,
        scale: int,
        shape: tuple[int, int, int],
        options: EngineOptions,
        min_lr_size: int,
        device: torch.device,
        dtype: torch.dtype | None,
    ) -> None:
        self.module, self.scale, self.options, self.min_lr_size = module, scale, options, min_lr_size
        self.n, self.h, self.w = shape
        self.min_tile = max(2 * options.tile_overlap, min_lr_size, _MIN_AUTO_TILE)
        self._use_device(device, dtype)

    # -- planning
    def _use_device(self, device: torch.device, dtype: torch.dtype | None) -> None:
        channels_last = self.options.channels_last and device.type in ("cpu", "cuda")
        self.device = device
        self.module = _move(self.module.eval(), device, channels_last=channels_last)
        self.forward = _Forward(
            self.module,
            scale=self.scale,
            device=device,
            dtype=dtype,
            channels_last=channels_last,
            ensemble=self.options.ensemble,
        )
        try:
            per_pixel, constant = _activation_bytes(self.forward, min_lr_size=self.min_lr_size)
        except Exception as exc:  # noqa: BLE001 -- only out-of-memory is handled, the rest re-raised
            if not (_is_out_of_memory(exc) and device.type != "cpu"):
                raise
            fallback = True
        else:
            fallback = False
        if fallback:
            self._fall_back_to_cpu("while probing memory use")
            return
        self._plan(per_pixel, constant)

    def _plan(self, per_pixel: float, constant: float) -> None:
        opts, s2 = self.options, self.scale * self.scale
        if opts.memory_budget_mb is not None:
            budget = opts.memory_budget_mb * _MIB
        else:
            budget = default_memory_budget_bytes(self.device)
        # activations + host copies of the input (4 B) and output (4 s^2 B, twice when tiled)
        per_pixel = _MEMORY_SAFETY * per_pixel + 4.0 + 8.0 * s2
        available = max(budget - constant, per_pixel)
        tile = opts.tile
        if tile is None and self.h * self.w * per_pixel > available:
            largest = max(self.min_tile, int(math.sqrt(available / per_pixel)) // 8 * 8)
            tile = balanced_tile(max(self.h, self.w), largest, opts.tile_overlap, minimum=self.min_tile)
        self._set_tile(tile)
        if opts.batch_size is not None:
            batch = opts.batch_size
        else:
            batch = int(available // (self.tile_h * self.tile_w * per_pixel))
            if self.device.type == "cpu":
                batch = min(batch, _CPU_BATCH_PIXELS // (self.h * self.w))
        self.batch = max(1, min(batch, self.n))
        if opts.compile and self.device.type in ("cpu", "cuda"):
            self.forward.compile_for((self.batch, 1, self.tile_h, self.tile_w))
        logger.info(
            "engine: %s, %s, batch %d, tile %s, ~%.0f B/LR px, budget %.0f MiB",
            self.device, self.forward.dtype or "fp32", self.batch, self.tile, per_pixel, budget / _MIB,
        )

    def _set_tile(self, tile: int | None) -> None:
        self.tile = tile if tile is not None and tile < max(self.h, self.w) else None
        side = self.tile or max(self.h, self.w)
        self.tile_h, self.tile_w = min(side, self.h), min(side, self.w)
        if self.tile is None:
            return
        overlap = self.options.tile_overlap
        self.starts_y = tile_starts(self.h, self.tile, overlap)
        self.starts_x = tile_starts(self.w, self.tile, overlap)
        self.weights_y = tile_weights(self.starts_y, tile=self.tile, length=self.h, overlap=overlap, scale=self.scale)
        self.weights_x = tile_weights(self.starts_x, tile=self.tile, length=self.w, overlap=overlap, scale=self.scale)

    # -- out of memory
    def _can_shrink(self) -> bool:
        return self.batch > 1 or (self.tile or max(self.h, self.w)) > self.min_tile or self.device.type != "cpu"

    def _shrink(self) -> None:
        """Halve the batch; at batch 1 halve the tile; at the smallest tile fall back to the CPU."""
        _empty_cache(self.device)
        side = self.tile or max(self.h, self.w)
        if self.batch > 1:
            self.batch = max(1, self.batch // 2)
            logger.warning("engine: out of memory on %s; retrying with batch %d", self.device, self.batch)
        elif side > self.min_tile:
            self._set_tile(max(self.min_tile, -(-side // 2)))
            logger.warning("engine: out of memory on %s at batch 1; retrying with %s px tiles", self.device, self.tile)
        else:
            self._fall_back_to_cpu(f"even at batch 1 with {side} px tiles")

    def _fall_back_to_cpu(self, when: str) -> None:
        message = f"MedSR: out of memory on {self.device} {when}; continuing on the CPU (slower)"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        logger.warning(message)
        _empty_cache(self.device)
        cpu = torch.device("cpu")
        self._use_device(cpu, _autocast_dtype("auto" if self.options.precision == "fp16" else self.options.precision, cpu))

    # -- processing
    def _read(self, slices: Any, start: int, stop: int) -> torch.Tensor:
        batch = np.asarray(slices[start:stop], dtype=np.float32)
        if batch.shape != (stop - start, self.h, self.w):
            raise UnsupportedImageError(
                f"slices[{start}:{stop}] returned shape {batch.shape}; expected {(stop - start, self.h, self.w)}"
            )
        if not batch.flags.writeable or (self.device.type == "cpu" and batch.base is not None):
            batch = batch.copy()  # on the CPU the module runs on this memory: never on the caller's array
        return _move(torch.from_numpy(batch)[:, None], self.device)

    def _process(self, x: torch.Tensor) -> np.ndarray:
        """``(b, s h, s w)`` float32 result of one batch ``x`` (``b x 1 x h x w`` on the device)."""
        if self.tile is None:
            return self.forward(x)[:, 0].cpu().numpy()
        s = self.scale
        result = np.zeros((x.shape[0], s * self.h, s * self.w), dtype=np.float32)
        for y0, wy in zip(self.starts_y, self.weights_y):
            for x0, wx in zip(self.starts_x, self.weights_x):
                tile = x[:, :, y0 : y0 + self.tile_h, x0 : x0 + self.tile_w]
                pred = self.forward(tile)[:, 0].cpu().numpy()  # may alias the input: not written
                weighted = pred * (wy[:, None] * wx[None, :])
                result[:, s * y0 : s * (y0 + self.tile_h), s * x0 : s * (x0 + self.tile_w)] += weighted
        return result

    def run(self, slices: Any, out: Any, progress: ProgressCallback | None, cancel: CancelCallback | None) -> None:
        done = 0
        if progress is not None:
            progress(0, self.n)
        while done < self.n:
            if cancel is not None and cancel():
                raise CancelledError(f"run cancelled after {done} of {self.n} slices")
            stop = min(self.n, done + self.batch)
            try:
                result = self._process(self._read(slices, done, stop))
            except Exception as exc:  # noqa: BLE001 -- only out-of-memory is handled, the rest re-raised
                if not (_is_out_of_memory(exc) and self._can_shrink()):
                    raise
                result = None  # leave the except block first: its traceback holds the failed tensors
            if result is None:
                self._shrink()
                continue
            out[done:stop] = result
            done = stop
            if progress is not None:
                progress(done, self.n)


def run_slices(
    module: nn.Module,
    slices: Any,
    *,
    scale: int,
    out: Any = None,
    options: EngineOptions = EngineOptions(),
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    min_lr_size: int = 1,
) -> Any:
    """Super-resolve a stack of slices with ``module`` (``N x 1 x h x w -> N x 1 x (s h) x (s w)``).

    Args:
        module: the network; put in eval mode and moved (in place, with its memory format) to the
            device, where it stays.
        slices: ``(n, h, w)`` stack: anything with ``len()``, ``.shape`` and ``slices[a:b]`` returning
            float32 ``(b - a, h, w)`` in [0, 1] (read one batch at a time; never modified).
        scale: integer in-plane scale ``s``.
        out: None (a new float32 ``(n, s h, s w)`` array) or anything with ``out[a:b] = array``.
        options: :class:`EngineOptions`.
        progress: ``progress(done_slices, total)`` at 0 and after every batch.
        cancel: polled before every batch; True raises :class:`~MedSRLib.errors.CancelledError`
            (``out`` may then hold some finished slices).
        min_lr_size: smallest LR side the network accepts (``ModelSpec.min_lr_size``).

    Returns:
        ``out`` (the new array when ``out`` was None).
    """
    shape = tuple(getattr(slices, "shape", ()))
    if len(shape) != 3 or len(slices) != shape[0]:
        raise UnsupportedImageError(f"slices must be an (n, h, w) stack of 2D slices; got shape {shape}")
    n, h, w = (int(v) for v in shape)
    if not _is_int(scale) or scale < 1:
        raise ScaleError(f"scale must be a positive integer; got {scale!r}")
    if not isinstance(options, EngineOptions):
        raise OptionError(f"options must be an EngineOptions; got {type(options).__name__}")
    if not _is_int(min_lr_size) or min_lr_size < 1:
        raise OptionError(f"min_lr_size must be a positive integer; got {min_lr_size!r}")
    if n and min(h, w) < min_lr_size:
        raise InputSizeError(f"slices of {h}x{w} px are smaller than the model's minimum of {min_lr_size} px")
    if options.tile is not None and options.tile < min_lr_size:
        raise InputSizeError(f"tile {options.tile} px is smaller than the model's minimum input of {min_lr_size} px")
    device = resolve_device(options.device)
    dtype = _autocast_dtype(options.precision, device)
    expected = (n, scale * h, scale * w)
    if out is not None and tuple(getattr(out, "shape", expected)) != expected:
        raise OptionError(f"out has shape {tuple(out.shape)}; expected {expected} (n, scale*h, scale*w)")
    if out is None:
        out = np.empty(expected, dtype=np.float32)
    if n == 0:
        if progress is not None:
            progress(0, 0)
        return out
    with _num_threads(options.threads), torch.inference_mode():
        runner = _Runner(
            module,
            scale=int(scale),
            shape=(n, h, w),
            options=options,
            min_lr_size=int(min_lr_size),
            device=device,
            dtype=dtype,
        )
        runner.run(slices, out, progress, cancel)
    return out


def achieved_macs_per_second(device: str | torch.device, precision: str = "auto") -> float:
    """The documented achieved throughput (MAC/s) :func:`estimate_seconds` assumes for ``device``'s type:
    CPU = :data:`CPU_MACS_PER_SECOND_PER_THREAD` x ``torch.get_num_threads()`` (x :data:`CPU_BF16_SPEEDUP`
    when ``precision`` runs bf16 there); CUDA and MPS constants."""
    kind = torch.device(device).type
    if kind == "cuda":
        return CUDA_MACS_PER_SECOND
    if kind == "mps":
        return MPS_MACS_PER_SECOND
    bf16 = _autocast_dtype(precision, torch.device("cpu")) == torch.bfloat16
    return CPU_MACS_PER_SECOND_PER_THREAD * max(1, torch.get_num_threads()) * (CPU_BF16_SPEEDUP if bf16 else 1.0)


def estimate_seconds(
    *, macs_per_lr_pixel: float, lr_pixels_total: int, device: str | torch.device, ensemble: bool,
    precision: str = "auto",
) -> float:
    """Rough network run time in seconds: MACs / :func:`achieved_macs_per_second` (x8 with ensemble).

    Covers the network only (not reading, writing or model loading); interpolation models (0 MACs) give 0.
    """
    if not (math.isfinite(macs_per_lr_pixel) and macs_per_lr_pixel >= 0):
        raise OptionError(f"macs_per_lr_pixel must be a non-negative number; got {macs_per_lr_pixel!r}")
    if not (_is_int(lr_pixels_total) and lr_pixels_total >= 0):
        raise OptionError(f"lr_pixels_total must be a non-negative integer; got {lr_pixels_total!r}")
    passes = 8 if ensemble else 1
    return float(macs_per_lr_pixel) * int(lr_pixels_total) * passes / achieved_macs_per_second(device, precision)


__all__ = [
    "EngineOptions",
    "PRECISIONS",
    "achieved_macs_per_second",
    "balanced_tile",
    "cpu_bf16_pays",
    "cpu_has_native_bf16",
    "dense_conv_gflops",
    "default_memory_budget_bytes",
    "estimate_seconds",
    "free_cpu_count",
    "resolve_device",
    "run_slices",
    "tile_starts",
    "tile_weights",
]
