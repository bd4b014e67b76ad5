"""Comparison pictures: LR, bicubic, each model and HR side by side, with zoomed crops and scores.

The HR image (2D, [0, 1]) is cropped to a multiple of the scale and degraded with the project's one
degradation (:func:`MedSRLib.resize.degrade`); every model -- ``bicubic`` included -- is a registry
model run by one :class:`MedSRLib.engine.Predictor` per model, and scored against HR with
:func:`MedSRLib.metrics.evaluate_pair` under a named convention, exactly as :mod:`MedSRLib.evaluate`
does. The picture has one column per image (LR nearest-upscaled for display, each model, HR): the
whole image with the crop box drawn on it, the crop zoomed below, then the name and PSNR/SSIM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import InputFileError, InputSizeError, OptionError, OutputPathError
from .intensity import image_to_unit

#: Side (px) of each column's square display area.
TILE = 256
#: Gap (px) between tiles and around the panel.
GAP = 6
#: Colour of the crop box and the zoomed crop's frame.
BOX_COLOUR = (255, 80, 40)
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (20, 20, 20)
FONT_SIZE = 14

Crop = tuple[int, int, int]


@dataclass
class PanelData:
    """What a panel shows: the HR image (modcropped), its LR, each model's output and scores."""

    hr: np.ndarray
    lr: np.ndarray
    scale: int
    convention: str
    outputs: dict[str, np.ndarray]
    scores: dict[str, dict[str, float | None]]


def predictors_for(
    models: Sequence[str], scale: int, *, weights: Mapping[str, str | Path] | None = None, options: Any = None
) -> dict[str, Any]:
    """``{model name: Predictor}`` for ``models`` at ``scale`` (``weights`` maps a model name to a weights
    file overriding the shipped one; ``options`` an ``EngineOptions``), built once for many images."""
    from .engine import Predictor
    from .models import get_model

    if not models:
        raise OptionError("models must name at least one registered model (e.g. ['bicubic'])")
    specs = [get_model(name) for name in models]
    weights = {get_model(k).name: v for k, v in (weights or {}).items()}
    return {spec.name: Predictor(spec, scale, weights=weights.get(spec.name), options=options) for spec in specs}


def super_resolve_and_score(
    hr: np.ndarray,
    *,
    scale: int,
    models: Sequence[str] = (),
    convention: str = "basicsr",
    weights: Mapping[str, str | Path] | None = None,
    options: Any = None,
    predictors: Mapping[str, Any] | None = None,
) -> PanelData:
    """Degrade ``hr``, run each model on the LR image and score it with ``evaluate_pair``, exactly as
    ``medsr evaluate`` does (:func:`MedSRLib.evaluate.degrade_and_super_resolve`).

    Either ``models`` (with ``weights``, a model name -> weights file override, and ``options``) or
    ``predictors`` built once by :func:`predictors_for`.
    """
    from .evaluate import degrade_and_super_resolve
    from .metrics import evaluate_pair, get_convention

    hr = np.asarray(hr, dtype=np.float64)
    if hr.ndim != 2:
        raise InputSizeError(f"the HR image must be 2D; got shape {hr.shape}")
    convention = get_convention(convention).name
    if predictors is None:
        predictors = predictors_for(models, scale, weights=weights, options=options)
    elif not predictors:
        raise OptionError("predictors must hold at least one Predictor")
    scale = int(scale)
    hr = np.clip(hr, 0.0, 1.0)
    outputs: dict[str, np.ndarray] = {}
    scores: dict[str, dict[str, float | None]] = {}
    lr = None
    for name, predictor in predictors.items():
        if predictor.scale != scale:
            raise OptionError(f"the predictor of {name} runs x{predictor.scale}, not x{scale}")
        cropped, lr, outputs[name] = degrade_and_super_resolve(predictor, hr, name="the HR image")
        scores[name] = evaluate_pair(outputs[name], cropped, scale=scale, convention=convention)
    assert lr is not None
    return PanelData(hr=cropped, lr=lr, scale=scale, convention=convention, outputs=outputs, scores=scores)


def auto_crop(hr: np.ndarray, *, scale: int, size: int | None = None) -> Crop:
    """The ``(y, x, size)`` window (HR px, multiples of ``scale``) with the most gradient energy.

    Energy is the summed gradient magnitude (not its square, which one strong edge such as the body
    outline would dominate), so the window lands on textured anatomy. ``size`` defaults to about a
    third of the shorter side, chosen so that an integer zoom fills a :data:`TILE`-px tile.
    """
    hr = np.asarray(hr, dtype=np.float64)
    h, w = hr.shape
    if size is None:
        zoom = max(1, round(TILE / max(min(h, w) / 3.0, 1.0)))
        size = TILE // zoom
    size = _crop_size(size, scale, h, w)
    gy, gx = np.gradient(hr)
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = np.cumsum(np.cumsum(np.hypot(gy, gx), axis=0), axis=1)
    ys = np.arange(0, h - size + 1, scale)
    xs = np.arange(0, w - size + 1, scale)
    energy = (
        integral[ys[:, None] + size, xs[None, :] + size]
        - integral[ys[:, None], xs[None, :] + size]
        - integral[ys[:, None] + size, xs[None, :]]
        + integral[ys[:, None], xs[None, :]]
    )
    iy, ix = np.unravel_index(int(np.argmax(energy)), energy.shape)
    return int(ys[iy]), int(xs[ix]), size


def _crop_size(size: int, scale: int, h: int, w: int) -> int:
    """``size`` rounded down to a multiple of ``scale``, at least ``scale`` and at most the image."""
    size = min(int(size), h, w)
    return max(scale, size - size % scale)


def check_crop(crop: Sequence[int], *, scale: int, shape: tuple[int, int]) -> Crop:
    """``crop`` = (y, x, size) snapped down to multiples of ``scale``; :class:`OptionError` if outside."""
    if len(crop) != 3 or any(isinstance(v, bool) or int(v) != v for v in crop):
        raise OptionError(f"crop must be three integers (y, x, size) in HR pixels; got {crop!r}")
    y, x, size = (int(v) for v in crop)
    h, w = shape
    if size < scale or y < 0 or x < 0 or y + size > h or x + size > w:
        raise OptionError(f"crop {crop!r} (y, x, size) is not inside the {w}x{h} px image or smaller than x{scale}")
    return y - y % scale, x - x % scale, size - size % scale


def caption_lines(name: str, scores: Mapping[str, float | None] | None, convention: str) -> list[str]:
    """The caption under a column: the name, then PSNR (dB, convention named) and SSIM when scored."""
    if scores is None:
        return [name]
    return [name, f"PSNR {scores['psnr']:.2f} dB ({convention})", f"SSIM {scores['ssim']:.4f}"]


def _font() -> Any:
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L")


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` resized to ``size``: nearest when enlarging by an integer, Lanczos otherwise."""
    if size == image.size:
        return image
    integer = size[0] % image.size[0] == 0 and size[1] % image.size[1] == 0
    return image.resize(size, Image.Resampling.NEAREST if integer else Image.Resampling.LANCZOS)


def render_panel(data: PanelData, *, crop: Sequence[int] | None = None, title: str | None = None) -> Image.Image:
    """Draw :class:`PanelData` (columns LR, each model, HR); ``crop`` = (y, x, size) in HR px or None."""
    s, (h, w) = data.scale, data.hr.shape
    y, x, size = check_crop(crop, scale=s, shape=(h, w)) if crop is not None else auto_crop(data.hr, scale=s)
    # The whole image fits a TILE square (integer nearest enlargement of small images); the crop is
    # enlarged by an integer factor so every HR pixel is a visible square.
    whole_factor = TILE / max(h, w) if max(h, w) > TILE else float(max(1, TILE // max(h, w)))
    whole = (max(1, round(w * whole_factor)), max(1, round(h * whole_factor)))
    zoom = max(1, TILE // size)
    lr_window = data.lr[y // s : (y + size) // s, x // s : (x + size) // s]
    columns: list[tuple[str, np.ndarray, np.ndarray, Mapping[str, Any] | None]] = [
        (f"LR input ({data.lr.shape[1]}x{data.lr.shape[0]} px)", data.lr, lr_window, None)
    ]
    for name, sr in data.outputs.items():
        columns.append((name, sr, sr[y : y + size, x : x + size], data.scores[name]))
    columns.append((f"HR reference ({w}x{h} px)", data.hr, data.hr[y : y + size, x : x + size], None))

    font = _font()
    line_h = font.getbbox("Ag")[3] + 4
    n_lines = max(len(caption_lines(c[0], c[3], data.convention)) for c in columns)
    title_h = line_h + GAP if title else 0
    width = GAP + len(columns) * (TILE + GAP)
    height = GAP + title_h + whole[1] + GAP + size * zoom + GAP + n_lines * line_h + GAP
    panel = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    if title:
        draw.text((GAP, GAP), title, fill=TEXT_COLOUR, font=font)
    top = GAP + title_h
    for k, (name, image, window, scores) in enumerate(columns):
        left = GAP + k * (TILE + GAP)
        x0 = left + (TILE - whole[0]) // 2
        panel.paste(_fit(_to_pil(image), whole).convert("RGB"), (x0, top))
        fx, fy = whole[0] / w, whole[1] / h
        draw.rectangle(
            (x0 + round(x * fx), top + round(y * fy), x0 + round((x + size) * fx) - 1, top + round((y + size) * fy) - 1),
            outline=BOX_COLOUR,
            width=2,
        )
        zy = top + whole[1] + GAP
        zx = left + (TILE - size * zoom) // 2
        panel.paste(_to_pil(window).resize((size * zoom, size * zoom), Image.Resampling.NEAREST).convert("RGB"), (zx, zy))
        draw.rectangle((zx, zy, zx + size * zoom - 1, zy + size * zoom - 1), outline=BOX_COLOUR, width=2)
        for j, line in enumerate(caption_lines(name, scores, data.convention)):
            draw.text((left, zy + size * zoom + GAP + j * line_h), line, fill=TEXT_COLOUR, font=font)
    return panel


def comparison_panel(
    hr: np.ndarray,
    *,
    scale: int,
    models: Sequence[str],
    crop: tuple[int, int, int] | None = None,
    convention: str = "basicsr",
    weights: dict | None = None,
    options: Any = None,
    title: str | None = None,
) -> Image.Image:
    """The comparison picture of ``models`` on the 2D HR image ``hr`` (values in [0, 1]).

    ``crop`` = (y, x, size) in HR pixels (None: the window with the most gradient energy);
    ``weights`` maps model names to weights files; ``options`` is an ``EngineOptions``.
    """
    data = super_resolve_and_score(hr, scale=scale, models=models, convention=convention, weights=weights, options=options)
    return render_panel(data, crop=crop, title=title)


def _check_png_path(out_png: str | Path, inputs: Sequence[str | Path] = ()) -> Path:
    out = Path(out_png).expanduser()
    if out.suffix.lower() != ".png":
        raise OutputPathError(f"cannot write '{out.name}': the panel is a PNG; give a path ending in .png")
    if not out.resolve().parent.is_dir():
        raise OutputPathError(f"output folder does not exist: {out.resolve().parent}; create it first")
    if out.is_dir():
        raise OutputPathError(f"output path is an existing folder: {out}; give a file name")
    for source in inputs:
        if out.resolve() == Path(source).expanduser().resolve():
            raise OutputPathError(f"output {out} is the input; choose another output path so the input is kept")
    return out


def _save_png(panel: Image.Image, out: Path, meta: Mapping[str, Any]) -> None:
    """Save with the scores as a ``medsr-panel`` JSON text chunk (palette PNG: small, visually lossless)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("medsr-panel", json.dumps(meta))
    palette = panel.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(out, pnginfo=info, optimize=True)


def save_comparison_panel(
    image_path: str | Path,
    out_png: str | Path,
    *,
    scale: int,
    models: Sequence[str],
    crop: tuple[int, int, int] | None = None,
    convention: str = "basicsr",
    weights: dict | None = None,
    options: Any = None,
    title: str | None = None,
) -> dict[str, dict[str, float | None]]:
    """Read one 2D image file (normalised as ``medsr evaluate`` does), save its panel; returns the scores."""
    from .io import read_image_2d

    out = _check_png_path(out_png, [image_path])
    image_path = Path(image_path)
    hr = image_to_unit(read_image_2d(image_path))
    data = super_resolve_and_score(hr, scale=scale, models=models, convention=convention, weights=weights, options=options)
    panel, meta = _named_panel(data, image_path.name, crop=crop, title=title)
    _save_png(panel, out, meta)
    return data.scores


def _named_panel(
    data: PanelData, name: str, *, crop: Sequence[int] | None = None, title: str | None = None
) -> tuple[Image.Image, dict[str, Any]]:
    """The panel of image ``name`` (default title: name, scale and crop) and its PNG metadata."""
    s = data.scale
    y, x, size = check_crop(crop, scale=s, shape=data.hr.shape) if crop is not None else auto_crop(data.hr, scale=s)
    if title is None:
        title = f"{name}  x{s}  crop (y, x, size) = ({y}, {x}, {size})"
    meta = {"image": name, "scale": s, "convention": data.convention, "crop": [y, x, size], "scores": data.scores}
    return render_panel(data, crop=(y, x, size), title=title), meta


#: 2D image endings read as one image (other files are read as volumes, as ``medsr evaluate`` does).
_IMAGE_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _panel_images(
    hr_path: Path, *, limit: int, axis: Any, series_uid: str | None
) -> tuple[str | None, list[tuple[str, np.ndarray]]]:
    """``(modality, [(name, unit image)])``: the first ``limit`` images of a folder in sorted order, a
    2D file, or the ``limit`` slices around the middle of a volume (its first slices are often empty)."""
    from .evaluate import _looks_like_dicom_folder, _unit_images_from_volume
    from .io import list_images_2d, read_image_2d

    if hr_path.is_file() and hr_path.suffix.lower() in _IMAGE_ENDINGS:
        return None, [(hr_path.name, image_to_unit(read_image_2d(hr_path)))]
    if hr_path.is_dir() and not _looks_like_dicom_folder(hr_path):
        paths = list_images_2d(hr_path)[:limit]
        if not paths:
            raise InputFileError(f"no 2D images (PNG, JPEG, BMP, TIFF, DICOM, NIfTI) found in {hr_path}; check the path")
        return None, [(str(p.relative_to(hr_path)), image_to_unit(read_image_2d(p))) for p in paths]
    modality, slices = _unit_images_from_volume(hr_path, axis, series_uid)
    items = list(slices)
    start = max(0, len(items) // 2 - limit // 2)
    return modality, items[start : start + limit]


def panel_for_path(
    hr_path: str | Path,
    out_png: str | Path,
    *,
    model: str | None,
    scale: int,
    convention: str = "basicsr",
    limit: int = 1,
    axis: Any = None,
    series_uid: str | None = None,
    weights: str | Path | None = None,
    options: Any = None,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """``medsr evaluate --panel OUT.png``: the panel (bicubic and ``model``) of what ``hr_path`` holds.

    ``hr_path`` is what ``medsr evaluate`` takes: a folder of 2D images (its first ``limit`` images in
    sorted order), one 2D image file, or a volume / DICOM folder (``limit`` slices around the middle).
    ``model=None`` is evaluate's default for the modality and scale. Several images are stacked
    vertically in one PNG. Returns ``{image name: {model: scores}}``.
    """
    from .models import default_model, get_model

    if isinstance(limit, bool) or int(limit) != limit or limit < 1:
        raise OptionError(f"limit must be a positive integer (images in the panel); got {limit!r}")
    hr_path = Path(hr_path)
    if not hr_path.exists():
        raise InputFileError(f"{hr_path} does not exist; give a folder of 2D images, an image, or a volume/DICOM folder")
    out = _check_png_path(out_png, [hr_path])
    modality, images = _panel_images(hr_path, limit=int(limit), axis=axis, series_uid=series_uid)
    spec = get_model(model) if model is not None else default_model(modality, scale)
    models = ["bicubic"] + ([spec.name] if spec.name != "bicubic" else [])
    panels, meta = [], []
    override = {spec.name: weights} if weights is not None else None
    predictors = predictors_for(models, scale, weights=override, options=options)
    for name, hr in images:
        data = super_resolve_and_score(hr, scale=scale, convention=convention, predictors=predictors)
        panel, image_meta = _named_panel(data, name)
        panels.append(panel)
        meta.append(image_meta)
    stacked = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels)), BACKGROUND)
    top = 0
    for p in panels:
        stacked.paste(p, (0, top))
        top += p.height
    _save_png(stacked, out, {"images": meta})
    return {m["image"]: m["scores"] for m in meta}


__all__ = [
    "PanelData",
    "auto_crop",
    "caption_lines",
    "check_crop",
    "comparison_panel",
    "panel_for_path",
    "render_panel",
    "save_comparison_panel",
    "predictors_for",
    "super_resolve_and_score",
]
