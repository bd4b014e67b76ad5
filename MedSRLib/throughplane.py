"""Through-plane super-resolution of a normalised volume, and its ground-truth evaluation (issue 20).

No I/O, no geometry, no CLI: arrays in, arrays out (layer: beside the engine, whose Predictor runs the
networks; :mod:`MedSRLib.pipeline` adds the plan, intensities and metadata, the CLI and Slicer wrap it).

* :func:`super_resolve_through_plane` -- a ``(z, y, x)`` float array in [0, 1] whose numpy axis
  ``axis`` is the thick one: cut the slices that contain ``axis`` along EACH of the two other axes
  (for an axial series, coronal and sagittal slices: rows = the thick axis, columns = a fine axis),
  run a through-plane network (:class:`MedSRLib.models.throughplane.ThroughPlaneNet`) through the
  one :class:`MedSRLib.engine.Predictor` on batches of them at ``r = ceil(factor)``, finish a non-integer factor with the one-axis cubic B-spline
  (:func:`MedSRLib.resize.interpolation_matrix`) and fuse the two orientations by averaging (SMORE),
  by default with two more views: the slices cut along both diagonals of the voxel grid (:class:`_Diagonals`);
  then project the fused volume onto the input (:func:`project_onto_input`: a few back-projection
  steps so that re-degrading the output with the slice profile gives the input back).
  Memory: input + output + one batch of slices.
* :func:`adapt_through_plane` -- per-volume adaptation: fine-tune a copy of the shipped network for a
  bounded wall time on the volume's own in-plane slices degraded with its own slice profile
  (self-supervised, SMORE/ECLARE), seeded, reporting its gain on held-back slices.
* :func:`evaluate_through_plane` -- simulate thick slices from a near-isotropic volume with the slice
  profile (:func:`MedSRLib.resize.slice_profile_degrade`), super-resolve back, score against the
  original inside a foreground mask beside cubic B-spline and linear interpolation.

Grid convention (the same as the degradation's): output sample ``i`` along ``axis`` sits at input
coordinate ``(i + 0.5) * n / n_out - 0.5``; a volume's origin therefore moves by
``(1/f - 1)/2 x`` its slice spacing along the slice direction and its field of view is kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .engine.memory import cpu_threads
from .engine.precision import resolve_precision
from .errors import GeometryError, InputSizeError, OptionError, ScaleError, UnsupportedImageError
from .resize import apply_along_axis, interpolate_axis, interpolation_matrix, lr_length, slice_profile_degrade, slice_profile_matrix

#: Below this factor there is nothing to do (issue 20: "factor below about 1.2").
MIN_FACTOR = 1.2
#: Fewest slices along the thick axis.
MIN_SLICES = 4
#: Back-projection steps after fusion (:func:`project_onto_input`). Measured with the stage-1 tp-dridsr
#: weights at 5 mm (evaluate_through_plane, 1 step size): +0.06 / +0.08 / +0.08 dB after 1 / 3 / 6 steps
#: on seg3d-mr, +0.08 / +0.10 / +0.10 dB on the stroke T2; 3 steps leave 1/5 of the input residual.
PROJECT_STEPS = 3


#: Views fused by default: the two orthogonal orientations and the two diagonal ones (:func:`super_resolve_through_plane`).
#: Measured on the isotropic-mr ground truth (``medsr evaluate --through-plane --views 2|4``, training/RESULTS.md
#: "Views"): the diagonals add +0.09-0.11 dB on the held-out head, +0.01 on the held-out spine, -0.03-+0.03 on
#: the training-source volumes (whose straight planes the network saw), for about 2x the network time.
DEFAULT_VIEWS = 4
#: Diagonal slices are padded to a multiple of this many columns (one network call per width).
DIAGONAL_BUCKET = 32
#: Narrowest diagonal slice given to the network (shorter diagonals are zero-padded to it).
DIAGONAL_MIN_WIDTH = 16


def resolve_views(views: Any) -> int:
    """The views a run fuses: ``None`` -> :data:`DEFAULT_VIEWS`; 2 or 4 as given.

    Raises:
        OptionError: anything else.
    """
    if views is None:
        return DEFAULT_VIEWS
    if isinstance(views, bool) or views not in (2, 4):
        raise OptionError(f"views must be 2 (the two orthogonal orientations) or 4 (and the two voxel diagonals); "
                          f"got {views!r}")
    return int(views)


def view_columns(big_p: int, big_q: int, *, views: int = DEFAULT_VIEWS) -> int:
    """Columns x slices the network runs on per thick-axis row for a ``(p, q)`` in-plane grid: ``2 P Q``
    for the two orthogonal orientations, plus the padded diagonal buckets (:class:`_Diagonals`) with
    ``views=4``; the LR pixel count of a run is this times the number of slices."""
    total = 2 * big_p * big_q
    if views == 4:
        for anti in (False, True):
            diagonals = _Diagonals(big_p, big_q, anti=anti)
            total += sum(width * len(members) for width, members in diagonals.buckets)
    return int(total)


def output_length(n: int, factor: float) -> int:
    """Samples along the thick axis after super-resolving ``n`` slices by ``factor``: ``round(n f)``."""
    return max(1, int(round(n * factor)))


def _check(array: np.ndarray, axis: int, factor: float) -> tuple[int, float]:
    if not isinstance(array, np.ndarray) or array.ndim != 3:
        raise UnsupportedImageError(f"through-plane super-resolution needs a 3D (z, y, x) array; got shape {np.shape(array)}")
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise GeometryError(f"thick axis must be a numpy axis 0, 1 or 2; got {axis!r}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float, np.integer, np.floating)) or not math.isfinite(factor):
        raise ScaleError(f"through-plane factor must be a number; got {factor!r}")
    if factor < MIN_FACTOR:
        raise ScaleError(f"through-plane factor {factor:g} is below {MIN_FACTOR}: nothing to do")
    if array.shape[axis] < MIN_SLICES:
        raise InputSizeError(f"through-plane super-resolution needs at least {MIN_SLICES} slices along axis {axis}; got {array.shape[axis]}")
    return int(axis), float(factor)


class _OrientationSlices:
    """Lazy ``(n_slices, thick, fine)`` float32 stack of the slices of a volume that contain its thick
    axis, cut along numpy axis ``cut``; each batch is normalised to [0, 1] by ``normalise`` when read."""

    def __init__(self, array_zyx: np.ndarray, *, cut: int, axis: int, normalise: Callable[[np.ndarray], np.ndarray] | None) -> None:
        self._view = np.moveaxis(array_zyx, (cut, axis), (0, 1))  # a view, never written
        self._normalise = normalise
        self.shape = self._view.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        block = self._view[index]
        if self._normalise is not None:
            block = self._normalise(block)
        return np.ascontiguousarray(block, dtype=np.float32)


def _finished(values: np.ndarray, finish: torch.Tensor | None) -> np.ndarray:
    """``(b, r n, w)`` network outputs as float32, a non-integer factor finished with the one-axis cubic
    B-spline ``(n_out, r n)`` matrix ``finish`` (None: as they are)."""
    y = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return (y if finish is None else torch.matmul(finish, y)).numpy()


class _FusingWriter:
    """Receives ``(b, r n, fine)`` network outputs for slices ``[a:b]`` of one orientation, finishes a
    non-integer factor with the one-axis cubic B-spline ``(n_out, r n)`` matrix and adds ``weight`` x
    the result into the fused output (a view with the same slice order)."""

    def __init__(self, dst: np.ndarray, *, finish: torch.Tensor | None, weight: np.float32, n_rows: int) -> None:
        self._dst, self._finish, self._weight = dst, finish, weight
        self.shape = (dst.shape[0], n_rows, dst.shape[2])

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, index: slice, values: np.ndarray) -> None:
        self._dst[index] += self._weight * _finished(values, self._finish)


class _Diagonals:
    """The diagonal slices of a volume that contain its thick axis: with the thick axis first and the two
    other axes ``(p, q)`` (sizes P, Q), diagonal ``c`` holds the voxels ``(i, j)`` with ``j - i = c - (P - 1)``
    (``anti``: ``(Q - 1 - j) - i``), i increasing: a plane through the voxel grid, sampled at the voxels
    themselves (no in-plane interpolation; its fine axis has ``sqrt(dp^2 + dq^2)`` spacing).

    The diagonals are grouped by length into buckets of :data:`DIAGONAL_BUCKET` columns, each a stack of
    equal-width slices (``(b, thick, width)``, the valid run first, zeros after) that one
    :meth:`Predictor.run` call can take, so padding costs little."""

    def __init__(self, big_p: int, big_q: int, *, anti: bool) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        for c in range(big_p + big_q - 1):
            i = np.arange(max(0, big_p - 1 - c), min(big_p, big_p - 1 - c + big_q))
            j = i + c - (big_p - 1)
            self.rows.append(i)
            self.cols.append(big_q - 1 - j if anti else j)
        lengths = np.array([len(i) for i in self.rows])
        widths = np.maximum(DIAGONAL_MIN_WIDTH, -(-lengths // DIAGONAL_BUCKET) * DIAGONAL_BUCKET)
        widths = np.minimum(widths, max(DIAGONAL_MIN_WIDTH, int(lengths.max())))
        #: ``(width, indices of the diagonals)`` per bucket.
        self.buckets = [(int(w), np.flatnonzero(widths == w)) for w in np.unique(widths)]


class _DiagonalSlices:
    """Lazy ``(len(members), thick, width)`` float32 stack of the diagonals ``members`` of a
    ``(thick, p, q)`` view (:class:`_Diagonals`), zero beyond each diagonal's end; ``normalise`` as in
    :class:`_OrientationSlices`."""

    def __init__(self, view_tpq: np.ndarray, diagonals: _Diagonals, members: np.ndarray, width: int, *,
                 normalise: Callable[[np.ndarray], np.ndarray] | None) -> None:
        self._view, self._diagonals, self._members, self._normalise = view_tpq, diagonals, members, normalise
        self.shape = (len(members), view_tpq.shape[0], width)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        members = self._members[index]
        block = np.zeros((len(members),) + self.shape[1:], dtype=np.float32)
        for k, m in enumerate(members):
            rows, cols = self._diagonals.rows[m], self._diagonals.cols[m]
            values = self._view[:, rows, cols]
            block[k, :, : len(rows)] = self._normalise(values) if self._normalise is not None else values
        return block


class _DiagonalWriter:
    """Receives ``(b, r n, width)`` network outputs of diagonals ``members``, finishes a non-integer factor
    (as :class:`_FusingWriter`) and adds ``weight`` x each diagonal's valid run into the fused output
    (a ``(n_out, p, q)`` view)."""

    def __init__(self, dst_tpq: np.ndarray, diagonals: _Diagonals, members: np.ndarray, width: int, *,
                 finish: torch.Tensor | None, weight: np.float32, n_rows: int) -> None:
        self._dst, self._diagonals, self._members = dst_tpq, diagonals, members
        self._finish, self._weight = finish, weight
        self.shape = (len(members), n_rows, width)

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, index: slice, values: np.ndarray) -> None:
        y = _finished(values, self._finish)
        for k, m in enumerate(self._members[index]):
            rows, cols = self._diagonals.rows[m], self._diagonals.cols[m]
            self._dst[:, rows, cols] += self._weight * y[k, :, : len(rows)]


def super_resolve_through_plane(
    array_zyx: np.ndarray,
    *,
    axis: int,
    factor: float,
    predictor: Any,
    n_out: int | None = None,
    fuse: str = "mean",
    views: int = DEFAULT_VIEWS,
    r: int | None = None,
    normalise: Callable[[np.ndarray], np.ndarray] | None = None,
    out: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    project: int = PROJECT_STEPS,
    thickness: float | None = None,
    profile: str = "gaussian",
    on_projection: Callable[[ProjectionReport], None] | None = None,
) -> np.ndarray:
    """Super-resolve the thick axis of a volume with a through-plane network, run by a
    :class:`MedSRLib.engine.Predictor` (batching, tiling, precision, out-of-memory fallback, progress
    and cancel as for in-plane runs).

    Args:
        array_zyx: ``(z, y, x)`` array; intensities in [0, 1] (:mod:`MedSRLib.intensity`), or any
            units when ``normalise`` maps each read batch to [0, 1] (the input is never copied whole).
        axis: the thick numpy axis (0, 1 or 2).
        factor: slice spacing / target spacing, >= 1.2 (integer or not).
        predictor: a Predictor of a through-plane network (``tp-*``; :attr:`Predictor.one_direction`).
        n_out: samples along ``axis`` in the output (default ``round(n * factor)``; the pipeline passes
            its :class:`~MedSRLib.geometry.GridPlan`'s size).
        fuse: ``'mean'`` (average the ``views``) or ``'first'``/``'second'`` (one orthogonal orientation only).
        views: with ``fuse='mean'``: 2 = the two orthogonal orientations (SMORE), 4 = those and the two
            diagonal ones (:class:`_Diagonals`: planes through the voxels at 45 degrees in the voxel grid,
            no in-plane interpolation), all weighted equally.
        r: the network factor (default ``ceil(n_out / n)``; a larger one is finished down with the
            cubic B-spline, which measures the finishing step's cost).
        normalise: maps a read block (any units) to float32 [0, 1] (default: used as is).
        out: float32 array of the output shape to accumulate into (default: a new zero array); it
            must hold zeros.
        progress: ``progress(done, total)`` after each batch (total: the slices of every view).
        cancel: polled between batches; True raises :class:`CancelledError`.
        project: back-projection steps onto the input after fusion (:func:`project_onto_input`;
            0: the fused network output as is).
        thickness: the slice profile's FWHM in units of the slice spacing (default 1: contiguous
            slices); ``profile``: ``'gaussian'`` or ``'rect'`` (the projection's degradation).
        on_projection: receives the projection's :class:`ProjectionReport` (how consistent the
            network output was before it, and after).

    Memory: the input + the output + one batch of slices (and the network's working set).

    Returns:
        float32 array with ``n_out`` samples along ``axis`` and the other axes unchanged; sample
        ``i`` sits at input coordinate ``(i + 0.5) * n / n_out - 0.5``. Values are not clipped.
    """
    axis, factor = _check(array_zyx, axis, factor)
    if not getattr(predictor, "one_direction", False):
        raise ScaleError("through-plane super-resolution needs a Predictor of a through-plane network (tp-*)")
    n = array_zyx.shape[axis]
    n_out = output_length(n, factor) if n_out is None else int(n_out)
    r = int(math.ceil(n_out / n - 1e-9)) if r is None else int(r)
    scales = tuple(predictor.spec.scales)
    if r not in scales:
        raise ScaleError(f"factor {n_out / n:.3g} needs the network's x{r}; it has {', '.join(f'x{s}' for s in scales)}")
    others = [a for a in (0, 1, 2) if a != axis]
    if fuse not in ("mean", "first", "second"):
        raise ValueError(f"fuse must be 'mean', 'first' or 'second'; got {fuse!r}")
    views = resolve_views(views)
    cut_axes = others if fuse == "mean" else [others[0] if fuse == "first" else others[1]]
    diagonal = fuse == "mean" and views == 4
    weight = np.float32(1.0 / (len(cut_axes) + (2 if diagonal else 0)))
    out_shape = list(array_zyx.shape)
    out_shape[axis] = n_out
    if out is None:
        out = np.zeros(out_shape, dtype=np.float32)
    elif out.shape != tuple(out_shape) or out.dtype != np.float32:
        raise ValueError(f"out must be a float32 array of shape {tuple(out_shape)}; got {out.dtype} {out.shape}")
    finish = None if n_out == r * n else torch.tensor(interpolation_matrix(r * n, n_out, "bspline3"), dtype=torch.float32)
    runs = []  # (source, sink) of every network call
    for b in cut_axes:
        runs.append((_OrientationSlices(array_zyx, cut=b, axis=axis, normalise=normalise),
                     _FusingWriter(np.moveaxis(out, (b, axis), (0, 1)), finish=finish, weight=weight, n_rows=r * n)))
    if diagonal:
        src_tpq, dst_tpq = np.moveaxis(array_zyx, [axis] + others, (0, 1, 2)), np.moveaxis(out, [axis] + others, (0, 1, 2))
        for anti in (False, True):
            diagonals = _Diagonals(*src_tpq.shape[1:], anti=anti)
            for width, members in diagonals.buckets:
                runs.append((_DiagonalSlices(src_tpq, diagonals, members, width, normalise=normalise),
                             _DiagonalWriter(dst_tpq, diagonals, members, width, finish=finish, weight=weight,
                                             n_rows=r * n)))
    total = sum(len(source) for source, _ in runs)
    offset = 0
    for source, sink in runs:
        report = None if progress is None else (lambda d, t, o=offset: progress(o + d, total))
        predictor.run(source, out=sink, factor=r, progress=report, cancel=cancel)
        offset += len(source)
    if project:
        result = project_onto_input(array_zyx, out, axis=axis, steps=project, thickness=thickness, profile=profile,
                                    normalise=normalise)
        if on_projection is not None:
            on_projection(result)
    return out


@dataclass(frozen=True)
class ProjectionReport:
    """What :func:`project_onto_input` did. ``residual_*``: mean |input - degrade(output)| in [0, 1]
    units before and after (before = the network output's own consistency with the input);
    ``bspline_residual``: the same for cubic B-spline interpolation of the input (the shipped networks
    measured 3.5-4.8x below it on the isotropic-mr volumes at 3-7 mm; a network output above it is suspect)."""

    steps: int
    residual_before: float
    residual_after: float
    bspline_residual: float

    @property
    def suspect(self) -> bool:
        """The network output was less consistent with the input than cubic B-spline interpolation."""
        return self.residual_before > self.bspline_residual

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "residual_before": self.residual_before, "residual_after": self.residual_after,
                "bspline_residual": self.bspline_residual, "suspect": self.suspect}


def _projection_matrices(n: int, n_out: int, steps: int, thickness: float, profile: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(D, A^steps, sum_k A^k U)`` for ``A = I - U D`` (``D``: the slice profile ``(n, n_out)``,
    ``U``: cubic B-spline ``(n_out, n)``), so that ``steps`` back-projections are two matrix products."""
    degrade = slice_profile_matrix(n_out, n_out / n, thickness * n_out / n, profile)
    up = interpolation_matrix(n, n_out, "bspline3")
    a = np.eye(n_out) - up @ degrade
    power, acc = np.eye(n_out), np.zeros((n_out, n))
    for _ in range(steps):
        acc = acc + power @ up
        power = power @ a
    return degrade, power, acc


def project_onto_input(
    array_zyx: np.ndarray,
    out: np.ndarray,
    *,
    axis: int,
    steps: int = PROJECT_STEPS,
    thickness: float | None = None,
    profile: str = "gaussian",
    normalise: Callable[[np.ndarray], np.ndarray] | None = None,
    chunk: int = 16,
) -> ProjectionReport:
    """Back-projection (iterative, step size 1): ``y <- y + U (x - D y)`` ``steps`` times along ``axis``,
    in place on ``out``; ``D`` is THE slice-profile degradation (:func:`MedSRLib.resize.slice_profile_matrix`,
    factor ``n_out / n``, FWHM ``thickness`` slice spacings, default 1) and ``U`` the cubic B-spline.
    The output then re-degrades to (nearly) the input: what the consistency check measures.

    Args:
        array_zyx: the input ``(z, y, x)`` (``normalise`` maps a read block to [0, 1], else used as is).
        out: the float32 output (``n_out`` samples along ``axis``), same units as the normalised input.

    Memory: ``chunk`` input and output planes at a time (cut along the first other axis).
    """
    n, n_out = int(array_zyx.shape[axis]), int(out.shape[axis])
    if steps < 0:
        raise ValueError(f"project: steps must be >= 0; got {steps}")
    rel = 1.0 if thickness is None else float(thickness)
    degrade, keep, add = _projection_matrices(n, n_out, int(steps), rel, profile)
    cut = [a for a in (0, 1, 2) if a != axis][0]
    src, dst = np.moveaxis(array_zyx, cut, 0), np.moveaxis(out, cut, 0)
    up = interpolation_matrix(n, n_out, "bspline3")
    before = after = reference = 0.0
    count = 0
    thick = 1 + ([a for a in (0, 1, 2) if a != cut].index(axis))  # the thick axis of a chunk (cut axis first)
    for k in range(0, src.shape[0], chunk):
        x = src[k : k + chunk]
        x = normalise(x) if normalise is not None else np.asarray(x, dtype=np.float32)
        y = np.ascontiguousarray(dst[k : k + chunk], dtype=np.float32)
        before += float(np.abs(x - apply_along_axis(y, degrade, thick)).sum())
        y = apply_along_axis(y, keep, thick) + apply_along_axis(x, add, thick)
        after += float(np.abs(x - apply_along_axis(y, degrade, thick)).sum())
        reference += float(np.abs(x - apply_along_axis(apply_along_axis(x, up, thick), degrade, thick)).sum())
        count += x.size
        dst[k : k + chunk] = y
    count = max(count, 1)
    return ProjectionReport(int(steps), before / count, after / count, reference / count)


# --------------------------------------------------------------------------------------------------
# training pairs (shared by training/throughplane.py and the per-volume adaptation)


def random_view(image: np.ndarray, rng: np.random.Generator, *, upright: bool = False) -> np.ndarray:
    """A random one of the 8 flips/rotations of a 2D ``image`` (a view): any in-plane direction can
    become the rows that are degraded. ``upright``: only the 4 that keep rows as rows (a slice whose
    rows alone have the target spacing, e.g. a diagonal plane: its columns are sqrt(2) apart)."""
    if rng.integers(0, 2):
        image = image[:, ::-1]
    return np.rot90(image, 2 * int(rng.integers(0, 2)) if upright else int(rng.integers(0, 4)))


def cut_pair(image: np.ndarray, rng: np.random.Generator, *, r: int, thickness: float, profile: str,
             lr_rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """A random through-plane pair from one fine-pixel 2D slice: ``(lr: lr_rows x cols, hr: lr_rows r x cols)``.

    An HR block of ``(lr_rows + 4) r`` rows is cut, degraded along its rows with
    :func:`MedSRLib.resize.slice_profile_degrade` (``factor = r``, FWHM/width ``thickness`` HR
    pixels), and its ``2 r``-row margins dropped, so the patch's LR rows are those of the whole slice
    (the profile reaches across the patch border). Slices smaller than the block are mirrored.
    float32 arrays.
    """
    need_rows = (lr_rows + 4) * r
    pad = [(0, max(0, need_rows - image.shape[0])), (0, max(0, cols - image.shape[1]))]
    if pad[0][1] or pad[1][1]:
        image = np.pad(image, pad, mode="symmetric")
    y = int(rng.integers(0, image.shape[0] - need_rows + 1))
    x = int(rng.integers(0, image.shape[1] - cols + 1))
    block = np.ascontiguousarray(image[y : y + need_rows, x : x + cols], dtype=np.float32)
    lr = slice_profile_degrade(block, axis=0, factor=r, thickness=thickness, profile=profile)[2:-2]
    return np.ascontiguousarray(lr, dtype=np.float32), np.ascontiguousarray(block[2 * r : (lr_rows + 2) * r])


def cut_batch(planes: Sequence[np.ndarray], rng: np.random.Generator, *, n: int, r: int, thickness: float, profile: str,
              lr_rows: int, cols: int, min_std: float = 0.0,
              upright: Sequence[bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs from random slices of ``planes`` (random view, :func:`random_view`, upright where
    ``upright[k]``; patches with HR std below ``min_std`` redrawn up to 8 times) as
    ``(N x 1 x lr_rows x cols, N x 1 x lr_rows r x cols)`` tensors."""
    lrs, hrs = [], []
    for _ in range(n):
        for _attempt in range(8):
            k = int(rng.integers(0, len(planes)))
            image = random_view(planes[k], rng, upright=bool(upright[k]) if upright is not None else False)
            lr, hr = cut_pair(image, rng, r=r, thickness=thickness, profile=profile, lr_rows=lr_rows, cols=cols)
            if hr.std() >= min_std:
                break
        lrs.append(lr)
        hrs.append(hr)
    return torch.from_numpy(np.stack(lrs)[:, None]), torch.from_numpy(np.stack(hrs)[:, None])


# --------------------------------------------------------------------------------------------------
# per-volume adaptation


#: Said with every adaptation report (run summary, JSON, Slicer): its held-back score is no promise.
ADAPT_CAUTION = ("the held-back patches are in-plane and do not measure the through-plane result: on ground truth "
                 "(training/RESULTS.md) adaptation raised a held-out head volume by 0.9 dB and lowered two small spine "
                 "volumes by 0.2-0.8 dB")


@dataclass
class AdaptationReport:
    """What :func:`adapt_through_plane` did: wall time, iterations, and the PSNR on its own held-back
    patches (in-plane slices it never trained on) before and after; ``kept_step``: the step whose
    weights were kept (best held-back score; 0 = the shipped weights, -1 = not recorded)."""

    seconds: float
    iterations: int
    r: int
    thickness_hr: float
    n_train_slices: int
    n_heldout_patches: int
    psnr_before: float
    psnr_after: float
    bspline_psnr: float
    seed: int
    kept_step: int = -1
    precision: str = "fp32"
    #: :func:`use_adapted`'s verdict: mean |first - second orientation| of the shipped and the adapted
    #: network (None = not checked) and whether the adapted weights were used.
    disagreement_shipped: float | None = None
    disagreement_adapted: float | None = None
    used: bool = True

    @property
    def gain_db(self) -> float:
        """PSNR after minus before on the held-back patches (dB)."""
        return self.psnr_after - self.psnr_before

    def to_json(self) -> dict[str, Any]:
        """The report as written in run metadata, JSON summaries and evaluation rows."""
        return {"seconds": self.seconds, "iterations": self.iterations, "seed": self.seed,
                "heldout_psnr_before": self.psnr_before, "heldout_psnr_after": self.psnr_after,
                "kept_step": self.kept_step, "heldout_gain_db": self.gain_db, "heldout_bspline_psnr": self.bspline_psnr,
                "heldout_patches": self.n_heldout_patches, "train_slices": self.n_train_slices, "network_factor": self.r,
                "precision": self.precision, "caution": ADAPT_CAUTION, "used": self.used,
                "disagreement_shipped": self.disagreement_shipped, "disagreement_adapted": self.disagreement_adapted,
                "max_disagreement_ratio": ADAPT_MAX_DISAGREEMENT}


def adapt_through_plane(
    net: nn.Module,
    array_zyx: np.ndarray,
    *,
    axis: int,
    factor: float,
    seconds: float,
    thickness: float | None = None,
    profile: str = "gaussian",
    seed: int = 0,
    iterations: int | None = None,
    batch: int = 8,
    lr_rows: int = 12,
    cols: int = 48,
    learning_rate: float = 1.0e-3,
    schedule: str = "cosine",
    heldout_every: int = 8,
    n_heldout: int = 64,
    min_std: float = 0.02,
    threads: int | str | None = None,
    check_every: int = 200,
    precision: str = "auto",
) -> tuple[nn.Module, AdaptationReport]:
    """Fine-tune a copy of a through-plane network on the volume's own in-plane slices (SMORE/ECLARE's
    self-supervision, warm-started from the shipped weights so that minutes on a CPU are enough).

    The in-plane slices (perpendicular to ``axis``: fine in both directions) are degraded along a
    random in-plane direction with the volume's own profile at the network factor ``r = ceil(factor)``
    and the same relative thickness (FWHM ``thickness / spacing x r`` HR pixels; ``thickness`` is in
    units of the slice spacing, default 1 = contiguous slices). Every ``heldout_every``-th slice is
    held back; ``n_heldout`` fixed patches of them score the network before and after.

    Args:
        net: the shipped through-plane network (not modified; a copy is trained).
        array_zyx: the thick volume, ``(z, y, x)`` in [0, 1].  axis: its thick numpy axis.
        factor: slice spacing / target spacing (as for :func:`super_resolve_through_plane`).
        seconds: wall-time bound of the training loop (the held-back scoring is not counted).
        iterations: run exactly this many steps instead (reproducible to the bit on one machine:
            a timed run fixes its step count from the speed of its first steps, and its report gives
            the count that repeats it).
        seed: seeds the patches (numpy) and torch.
        learning_rate: Adam's initial step; ``schedule``: ``'cosine'`` (decays to 0 over the run's
            steps, see :func:`_adapt_loop`) or ``'constant'``. Measured with the stage-1 shipped
            tp-dridsr on seg3d-mr at 5 mm, 800 steps, 1 thread: +2.70 dB over cubic B-spline with a
            constant 5e-4, +2.72 cosine 5e-4, +2.75 cosine 1e-3, +2.75 cosine 2e-3; 2400 steps cosine
            1e-3 +2.84 (shipped weights alone +1.90; no back-projection in these figures).
        threads: PyTorch CPU threads for the loop (:func:`MedSRLib.engine.cpu_threads`; None: as set).
        check_every: steps between scorings of the held-back patches; the weights that scored best
            (the shipped ones included, step 0) are returned (early stopping: on the small
            sct-spine t1w volume the held-back score peaked early and fell with more steps, and the
            last weights were worse than the shipped ones on ground truth). Scoring time is not
            counted in ``seconds``, and a timed run and ``iterations`` = its step count check at the
            same steps, so they return the same weights.
        precision: the training steps' precision, as the engine's (``'auto'``: bf16 autocast with fp32
            master weights on a CPU with native bf16, else fp32; ``'fp32'``, ``'bf16'``; ``'fp16'``, a GPU
            run's choice, counts as ``'auto'``: the adaptation runs on the CPU). Measured on an AMD EPYC,
            2 threads: 0.030 vs 0.042 s per step; seg3d-mr at 5 mm, 120 s: 3831 bf16 steps +2.93 dB
            (3466 fp32 steps +2.93 dB: the gain had levelled off). The held-back scoring runs in fp32.

    Returns:
        ``(adapted network in eval mode, AdaptationReport)``.
    """
    import copy

    axis, factor = _check(array_zyx, axis, factor)
    r = int(math.ceil(factor - 1e-9))
    rel = 1.0 if thickness is None else float(thickness)
    t_hr = rel * r
    planes = [np.ascontiguousarray(np.take(array_zyx, k, axis=axis), dtype=np.float32) for k in range(array_zyx.shape[axis])]
    held = planes[heldout_every // 2 :: heldout_every] or planes[:1]
    train = [p for k, p in enumerate(planes) if (k - heldout_every // 2) % heldout_every] or planes
    rng = np.random.default_rng((seed, 1))
    val_lr, val_hr = cut_batch(held, rng, n=n_heldout, r=r, thickness=t_hr, profile=profile, lr_rows=lr_rows,
                               cols=cols, min_std=min_std)

    def held_psnr(model: nn.Module | None) -> float:
        with torch.inference_mode():
            if model is None:
                out = torch.matmul(torch.tensor(interpolation_matrix(lr_rows, lr_rows * r), dtype=torch.float32), val_lr)
            else:
                model.eval()
                out = torch.cat([model(val_lr[k : k + 16], r) for k in range(0, len(val_lr), 16)])
            mse = float(torch.mean((out.clamp(0, 1) - val_hr) ** 2))
        return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)

    adapted = copy.deepcopy(net).float()
    before, reference = held_psnr(adapted), held_psnr(None)
    torch.manual_seed(seed)
    rng = np.random.default_rng((seed, 2))
    params = [p for name, p in adapted.named_parameters() if not name.startswith("tails.") or name.startswith(f"tails.{r}.")]
    opt = torch.optim.Adam(params, lr=learning_rate)
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant'; got {schedule!r}")
    best = {"psnr": before, "step": 0, "state": copy.deepcopy(adapted.state_dict())}

    def keep_best(step: int) -> None:
        """Score the held-back patches; keep the weights when they are the best so far (early stopping)."""
        psnr = held_psnr(adapted)
        adapted.train()
        if psnr > best["psnr"]:
            best.update(psnr=psnr, step=step, state=copy.deepcopy(adapted.state_dict()))

    ran = resolve_precision("auto" if precision == "fp16" else precision, torch.device("cpu"))  # fp16: a GPU run's
    adapted.train()
    with cpu_threads(threads):
        steps, elapsed = _adapt_loop(adapted, opt, train, rng, iterations=iterations, seconds=seconds, schedule=schedule,
                                     learning_rate=learning_rate, batch=batch, r=r, t_hr=t_hr, profile=profile,
                                     lr_rows=lr_rows, cols=cols, min_std=min_std, check=keep_best, check_every=check_every,
                                     bf16=ran == "bf16")
        keep_best(steps)
    adapted.load_state_dict(best["state"])
    adapted.eval()
    return adapted, AdaptationReport(elapsed, steps, r, t_hr, len(train), len(val_lr), before, best["psnr"], reference,
                                     seed, kept_step=int(best["step"]), precision=ran)


#: Timed adaptation: the run's length is fixed at this step from the speed of the steps after
#: :data:`ADAPT_WARMUP_STEPS` (its cosine schedule then runs over a known number of steps, so
#: ``iterations`` = that number repeats a timed run exactly). The window includes the held-back check
#: at step 200 and the steps after it: fitted on steps 20-60 instead, 120-second runs took 134 and
#: 136 s (2 threads, AMD EPYC): the later steps were 11-13 % slower than the first ones.
ADAPT_FIT_STEPS = 400
#: First steps left out of the speed estimate (allocator and kernel warm-up are slower).
ADAPT_WARMUP_STEPS = 20


#: The adapted weights are used only when their two orientations (the cuts along each in-plane axis,
#: before fusion) disagree at most this many times as much as the shipped network's do. Measured at 5 mm
#: (1500 adaptation steps; disagreement adapted / shipped -> ground-truth effect of a 120-s adaptation):
#: seg3d-mr 1.08 -> +0.9 dB, stroke T1 / T2 / FLAIR 1.04 / 1.18 / 1.16 -> -0.18 / +0.09 / +0.10 dB,
#: sct-spine t1w 1.91 -> -0.2 dB, sct-spine t2 2.67 -> -0.8 dB: an adaptation that learned in-plane
#: statistics the slice axis does not share makes the two views part ways.
ADAPT_MAX_DISAGREEMENT = 1.5
#: In-plane side of the central block :func:`orientation_disagreement` scores (bounded time and memory).
DISAGREEMENT_CROP = 192
#: Shipped disagreements below this count as this ([0, 1] units; the shipped MR network measured
#: 0.008-0.017 at 5 mm): a network that is plain interpolation (zero tails) has none at all.
DISAGREEMENT_FLOOR = 1.0e-3


def orientation_disagreement(array_zyx: np.ndarray, *, axis: int, factor: float, predictor: Any,
                             normalise: Callable[[np.ndarray], np.ndarray] | None = None,
                             crop: int = DISAGREEMENT_CROP) -> float:
    """Mean |first - second| of the two orientations' outputs (no fusion, no projection) inside the
    foreground mask of their mean, on the central ``crop x crop`` in-plane block (whole slice axis);
    [0, 1] units."""
    block = [slice(None)] * 3
    for a in (b for b in (0, 1, 2) if b != axis):
        size = min(int(array_zyx.shape[a]), int(crop))
        start = (int(array_zyx.shape[a]) - size) // 2
        block[a] = slice(start, start + size)
    sub = array_zyx[tuple(block)]
    first, second = (super_resolve_through_plane(sub, axis=axis, factor=factor, predictor=predictor, fuse=f, project=0,
                                                 normalise=normalise) for f in ("first", "second"))
    mask = foreground_mask(0.5 * (first + second))
    return float(np.abs(first - second)[mask].mean()) if mask.any() else 0.0


def use_adapted(array_zyx: np.ndarray, report: AdaptationReport, *, axis: int, factor: float, shipped: Any,
                adapted: Any, normalise: Callable[[np.ndarray], np.ndarray] | None = None) -> bool:
    """Whether to use the adapted network (:data:`ADAPT_MAX_DISAGREEMENT`); fills ``report``'s
    ``disagreement_*`` and ``used``. ``shipped``/``adapted``: Predictors of the same network factor."""
    d0 = orientation_disagreement(array_zyx, axis=axis, factor=factor, predictor=shipped, normalise=normalise)
    d1 = orientation_disagreement(array_zyx, axis=axis, factor=factor, predictor=adapted, normalise=normalise)
    report.disagreement_shipped, report.disagreement_adapted = d0, d1
    report.used = bool(d1 <= ADAPT_MAX_DISAGREEMENT * max(d0, DISAGREEMENT_FLOOR))
    return report.used


def _adapt_loop(adapted: nn.Module, opt: torch.optim.Optimizer, train: list[np.ndarray], rng: np.random.Generator, *,
                iterations: int | None, seconds: float, schedule: str, learning_rate: float, batch: int, r: int,
                t_hr: float, profile: str, lr_rows: int, cols: int, min_std: float,
                check: Callable[[int], None], check_every: int, bf16: bool = False) -> tuple[int, float]:
    """The adaptation's training steps: ``iterations``, or (timed) as many as ``seconds`` allows at the
    speed of steps :data:`ADAPT_WARMUP_STEPS`-:data:`ADAPT_FIT_STEPS` (stopped at 1.5 x ``seconds`` should the machine
    slow down). The learning rate is constant for the first ADAPT_FIT_STEPS steps, then (``'cosine'``)
    decays to 0 at the last step. ``check(step)`` after every ``check_every`` steps (time not counted).
    ``bf16``: forward and backward under CPU bf16 autocast (fp32 weights, optimiser and loss).
    Returns ``(steps, seconds)``."""
    start, steps, planned, warm = time.perf_counter(), 0, iterations, 0.0
    while planned is None or steps < planned:
        elapsed = time.perf_counter() - start
        if planned is None:
            if elapsed >= seconds:
                break
            if steps == ADAPT_WARMUP_STEPS:
                warm = elapsed
            if steps == ADAPT_FIT_STEPS:
                per_step = (elapsed - warm) / (ADAPT_FIT_STEPS - ADAPT_WARMUP_STEPS)
                planned = steps + max(1, int((seconds - elapsed) / max(per_step, 1e-9)))
        elif iterations is None and elapsed >= 1.5 * seconds:
            break
        if schedule == "cosine" and planned is not None and steps >= ADAPT_FIT_STEPS:
            done = (steps - ADAPT_FIT_STEPS) / max(1, planned - ADAPT_FIT_STEPS)
            for group in opt.param_groups:
                group["lr"] = learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))
        lr_t, hr_t = cut_batch(train, rng, n=batch, r=r, thickness=t_hr, profile=profile, lr_rows=lr_rows, cols=cols,
                               min_std=min_std)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            sr = adapted(lr_t, r)
        loss = torch.nn.functional.l1_loss(sr.float(), hr_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if steps % check_every == 0 and (planned is None or steps < planned):
            paused = time.perf_counter()
            check(steps)
            start += time.perf_counter() - paused
    return steps, time.perf_counter() - start


# --------------------------------------------------------------------------------------------------
# evaluation on ground truth


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (maximises the between-class variance of a ``bins`` histogram)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    hist, edges = np.histogram(v, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def foreground_mask(volume: np.ndarray, *, fraction: float = 0.5, dilate: int = 3) -> np.ndarray:
    """Voxels above ``fraction`` x Otsu's threshold, dilated by ``dilate`` voxels (6-connected steps)."""
    from scipy import ndimage

    mask = volume > fraction * otsu_threshold(volume)
    return ndimage.binary_dilation(mask, iterations=dilate) if dilate else mask


@dataclass
class ThroughPlaneScore:
    """Scores of one method against the ground truth, inside the mask."""

    psnr: float
    ssim: float


@dataclass
class ThroughPlaneEvaluation:
    """What :func:`evaluate_through_plane` reports."""

    axis: int
    factor: float
    thickness: float
    n_lr: int
    n_out: int
    scores: dict[str, ThroughPlaneScore] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    mask_fraction: float = 0.0
    convention: str = ""

    def gain(self, method: str, over: str = "bspline3") -> float:
        """PSNR of ``method`` minus PSNR of ``over`` (dB)."""
        return self.scores[method].psnr - self.scores[over].psnr


def masked_scores(sr: np.ndarray, hr: np.ndarray, mask: np.ndarray, *, axis: int) -> ThroughPlaneScore:
    """PSNR (data range 1) over the voxels of ``mask``; SSIM (:func:`MedSRLib.metrics.ssim`) averaged
    over the slices perpendicular to the first axis other than ``axis`` (they contain the thick
    axis) that hold foreground, each cropped to the mask's bounding box. Both clipped to [0, 1]."""
    from .metrics import ssim

    a, b = np.clip(sr, 0.0, 1.0).astype(np.float64), np.clip(hr, 0.0, 1.0).astype(np.float64)
    mse = float(np.mean((a[mask] - b[mask]) ** 2))
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    box = tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(mask))
    a, b, m = a[box], b[box], mask[box]
    cut = [x for x in (0, 1, 2) if x != axis][0]
    values = []
    for k in range(a.shape[cut]):
        if np.take(m, k, axis=cut).mean() < 0.01:
            continue
        sa, sb = np.take(a, k, axis=cut), np.take(b, k, axis=cut)
        if min(sa.shape) >= 11:
            values.append(ssim(sa, sb, data_range=1.0))
    return ThroughPlaneScore(psnr, float(np.mean(values)) if values else float("nan"))


def evaluate_through_plane(
    hr_unit: np.ndarray,
    *,
    axis: int,
    factor: float,
    predictor: Any | None,
    thickness: float | None = None,
    profile: str = "gaussian",
    extra: dict[str, Callable[[np.ndarray, int], np.ndarray]] | None = None,
    views: int = DEFAULT_VIEWS,
) -> ThroughPlaneEvaluation:
    """Simulate thick slices from a near-isotropic volume, super-resolve back, score against it.

    Args:
        hr_unit: ``(z, y, x)`` ground truth in [0, 1] (near-isotropic).
        axis: the axis to thicken.  factor: slice spacing in HR voxels (e.g. 5 mm / 1 mm = 5).
        predictor: a :class:`MedSRLib.engine.Predictor` of a through-plane network (None: only the
            interpolations); its method is named ``'network'``.
        thickness: profile FWHM in HR voxels (default ``factor``); ``profile``: gaussian | rect.
        extra: more methods ``name -> f(lr, n_out) -> output`` (e.g. the adapted network).
        views: the views the network fuses (:func:`super_resolve_through_plane`).

    The LR volume has ``lr_length(n, factor)`` slices (sample ``j`` at HR coordinate
    ``(j + 0.5) f - 0.5``); every method returns ``n_out = round(n_lr f)`` samples, compared with
    the first ``n_out`` HR samples inside :func:`foreground_mask` of the ground truth.
    """
    axis, factor = _check(hr_unit, axis, factor)
    lr = slice_profile_degrade(hr_unit.astype(np.float32), axis=axis, factor=factor, thickness=thickness, profile=profile)
    n_lr = lr_length(hr_unit.shape[axis], factor)
    n_out = output_length(n_lr, factor)
    gt = np.take(hr_unit, np.arange(n_out), axis=axis).astype(np.float32)
    mask = foreground_mask(gt)
    methods: dict[str, Callable[[], np.ndarray]] = {
        "bspline3": lambda: interpolate_axis(lr, axis=axis, n_out=n_out, kind="bspline3"),
        "linear": lambda: interpolate_axis(lr, axis=axis, n_out=n_out, kind="linear"),
    }
    if predictor is not None:
        methods["network"] = lambda: super_resolve_through_plane(
            lr, axis=axis, factor=factor, predictor=predictor, n_out=n_out, profile=profile, views=views,
            thickness=None if thickness is None else float(thickness) / factor)
    for name, fn in (extra or {}).items():
        methods[name] = (lambda fn=fn: fn(lr, n_out))
    result = ThroughPlaneEvaluation(axis, factor, factor if thickness is None else float(thickness), n_lr, n_out,
                                    mask_fraction=float(mask.mean()),
                                    convention=("PSNR on [0,1] (data range 1) over the foreground mask (> 0.5 x Otsu, "
                                                "dilated 3 voxels); SSIM: mean of 2D SSIM (11x11 Gaussian) over the "
                                                "slices containing the thick axis, cropped to the mask's bounding box"))
    for name, fn in methods.items():
        start = time.perf_counter()
        out = fn()
        result.seconds[name] = time.perf_counter() - start
        result.scores[name] = masked_scores(out, gt, mask, axis=axis)
    return result


__all__ = [
    "DEFAULT_VIEWS", "resolve_views", "view_columns", "MIN_FACTOR", "MIN_SLICES", "PROJECT_STEPS", "AdaptationReport", "ProjectionReport", "project_onto_input", "ThroughPlaneEvaluation", "adapt_through_plane", "cut_batch", "cut_pair",
    "random_view", "ThroughPlaneScore", "evaluate_through_plane",
    "foreground_mask", "masked_scores", "otsu_threshold", "output_length", "super_resolve_through_plane",
]
