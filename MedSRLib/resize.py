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
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TypeVar

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


__all__ = ["degrade", "imresize", "modcrop"]
