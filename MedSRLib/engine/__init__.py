"""The inference engine: everything between "a prepared network" and "a stack of slices to run".

One module per concern:

* :mod:`.device`     device choice (``'auto'``: CUDA, then MPS, then CPU), moves, out-of-memory detection
* :mod:`.precision`  what ``precision='auto'`` means on a machine (deterministic; cached measurement)
* :mod:`.options`    :class:`EngineOptions`, the one validated options type (CLI flags derive from it)
* :mod:`.memory`     memory budget, activation probe, free-core thread count
* :mod:`.tiling`     tile positions and blending weights
* :mod:`.runner`     the forward runner :func:`run_slices` (autocast, ensemble, tiles, OOM fallback)
* :mod:`.estimate`   time estimates before a run
* :mod:`.predictor`  :class:`Predictor`: spec + weights + inference rewrites + options + device, built
  once; the only way library code runs a network

Speed notes (CPU): the module runs under ``torch.inference_mode`` in channels_last; importing the
engine sets ``THP_MEM_ALLOC_ENABLE=1`` unless already set, so PyTorch backs its large CPU tensors with
transparent huge pages (a fresh 512 x 512 x 64 activation otherwise pays ~16k page faults; measured
1.3-1.5x slower end to end on our VMs); it takes effect when set before PyTorch's first allocation of
2 MiB or more. During a CPU run freed activations stay with the process (glibc: no ``mmap`` for large
blocks and no heap trimming, restored and trimmed when the run ends; :func:`.memory.keep_freed_memory`,
``MEDSR_KEEP_FREED_MEMORY=0`` turns it off), so slices after the first do not fault their memory in
again. bf16 on a CPU runs without autocast: a MedSR network gets a copy whose body weights are cast
once (:func:`MedSRLib.models.rewrites.reduced_precision_copy`) and whose forward casts at the body's
boundary only; the memory probe's result is cached per machine and architecture
(``memory_probe.json`` beside the precision cache). ``compile=True`` runs full batches through ``torch.compile`` (off by default: on our
CPU it did not pay once the exact rewrites are applied). ``benchmarks/`` measures all of this.

Out of memory (``torch.OutOfMemoryError`` or an allocator "out of memory" error): the cache is emptied
and the batch halved; at batch 1 the tile side is halved (tiling starts) down to
``max(2 * tile_overlap, min_lr_size, 32)``; then the run continues on the CPU with a
``RuntimeWarning`` (also logged). Finished slices are kept; the failed batch is redone.
"""

from __future__ import annotations

import os

from .._lazy import lazy_getattr

# Transparent huge pages for PyTorch's large CPU tensors (docstring); must precede torch's first
# allocation of >= 2 MiB to take effect, hence before the submodules import torch.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

#: Public names and the submodule that defines each, imported on first use (PEP 562) so that the
#: options type (and so the ``medsr`` argument parser) loads without importing torch.
_LAZY_NAMES = {
    "resolve_device": "device",
    "achieved_macs_per_second": "estimate",
    "estimate_seconds": "estimate",
    "default_memory_budget_bytes": "memory",
    "free_cpu_count": "memory",
    "cpu_threads": "memory",
    "EngineOptions": "options",
    "engine_options": "options",
    "option_fields": "options",
    "PRECISIONS": "options",
    "auto_cpu_precision": "precision",
    "cpu_has_native_bf16": "precision",
    "cpu_info": "precision",
    "dense_conv_gflops": "precision",
    "measure_cpu_precision": "precision",
    "resolve_precision": "precision",
    "Predictor": "predictor",
    "CancelCallback": "runner",
    "ProgressCallback": "runner",
    "run_slices": "runner",
    "balanced_tile": "tiling",
    "tile_starts": "tiling",
    "tile_weights": "tiling",
}


__getattr__ = lazy_getattr(__name__, _LAZY_NAMES)


__all__ = [
    "CancelCallback",
    "EngineOptions",
    "PRECISIONS",
    "Predictor",
    "ProgressCallback",
    "achieved_macs_per_second",
    "auto_cpu_precision",
    "balanced_tile",
    "cpu_has_native_bf16",
    "cpu_info",
    "cpu_threads",
    "default_memory_budget_bytes",
    "dense_conv_gflops",
    "engine_options",
    "estimate_seconds",
    "free_cpu_count",
    "measure_cpu_precision",
    "option_fields",
    "resolve_device",
    "resolve_precision",
    "run_slices",
    "tile_starts",
    "tile_weights",
]
