"""Evaluate a model against bicubic on real high-resolution images.

Each HR image (a 2D file, or each slice of a volume along the slice axis) is mapped to [0, 1], cropped
to a multiple of the scale, degraded with the project's one bicubic degradation
(:func:`MedSRLib.resize.degrade`), super-resolved by the model and by bicubic, and both are scored
against the HR image with one named metric convention (:mod:`MedSRLib.metrics`). Scores are averaged
over images (per-image PSNR then mean, the convention of every paper we compare with).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import InputFileError, InputSizeError

#: Integer-valued 2D images whose maximum is at most this are treated as 8-bit display images (/255).
EIGHT_BIT_MAX = 255.0


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
        }
        if per_image:
            data["per_image"] = self.per_image
        return data


def to_unit_image(image: np.ndarray) -> np.ndarray:
    """One raw 2D image (h, w) mapped to [0, 1] (float64).

    8-bit display images (integer values in 0..255: PNG/JPEG, COVID-CT, Alzheimer) are divided by
    255; other images (DICOM, NIfTI slices) use the MR robust-percentile mapping of
    :class:`MedSRLib.intensity.IntensityMapping`. Values are clipped to [0, 1].
    """
    from .intensity import IntensityMapping

    image = np.asarray(image, dtype=np.float64)
    finite = image[np.isfinite(image)]
    if finite.size and finite.min() >= 0 and finite.max() <= EIGHT_BIT_MAX and np.all(finite == np.round(finite)):
        unit = image / EIGHT_BIT_MAX
    else:
        unit = IntensityMapping.fit(image[None], modality="MR").to_unit(image[None])[0]
    return np.clip(unit, 0.0, 1.0)


def _unit_images_from_folder(folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, image in [0, 1])`` for every 2D image file in ``folder`` (see :func:`to_unit_image`)."""
    from .io import list_images_2d, read_image_2d

    paths = list_images_2d(folder)
    if not paths:
        raise InputFileError(f"no 2D images (PNG, JPEG, BMP, TIFF, DICOM, NIfTI) found in {folder}; check the path")
    for path in paths:
        yield str(path.relative_to(folder)), to_unit_image(read_image_2d(path))


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
    device: str = "auto",
    ensemble: bool = False,
    weights: str | Path | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationResult:
    """Score ``model`` and bicubic on the HR images at ``hr_path`` (a 2D-image folder or a volume).

    ``model=None`` picks the default model for the data's modality and scale. ``limit`` caps the
    number of images (first ``limit`` in sorted order).
    """
    from .engine import EngineOptions, run_slices
    from .metrics import evaluate_pair
    from .models import default_model, get_model
    from .resize import degrade, imresize, modcrop

    hr_path = Path(hr_path)
    if not hr_path.exists():
        raise InputFileError(f"{hr_path} does not exist; give a folder of 2D images or a volume file/DICOM folder")
    modality: str | None
    if hr_path.is_dir() and not _looks_like_dicom_folder(hr_path):
        modality, images = None, _unit_images_from_folder(hr_path)
    else:
        modality, images = _unit_images_from_volume(hr_path, axis, series_uid)
    spec = get_model(model) if model is not None else default_model(modality, scale)
    scale = spec.check_scale(scale)
    from .models.reparam import prepare_for_inference

    module = prepare_for_inference(spec.load(scale, weights=weights))
    options = EngineOptions(device=device, ensemble=ensemble)

    items = list(images)
    if limit is not None:
        items = items[: int(limit)]
    per_image: list[dict[str, Any]] = []
    for index, (name, hr) in enumerate(items):
        hr = modcrop(hr, scale)
        if min(hr.shape) < scale * max(spec.min_lr_size, 1):
            raise InputSizeError(f"image {name} ({hr.shape[1]}x{hr.shape[0]} px) is too small for x{scale}")
        lr = degrade(hr, scale=scale).astype(np.float32)
        sr = run_slices(module, lr[None], scale=scale, options=options, min_lr_size=spec.min_lr_size)[0].astype(np.float64)
        bicubic = imresize(lr.astype(np.float64), scale=scale)
        model_scores = evaluate_pair(np.clip(sr, 0, 1), hr, scale=scale, convention=convention)
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
