"""The project's one resize and degradation: MATLAB ``imresize(x, scale, 'bicubic')``.

Every LR image MedSR makes -- training pairs, evaluation, the data-consistency check -- and the
``bicubic`` model come from here (``../shared/design/networks.md`` Section 10):

* Keys cubic kernel with a = -0.5 (Keys 1981); when downscaling by ``s`` the kernel is widened by ``s``
  (antialiasing, MATLAB's default), support ``4 s`` input pixels.
* Pixel centres align: output pixel ``i`` (0-based) samples input position ``(i + 0.5) / scale - 0.5``.
* Borders are mirrored with the edge pixel repeated (``x2 x1 | x1 x2 ... xN | xN xN-1``, MATLAB's
  ``symmetric``); output size is ``ceil(N * scale)``.
* Separable, rows (H) then columns (W); float64 stays float64 (exact to ~1e-15), nothing is rounded.

Implementation (Section 10.2's exact torch recipe, generalised): pad symmetrically by 3 kernel
half-widths, resample with ``F.interpolate(mode='bicubic', antialias=True)`` -- the same a = -0.5
kernel with MATLAB's widening, but truncated and renormalised at the border -- and crop the padding.
The padding makes every kept output pixel see MATLAB's mirrored neighbourhood, so the result equals
MATLAB everywhere, works on any device, and costs O(taps) per pixel.

Supported scales: integers ``s >= 1`` (upscaling) and their reciprocals ``1/s`` (downscaling).

Through-plane (one-direction) forms, for thick-slice volumes (issue 20):

* :func:`slice_profile_degrade` -- THE slice-profile degradation along one axis: blur with the slice
  profile (Gaussian with FWHM = thickness, or a rectangle of width = thickness, both in HR pixels),
  then sample at the LR positions that keep the field of view: LR sample ``j`` sits at HR coordinate
  ``(j + 0.5) * factor - 0.5`` (pixel centres; a volume's origin moves by ``(1/f - 1)/2`` x its input
  spacing along that axis when going the other way). Any factor > 1, integer or not; positions that
  fall between HR samples take the linear interpolation of the blurred signal.
* :func:`interpolate_axis` / :func:`interpolation_matrix` -- one-axis interpolation from ``n_in``
  samples to ``n_out`` with the same position convention (HR sample ``i`` at LR coordinate
  ``(i + 0.5) * n_in / n_out - 0.5``), cubic B-spline (``'bspline3'``, interpolating: prefilter +
  cubic B-spline) or ``'linear'``, half-sample symmetric borders (``x1 | x1 x2 ... xN | xN``, as
  ``scipy.ndimage`` ``mode='reflect'``). The baselines of through-plane SR and its finishing resample.

Both are linear maps along one axis, built once per size as a matrix (cached) and applied with one
matrix product, so they run on numpy arrays and torch tensors (any device) alike.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputSizeError, ScaleError, UnsupportedImageError

ImageT = TypeVar("ImageT", np.ndarray, torch.Tensor)

#: Padding, in kernel half-widths (2 input pixels when upscaling, 2 s when downscaling), kept on
#: each side of the image before resampling; 3 LR pixels (Section 10.2) leave a safety margin.
_PAD_LR = 3
#: Relative tolerance when reading a float scale as an integer or the reciprocal of one.
_SCALE_RTOL = 1e-9


def _parse_scale(scale: float) -> tuple[int, bool]:
    """``(s, upscale)`` for ``scale = s`` (upscale) or ``scale = 1/s`` (downscale), s a positive int."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise ScaleError(f"imresize scale must be a number (s or 1/s for an integer s); got {scale!r}")
    value = float(scale)
    if not math.isfinite(value) or value <= 0:
        raise ScaleError(f"imresize scale must be positive and finite; got {scale!r}")
    upscale = value >= 1.0
    factor = value if upscale else 1.0 / value
    rounded = round(factor)
    if abs(factor - rounded) > _SCALE_RTOL * factor:
        raise ScaleError(
            f"imresize supports integer scales s and their reciprocals 1/s only; got {scale!r} "
            "(use e.g. 2, 3, 4 to upscale or 1/2, 1/3, 1/4 to downscale)"
        )
    return int(rounded), upscale


@lru_cache(maxsize=256)
def _symmetric_index(n: int, before: int, after: int) -> torch.Tensor:
    """Indices into a length-``n`` axis that pad it by ``before``/``after`` mirrored samples (edge repeated).

    Periodic in ``2 n`` like MATLAB's ``[1:n, n:-1:1]`` lookup, so any pad works on any ``n >= 1``.
    """
    i = torch.arange(-before, n + after) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def _resize_axis_plan(n: int, factor: int, upscale: bool) -> tuple[int, int, int, int, int]:
    """``(pad_before, pad_after, padded_out, crop_start, n_out)`` for one axis of length ``n``."""
    if upscale:
        pad = _PAD_LR
        return pad, pad, (n + 2 * pad) * factor, pad * factor, n * factor
    n_out = -(-n // factor)  # ceil(n / s), MATLAB's output size
    before = _PAD_LR * factor
    after = _PAD_LR * factor + (n_out * factor - n)  # padded length is a multiple of s: exact scale s
    return before, after, n_out + 2 * _PAD_LR, _PAD_LR, n_out


def _imresize_torch(x: torch.Tensor, factor: int, upscale: bool) -> torch.Tensor:
    """Resize the last two axes of a floating tensor ``(..., H, W)``; returns a new tensor."""
    *lead, h, w = x.shape
    ph0, ph1, h_pad_out, h_crop, h_out = _resize_axis_plan(h, factor, upscale)
    pw0, pw1, w_pad_out, w_crop, w_out = _resize_axis_plan(w, factor, upscale)
    if factor == 1:
        return x.clone()
    if x.numel() == 0:
        return x.new_empty((*lead, h_out, w_out))
    idx_h = _symmetric_index(h, ph0, ph1).to(x.device)
    idx_w = _symmetric_index(w, pw0, pw1).to(x.device)
    padded = x.reshape(-1, 1, h, w).index_select(2, idx_h).index_select(3, idx_w)
    out = F.interpolate(padded, size=(h_pad_out, w_pad_out), mode="bicubic", align_corners=False, antialias=True)
    out = out[:, :, h_crop : h_crop + h_out, w_crop : w_crop + w_out]
    return out.reshape(*lead, h_out, w_out)


def _check_image(x: np.ndarray | torch.Tensor, what: str) -> None:
    if x.ndim < 2:
        raise UnsupportedImageError(f"{what} needs an image of shape (H, W) or (..., H, W); got shape {tuple(x.shape)}")
    if x.shape[-2] < 1 or x.shape[-1] < 1:
        raise InputSizeError(f"{what} needs H, W >= 1; got shape {tuple(x.shape)}")


def imresize(x: ImageT, *, scale: float) -> ImageT:
    """MATLAB ``imresize(x, scale, 'bicubic')`` over the last two axes (H, W) of ``x``.

    Args:
        x: numpy array or torch tensor of shape ``(H, W)`` or ``(..., H, W)`` (e.g. ``N x C x H x W``
            batches or a ``(z, y, x)`` volume resized slice by slice); any device.
        scale: an integer ``s`` (upscale, output ``(s H, s W)``) or ``1/s`` (downscale with
            antialiasing, output ``(ceil(H/s), ceil(W/s))``).

    Returns:
        A new array of the same kind (numpy/torch, device). float32/float64 keep their dtype and are
        computed in it; float16/bfloat16 are computed in float32 and cast back; integer and bool
        inputs (and numpy long double) give float64 (never rounded). ``x`` is not modified.

    Raises:
        ScaleError: ``scale`` is not ``s`` or ``1/s`` for a positive integer ``s``.
        UnsupportedImageError: fewer than 2 axes, or a complex dtype.
        InputSizeError: H or W is 0.
    """
    factor, upscale = _parse_scale(scale)
    if isinstance(x, torch.Tensor):
        _check_image(x, "imresize")
        if x.is_complex():
            raise UnsupportedImageError(f"imresize needs a real-valued image; got dtype {x.dtype}")
        if x.dtype in (torch.float32, torch.float64):
            return _imresize_torch(x, factor, upscale)
        if x.is_floating_point():
            return _imresize_torch(x.float(), factor, upscale).to(x.dtype)
        return _imresize_torch(x.double(), factor, upscale)
    if not isinstance(x, np.ndarray):
        raise UnsupportedImageError(f"imresize needs a numpy array or torch tensor; got {type(x).__name__}")
    _check_image(x, "imresize")
    kind = x.dtype.kind
    if kind not in "fiub":
        raise UnsupportedImageError(f"imresize needs a real-valued image; got dtype {x.dtype}")
    half = kind == "f" and x.dtype.itemsize == 2
    work = np.dtype(np.float32 if half or (kind == "f" and x.dtype.itemsize == 4) else np.float64)
    arr = np.ascontiguousarray(x, dtype=work)
    if not arr.flags.writeable:  # torch.from_numpy warns on read-only memory; it is only read here
        arr = arr.copy()
    out = _imresize_torch(torch.from_numpy(arr), factor, upscale).numpy()
    return out.astype(np.float16) if half else out

def _check_int_scale(scale: int, what: str) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or int(scale) < 1:
        raise ScaleError(f"{what} scale must be a positive integer; got {scale!r}")
    return int(scale)


def modcrop(img: ImageT, scale: int) -> ImageT:
    """Crop the last two axes (H, W) down to multiples of ``scale``, keeping the top-left corner.

    Returns a view (no copy) of ``img`` (numpy array or torch tensor, ``(..., H, W)``).

    Raises:
        ScaleError: ``scale`` is not a positive integer.
        InputSizeError: H or W is smaller than ``scale``.
    """
    s = _check_int_scale(scale, "modcrop")
    _check_image(img, "modcrop")
    h, w = img.shape[-2], img.shape[-1]
    if h < s or w < s:
        raise InputSizeError(f"image of {h} x {w} pixels is smaller than the scale x{s}; use a larger image or scale")
    return img[..., : h - h % s, : w - w % s]


def degrade(hr: ImageT, *, scale: int) -> ImageT:
    """THE degradation: ``imresize(modcrop(hr, scale), scale=1/scale)`` (MATLAB bicubic, antialiased).

    Args:
        hr: HR image(s), numpy or torch, ``(..., H, W)`` with H, W >= ``scale``.
        scale: integer SR factor ``s >= 1``.

    Returns:
        LR image(s) of shape ``(..., H // s, W // s)``, same kind and dtype rules as :func:`imresize`.
    """
    s = _check_int_scale(scale, "degrade")
    return imresize(modcrop(hr, s), scale=1.0 / s)


# --------------------------------------------------------------------------------------------------
# one-direction (through-plane) degradation and interpolation

#: Slice profiles :func:`slice_profile_degrade` knows.
PROFILES = ("gaussian", "rect")
#: Kinds :func:`interpolation_matrix` knows.
INTERPOLATIONS = ("bspline3", "linear")
#: Gaussian kernels are cut at this many standard deviations (weight beyond: < 1e-7 of the total).
_GAUSS_TRUNCATE = 5.5
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _positive_number(value: Any, what: str, *, minimum: float = 0.0, strict: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ScaleError(f"{what} must be a number; got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < minimum or (strict and v == minimum):
        raise ScaleError(f"{what} must be {'>' if strict else '>='} {minimum:g}; got {value!r}")
    return v


def lr_length(n_hr: int, factor: float) -> int:
    """Number of LR samples :func:`slice_profile_degrade` keeps from ``n_hr`` HR samples at ``factor``:
    ``floor(n_hr / factor)`` (up to 1e-9), at least 1. They cover HR rows ``0 .. lr_length * factor``."""
    return max(1, int(math.floor(n_hr / factor + 1e-9)))


def _fold(index: np.ndarray, n: int) -> np.ndarray:
    """Half-sample symmetric folding of integer indices into ``[0, n)`` (period ``2 n``)."""
    i = np.mod(index, 2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


def _profile_taps(thickness: float, profile: str) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, weights)`` of the slice profile on the HR grid (weights sum to 1).

    ``gaussian``: the Gaussian of FWHM ``thickness`` sampled at integer offsets, cut at 5.5 sigma.
    ``rect``: each HR pixel ``[k - 1/2, k + 1/2]`` weighted by its overlap with ``[-T/2, T/2]``
    (exact for non-integer widths ``T``).
    """
    if profile == "gaussian":
        sigma = thickness * _FWHM_TO_SIGMA
        half = max(1, int(math.ceil(_GAUSS_TRUNCATE * sigma)))
        k = np.arange(-half, half + 1, dtype=np.float64)
        w = np.exp(-0.5 * (k / sigma) ** 2)
    else:
        half = int(math.ceil(thickness / 2.0 + 0.5))
        k = np.arange(-half, half + 1, dtype=np.float64)
        w = np.clip(np.minimum(k + 0.5, thickness / 2.0) - np.maximum(k - 0.5, -thickness / 2.0), 0.0, None)
    keep = w > 0
    return k[keep].astype(np.int64), w[keep] / w[keep].sum()


@lru_cache(maxsize=128)
def slice_profile_matrix(n_hr: int, factor: float, thickness: float, profile: str = "gaussian") -> np.ndarray:
    """The ``(lr_length(n_hr, factor), n_hr)`` float64 matrix of :func:`slice_profile_degrade` (read-only).

    Row ``j``: the profile (half-sample symmetric borders) centred at HR coordinate
    ``c_j = (j + 0.5) * factor - 0.5``, linearly interpolated between the HR samples around ``c_j``.
    Every row sums to 1.
    """
    n_lr = lr_length(n_hr, factor)
    offsets, weights = _profile_taps(thickness, profile)
    blur = np.zeros((n_hr, n_hr))
    rows = np.arange(n_hr)[:, None]
    np.add.at(blur, (np.broadcast_to(rows, (n_hr, offsets.size)), _fold(rows + offsets[None, :], n_hr)),
              np.broadcast_to(weights, (n_hr, offsets.size)))
    centres = (np.arange(n_lr) + 0.5) * factor - 0.5
    base = np.floor(centres).astype(np.int64)
    frac = centres - base
    sample = np.zeros((n_lr, n_hr))
    lo, hi = np.clip(base, 0, n_hr - 1), np.clip(base + 1, 0, n_hr - 1)
    np.add.at(sample, (np.arange(n_lr), lo), 1.0 - frac)
    np.add.at(sample, (np.arange(n_lr), hi), frac)
    out = sample @ blur
    out.setflags(write=False)
    return out


def _bspline3(t: np.ndarray) -> np.ndarray:
    """The cubic B-spline kernel (support |t| < 2)."""
    a = np.abs(t)
    return np.where(a < 1, 2.0 / 3.0 - a * a + 0.5 * a ** 3, np.where(a < 2, (2.0 - a) ** 3 / 6.0, 0.0))


@lru_cache(maxsize=128)
def interpolation_matrix(n_in: int, n_out: int, kind: str = "bspline3") -> np.ndarray:
    """The ``(n_out, n_in)`` float64 matrix that interpolates ``n_in`` samples onto ``n_out`` (read-only).

    Output sample ``i`` sits at input coordinate ``u_i = (i + 0.5) * n_in / n_out - 0.5`` (the
    field-of-view-keeping convention of :func:`slice_profile_degrade`); borders are half-sample
    symmetric. ``'linear'``: linear interpolation; ``'bspline3'``: interpolating cubic B-spline
    (coefficients from the prefilter, solved exactly, then the cubic B-spline at ``u_i``); equals
    ``scipy.ndimage.map_coordinates(..., order=1 | 3, mode='reflect')``.
    """
    _check_sizes(n_in, n_out)
    kind = _check_kind(kind)
    u = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    out = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if kind == "linear":
        base = np.floor(u).astype(np.int64)
        frac = u - base
        np.add.at(out, (rows, _fold(base, n_in)), 1.0 - frac)
        np.add.at(out, (rows, _fold(base + 1, n_in)), frac)
    else:
        base = np.floor(u).astype(np.int64)
        for d in (-1, 0, 1, 2):
            np.add.at(out, (rows, _fold(base + d, n_in)), _bspline3(u - (base + d)))
        # prefilter: samples y = P c with P[j, fold(j + d)] += beta3(d); coefficients c = P^-1 y
        prefilter = np.zeros((n_in, n_in))
        j = np.arange(n_in)
        for d in (-1, 0, 1):
            np.add.at(prefilter, (j, _fold(j + d, n_in)), _bspline3(np.array(float(d))))
        out = out @ np.linalg.inv(prefilter)
    out.setflags(write=False)
    return out


def _check_sizes(n_in: Any, n_out: Any) -> None:
    for name, n in (("n_in", n_in), ("n_out", n_out)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
            raise InputSizeError(f"interpolation {name} must be a positive integer; got {n!r}")


def _check_kind(kind: Any) -> str:
    if kind not in INTERPOLATIONS:
        raise ScaleError(f"interpolation kind must be one of {', '.join(INTERPOLATIONS)}; got {kind!r}")
    return str(kind)


def apply_along_axis(x: ImageT, matrix: np.ndarray, axis: int) -> ImageT:
    """``matrix @ x`` along ``axis`` (``matrix``: ``(m, x.shape[axis])``); numpy or torch, any device.

    Floating inputs keep their dtype (float16/bfloat16 computed in float32); others give float64
    (numpy) / float32 (torch).
    """
    if isinstance(x, torch.Tensor):
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        m = torch.tensor(matrix, dtype=dtype, device=x.device)
        moved = torch.movedim(x.to(dtype), axis, -1)
        out = torch.movedim(moved @ m.T, -1, axis)
        return out.to(x.dtype) if x.is_floating_point() else out
    arr = np.asarray(x)
    half = arr.dtype.kind == "f" and arr.dtype.itemsize == 2
    work = np.float32 if half or arr.dtype == np.float32 else np.float64
    out = np.moveaxis(np.tensordot(matrix.astype(work), arr.astype(work, copy=False), axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(out.astype(np.float16) if half else out)


def _check_axis(x: Any, axis: Any, what: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -x.ndim <= int(axis) < x.ndim:
        raise UnsupportedImageError(f"{what}: axis {axis!r} is not an axis of an array of shape {tuple(x.shape)}")
    return int(axis) % x.ndim


def slice_profile_degrade(
    image: ImageT, *, axis: int, factor: float, thickness: float | None = None, profile: str = "gaussian"
) -> ImageT:
    """THE through-plane degradation: blur ``image`` along ``axis`` with the slice profile, then keep
    one sample every ``factor`` HR samples (field of view kept).

    Args:
        image: numpy array or torch tensor of any shape (a ``(H, W)`` slice, an ``N x 1 x H x W``
            batch, a ``(z, y, x)`` volume); intensities are not changed otherwise.
        axis: the axis to degrade (e.g. 0 = rows of a 2D slice, z of a volume).
        factor: HR samples per LR sample, > 1 (non-integer allowed).
        thickness: the profile's FWHM (``'gaussian'``) or width (``'rect'``) in HR samples
            (default: ``factor``, i.e. contiguous slices).
        profile: ``'gaussian'`` or ``'rect'``.

    Returns:
        A new array of the same kind with ``lr_length(n, factor)`` samples along ``axis``; LR sample
        ``j`` sits at HR coordinate ``(j + 0.5) * factor - 0.5``. Dtype as :func:`apply_along_axis`.

    Raises:
        ScaleError: ``factor <= 1``, ``thickness <= 0``, or an unknown profile.
        UnsupportedImageError: ``axis`` is not an axis of ``image``.
    """
    f = _positive_number(factor, "slice_profile_degrade factor", minimum=1.0)
    t = f if thickness is None else _positive_number(thickness, "slice thickness (HR samples)")
    if profile not in PROFILES:
        raise ScaleError(f"slice profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    ax = _check_axis(image, axis, "slice_profile_degrade")
    n = int(image.shape[ax])
    if n < 1:
        raise InputSizeError(f"slice_profile_degrade needs at least one sample along axis {ax}")
    return apply_along_axis(image, slice_profile_matrix(n, f, t, profile), ax)


def interpolate_axis(image: ImageT, *, axis: int, n_out: int, kind: str = "bspline3") -> ImageT:
    """Interpolate ``image`` along ``axis`` onto ``n_out`` samples (:func:`interpolation_matrix`).

    The through-plane baselines (``'bspline3'``, ``'linear'``) and the finishing resample of a
    non-integer factor. numpy or torch; other axes untouched.
    """
    ax = _check_axis(image, axis, "interpolate_axis")
    return apply_along_axis(image, interpolation_matrix(int(image.shape[ax]), n_out, kind), ax)


__all__ = [
    "INTERPOLATIONS", "PROFILES", "apply_along_axis", "degrade", "imresize", "interpolate_axis",
    "interpolation_matrix", "lr_length", "modcrop", "slice_profile_degrade", "slice_profile_matrix",
]
