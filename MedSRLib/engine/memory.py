"""Memory and CPU budget: available RAM, the default memory budget, the activation-memory probe
(bytes per LR pixel from two probe sizes) and the free-core thread count.

Memory model (an estimate): a one-time probe per module runs it on ``1 x 1 x a x a`` and
``1 x 1 x 2a x 2a`` inputs (``a = max(32, min_lr_size)``) and records the peak bytes of tensors alive
at once (every aten op's outputs, tracked by storage, on any device); the slope is the activation
bytes per LR pixel, the intercept the size-independent part. A batch of ``b`` slices (or tiles) of
``h x w`` LR pixels is then assumed to need ``intercept + 1.25 * slope * b*h*w + host buffers``
bytes. Default budget: CPU / MPS ``min(2048 MiB, 25 % of the available RAM)``; CUDA
``min(4096 MiB, 50 % of the free GPU memory)``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..safety import available_memory_bytes
from . import device as _device

logger = logging.getLogger("MedSRLib.engine")

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


def _available_ram_bytes() -> int:
    """Available host RAM in bytes (:func:`MedSRLib.safety.available_memory_bytes`, else 8 GiB)."""
    found = available_memory_bytes()
    return found if found is not None else 8 << 30


def default_memory_budget_bytes(device: torch.device) -> int:
    """The budget used when ``memory_budget_mb`` is None: CPU / MPS ``min(2048 MiB, 25 % of available
    RAM)``; CUDA ``min(4096 MiB, 50 % of the device's free memory)``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(min(4096 * _MIB, 0.5 * free))
    return int(min(2048 * _MIB, 0.25 * _available_ram_bytes()))



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


def _peak_forward_bytes(forward: Any, side: int) -> int:
    """Peak bytes of live tensors (input included) while ``forward`` runs on one ``side x side`` slice."""
    x = _device._move(torch.rand(1, 1, side, side), forward.device)
    tracker = _LiveBytes()
    with tracker:
        forward(x)
    return tracker.peak + x.nelement() * x.element_size()


#: Probe results per module (weakly held): key -> (bytes per LR pixel, constant bytes).
_PROBES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], tuple[float, float]]] = weakref.WeakKeyDictionary()


def _activation_bytes(forward: Any, *, min_lr_size: int) -> tuple[float, float]:
    """``(bytes per LR pixel, constant bytes)`` of ``forward``'s activations, from two probe sizes
    (cached per module, device, precision, memory format, ensemble and scale)."""
    side = max(_PROBE_SIDE, int(min_lr_size))
    key = (str(forward.device), forward.dtype, forward.channels_last, forward.ensemble, forward.scale, side,
           getattr(forward, "native", False))
    cache = _PROBES.setdefault(forward.module, {})
    if key not in cache:
        disk_key = _probe_disk_key(forward.module, key)
        found = _read_probe(disk_key) if disk_key is not None else None
        if found is None:
            small, large = _peak_forward_bytes(forward, side), _peak_forward_bytes(forward, 2 * side)
            per_pixel = (large - small) / (3.0 * side * side)
            if per_pixel <= 0:  # no size dependence seen: be conservative
                per_pixel = large / (4.0 * side * side)
            found = (per_pixel, max(0.0, small - per_pixel * side * side))
            if disk_key is not None:
                _write_probe(disk_key, found)
        cache[key] = found
    return cache[key]


#: File (in :func:`~.precision.cache_dir`) holding probe results across processes.
_PROBE_FILE = "memory_probe.json"
#: Set to ``0`` to probe in every process (no file read or written).
PROBE_CACHE_ENV = "MEDSR_MEMORY_PROBE_CACHE"


def _probe_disk_key(module: nn.Module, key: tuple[Any, ...]) -> str | None:
    """A key for ``module``'s probe on disk: its architecture (every submodule's class and every
    parameter's and buffer's name, shape and dtype; activation bytes do not depend on weight values),
    the probe settings and the PyTorch version; None for a module whose structure is not all in its
    modules (a plain callable) or when caching is off."""
    import hashlib

    if os.environ.get(PROBE_CACHE_ENV, "1") == "0" or not isinstance(module, nn.Module):
        return None
    h = hashlib.sha256(repr((key, torch.__version__)).encode())
    for name, m in module.named_modules():
        h.update(f"{name}:{type(m).__module__}.{type(m).__qualname__};".encode())
        for pname, t in (*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)):
            if t is not None:
                h.update(f"{pname}{tuple(t.shape)}{t.dtype};".encode())
        h.update(repr(sorted((k, v) for k, v in vars(m).items() if isinstance(v, (int, float, str, bool, tuple)))).encode())
    return h.hexdigest()


def _probe_path() -> Any:
    from .precision import cache_dir

    return cache_dir() / _PROBE_FILE


def _read_all_probes() -> dict[str, Any]:
    import json

    try:
        data = json.loads(_probe_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_probe(disk_key: str) -> tuple[float, float] | None:
    entry = _read_all_probes().get(disk_key)
    if isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, (int, float)) and v >= 0 for v in entry):
        return float(entry[0]), float(entry[1])
    return None


def _write_probe(disk_key: str, found: tuple[float, float]) -> None:
    """Add one probe result to the cache file (atomic replace; a failure to write is only logged)."""
    import json

    path = _probe_path()
    data = _read_all_probes()
    data[disk_key] = [found[0], found[1]]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        logger.info("engine: memory probe not cached (%s)", exc)




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
def cpu_threads(threads: int | str | None) -> Iterator[None]:
    """Run the ``with`` block with ``threads`` PyTorch CPU threads (``'auto'``: the free cores; None:
    unchanged), restoring the previous count after."""
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



# ------------------------------------------------------------------------------ freed memory kept
#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
#: glibc defaults the run restores (mmap for large blocks, trim above 128 KiB of free top).
_GLIBC_MMAP_MAX, _GLIBC_TRIM_THRESHOLD = 65536, 128 * 1024
#: Set to ``0`` to leave the C allocator alone.
KEEP_MEMORY_ENV = "MEDSR_KEEP_FREED_MEMORY"
_keep_depth = 0
_keep_lock = __import__("threading").Lock()


@functools.lru_cache(maxsize=1)
def _glibc() -> Any:
    """The C library when it is glibc on Linux (with ``mallopt`` and ``malloc_trim``), else None."""
    import ctypes
    import platform
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """During a CPU run, freed activations stay with the process instead of going back to the OS.

    glibc serves every block above 32 MiB (a 512 x 512 x 64 fp32 activation is 64 MiB) with its own
    ``mmap`` and unmaps it on free, so every slice faults its activations in again (measured: ~38,000
    page faults per 512^2 slice, a quarter of the CPU time in the kernel). Inside this context mmap
    is off (``M_MMAP_MAX = 0``) and the heap top is never trimmed, so the second slice reuses the
    first one's memory (the peak is unchanged: the same blocks are live at once). On exit the glibc
    defaults come back and ``malloc_trim(0)`` returns the kept memory. Yields True when applied: glibc
    on Linux only, and not with ``MEDSR_KEEP_FREED_MEMORY=0``; reentrant."""
    global _keep_depth
    libc = _glibc()
    if libc is None or os.environ.get(KEEP_MEMORY_ENV, "1") == "0":
        yield False
        return
    with _keep_lock:
        _keep_depth += 1
        if _keep_depth == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield True
    finally:
        with _keep_lock:
            _keep_depth -= 1
            if _keep_depth == 0:
                libc.mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD)
                libc.malloc_trim(0)
