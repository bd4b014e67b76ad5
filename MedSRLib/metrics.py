"""PSNR, SSIM and MS-SSIM on 2D grey images, with the papers' conventions as named options.

All functions take two images of the same shape ``(H, W)`` (numpy or torch; leading singleton axes
such as ``1 x 1 x H x W`` are dropped), compute in float64 and return a Python float. Intensities lie
in ``[0, data_range]``. Conventions (``../shared/design/networks.md`` Section 11):

* PSNR = ``10 log10(L^2 / MSE)``; ``inf`` for identical images.
* SSIM (Wang et al. 2004): 11 x 11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, ``L`` = data
  range, population (not sample) covariances. ``padding='valid'`` averages the map only where the
  window fits (MATLAB ``ssim_index``, BasicSR ``calculate_ssim``; computed with scikit-image);
  ``padding='same'`` zero-pads and averages every pixel (``pytorch_ssim``, used by SRDA's code).
* MS-SSIM (Wang et al. 2003): 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2 x 2
  average pooling between scales (pytorch-msssim); needs the shorter side > 160 px.
* ``y_channel=True``: measure the BT.601 luma of the grey image encoded as 8-bit RGB,
  ``Y = 16 + 219 g`` (``g = x / data_range``) on the 0-255 scale with peak 255 (MATLAB ``rgb2ycbcr``,
  BasicSR ``test_y_channel``): PSNR on Y = PSNR on grey + 20 log10(255/219) = +1.32 dB.
* ``shave``: pixels cropped from every border before measuring (BasicSR/RCAN shave the scale).
* ``quantize=True``: round to 8-bit (clip to [0, 1] x 255, round) first, as BasicSR's ``tensor2img``.

:class:`MetricConvention` bundles these choices; :data:`CONVENTIONS` holds the named ones and
:func:`evaluate_pair` applies one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from .errors import GeometryError, InputSizeError, UnsupportedImageError

SSIM_SIGMA = 1.5
SSIM_WIN = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: scipy/scikit-image truncation that gives the 11-tap window at sigma 1.5 (radius int(3.5*1.5+0.5) = 5).
_TRUNCATE = 3.5
#: MS-SSIM needs the shorter side larger than (11 - 1) * 2^4 (four 2x poolings; pytorch-msssim's check).
MS_SSIM_MIN_SIDE = (SSIM_WIN - 1) * 2**4
#: PSNR on the Y channel of a grey image minus PSNR on the grey image, dB: 20 log10(255/219).
Y_CHANNEL_PSNR_OFFSET_DB = 20.0 * math.log10(255.0 / 219.0)

Padding = Literal["valid", "same"]


def _as_gray(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 2D numpy array (a copy when conversion needs one; never modified)."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise UnsupportedImageError(f"{name} must be a real-valued grey image; got dtype {x.dtype}")
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise UnsupportedImageError(f"{name} must be a real-valued grey image; got dtype {arr.dtype}")
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise UnsupportedImageError(f"{name} must be a 2D grey image (H, W); got shape {tuple(np.shape(x))}")
    return arr.astype(np.float64, copy=False)


def _prepare(
    sr: Any, hr: Any, *, data_range: float, shave: int, y_channel: bool, quantize: bool, min_side: int = 1
) -> tuple[np.ndarray, np.ndarray, float]:
    """Both images as float64 ``(H', W')`` after quantize / Y conversion / shave, and the data range."""
    if isinstance(data_range, bool) or not isinstance(data_range, Real) or not 0 < data_range < math.inf:
        raise ValueError(f"data_range must be a positive number (1.0 for [0, 1] images); got {data_range!r}")
    if isinstance(shave, bool) or not isinstance(shave, (int, np.integer)) or shave < 0:
        raise ValueError(f"shave must be a non-negative integer number of pixels; got {shave!r}")
    a, b = _as_gray(sr, "sr"), _as_gray(hr, "hr")
    if a.shape != b.shape:
        raise GeometryError(f"sr and hr must have the same shape; got {a.shape} and {b.shape}")
    h, w = a.shape
    if min(h, w) - 2 * shave < min_side:
        raise InputSizeError(
            f"image of {h} x {w} pixels is too small: after shaving {shave} px per border the metric needs "
            f"at least {min_side} px per side; use a larger image or a smaller shave"
        )
    if shave:
        a, b = a[shave:-shave, shave:-shave], b[shave:-shave, shave:-shave]
    peak = float(data_range)
    if quantize:
        a, b = (np.round(np.clip(v / peak, 0.0, 1.0) * 255.0) for v in (a, b))
        peak = 255.0
    if y_channel:
        a, b = (16.0 + 219.0 * v / peak for v in (a, b))
        peak = 255.0
    return a, b, peak


def psnr(
    sr: Any, hr: Any, *, data_range: float, shave: int = 0, y_channel: bool = False, quantize: bool = False
) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(L^2 / MSE)`` (``inf`` when the images are equal).

    Args:
        sr, hr: 2D grey images ``(H, W)`` of the same shape with intensities in ``[0, data_range]``.
        data_range: ``L`` (1.0 for normalised images).
        shave: pixels cropped from each border first.
        y_channel: measure ``Y = 16 + 219 x / L`` with peak 255 (+1.32 dB; DRIDSR's tables).
        quantize: round to 8-bit grey levels first (BasicSR's uint8 outputs).
    """
    a, b, peak = _prepare(sr, hr, data_range=data_range, shave=shave, y_channel=y_channel, quantize=quantize)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse)


def _ssim_same(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """SSIM with zero-padded 'same' Gaussian filtering, averaged over every pixel (pytorch_ssim)."""

    def blur(v: np.ndarray) -> np.ndarray:
        return gaussian_filter(v, sigma=SSIM_SIGMA, truncate=_TRUNCATE, mode="constant", cval=0.0)

    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(
    sr: Any,
    hr: Any,
    *,
    data_range: float,
    shave: int = 0,
    y_channel: bool = False,
    padding: Padding = "valid",
    quantize: bool = False,
) -> float:
    """Structural similarity (Wang 2004: 11 x 11 Gaussian, sigma 1.5, K = 0.01, 0.03), mean over the map.

    ``padding='valid'`` (MATLAB/BasicSR) needs at least 11 x 11 pixels after shaving; ``'same'``
    (zero-padded, pytorch_ssim/SRDA) works on any size. Other arguments as :func:`psnr`.
    """
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same'; got {padding!r}")
    min_side = SSIM_WIN if padding == "valid" else 1
    kw = dict(data_range=data_range, shave=shave, y_channel=y_channel, quantize=quantize)
    a, b, peak = _prepare(sr, hr, min_side=min_side, **kw)
    if padding == "same":
        return _ssim_same(a, b, peak)
    # scikit-image crops the 5-px border its 'reflect' filtering touches: exactly the 'valid' mean
    options = dict(gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False, K1=SSIM_K1, K2=SSIM_K2)
    return float(structural_similarity(a, b, data_range=peak, **options))


def ms_ssim(
    sr: Any, hr: Any, *, data_range: float, shave: int = 0, y_channel: bool = False, quantize: bool = False
) -> float:
    """Multi-scale SSIM (Wang 2003; 5 scales, pytorch-msssim). Needs the shorter side > 160 px after shaving.

    pytorch-msssim zero-pads an odd side by one pixel on both sides before each 2 x 2 pooling (kept as
    is: that library is the reference implementation DRIDSR-era code used). Other arguments as :func:`psnr`.
    """
    try:
        from pytorch_msssim import ms_ssim as _msssim_torch  # optional dependency (extra 'metrics')
    except ImportError as exc:
        raise ImportError("ms_ssim needs the pytorch-msssim package: pip install pytorch-msssim") from exc
    kw = dict(data_range=data_range, shave=shave, y_channel=y_channel, quantize=quantize)
    a, b, peak = _prepare(sr, hr, min_side=MS_SSIM_MIN_SIDE + 1, **kw)
    ta, tb = (torch.from_numpy(np.ascontiguousarray(v))[None, None] for v in (a, b))
    # the library builds its window in float32; pass the same Gaussian in float64 for a float64 result
    g = np.exp(-((np.arange(SSIM_WIN) - SSIM_WIN // 2) ** 2) / (2.0 * SSIM_SIGMA**2))
    win = torch.from_numpy(g / g.sum()).reshape(1, 1, 1, SSIM_WIN)
    return float(_msssim_torch(ta, tb, data_range=peak, win=win, K=(SSIM_K1, SSIM_K2)))


@dataclass(frozen=True)
class MetricConvention:
    """A named way to compute PSNR/SSIM so that numbers are comparable with one paper's tables.

    Attributes:
        name: registry name (``"basicsr"``, ``"srda"``, ``"dridsr-y"``).
        shave: border pixels cropped; ``None`` means "the SR scale" (BasicSR/RCAN).
        y_channel: measure the BT.601 Y of the grey image (DRIDSR).
        ssim_padding: ``"valid"`` (MATLAB/BasicSR) or ``"same"`` (zero-padded pytorch_ssim, SRDA code).
        quantize: round to 8-bit grey levels before measuring (BasicSR's uint8 test outputs).
        ms_ssim: also report MS-SSIM (DRIDSR) when the image is larger than 160 px.
        description: one line for the CLI and reports.
    """

    name: str
    shave: int | None = None
    y_channel: bool = False
    ssim_padding: Padding = "valid"
    quantize: bool = False
    ms_ssim: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip().lower():
            raise ValueError(f"name must be a non-empty lower-case string; got {self.name!r}")
        shave = self.shave
        if shave is not None and (isinstance(shave, bool) or not isinstance(shave, int) or shave < 0):
            raise ValueError(f"shave must be None (= scale) or a non-negative int; got {self.shave!r}")
        if self.ssim_padding not in ("valid", "same"):
            raise ValueError(f"ssim_padding must be 'valid' or 'same'; got {self.ssim_padding!r}")

    def shave_for(self, scale: int) -> int:
        """Border pixels cropped at SR factor ``scale``."""
        return int(scale) if self.shave is None else self.shave


#: BasicSR/RCAN/EDSR: grey [0, 1] (= 0-255 without rounding), shave = scale, SSIM 'valid'. Project default.
BASICSR = MetricConvention(
    name="basicsr",
    shave=None,
    description="BasicSR/RCAN: grey image, shave = scale, PSNR peak 1, SSIM Wang 2004 'valid'",
)
#: SRDA's code (Test/test_batch.py): whole image in [0, 1], PSNR 10 log10(1/MSE), pytorch_ssim 'same'.
SRDA = MetricConvention(
    name="srda",
    shave=0,
    ssim_padding="same",
    description="SRDA code: whole image, PSNR 10 log10(1/MSE), SSIM zero-padded 'same' (pytorch_ssim)",
)
#: DRIDSR's tables: BasicSR on the BT.601 Y of the grey image (+1.32 dB PSNR), plus MS-SSIM.
DRIDSR_Y = MetricConvention(
    name="dridsr-y",
    shave=None,
    y_channel=True,
    ms_ssim=True,
    description="DRIDSR: BT.601 Y = 16 + 219 g (peak 255), shave = scale, SSIM 'valid', MS-SSIM",
)

#: Every named convention by name.
CONVENTIONS: dict[str, MetricConvention] = {c.name: c for c in (BASICSR, SRDA, DRIDSR_Y)}
DEFAULT_CONVENTION = BASICSR


def get_convention(name: str | MetricConvention) -> MetricConvention:
    """The convention registered as ``name`` (case-insensitive, ``_`` = ``-``); instances pass through."""
    if isinstance(name, MetricConvention):
        return name
    key = str(name).strip().lower().replace("_", "-")
    if key not in CONVENTIONS:
        raise ValueError(f"unknown metric convention {name!r}; choose one of: {', '.join(CONVENTIONS)}")
    return CONVENTIONS[key]


def evaluate_pair(
    sr: Any,
    hr: Any,
    *,
    scale: int,
    convention: str | MetricConvention = DEFAULT_CONVENTION,
    data_range: float = 1.0,
) -> dict[str, float | None]:
    """PSNR (dB) and SSIM of one SR image against its HR reference under a named convention.

    Args:
        sr, hr: 2D grey images ``(H, W)`` of the same shape, intensities in ``[0, data_range]``.
        scale: the SR factor (sets the shave of conventions that shave the scale).
        convention: a :class:`MetricConvention` or its name (see :data:`CONVENTIONS`).
        data_range: intensity range of the inputs (1.0 for normalised images).

    Returns:
        ``{"psnr": dB, "ssim": value}``, plus ``"ms_ssim"`` when the convention asks for it
        (``None`` when the shaved image is not larger than 160 px).
    """
    conv = get_convention(convention)
    kw: dict[str, Any] = dict(
        data_range=data_range, shave=conv.shave_for(scale), y_channel=conv.y_channel, quantize=conv.quantize
    )
    result: dict[str, float | None] = {
        "psnr": psnr(sr, hr, **kw),
        "ssim": ssim(sr, hr, padding=conv.ssim_padding, **kw),
    }
    if conv.ms_ssim:
        side = min(_as_gray(hr, "hr").shape) - 2 * kw["shave"]
        result["ms_ssim"] = ms_ssim(sr, hr, **kw) if side > MS_SSIM_MIN_SIDE else None
    return result


__all__ = [
    "BASICSR",
    "CONVENTIONS",
    "DEFAULT_CONVENTION",
    "DRIDSR_Y",
    "SRDA",
    "MetricConvention",
    "evaluate_pair",
    "get_convention",
    "ms_ssim",
    "psnr",
    "ssim",
]
