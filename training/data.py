"""Training data: dataset readers with their official splits, and aligned LR/HR patch sampling.

Readers (``data.dataset`` in a config):

* ``covid-ct``: COVID-CT (UCSD-AI4H) with its official ``Data-split`` lists; only the files present.
  Labels COVID / NonCOVID. (DRIDSR, Chen et al. Section 4.1.)
* ``alzheimer``: the 4-class Alzheimer MRI set, ``train/`` and ``test/`` folders as distributed,
  class labels from the folder names; ``val`` is a seeded ``split_fractions`` share of ``train/``.
* ``alzheimer-srda``: SRDA's 3 classes x 890 images, 2136/267/267 from
  ``splits/srda_3class_890_seeded.csv`` (Demented-MRI, SRDA Section III-A).
* ``luna16``: a folder of ``.mhd``/``.raw`` CT scans, axial slices, split **by scan id** (never by
  slice): by ``subsetN`` folders when a split is given as a list of them, else by a sha256 ranking of
  the scan ids with ``split_fractions``.
* ``folder``: any folder of 2D PNG/JPEG/DICOM/NIfTI slices (``MedSRLib.io``); ``train/``, ``val/``,
  ``test/`` subfolders when present, else a sha256-ranked split of the files.

Intensities (``data.normalise``): ``uint8`` divides 8-bit display images by 255 (COVID-CT, Alzheimer
are 8-bit); ``clip`` is MDRN's ``min(max(x, 0), clip_max) / clip_max``; ``ct``/``mr`` use
:class:`MedSRLib.intensity.IntensityMapping` (the mapping inference uses); ``auto`` picks ``uint8`` for
integer images within 0..255 and the guessed modality's mapping otherwise. HR images are cropped to a
multiple of the scale and degraded once with :func:`MedSRLib.resize.degrade` (MATLAB bicubic, float,
not re-quantised); random patches are cut aligned from the HR/LR pair, then flipped/rotated together.
Every sample's crop and augmentation come from ``numpy.random.default_rng((seed, epoch, index))``, so
the data are identical for any number of DataLoader workers or DDP processes and on resume.
"""

from __future__ import annotations

import csv
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import ConfigError

SPLITS = ("train", "val", "test")
COVID_CLASSES = ("COVID", "NonCOVID")
ALZHEIMER_CLASSES = ("MildDemented", "ModerateDemented", "NonDemented", "VeryMildDemented")
SRDA_CLASSES = ("NonDemented", "MildDemented", "VeryMildDemented")  # SRDA: non-, mild-, very-mild-demented
SRDA_SPLIT_CSV = Path("splits") / "srda_3class_890_seeded.csv"


@dataclass(frozen=True)
class Item:
    """One HR slice: a 2D image file, or slice ``index`` (numpy axis ``axis``) of a volume file."""

    name: str
    path: Path
    label: int = -1
    index: int | None = None
    axis: int = 0


@dataclass(frozen=True)
class Split:
    """The items of one split and the class names their labels index (empty when unlabelled)."""

    items: list[Item]
    classes: tuple[str, ...] = ()


def _rank(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _fraction_split(keys: Sequence[str], split: str, fractions: Sequence[float], salt: str) -> set[str]:
    """The keys of ``split`` when ``keys`` are sorted by ``sha256(salt + key)`` and cut by fractions."""
    ordered = sorted(keys, key=lambda k: _rank(salt + k))
    n_train = int(round(fractions[0] * len(ordered)))
    n_val = int(round(fractions[1] * len(ordered)))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(ordered))}
    lo, hi = bounds[split]
    return set(ordered[lo:hi])


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{what} not found at {path}; check data.root / --data-root")
    return path


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().replace("\r", "\n").split("\n") if line.strip()]


def _covid_ct(root: Path, split: str) -> Split:
    _need(root / "Data-split", "COVID-CT Data-split folder")
    items = []
    for label, cls in enumerate(COVID_CLASSES):
        names = _read_list(_need(root / "Data-split" / cls / f"{split}CT_{cls}.txt", f"COVID-CT {split} list"))
        folder = root / "Images-processed" / f"CT_{cls}"
        items += [Item(f"{cls}/{n}", folder / n, label) for n in names if (folder / n).is_file()]
    return Split(items, COVID_CLASSES)


def _alzheimer(root: Path, split: str, fractions: Sequence[float]) -> Split:
    folder = _need(root / ("test" if split == "test" else "train"), "Alzheimer MRI train/ or test/ folder")
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    files = {f"{c}/{p.name}": (p, i) for i, c in enumerate(classes) for p in sorted((folder / c).iterdir()) if p.is_file()}
    if split != "test":
        train_share = fractions[0] / (fractions[0] + fractions[1])
        keep = _fraction_split(list(files), split, (train_share, 1 - train_share, 0.0), "alzheimer-val:")
        files = {k: v for k, v in files.items() if k in keep}
    return Split([Item(k, p, label) for k, (p, label) in sorted(files.items())], classes)


def _alzheimer_srda(root: Path, split: str) -> Split:
    rows = list(csv.DictReader(_need(root / SRDA_SPLIT_CSV, "SRDA split CSV").open(newline="")))
    items = [
        Item(r["relpath"], root / r["relpath"], SRDA_CLASSES.index(r["class"])) for r in rows if r["split"] == split
    ]
    missing = [i.path for i in items if not i.path.is_file()]
    if missing:
        raise ConfigError(f"{len(missing)} images of the SRDA split are missing under {root} (first: {missing[0]})")
    return Split(items, SRDA_CLASSES)


def _volume_depth(path: Path) -> tuple[int, int]:
    """(number of slices, numpy slice axis) of a volume from its header (``resolve_slice_axis``)."""
    import SimpleITK as sitk

    from MedSRLib.geometry import resolve_slice_axis
    from MedSRLib.volume import Volume

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    if len(size) != 3:
        raise ConfigError(f"{path} is not a 3D volume (size {size})")
    header = Volume(
        np.broadcast_to(np.zeros((), np.uint8), size[::-1]),  # header only: no voxel memory
        reader.GetSpacing(),
        reader.GetOrigin(),
        np.asarray(reader.GetDirection()).reshape(3, 3),
    )
    axis = resolve_slice_axis(header, None)
    return size[::-1][axis], axis


def _luna16(root: Path, split: str | list[str], fractions: Sequence[float], step: int) -> Split:
    scans = sorted(root.rglob("*.mhd"))
    if not scans:
        raise ConfigError(f"no .mhd scans found under {root}; LUNA16 needs .mhd/.raw files (subset folders allowed)")
    if isinstance(split, (list, tuple)):
        wanted = {str(s) for s in split}
        scans = [p for p in scans if wanted & set(p.relative_to(root).parts[:-1])]
    else:
        keep = _fraction_split([p.stem for p in scans], split, fractions, "luna16:")
        scans = [p for p in scans if p.stem in keep]
    items = []
    for path in scans:
        depth, axis = _volume_depth(path)
        items += [Item(f"{path.stem}/{z}", path, -1, z, axis) for z in range(0, depth, step)]
    return Split(items)


def _folder(root: Path, split: str, fractions: Sequence[float]) -> Split:
    from MedSRLib.io import list_images_2d

    if (root / split).is_dir():
        paths = list_images_2d(root / split)
        return Split([Item(str(p.relative_to(root)), p) for p in paths])
    if any((root / s).is_dir() for s in SPLITS):
        raise ConfigError(f"{root} has split folders but no '{split}/'; add it or name another split")
    paths = {str(p.relative_to(root)): p for p in list_images_2d(root)}
    keep = _fraction_split(list(paths), split, fractions, "folder:")
    return Split([Item(k, p) for k, p in sorted(paths.items()) if k in keep])


def list_split(data: Mapping[str, Any], split: str) -> Split:
    """The items of ``split`` (``'train'``, ``'val'``, ``'test'``) of the config's ``data`` section."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    root = Path(data["root"])
    name = data.get(split, split)
    kind, fractions = data["dataset"], data["split_fractions"]
    if kind == "luna16":
        result = _luna16(root, name, fractions, int(data["slice_step"]))
    elif isinstance(name, (list, tuple)):
        raise ConfigError(f"data.{split} may be a list of folders only for luna16; got {name!r}")
    elif kind == "covid-ct":
        result = _covid_ct(root, name)
    elif kind == "alzheimer":
        result = _alzheimer(root, name, fractions)
    elif kind == "alzheimer-srda":
        result = _alzheimer_srda(root, name)
    else:
        result = _folder(root, name, fractions)
    if not result.items:
        raise ConfigError(f"the {split} split of {kind} at {root} is empty")
    return result


# --------------------------------------------------------------------------------------------------
# intensities


def to_unit(image: np.ndarray, *, normalise: str, clip_max: float | None = None, modality: str | None = None) -> np.ndarray:
    """A 2D slice mapped to [0, 1] float32 (see the module docstring for the modes); clipped to [0, 1].

    ``auto`` is :func:`MedSRLib.intensity.image_to_unit`, the normaliser ``medsr evaluate`` and the
    panels use (8-bit images / 255, else the CT window or the MR percentiles of the guessed modality).
    """
    from MedSRLib.intensity import IntensityMapping, image_to_unit

    values = np.asarray(image)
    if normalise == "auto":
        return image_to_unit(values, modality=modality).astype(np.float32)
    if normalise == "uint8":
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ConfigError(f"data.normalise 'uint8' needs 8-bit images; got values {values.min()}..{values.max()}")
        unit = values.astype(np.float64) / 255.0
    elif normalise == "clip":
        unit = np.clip(values.astype(np.float64), 0.0, float(clip_max)) / float(clip_max)
    else:
        unit = IntensityMapping.fit(values, modality=normalise.upper()).to_unit(values)
    return np.clip(unit, 0.0, 1.0).astype(np.float32)


class _VolumeCache:
    """The last few volumes read (per process), with their CT/MR mapping fitted on the whole volume."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._cache: OrderedDict[str, tuple[np.ndarray, Any]] = OrderedDict()

    def slice(self, item: Item, data: Mapping[str, Any]) -> np.ndarray:
        from MedSRLib.intensity import IntensityMapping, guess_modality
        from MedSRLib.io import read_volume

        key = str(item.path)
        if key not in self._cache:
            volume = read_volume(item.path)
            modality = "CT" if data["dataset"] == "luna16" else (volume.modality or guess_modality(volume))
            self._cache[key] = (volume.array, IntensityMapping.fit(volume.array, modality=modality))
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        array, mapping = self._cache[key]
        plane = np.take(array, item.index, axis=item.axis)
        if data["normalise"] in ("ct", "mr", "auto"):
            return np.clip(mapping.to_unit(plane), 0.0, 1.0).astype(np.float32)
        return to_unit(plane, normalise=data["normalise"], clip_max=data["clip_max"])


_VOLUMES = _VolumeCache()


def load_hr(item: Item, data: Mapping[str, Any]) -> np.ndarray:
    """The HR slice of ``item`` as float32 in [0, 1] (grey)."""
    if item.index is not None:
        return _VOLUMES.slice(item, data)
    from MedSRLib.io import read_image_2d

    image = read_image_2d(item.path)
    if data.get("offset"):
        image = image.astype(np.float64) + float(data["offset"])
    return to_unit(image, normalise=data["normalise"], clip_max=data["clip_max"])


def make_pair(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hr cropped to a multiple of scale, lr = degrade(hr))`` as float32."""
    from MedSRLib.resize import degrade, modcrop

    hr = np.ascontiguousarray(modcrop(hr, scale), dtype=np.float32)
    return hr, np.asarray(degrade(hr, scale=scale), dtype=np.float32)


def _compact(hr: np.ndarray) -> np.ndarray:
    """8-bit images (values k/255) are kept as uint8 (4x less memory), others as float32."""
    as_bytes = np.round(hr * 255.0)
    if np.array_equal((as_bytes / 255.0).astype(np.float32), hr):
        return as_bytes.astype(np.uint8)
    return hr


def _expand(hr: np.ndarray) -> np.ndarray:
    return (hr.astype(np.float32) / np.float32(255.0)) if hr.dtype == np.uint8 else hr


# --------------------------------------------------------------------------------------------------
# patch dataset


class PairDataset(Dataset):
    """Random aligned LR/HR patches: ``{"lr": 1 x p x p, "hr": 1 x sp x sp, "label": int, "index": int}``.

    ``length`` samples per epoch; sample ``i`` is image ``i % n_images``. Images smaller than the HR
    patch are dropped (counted in :attr:`n_skipped`). Volumes (``luna16``) are read lazily per sample;
    2D images are read and degraded once (``preload``).
    """

    def __init__(
        self,
        split: Split,
        *,
        data: Mapping[str, Any],
        scale: int,
        hr_patch: int,
        length: int | None = None,
        augment: Mapping[str, bool] | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.data, self.scale, self.hr_patch, self.seed = dict(data), int(scale), int(hr_patch), int(seed)
        self.augment = dict(augment or {})
        self.epoch = 0
        self.lazy = any(item.index is not None for item in split.items)
        self.items: list[Item] = []
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_skipped = 0
        for item in _progress(split.items, progress and not self.lazy, "reading and degrading"):
            if self.lazy:
                self.items.append(item)
                continue
            hr = load_hr(item, data)
            if min(hr.shape) < self.hr_patch:
                self.n_skipped += 1
                continue
            hr, lr = make_pair(hr, self.scale)
            self.items.append(item)
            self.pairs.append((_compact(hr), lr))
        if not self.items:
            raise ConfigError(
                f"no training image is at least {self.hr_patch} px on both sides; lower train.hr_patch"
            )
        self.length = int(length) if length is not None else len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops/augmentations ``__getitem__`` returns (before iterating)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _pair(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.lazy:
            hr, lr = self.pairs[k]
            return _expand(hr), lr
        hr = load_hr(self.items[k], self.data)
        if min(hr.shape) < self.hr_patch:
            pad = [(0, max(0, self.hr_patch - n)) for n in hr.shape]
            hr = np.pad(hr, pad, mode="symmetric")
        return make_pair(hr, self.scale)

    def __getitem__(self, index: int) -> dict[str, Any]:
        k = index % len(self.items)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        hr, lr = self._pair(k)
        p, s = self.hr_patch // self.scale, self.scale
        y = int(rng.integers(0, lr.shape[0] - p + 1))
        x = int(rng.integers(0, lr.shape[1] - p + 1))
        lr_patch = lr[y : y + p, x : x + p]
        hr_patch = hr[y * s : (y + p) * s, x * s : (x + p) * s]
        flip, turns = bool(rng.integers(0, 2)), int(rng.integers(0, 4))
        if self.augment.get("hflip") and flip:
            lr_patch, hr_patch = lr_patch[:, ::-1], hr_patch[:, ::-1]
        if self.augment.get("rot90") and turns:
            lr_patch, hr_patch = np.rot90(lr_patch, turns), np.rot90(hr_patch, turns)
        return {
            "lr": torch.from_numpy(np.ascontiguousarray(lr_patch, dtype=np.float32))[None],
            "hr": torch.from_numpy(np.ascontiguousarray(hr_patch, dtype=np.float32))[None],
            "label": torch.tensor(self.items[k].label, dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
        }


@dataclass
class EvalImage:
    """A whole evaluation image: HR (cropped to a multiple of the scale) and its degraded LR."""

    name: str
    hr: np.ndarray
    lr: np.ndarray
    label: int = -1


def load_eval_images(
    split: Split,
    *,
    data: Mapping[str, Any],
    scale: int,
    max_images: int | None = None,
    max_side: int | None = None,
    min_lr_side: int = 1,
    progress: bool = False,
) -> list[EvalImage]:
    """The first ``max_images`` images of ``split``, centre-cropped to ``max_side`` when given."""
    out: list[EvalImage] = []
    for item in _progress(split.items[: max_images or None], progress, "reading evaluation images"):
        hr = load_hr(item, data)
        if max_side is not None:
            top, left = [max(0, (n - max_side) // 2) for n in hr.shape]
            hr = hr[top : top + max_side, left : left + max_side]
        if min(hr.shape) < scale * min_lr_side:
            continue
        hr, lr = make_pair(hr, scale)
        out.append(EvalImage(item.name, hr, lr, item.label))
    if not out:
        raise ConfigError(f"no evaluation image is large enough for x{scale}")
    return out


def _progress(items: Iterable[Any], show: bool, what: str) -> Iterable[Any]:
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=what, leave=False)
