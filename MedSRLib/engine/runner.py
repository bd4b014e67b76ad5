"""The forward runner: one network over a stack of slices, batch by batch (reduced precision: native
bf16 on a CPU for MedSR networks, autocast otherwise; self-ensemble, tiles, out-of-memory fallback,
progress and cancel; freed memory kept during a CPU run)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.rewrites import reduced_precision_copy
from ..errors import CancelledError, InputSizeError, ModelOutputError, OptionError, ScaleError, UnsupportedImageError
from . import device as _device
from .memory import (
    _CPU_BATCH_PIXELS, _MEMORY_SAFETY, _MIB, _MIN_AUTO_TILE, _activation_bytes, cpu_threads, default_memory_budget_bytes,
    keep_freed_memory,
)
from .options import EngineOptions, _is_int
from .precision import autocast_dtype, precision_name
from .tiling import balanced_tile, tile_starts, tile_weights

logger = logging.getLogger("MedSRLib.engine")

ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]


class _Forward:
    """``N x 1 x h x w`` float32 on the device -> ``N x 1 x (s h) x (s w)`` float32 (ensemble; reduced
    precision either native -- ``module`` is a :func:`~MedSRLib.models.rewrites.reduced_precision_copy`
    that casts once at its body's boundary, no autocast -- or under autocast).

    One-direction mode (``one_direction=True``, through-plane networks): the module is called as
    ``module(x, s)`` and returns ``N x 1 x (s h) x w`` (only the rows are upsampled); the self-ensemble
    then averages the 4 flips (a quarter turn would swap the coarse and the fine direction)."""

    def __init__(
        self,
        module: nn.Module,
        *,
        scale: int,
        device: torch.device,
        dtype: torch.dtype | None,
        channels_last: bool,
        ensemble: bool,
        native: bool = False,
        one_direction: bool = False,
    ) -> None:
        self.module, self.scale, self.device, self.dtype = module, scale, device, dtype
        self.channels_last, self.ensemble, self.native = channels_last, ensemble, native
        self.one_direction = bool(one_direction)
        #: (row factor, column factor) of the output.
        self.scale_hw: tuple[int, int] = (scale, 1) if one_direction else (scale, scale)
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.compiled_shape: tuple[int, ...] | None = None

    def compile_for(self, shape: tuple[int, ...]) -> None:
        """Use ``torch.compile(module)`` for inputs of exactly ``shape`` (others run eagerly)."""
        if self.compiled is None:
            self.compiled = torch.compile(self.module, dynamic=False)
        self.compiled_shape = tuple(shape)

    def _call(self, fn: Callable[..., torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return fn(x, self.scale) if self.one_direction else fn(x)

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is None or tuple(x.shape) != self.compiled_shape:
            return self._call(self.module, x)
        try:
            return self._call(self.compiled, x)
        except Exception as exc:  # noqa: BLE001 -- compilation problems: continue eagerly
            if _device._is_out_of_memory(exc):
                raise
            message = f"MedSR: torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); running eagerly"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            logger.warning(message)
            self.compiled = None
            return self._call(self.module, x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ensemble:
            return self._once(x)
        total: torch.Tensor | None = None
        if self.one_direction:  # flips only: rows stay the coarse direction
            for dims in ((), (-1,), (-2,), (-2, -1)):
                y = self._once(x.flip(dims) if dims else x)
                y = y.flip(dims) if dims else y
                total = y.clone() if total is None else total.add_(y)
            assert total is not None
            return total.div_(4.0)
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
            if self.dtype is not None and not self.native
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
        sh, sw = self.scale_hw
        expected = (n, 1, sh * h, sw * w)
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != expected:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            what = f"{sh}h x w): a through-plane network" if self.one_direction else f"{sh}h x {sw}w): load the model built for scale x{sh}"
            raise ModelOutputError(f"the network returned {got} for input {tuple(x.shape)}; expected {expected} (N x 1 x {what}")
        return y.float()



def _native_ready(module: nn.Module) -> bool:
    """True for a network prepared by ``prepare_for_inference`` that names its fp32 image path."""
    names = getattr(module, "full_precision_layers", None)
    if not names:
        return False
    try:
        return all(getattr(type(module.get_submodule(n)), "_medsr_full_precision", False) for n in names)
    except AttributeError:
        return False


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
        model_name: str | None = None,
        budget_share: float = 1.0,
        one_direction: bool = False,
    ) -> None:
        self.budget_share = budget_share
        self.base_module, self.scale, self.options, self.min_lr_size = module, scale, options, min_lr_size
        self.one_direction = one_direction
        self.scale_hw = (scale, 1) if one_direction else (scale, scale)
        self.n, self.h, self.w = shape
        self.model_name = model_name
        self.min_tile = max(2 * options.tile_overlap, min_lr_size, _MIN_AUTO_TILE)
        self._use_device(device, dtype)

    # -- planning
    def _use_device(self, device: torch.device, dtype: torch.dtype | None) -> None:
        channels_last = self.options.channels_last and device.type in ("cpu", "cuda")
        self.device = device
        # bf16 on a CPU for a prepared MedSR network (it names its fp32 image path and casts at its
        # body's boundary): weights cast once, no autocast. Other modules run under autocast.
        native = dtype is not None and device.type == "cpu" and _native_ready(self.base_module)
        module = reduced_precision_copy(self.base_module, dtype) if native else self.base_module
        self.module = _device._move(module.eval(), device, channels_last=channels_last)
        self.forward = _Forward(
            self.module,
            scale=self.scale,
            device=device,
            dtype=dtype,
            channels_last=channels_last,
            ensemble=self.options.ensemble,
            native=native,
            one_direction=self.one_direction,
        )
        try:
            per_pixel, constant = _activation_bytes(self.forward, min_lr_size=self.min_lr_size)
        except Exception as exc:  # noqa: BLE001 -- only out-of-memory is handled, the rest re-raised
            if not (_device._is_out_of_memory(exc) and device.type != "cpu"):
                raise
            fallback = True
        else:
            fallback = False
        if fallback:
            self._fall_back_to_cpu("while probing memory use")
            return
        self._plan(per_pixel, constant)

    def _plan(self, per_pixel: float, constant: float) -> None:
        opts, s2 = self.options, self.scale_hw[0] * self.scale_hw[1]
        if opts.memory_budget_mb is not None:
            budget = opts.memory_budget_mb * _MIB
        else:
            budget = default_memory_budget_bytes(self.device)
        budget *= self.budget_share
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
        sh, sw = self.scale_hw
        self.weights_y = tile_weights(self.starts_y, tile=self.tile, length=self.h, overlap=overlap, scale=sh)
        self.weights_x = tile_weights(self.starts_x, tile=self.tile, length=self.w, overlap=overlap, scale=sw)

    # -- out of memory
    def _can_shrink(self) -> bool:
        return self.batch > 1 or (self.tile or max(self.h, self.w)) > self.min_tile or self.device.type != "cpu"

    def _shrink(self) -> None:
        """Halve the batch; at batch 1 halve the tile; at the smallest tile fall back to the CPU."""
        _device._empty_cache(self.device)
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
        _device._empty_cache(self.device)
        cpu = torch.device("cpu")
        precision = "auto" if self.options.precision == "fp16" else self.options.precision
        self._use_device(cpu, autocast_dtype(precision, cpu, model=self.model_name, scale=self.scale))

    # -- processing
    def _read(self, slices: Any, start: int, stop: int) -> torch.Tensor:
        batch = np.asarray(slices[start:stop], dtype=np.float32)
        if batch.shape != (stop - start, self.h, self.w):
            raise UnsupportedImageError(
                f"slices[{start}:{stop}] returned shape {batch.shape}; expected {(stop - start, self.h, self.w)}"
            )
        if not batch.flags.writeable or (self.device.type == "cpu" and batch.base is not None):
            batch = batch.copy()  # on the CPU the module runs on this memory: never on the caller's array
        return _device._move(torch.from_numpy(batch)[:, None], self.device)

    def _process(self, x: torch.Tensor) -> np.ndarray:
        """``(b, s h, s w)`` (one direction: ``(b, s h, w)``) float32 result of one batch ``x``
        (``b x 1 x h x w`` on the device)."""
        if self.tile is None:
            return self.forward(x)[:, 0].cpu().numpy()
        sh, sw = self.scale_hw
        result = np.zeros((x.shape[0], sh * self.h, sw * self.w), dtype=np.float32)
        for y0, wy in zip(self.starts_y, self.weights_y):
            for x0, wx in zip(self.starts_x, self.weights_x):
                tile = x[:, :, y0 : y0 + self.tile_h, x0 : x0 + self.tile_w]
                pred = self.forward(tile)[:, 0].cpu().numpy()  # may alias the input: not written
                weighted = pred * (wy[:, None] * wx[None, :])
                result[:, sh * y0 : sh * (y0 + self.tile_h), sw * x0 : sw * (x0 + self.tile_w)] += weighted
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
                if not (_device._is_out_of_memory(exc) and self._can_shrink()):
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
    """Low-level: super-resolve a stack of slices with an already prepared ``module``
    (library code runs networks through :class:`MedSRLib.engine.Predictor`, which prepares the module
    once and records the precision that ran; this is its runner).

    ``module`` maps ``N x 1 x h x w -> N x 1 x (s h) x (s w)``.

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
    return _run(module, slices, scale=scale, out=out, options=options, progress=progress, cancel=cancel,
                min_lr_size=min_lr_size)[0]


def _run(
    module: nn.Module,
    slices: Any,
    *,
    scale: int,
    out: Any,
    options: EngineOptions,
    progress: ProgressCallback | None,
    cancel: CancelCallback | None,
    min_lr_size: int,
    model_name: str | None = None,
    one_direction: bool = False,
) -> tuple[Any, str]:
    """:func:`run_slices`, also returning the precision that ran last (``'fp32'``/``'bf16'``/``'fp16'``;
    fp16 overflow and CPU fallback change it mid-run); ``model_name`` lets ``'auto'`` apply the
    per-network bf16 rule (:func:`~.precision.resolve_precision`).

    ``one_direction``: a multi-factor one-direction (through-plane) module, called ``module(x, scale)``;
    the output stack is ``(n, scale h, w)`` (only the rows, the slices' coarse direction, upsampled)."""
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
    device = _device.resolve_device(options.device)
    dtype = autocast_dtype(options.precision, device, model=model_name, scale=int(scale))
    expected = (n, scale * h, w if one_direction else scale * w)
    if out is not None and tuple(getattr(out, "shape", expected)) != expected:
        layout = "(n, scale*h, w)" if one_direction else "(n, scale*h, scale*w)"
        raise OptionError(f"out has shape {tuple(out.shape)}; expected {expected} {layout}")
    if out is None:
        out = np.empty(expected, dtype=np.float32)
    if n == 0:
        if progress is not None:
            progress(0, 0)
        return out, precision_name(dtype)
    keep = keep_freed_memory() if device.type == "cpu" else contextlib.nullcontext()
    with cpu_threads(options.threads), torch.inference_mode(), keep:
        def make(rows: int, share: float = 1.0) -> _Runner:
            return _Runner(module, scale=int(scale), shape=(rows, h, w), options=options,
                           min_lr_size=int(min_lr_size), device=device, dtype=dtype, model_name=model_name,
                           budget_share=share, one_direction=bool(one_direction))

        runner = make(n)
        streams = _cpu_streams(runner, n)
        if streams > 1:
            bounds = [n * i // streams for i in range(streams + 1)]
            runners = [make(b - a, 1.0 / streams) for a, b in zip(bounds, bounds[1:])]
            if all(r.tile == runner.tile for r in runners):  # the memory budget holds every stream untiled
                _run_streams(runners, bounds, slices, out, progress, cancel)
                return out, precision_name(runners[0].forward.dtype)
        runner.run(slices, out, progress, cancel)
    return out, precision_name(runner.forward.dtype)


#: Concurrent slice streams on a CPU with at least two threads (``MEDSR_CPU_STREAMS`` overrides: 1 =
#: one stream using every thread). Each stream runs its share of the slices on
#: ``threads // streams`` threads in a thread of this process (shared weights, no process start).
DEFAULT_CPU_STREAMS = 1
CPU_STREAMS_ENV = "MEDSR_CPU_STREAMS"


def _cpu_streams(runner: "_Runner", n: int) -> int:
    if runner.device.type != "cpu" or runner.forward.compiled is not None:
        return 1
    wanted = os.environ.get(CPU_STREAMS_ENV, "")
    streams = int(wanted) if wanted.isdigit() and int(wanted) > 0 else DEFAULT_CPU_STREAMS
    threads = torch.get_num_threads()
    return max(1, min(streams, threads, n // max(1, runner.batch)))


class _Range:
    """Rows ``start:stop`` of a slice stack or an output (``len``, ``shape``, ``[a:b]`` read and write)."""

    def __init__(self, data: Any, start: int, stop: int) -> None:
        self.data, self.start, self.stop = data, start, stop
        self.shape = (stop - start, *tuple(data.shape)[1:])

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, item: slice) -> Any:
        return self.data[self.start + item.start : self.start + item.stop]

    def __setitem__(self, item: slice, value: Any) -> None:
        self.data[self.start + item.start : self.start + item.stop] = value


def _run_streams(runners: list["_Runner"], bounds: list[int], slices: Any, out: Any,
                 progress: ProgressCallback | None, cancel: CancelCallback | None) -> None:
    """Run each runner on its row range in a worker thread at ``threads // len(runners)`` torch threads;
    progress and cancel are called from this (the calling) thread only."""
    import queue
    import threading

    total = bounds[-1]
    events: "queue.Queue[tuple[int, int, BaseException | None]]" = queue.Queue()
    stop = threading.Event()
    done = [0] * len(runners)

    def work(i: int) -> None:
        error: BaseException | None = None
        try:
            with torch.inference_mode():
                runners[i].run(_Range(slices, bounds[i], bounds[i + 1]), _Range(out, bounds[i], bounds[i + 1]),
                               lambda d, _t: events.put((i, d, None)), lambda: stop.is_set())
        except BaseException as exc:  # noqa: BLE001 -- handed to the calling thread
            error = exc
        events.put((i, -1, error))

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, previous // len(runners)))
    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(runners))]
    try:
        for t in workers:
            t.start()
        finished, errors = 0, []
        while finished < len(workers):
            try:
                i, value, error = events.get(timeout=0.1)
            except queue.Empty:
                i, value, error = -1, 0, None
            if cancel is not None and not stop.is_set() and cancel():  # polled after every batch, and 10/s
                stop.set()
            if i < 0:
                continue
            if value < 0:
                finished += 1
                if error is not None:
                    errors.append(error)
                    stop.set()
                continue
            done[i] = value
            if progress is not None:
                progress(sum(done), total)
        for t in workers:
            t.join()
    finally:
        stop.set()
        torch.set_num_threads(previous)
    if errors:
        cancelled = [e for e in errors if not isinstance(e, CancelledError)]
        if cancelled:
            raise cancelled[0]
        raise CancelledError(f"run cancelled after {sum(done)} of {total} slices")

