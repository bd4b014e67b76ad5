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
from .volume import Volume

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


def auto_crop(hr: np.ndarray, *, scale: int, size: int | None = None, weight: np.ndarray | None = None) -> Crop:
    """The ``(y, x, size)`` window (HR px, multiples of ``scale``) with the most gradient energy.

    Energy is the summed gradient magnitude (not its square, which one strong edge such as the body
    outline would dominate), so the window lands on textured anatomy. ``size`` defaults to about a
    third of the shorter side, chosen so that an integer zoom fills a :data:`TILE`-px tile.
    ``weight`` (same shape, e.g. :func:`anatomy_mask`) multiplies the gradient magnitude first.
    """
    hr = np.asarray(hr, dtype=np.float64)
    h, w = hr.shape
    if size is None:
        zoom = max(1, round(TILE / max(min(h, w) / 3.0, 1.0)))
        size = TILE // zoom
    size = _crop_size(size, scale, h, w)
    gy, gx = np.gradient(hr)
    integral = np.zeros((h + 1, w + 1))
    magnitude = np.hypot(gy, gx) if weight is None else np.hypot(gy, gx) * np.asarray(weight, dtype=np.float64)
    integral[1:, 1:] = np.cumsum(np.cumsum(magnitude, axis=0), axis=1)
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


def render_panel(data: PanelData, *, crop: Sequence[int] | None = None, title: str | None = None,
                 lr_name: str | None = None, hr_name: str | None = None) -> Image.Image:
    """Draw :class:`PanelData` (columns LR, each model, HR); ``crop`` = (y, x, size) in HR px or None;
    ``lr_name``/``hr_name`` replace the first/last column's caption (default: their pixel sizes)."""
    s, (h, w) = data.scale, data.hr.shape
    y, x, size = check_crop(crop, scale=s, shape=(h, w)) if crop is not None else auto_crop(data.hr, scale=s)
    # The whole image fits a TILE square (integer nearest enlargement of small images); the crop is
    # enlarged by an integer factor so every HR pixel is a visible square.
    whole_factor = TILE / max(h, w) if max(h, w) > TILE else float(max(1, TILE // max(h, w)))
    whole = (max(1, round(w * whole_factor)), max(1, round(h * whole_factor)))
    zoom = max(1, TILE // size)
    lr_window = data.lr[y // s : (y + size) // s, x // s : (x + size) // s]
    columns: list[tuple[str, np.ndarray, np.ndarray, Mapping[str, Any] | None]] = [
        (lr_name or f"LR input ({data.lr.shape[1]}x{data.lr.shape[0]} px)", data.lr, lr_window, None)
    ]
    for name, sr in data.outputs.items():
        columns.append((name, sr, sr[y : y + size, x : x + size], data.scores[name]))
    columns.append((hr_name or f"HR reference ({w}x{h} px)", data.hr, data.hr[y : y + size, x : x + size], None))

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


def _check_png_path(out_png: str | Path, inputs: Sequence[str | Path] = (), *, window: str | None = None) -> Path:
    """Validate a panel's output path (``.png``, folder exists, not a folder, not an input) and a CT
    window name; raises :class:`~MedSRLib.errors.OutputPathError` / :class:`~MedSRLib.errors.OptionError`."""
    if window is not None and window not in CT_WINDOWS:
        raise OptionError(f"unknown CT window '{window}'; choose one of {', '.join(CT_WINDOWS)}")
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
    shown = _volume_display(hr_path, axis=axis, series_uid=series_uid) if modality is not None else None
    for name, hr in images:
        data = super_resolve_and_score(hr, scale=scale, convention=convention, predictors=predictors)
        crop, title = None, None
        if shown is not None:  # a volume: its window, radiological orientation, crop on anatomy
            data, crop, title = _displayed(data, name, *shown)
        panel, image_meta = _named_panel(data, name, crop=crop, title=title)
        if shown is not None:
            image_meta.update(window=shown[1].label, plane=shown[2].plane)
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
    "CT_WINDOWS",
    "DisplayWindow",
    "anatomy_mask",
    "display_window",
    "check_panel_path",
    "save_volume_panel",
    "volume_panel",
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


# --------------------------------------------------------------------------------------------------
# Pictures of volumes: labelled display windows, crops on anatomy, radiological orientation, and a
# reformat across the slice axis (where a thick-slice volume's in-plane gain is seen beside its slices)

#: Labelled CT display windows: name -> (level, width) in HU.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
#: MR display window: these percentiles of the input's voxels above zero map to black and white.
MR_DISPLAY_PERCENTILES: tuple[float, float] = (0.5, 99.5)
#: CT voxels above this (HU) count as the patient (air is -1000, lung about -850 .. -600 is inside it).
CT_BODY_HU = -500.0


@dataclass(frozen=True)
class DisplayWindow:
    """A grey-level window: ``low`` (input units) shows black, ``high`` white; ``label`` names it."""

    low: float
    high: float
    label: str

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``values`` (input units) -> [0, 1] display grey levels (float64)."""
        return np.clip((np.asarray(values, dtype=np.float64) - self.low) / (self.high - self.low), 0.0, 1.0)


def display_window(volume_array: np.ndarray, modality: str | None, window: str | None = None) -> DisplayWindow:
    """The labelled window to show a volume with.

    CT: a named window of :data:`CT_WINDOWS` (default ``'soft-tissue'``, L 40 / W 400 HU), never the
    full HU range. MR (arbitrary scanner units): the :data:`MR_DISPLAY_PERCENTILES` of the voxels
    above zero, labelled with their values.

    Raises:
        OptionError: an unknown CT window name, or a window name for MR.
    """
    if (modality or "").upper() == "CT":
        name = window or "soft-tissue"
        if name not in CT_WINDOWS:
            raise OptionError(f"unknown CT window '{name}'; choose one of {', '.join(CT_WINDOWS)}")
        level, width = CT_WINDOWS[name]
        return DisplayWindow(level - width / 2, level + width / 2, f"CT {name} window (L {level:g} / W {width:g} HU)")
    if window is not None:
        raise OptionError(f"named windows ({', '.join(CT_WINDOWS)}) are for CT; MR uses its own percentiles")
    values = np.asarray(volume_array, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return DisplayWindow(0.0, 1.0, "window 0-1")
    lo, hi = (float(v) for v in np.percentile(values, MR_DISPLAY_PERCENTILES))
    hi = hi if hi > lo else lo + 1.0
    p0, p1 = MR_DISPLAY_PERCENTILES
    return DisplayWindow(lo, hi, f"MR window p{p0:g}-p{p1:g} ({lo:.4g}-{hi:.4g})")


def anatomy_mask(image: np.ndarray, modality: str | None) -> np.ndarray:
    """The patient in a 2D image (input units): the largest connected region above the body threshold
    (CT: :data:`CT_BODY_HU`; MR: 10 % of the 99th percentile), holes filled, eroded by 3 % of the
    image so the skin-air edge and anything outside (the CT table, coils) do not count."""
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    if (modality or "").upper() == "CT":
        threshold = CT_BODY_HU
    else:
        finite = image[np.isfinite(image)]
        threshold = 0.1 * float(np.percentile(finite, 99)) if finite.size else 0.0
    labels, n = ndimage.label(image > threshold)
    if n == 0:
        return np.ones(image.shape, dtype=bool)
    sizes = ndimage.sum(np.ones_like(image), labels, index=np.arange(1, n + 1))
    body = ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))
    margin = max(1, round(0.03 * min(image.shape)))
    eroded = ndimage.binary_erosion(body, iterations=margin)
    return eroded if eroded.any() else body


def _orient(image: np.ndarray, view: Any) -> np.ndarray:
    """``image`` in the radiological display of :class:`MedSRLib.geometry.DisplayView` ``view``."""
    out = image.T if view.transpose else image
    if view.flip_rows:
        out = out[::-1]
    if view.flip_cols:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def _to_screen(view: Any, y: int, x: int, shape: tuple[int, int]) -> tuple[int, int]:
    """Oriented display ``(row, column)`` -> array ``(row, column)`` of the image before :func:`_orient`."""
    h, w = shape  # oriented shape
    if view.flip_rows:
        y = h - 1 - y
    if view.flip_cols:
        x = w - 1 - x
    return (x, y) if view.transpose else (y, x)


def volume_panel(
    volume: Volume,
    results: Mapping[str, Volume],
    *,
    window: str | None = None,
    slice_index: int | None = None,
    name: str = "input",
) -> tuple[Image.Image, dict[str, Any]]:
    """The picture of a super-resolved volume: input (pixels replicated x scale), then each result.

    ``results`` maps a column name to a super-resolved volume of ``volume`` (same run grid, e.g.
    ``{"bicubic": ..., "mdrn": ...}``, each with ``metadata["medsr"]``). Rows: the in-plane slice
    ``slice_index`` (default: the slice with the most anatomy) with the crop box, the crop zoomed
    (chosen on anatomy: gradient energy inside the patient, :func:`anatomy_mask`), and a reformat
    across the slice axis through the crop centre (physical aspect, voxels shown as they are, so
    the thick slices show as tall blocks). Every image is shown in radiological orientation
    (:func:`MedSRLib.geometry.radiological_view`) with the labelled :func:`display_window`.

    Returns:
        ``(picture, metadata)``; metadata holds the slice, crop (display px), window and planes.
    """
    from .geometry import RADIOLOGICAL_SCREEN, plane_geometry, radiological_view

    if not results:
        raise OptionError("results must hold at least one super-resolved volume")
    first = next(iter(results.values()))
    run = first.metadata.get("medsr") or {}
    axis, s = int(run.get("slice_axis", 0)), int(run.get("scale", 1))
    modality = first.modality or volume.modality
    win = display_window(volume.array, modality, window)
    n = volume.shape[axis]
    if slice_index is None:
        areas = [anatomy_mask(np.take(volume.array, k, axis=axis), modality).sum() for k in range(n)]
        slice_index = int(np.argmax(areas))
    if not 0 <= slice_index < n:
        raise OptionError(f"slice {slice_index} is outside the volume's {n} slices along the slice axis")

    def replicate(image: np.ndarray, axes: Sequence[int]) -> np.ndarray:
        for a in axes:
            image = np.repeat(image, s, axis=a)
        return image

    in_plane = plane_geometry(first, axis)
    view = radiological_view(in_plane)
    lr_slice = replicate(np.take(volume.array, slice_index, axis=axis), (0, 1))
    slices = {f"{name} (x{s} pixels)": lr_slice, **{k: np.take(v.array, slice_index, axis=axis) for k, v in results.items()}}
    slices = {k: _orient(win.apply(v), view) for k, v in slices.items()}
    reference = _orient(lr_slice.astype(np.float64), view)
    mask = anatomy_mask(reference, modality)
    display_ref = next(iter(slices.values()))
    y, x, size = auto_crop(display_ref, scale=s, weight=mask)

    # reformat: the plane through the crop centre that holds the screen's horizontal and the slice axis
    cy, cx = y + size // 2, x + size // 2
    ar, ac = _to_screen(view, cy, cx, display_ref.shape)
    cut_axis = in_plane.col_axis if view.transpose else in_plane.row_axis
    cut_index = ac if view.transpose else ar
    cut_plane = plane_geometry(first, cut_axis)
    cut_view = radiological_view(cut_plane)
    lr_cut_axis_index = cut_index // s
    lr_cut = np.take(volume.array, lr_cut_axis_index, axis=cut_axis)
    in_plane_axes_left = [a for a in range(3) if a not in (cut_axis,)]  # numpy axes of the cut, in order
    lr_cut = replicate(lr_cut, [i for i, a in enumerate(in_plane_axes_left) if a != axis])
    cuts = {f"{name} (x{s} pixels)": lr_cut, **{k: np.take(v.array, cut_index, axis=cut_axis) for k, v in results.items()}}
    cuts = {k: _orient(win.apply(v), cut_view) for k, v in cuts.items()}
    same_horizontal = RADIOLOGICAL_SCREEN[cut_view.plane][0] == RADIOLOGICAL_SCREEN[view.plane][0]
    if same_horizontal:
        cuts = {k: v[:, x : x + size] for k, v in cuts.items()}
    row_mm, col_mm = cut_view.spacing
    cut_h, cut_w = next(iter(cuts.values())).shape
    cut_size = (TILE, int(np.clip(round(TILE * cut_h * row_mm / (cut_w * col_mm)), 8, 2 * TILE)))

    h, w = display_ref.shape
    factor = TILE / max(h, w)
    whole = (max(1, round(w * factor)), max(1, round(h * factor)))
    zoom = max(1, TILE // size)
    font = _font()
    line_h = font.getbbox("Ag")[3] + 4
    import textwrap

    width = GAP + len(slices) * (TILE + GAP)
    chars = max(40, int(0.85 * width * 10 / max(1, font.getbbox("abcdefghij")[2])))
    title = [
        f"{name}: {', '.join(results)} x{s}",
        f"slice {slice_index + 1} of {n} ({view.plane}), radiological orientation; {win.label}",
        f"rows: {view.plane} slice; crop on anatomy (zoom x{zoom}); {cut_view.plane} reformat across the slice axis "
        f"through the crop centre ({'crop width' if same_horizontal else 'whole plane'}, physical aspect, voxels as they are)",
    ]
    title = [piece for line in title for piece in textwrap.wrap(line, chars)]
    height = GAP + len(title) * line_h + GAP + whole[1] + GAP + size * zoom + GAP + cut_size[1] + GAP + line_h + GAP
    panel = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for j, line in enumerate(title):
        draw.text((GAP, GAP + j * line_h), line, fill=TEXT_COLOUR, font=font)
    top = GAP + len(title) * line_h + GAP
    for k, label in enumerate(slices):
        left = GAP + k * (TILE + GAP)
        image = slices[label]
        x0 = left + (TILE - whole[0]) // 2
        panel.paste(_to_pil(image).resize(whole, Image.Resampling.LANCZOS).convert("RGB"), (x0, top))
        draw.rectangle((x0 + round(x * factor), top + round(y * factor), x0 + round((x + size) * factor) - 1,
                        top + round((y + size) * factor) - 1), outline=BOX_COLOUR, width=2)
        zy = top + whole[1] + GAP
        zx = left + (TILE - size * zoom) // 2
        crop = image[y : y + size, x : x + size]
        panel.paste(_to_pil(crop).resize((size * zoom, size * zoom), Image.Resampling.NEAREST).convert("RGB"), (zx, zy))
        draw.rectangle((zx, zy, zx + size * zoom - 1, zy + size * zoom - 1), outline=BOX_COLOUR, width=2)
        ry = zy + size * zoom + GAP
        panel.paste(_to_pil(cuts[label]).resize(cut_size, Image.Resampling.NEAREST).convert("RGB"), (left, ry))
        draw.text((left, ry + cut_size[1] + GAP), label, fill=TEXT_COLOUR, font=font)
    meta = {
        "slice_index": slice_index, "slice_axis": axis, "plane": view.plane, "reformat_plane": cut_view.plane,
        "crop_display_px": [y, x, size], "window": win.label, "columns": list(slices),
    }
    return panel, meta


def save_volume_panel(
    volume: Volume,
    results: Mapping[str, Volume],
    out_png: str | Path,
    *,
    window: str | None = None,
    slice_index: int | None = None,
    inputs: Sequence[str | Path] = (),
) -> Path:
    """:func:`volume_panel` saved as a PNG (metadata in its ``medsr-panel`` text chunk); returns the
    absolute path written."""
    out = _check_png_path(out_png, inputs)
    name = Path(str(volume.metadata.get("source_path", "input"))).name
    panel, meta = volume_panel(volume, results, window=window, slice_index=slice_index, name=name)
    _save_png(panel, out, meta)
    return out.resolve()


#: Public name of the panel output check (the CLI validates ``--panel`` before any work).
check_panel_path = _check_png_path


def _volume_display(hr_path: Path, *, axis: Any, series_uid: str | None) -> tuple[Any, DisplayWindow, Any, str]:
    """``(mapping, window, view, modality)`` to show a volume's [0, 1] slices as ``medsr evaluate`` cut
    them: the intensity mapping back to the volume's units, its labelled window, its radiological view."""
    from .geometry import plane_geometry, radiological_view, resolve_slice_axis
    from .intensity import IntensityMapping, guess_modality
    from .io import read_volume

    volume = read_volume(hr_path, series_uid=series_uid)
    modality = volume.modality or guess_modality(volume)
    mapping = IntensityMapping.fit(volume.array, modality=modality)
    view = radiological_view(plane_geometry(volume, resolve_slice_axis(volume, axis)))
    return mapping, display_window(volume.array, modality), view, modality


def _displayed(data: PanelData, name: str, mapping: Any, window: DisplayWindow, view: Any,
               modality: str) -> tuple[PanelData, Crop, str]:
    """``data`` with every image windowed and in radiological orientation (scores unchanged), the crop
    chosen on anatomy, and a title naming the window and the orientation."""

    def show(unit: np.ndarray) -> np.ndarray:
        return _orient(window.apply(mapping.from_unit(unit, dtype=np.float64)), view)

    shown = PanelData(
        hr=show(data.hr), lr=show(data.lr), scale=data.scale, convention=data.convention,
        outputs={k: show(v) for k, v in data.outputs.items()}, scores=data.scores,
    )
    units = _orient(mapping.from_unit(data.hr, dtype=np.float64), view)
    crop = auto_crop(shown.hr, scale=data.scale, weight=anatomy_mask(units, modality))
    title = f"{name}  x{data.scale}  {window.label}, radiological ({view.plane})"
    return shown, crop, title


def through_plane_panel(
    volume: Volume,
    hr_unit: np.ndarray,
    thick_unit: np.ndarray,
    outputs: Mapping[str, np.ndarray],
    scores: Mapping[str, Mapping[str, float | None]],
    *,
    axis: int,
    label: str,
    convention: str = "volume, in mask",
) -> tuple[Image.Image, dict[str, Any]]:
    """The picture of a through-plane ground-truth evaluation: one :func:`render_panel` row per reformat
    that contains the thick ``axis`` (for axial thick slices: coronal and sagittal), stacked.

    Args:
        volume: the ground-truth volume (its direction and spacing orient the reformats; its values fit
            the intensity mapping and the display window, as ``medsr evaluate`` does).
        hr_unit: the ground truth in [0, 1] on the output grid (``(z, y, x)``, ``n_out`` samples along ``axis``).
        thick_unit: the thick input shown on the same grid (each thick slice repeated over the rows it covers).
        outputs: method name -> output on the same grid ([0, 1]); ``scores``: method -> ``psnr``/``ssim``.
        label: the first column's caption (the thick input, e.g. "5 mm slices (nearest)").

    Each row: the reformat through the middle of the volume, windowed (:func:`display_window`) and in
    radiological orientation, with the crop chosen on anatomy zoomed below. Returns ``(picture, metadata)``.
    """
    from .geometry import plane_geometry, radiological_view
    from .intensity import IntensityMapping, guess_modality

    modality = volume.modality or guess_modality(volume)
    mapping = IntensityMapping.fit(volume.array, modality=modality)
    window = display_window(volume.array, modality)
    rows, meta = [], {"axis": int(axis), "reformats": [], "scores": {k: dict(v) for k, v in scores.items()}}
    for cut in (a for a in range(3) if a != axis):
        k = hr_unit.shape[cut] // 2
        view = radiological_view(plane_geometry(volume, cut))
        data = PanelData(hr=np.take(hr_unit, k, axis=cut), lr=np.take(thick_unit, k, axis=cut), scale=1,
                         convention=convention, outputs={n: np.take(o, k, axis=cut) for n, o in outputs.items()},
                         scores={n: dict(scores[n]) for n in outputs})
        shown, crop, _ = _displayed(data, label, mapping, window, view, modality)
        title = f"{view.plane} reformat {k + 1} of {hr_unit.shape[cut]}, {window.label}, radiological"
        rows.append(render_panel(shown, crop=crop, title=title, lr_name=label, hr_name="ground truth"))
        meta["reformats"].append({"plane": view.plane, "index": k, "crop": [int(c) for c in crop]})
    panel = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), BACKGROUND)
    top = 0
    for r in rows:
        panel.paste(r, (0, top))
        top += r.height
    return panel, meta


def save_through_plane_panel(out_png: str | Path, *args: Any, **kwargs: Any) -> Path:
    """:func:`through_plane_panel` saved as a PNG (metadata in its ``medsr-panel`` text chunk)."""
    out = _check_png_path(out_png)
    panel, meta = through_plane_panel(*args, **kwargs)
    _save_png(panel, out, meta)
    return out.resolve()
