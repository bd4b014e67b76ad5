"""Evaluate a model against bicubic on real high-resolution images.

Each HR image (a 2D file: :func:`MedSRLib.intensity.image_to_unit`; or each slice of a volume along the
slice axis: the volume's :class:`~MedSRLib.intensity.IntensityMapping`) is mapped to [0, 1], cropped
to a multiple of the scale, degraded with the project's one bicubic degradation
(:func:`MedSRLib.resize.degrade`), super-resolved by the model and by bicubic, and both are scored
against the HR image with one named metric convention; the network runs through one
:class:`MedSRLib.engine.Predictor` (:func:`degrade_and_super_resolve`, shared with the panels) (:mod:`MedSRLib.metrics`). Scores are averaged
over images (per-image PSNR then mean, the convention of every paper we compare with).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .errors import InputFileError, InputSizeError, OptionError

@dataclass
class EvaluationResult:
    """Mean scores of a model and of bicubic over ``n_images`` HR images (JSON contract of the CLI)."""

    model: str
    scale: int
    convention: str
    n_images: int
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float
    precision: str = "fp32"
    device: str = "cpu"
    per_image: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, *, per_image: bool = False) -> dict[str, Any]:
        """The stable ``medsr evaluate --json`` object (``per_image`` adds the per-image list)."""
        data = {
            "model": self.model,
            "scale": self.scale,
            "convention": self.convention,
            "n_images": self.n_images,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "bicubic_psnr": self.bicubic_psnr,
            "bicubic_ssim": self.bicubic_ssim,
            "precision": self.precision,
            "device": self.device,
        }
        if per_image:
            data["per_image"] = self.per_image
        return data


def degrade_and_super_resolve(predictor: Any, hr: np.ndarray, *, name: str = "image") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one evaluation step of ``medsr evaluate``, comparison panels and training's validation:
    ``hr`` (h, w) in [0, 1] -> ``(hr cropped to a multiple of the scale, float64; lr = degrade(hr),
    float32; sr = predictor's output clipped to [0, 1], float64)``.

    Raises :class:`~MedSRLib.errors.InputSizeError` when the LR image would be smaller than the
    network's minimum input.
    """
    from .resize import degrade, modcrop

    scale = predictor.scale
    hr = modcrop(np.asarray(hr, dtype=np.float64), scale)
    if min(hr.shape) < scale * max(predictor.min_lr_size, 1):
        raise InputSizeError(f"image {name} ({hr.shape[1]}x{hr.shape[0]} px) is too small for {predictor.spec.name} x{scale}")
    lr = degrade(hr, scale=scale).astype(np.float32)
    sr = np.clip(predictor.predict(lr).astype(np.float64), 0.0, 1.0)
    return hr, lr, sr


def _unit_images_from_folder(folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, image in [0, 1])`` for every 2D image file in ``folder``
    (:func:`MedSRLib.intensity.image_to_unit`)."""
    from .intensity import image_to_unit
    from .io import list_images_2d, read_image_2d

    paths = list_images_2d(folder)
    if not paths:
        raise InputFileError(f"no 2D images (PNG, JPEG, BMP, TIFF, DICOM, NIfTI) found in {folder}; check the path")
    for path in paths:
        yield str(path.relative_to(folder)), image_to_unit(read_image_2d(path))


def _unit_images_from_volume(path: Path, axis: Any, series_uid: str | None) -> tuple[str | None, Iterator[tuple[str, np.ndarray]]]:
    from .geometry import resolve_slice_axis
    from .intensity import IntensityMapping, guess_modality
    from .io import read_volume

    volume = read_volume(path, series_uid=series_uid)
    modality = volume.modality or guess_modality(volume)
    mapping = IntensityMapping.fit(volume.array, modality=modality)
    slice_axis = resolve_slice_axis(volume, axis)
    stack = np.moveaxis(volume.array, slice_axis, 0)

    def gen() -> Iterator[tuple[str, np.ndarray]]:
        for k in range(stack.shape[0]):
            yield f"slice {k}", np.clip(mapping.to_unit(stack[k]).astype(np.float64), 0.0, 1.0)

    return modality, gen()


def evaluate(
    hr_path: str | Path,
    *,
    model: Any = None,
    scale: int,
    convention: str = "basicsr",
    axis: int | str | None = None,
    series_uid: str | None = None,
    weights: str | Path | None = None,
    limit: int | None = None,
    options: Any = None,
    progress: Callable[[int, int], None] | None = None,
    **engine_keywords: Any,
) -> EvaluationResult:
    """Score ``model`` and bicubic on the HR images at ``hr_path`` (a 2D-image folder or a volume).

    ``model=None`` picks the default model for the data's modality and scale. ``limit`` caps the
    number of images (first ``limit`` in sorted order). ``options`` (an
    :class:`~MedSRLib.engine.EngineOptions`) and ``engine_keywords`` (its field names: ``device``,
    ``precision``, ``tile``, ``batch_size``, ``memory_budget_mb``, ``threads``, ...) are honoured
    exactly as :func:`MedSRLib.pipeline.super_resolve` honours them; the precision that ran is in
    the result.
    """
    from .engine import Predictor, engine_options
    from .metrics import evaluate_pair, get_convention
    from .models import default_model, get_model
    from .resize import imresize

    opts = engine_options(options, **engine_keywords)  # invalid values fail before any work
    get_convention(convention)  # an unknown convention fails before any work
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 1):
        raise OptionError(f"limit must be a positive integer (images to evaluate); got {limit!r}")
    hr_path = Path(hr_path)
    if not hr_path.exists():
        raise InputFileError(f"{hr_path} does not exist; give a folder of 2D images or a volume file/DICOM folder")
    modality: str | None
    if hr_path.is_dir() and not _looks_like_dicom_folder(hr_path):
        modality, images = None, _unit_images_from_folder(hr_path)
    else:
        modality, images = _unit_images_from_volume(hr_path, axis, series_uid)
    spec = get_model(model) if model is not None else default_model(modality, scale)
    predictor = Predictor(spec, spec.check_scale(scale), weights=weights, options=opts)
    scale = predictor.scale

    items = list(images)
    if limit is not None:
        items = items[: int(limit)]
    per_image: list[dict[str, Any]] = []
    for index, (name, hr) in enumerate(items):
        hr, lr, sr = degrade_and_super_resolve(predictor, hr, name=name)
        bicubic = imresize(lr.astype(np.float64), scale=scale)
        model_scores = evaluate_pair(sr, hr, scale=scale, convention=convention)
        bicubic_scores = evaluate_pair(np.clip(bicubic, 0, 1), hr, scale=scale, convention=convention)
        per_image.append(
            {
                "image": name,
                "psnr": model_scores["psnr"],
                "ssim": model_scores["ssim"],
                "bicubic_psnr": bicubic_scores["psnr"],
                "bicubic_ssim": bicubic_scores["ssim"],
            }
        )
        if progress is not None:
            progress(index + 1, len(items))
    if not per_image:
        raise InputFileError(f"no images to evaluate in {hr_path}")

    def mean(key: str) -> float:
        return float(np.mean([row[key] for row in per_image]))

    return EvaluationResult(
        model=spec.name,
        scale=scale,
        convention=str(convention),
        n_images=len(per_image),
        psnr=mean("psnr"),
        ssim=mean("ssim"),
        bicubic_psnr=mean("bicubic_psnr"),
        bicubic_ssim=mean("bicubic_ssim"),
        precision=predictor.precision_ran or predictor.precision,
        device=str(predictor.device),
        per_image=per_image,
    )


def _looks_like_dicom_folder(folder: Path) -> bool:
    """True when the folder's files are DICOM (a series), as opposed to a folder of 2D images."""
    import pydicom

    for path in sorted(p for p in folder.iterdir() if p.is_file())[:3]:
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
            return True
        except Exception:
            continue
    return False


def evaluate_thick_slices(
    volume_path: str | Path,
    *,
    mm: Sequence[float] = (5.0,),
    model: Any = None,
    weights: str | Path | None = None,
    axis: int | str | None = None,
    modality: str | None = None,
    series_uid: str | None = None,
    adapt_seconds: float | None = None,
    adapt_iterations: int | None = None,
    views: int | None = None,
    allow_untrained: bool = False,
    options: Any = None,
    **engine_keywords: Any,
) -> list[dict[str, Any]]:
    """``medsr evaluate --through-plane``: through-plane SR scored on ground truth (issue 20).

    For each thickness in ``mm`` the near-isotropic volume is thickened along ``axis`` (default: the
    largest spacing; an isotropic volume: the axis most aligned with S) with the slice profile
    (Gaussian, FWHM = thickness, sampled every ``mm``; :func:`MedSRLib.resize.slice_profile_degrade`),
    super-resolved back by the through-plane network (one :class:`~MedSRLib.engine.Predictor`, the
    factor chosen per call), by cubic B-spline and linear interpolation, and by the network adapted
    to that thick volume when ``adapt_seconds``/``adapt_iterations`` are given; each is scored
    against the original inside the foreground mask (:func:`MedSRLib.throughplane.evaluate_through_plane`,
    whose ``convention`` is in each row). Intensities: the volume's :class:`IntensityMapping` to [0, 1].
    ``views``: the views the network methods fuse (2 or 4; None = :data:`MedSRLib.throughplane.DEFAULT_VIEWS`).

    Returns:
        One row per thickness: ``mm``, ``axis``, ``factor`` (mm / spacing), ``n_lr``, ``n_out``,
        ``mask_fraction``, ``views`` (fused by the network methods), ``scores`` (method -> ``psnr``, ``ssim``), ``gain_db`` (method -> PSNR over
        cubic B-spline), ``seconds`` (method -> s), ``adaptation`` (its report or None), ``model``,
        ``convention``.
    """
    import math

    from .engine import Predictor, engine_options
    from .errors import ScaleError
    from .geometry import resolve_slice_axis
    from .intensity import IntensityMapping, guess_modality
    from .io import read_volume
    from .models import default_model, get_model
    from .throughplane import (MIN_FACTOR, adapt_through_plane, evaluate_through_plane, resolve_views,
                              super_resolve_through_plane, use_adapted)

    opts = engine_options(options, **engine_keywords)
    views = resolve_views(views)
    values = [float(v) for v in mm] if mm else []
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise OptionError(f"--mm takes positive slice thicknesses in mm; got {list(mm) if mm else mm!r}")
    volume = read_volume(volume_path, series_uid=series_uid, modality=modality)
    modality = (modality or volume.modality or guess_modality(volume)).upper()
    spec = default_model(modality, plane="through") if model is None else get_model(model)
    if not spec.multi_scale:
        raise OptionError(f"model '{spec.name}' is an in-plane network; --through-plane needs a tp-* model")
    a = resolve_slice_axis(volume, axis)
    spacing = float(volume.spacing[2 - a])
    for v in values:
        f = v / spacing
        if f < MIN_FACTOR or math.ceil(f - 1e-9) > max(spec.scales):
            raise ScaleError(f"{v:g} mm is x{f:.3g} of the volume's {spacing:.3g} mm along axis {a}; --mm must give "
                             f"x{MIN_FACTOR}-x{max(spec.scales)}")
    predictor = Predictor(spec, max(spec.scales), weights=weights, options=opts, allow_untrained=allow_untrained)
    mapping = IntensityMapping.fit(volume.array, modality=modality)
    unit = np.clip(mapping.to_unit(volume.array), 0.0, 1.0).astype(np.float32)
    rows = []
    for v in values:
        factor = v / spacing
        reports: dict[str, Any] = {}
        extra = {}
        if adapt_seconds or adapt_iterations:
            def adapted(lr: np.ndarray, n_out: int, factor: float = factor) -> np.ndarray:
                base = spec.load(max(spec.scales), weights=weights, allow_untrained=allow_untrained)
                tuned, report = adapt_through_plane(base, lr, axis=a, factor=factor, seconds=float(adapt_seconds or 0.0),
                                                    iterations=adapt_iterations, seed=0, threads=opts.threads,
                                                    precision=opts.precision)
                reports["adapted"] = report
                tuned_predictor = Predictor(spec, report.r, module=tuned, options=opts)
                chosen = tuned_predictor if use_adapted(lr, report, axis=a, factor=factor, shipped=predictor,
                                                        adapted=tuned_predictor) else predictor
                return super_resolve_through_plane(lr, axis=a, factor=factor, n_out=n_out, predictor=chosen, views=views)

            extra["adapted"] = adapted
        ev = evaluate_through_plane(unit, axis=a, factor=factor, predictor=predictor, extra=extra, views=views)
        report = reports.get("adapted")
        rows.append({
            "mm": v, "axis": a, "factor": factor, "n_lr": ev.n_lr, "n_out": ev.n_out, "mask_fraction": ev.mask_fraction,
            "model": spec.name, "precision": predictor.precision_ran or predictor.precision, "views": views,
            "scores": {k: {"psnr": s.psnr, "ssim": s.ssim} for k, s in ev.scores.items()},
            "gain_db": {k: ev.gain(k) for k in ev.scores if k != "bspline3"},
            "seconds": dict(ev.seconds),
            "adaptation": None if report is None else report.to_json(),
            "convention": ev.convention,
        })
    return rows
