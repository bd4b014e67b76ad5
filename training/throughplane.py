"""Through-plane training (``mode: throughplane``): pairs made on the fly from any slice with fine pixels.

SMORE's insight: a 2D image with fine pixels in both directions becomes a through-plane training pair
once one direction (the rows, numpy axis 0) is degraded with the slice profile. Each batch draws one
integer factor ``r`` in ``throughplane.factors`` and one thickness (FWHM ``[a, b] x r`` HR pixels);
each sample is a random slice, randomly flipped/rotated, cut as a patch of ``lr_rows * r`` HR rows x
``train.hr_patch`` columns and degraded along its rows with
:func:`MedSRLib.resize.slice_profile_degrade` (:func:`MedSRLib.throughplane.cut_pair`: a margin of
``2 r`` rows each side, so the patch's LR rows are those of the whole slice).

Sources (``throughplane.sources`` / ``val_sources``, a list of mappings; ``${MEDSR_SHARED_DATA}``
expands as in the in-plane configs):

* ``{kind: covid-ct | alzheimer | alzheimer-srda | folder, root, split, normalise}``: the 2D readers
  of :mod:`training.data` (official splits).
* ``{kind: volume, path, axes, modality, step}``: a volume (NIfTI/NRRD/MHA/DICOM folder) read with
  :func:`MedSRLib.io.read_volume`, mapped to [0, 1] with :class:`MedSRLib.intensity.IntensityMapping`
  fitted on the whole volume (CT: the CT window; MR: percentiles), every ``step``-th slice
  perpendicular to each numpy axis in ``axes`` (``slice`` = the acquisition axis from the header).
* ``{kind: image, path, normalise}``: one 2D image file (PNG/JPEG/DICOM/.mat).
* any source may set ``max_items`` (first n slices).

The trainer is :class:`training.loop._Trainer` with the data and the validation replaced
(:class:`ThroughPlaneTrainer`): checkpoints, resume, time budget, logs are the loop's. Validation
scores the network against the one-axis cubic B-spline (:func:`MedSRLib.resize.interpolate_axis`) on
the validation slices at ``val_factors`` (thickness = r, Gaussian), PSNR/SSIM on [0, 1] over the
rows the LR samples cover.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from MedSRLib.throughplane import cut_batch

from .config import SOURCE_KINDS, ConfigError, resolve_root, validate_throughplane  # noqa: F401 (re-exported)
from .loop import _Trainer

CONVENTION = "throughplane: PSNR/SSIM on [0,1], data range 1, whole slices (rows covered by the LR samples), mean over val_factors"


# --------------------------------------------------------------------------------------------------
# config


# --------------------------------------------------------------------------------------------------
# slices


@dataclass
class SliceStore:
    """Every slice of the sources, as [0, 1] float32 (8-bit images as uint8), plus names."""

    planes: list[np.ndarray]
    names: list[str]

    def image(self, k: int) -> np.ndarray:
        """Slice ``k`` as float32 in [0, 1]."""
        p = self.planes[k]
        return p.astype(np.float32) / np.float32(255.0) if p.dtype == np.uint8 else p


def _volume_planes(src: Mapping[str, Any]) -> tuple[list[np.ndarray], list[str]]:
    from MedSRLib.geometry import resolve_slice_axis
    from MedSRLib.intensity import IntensityMapping, guess_modality
    from MedSRLib.io import read_volume

    path = resolve_root(src["path"])
    volume = read_volume(path)
    modality = str(src.get("modality") or volume.modality or guess_modality(volume)).upper()
    unit = np.clip(IntensityMapping.fit(volume.array, modality=modality).to_unit(volume.array), 0.0, 1.0)
    axes = src.get("axes", ["slice"])
    step = int(src.get("step", 1))
    planes, names = [], []
    for axis in axes:
        ax = resolve_slice_axis(volume, None) if axis == "slice" else int(axis)
        for k in range(0, unit.shape[ax], step):
            planes.append(np.ascontiguousarray(np.take(unit, k, axis=ax), dtype=np.float32))
            names.append(f"{path.name}:axis{ax}:{k}")
    return planes, names


def _compact(image: np.ndarray) -> np.ndarray:
    as_bytes = np.round(image * 255.0)
    if np.array_equal((as_bytes / 255.0).astype(np.float32), image):
        return as_bytes.astype(np.uint8)
    return image


def load_slices(sources: Sequence[Mapping[str, Any]]) -> SliceStore:
    """Read every slice of ``sources`` (see the module docstring) into memory."""
    from .data import list_split, load_hr, to_unit

    planes: list[np.ndarray] = []
    names: list[str] = []
    for src in sources:
        kind = src["kind"]
        if kind == "volume":
            p, n = _volume_planes(src)
        elif kind == "image":
            from MedSRLib.io import read_image_2d

            path = resolve_root(src["path"])
            p, n = [to_unit(read_image_2d(path), normalise=src.get("normalise", "mr"), clip_max=src.get("clip_max"))], [path.name]
        else:
            data = {"dataset": kind, "root": str(resolve_root(src["root"])), "train": "train", "val": "val", "test": "test",
                    "normalise": src.get("normalise", "auto"), "clip_max": src.get("clip_max"), "offset": 0.0,
                    "slice_step": 1, "split_fractions": src.get("split_fractions", [0.8, 0.1, 0.1])}
            items = list_split(data, src.get("split", "train")).items
            if src.get("max_items"):
                items = items[: int(src["max_items"])]
            p = [load_hr(item, data) for item in items]
            n = [f"{kind}:{item.name}" for item in items]
        if src.get("max_items"):
            p, n = p[: int(src["max_items"])], n[: int(src["max_items"])]
        planes += [_compact(x) for x in p]
        names += n
    if not planes:
        raise ConfigError("the through-plane sources hold no slices")
    return SliceStore(planes, names)


# --------------------------------------------------------------------------------------------------
# pairs


class _PlaneView:
    """The store's slices as a read-only sequence of float32 images (8-bit ones expanded on access)."""

    def __init__(self, store: SliceStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store.planes)

    def __getitem__(self, k: int) -> np.ndarray:
        return self.store.image(k)


class ThroughPlaneBatches(Dataset):
    """Item ``b`` is a whole batch ``{"lr": B x 1 x n x w, "hr": B x 1 x n r x w, "label", "index"}``
    with one factor ``r`` and thickness; drawn from ``numpy.random.default_rng((seed, epoch, b))`` so
    data are identical on resume and for any number of DataLoader workers."""

    def __init__(self, store: SliceStore, tp: Mapping[str, Any], *, batch: int, cols: int, seed: int) -> None:
        self.store, self.tp, self.batch, self.cols, self.seed = store, dict(tp), int(batch), int(cols), int(seed)
        self.items = store.names  # the loop reports len(items)
        self.n_skipped = 0
        self.length = 1
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        tp = self.tp
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        r = int(rng.integers(tp["factors"][0], tp["factors"][1] + 1))
        thickness = r * round(float(rng.uniform(*tp["thickness"])) / 0.02) * 0.02  # 0.02 steps: cached matrices
        planes = _PlaneView(self.store)
        lr, hr = cut_batch(planes, rng, n=self.batch, r=r, thickness=thickness, profile=tp["profile"],
                           lr_rows=int(tp["lr_rows"]), cols=self.cols, min_std=float(tp["min_std"]))
        return {"lr": lr, "hr": hr,
                "label": torch.full((self.batch,), -1, dtype=torch.long), "index": torch.tensor(index)}


# --------------------------------------------------------------------------------------------------
# validation


@dataclass
class ValPair:
    """One validation slice at one factor: HR rows covered by the LR samples, LR, cubic B-spline."""

    name: str
    r: int
    hr: np.ndarray
    lr: np.ndarray
    bspline: np.ndarray


def make_val_pairs(store: SliceStore, factors: Sequence[int], *, profile: str = "gaussian",
                   max_images: int | None = None, max_side: int | None = None) -> list[ValPair]:
    """Every slice (first ``max_images``, centre-cropped to ``max_side``) degraded at each factor."""
    from MedSRLib.resize import interpolate_axis, lr_length, slice_profile_degrade

    out = []
    for k in range(len(store.planes[: max_images or None])):
        image = store.image(k)
        if max_side is not None:
            top, left = [max(0, (n - max_side) // 2) for n in image.shape]
            image = image[top : top + max_side, left : left + max_side]
        for r in factors:
            n_lr = lr_length(image.shape[0], r)
            if n_lr < 4:
                continue
            lr = slice_profile_degrade(image, axis=0, factor=r, profile=profile).astype(np.float32)
            out.append(ValPair(store.names[k], int(r), np.ascontiguousarray(image[: n_lr * r]), lr,
                               interpolate_axis(lr, axis=0, n_out=n_lr * r, kind="bspline3")))
    if not out:
        raise ConfigError("no validation slice is large enough for the validation factors")
    return out


def score_val(model: torch.nn.Module | None, pairs: Sequence[ValPair], *, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Mean PSNR/SSIM (data range 1) of ``model`` (None: the cubic B-spline) over ``pairs``, plus per factor."""
    from MedSRLib.metrics import psnr, ssim

    rows: dict[int, list[tuple[float, float]]] = {}
    if model is not None:
        model.eval()
    for p in pairs:
        if model is None:
            out = p.bspline
        else:
            with torch.inference_mode():
                x = torch.from_numpy(p.lr[None, None]).to(device)
                out = model(x, p.r)[0, 0].float().cpu().numpy()
        out = np.clip(out, 0.0, 1.0)
        rows.setdefault(p.r, []).append((psnr(out, p.hr, data_range=1.0), ssim(out, p.hr, data_range=1.0)))
    per = {r: (float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v]))) for r, v in sorted(rows.items())}
    return {"psnr": float(np.mean([a for a, _ in per.values()])), "ssim": float(np.mean([b for _, b in per.values()])),
            "n_images": len(pairs), "per_factor": {str(r): {"psnr": a, "ssim": b} for r, (a, b) in per.items()}}


# --------------------------------------------------------------------------------------------------
# trainer


class ThroughPlaneTrainer(_Trainer):
    """The loop's trainer with through-plane pairs (:class:`ThroughPlaneBatches`) and validation
    against the cubic B-spline (:func:`score_val`)."""

    batched_dataset = True

    def _build_data(self) -> int:
        import math

        cfg, procs, tp = self.cfg, self.procs, self.cfg["throughplane"]
        self.global_batch = int(self.t["batch"])
        self.local_batch = self.global_batch // procs.world
        store = load_slices(tp["sources"])
        self.dataset = ThroughPlaneBatches(store, tp, batch=self.local_batch, cols=int(self.t["hr_patch"]),
                                           seed=int(cfg["seed"]))
        n_samples = self.t["epoch_size"] or len(store.planes) * self.t["patches_per_image"]
        self.iters_per_epoch = max(1, math.ceil(n_samples / self.global_batch))
        self.dataset.length = self.iters_per_epoch * procs.world
        from .config import total_iterations

        self.total = total_iterations(cfg, len(store.planes))
        self.val_images = []
        if procs.main:
            self.val_images = make_val_pairs(load_slices(tp["val_sources"]), tp["val_factors"], profile=tp["profile"],
                                             max_images=self.v["max_images"], max_side=self.v["max_side"])
        return 0

    def _score_val(self) -> dict[str, Any]:
        if self.bicubic is None:
            self.bicubic = score_val(None, self.val_images)
        return score_val(self.model, self.val_images, device=self.procs.device)


# --------------------------------------------------------------------------------------------------
# export


def export_throughplane(checkpoint: str | Path, *, out: str | Path | None = None) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``MedSRLib/weights/<name>.safetensors`` + card from a through-plane run (best.pt, else last.pt).

    The card's metrics are the validation slices scored at every factor 2-8 (network and cubic
    B-spline), with the fp16-rounded weights that ship.
    """
    import yaml

    from MedSRLib.models import get_model
    from MedSRLib.models.weights import read_card, save_weights

    from .export import find_checkpoint
    from .loop import read_checkpoint

    path = find_checkpoint(checkpoint)
    ckpt = read_checkpoint(path)
    cfg = yaml.safe_load(ckpt["config"])
    spec = get_model(ckpt["model_name"])
    module = spec.build(int(ckpt["scale"]))
    module.load_state_dict(ckpt["model"])
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    module.eval()
    tp = cfg["throughplane"]
    start = time.perf_counter()
    pairs = make_val_pairs(load_slices(tp["val_sources"]), list(spec.scales), profile=tp["profile"],
                           max_images=cfg["val"]["max_images"], max_side=cfg["val"]["max_side"])
    ours, ref = score_val(module, pairs), score_val(None, pairs)
    metrics = {"convention": CONVENTION.replace("mean over val_factors", "mean over factors 2-8") + "; 'bicubic_*' = cubic B-spline",
               "split": "val_sources", "n_images": len({p.name for p in pairs}),
               "psnr": ours["psnr"], "ssim": ours["ssim"], "bicubic_psnr": ref["psnr"], "bicubic_ssim": ref["ssim"],
               "per_factor": ours["per_factor"],
               "bspline_per_factor": ref["per_factor"], "seconds": round(time.perf_counter() - start, 1)}
    train = cfg["train"]
    card = {
        "name": spec.name,
        "scale": spec.check_scale(int(ckpt["scale"])),
        "task": "through-plane super-resolution: N x 1 x h x w -> N x 1 x (r h) x w, rows = the thick axis; forward(x, r)",
        "training": {
            "data": [dict(s) for s in tp["sources"]],
            "held_out": cfg.get("description", ""),
            "validation": [dict(s) for s in tp["val_sources"]],
            "config": cfg["name"],
            "iterations": int(ckpt["iteration"]),
            "planned_iterations": int(ckpt["planned_iterations"]),
            "wall_time_s": round(float(ckpt["elapsed_s"]), 1),
            "hardware": ckpt["hardware"],
            "checkpoint": path.name,
            "degradation": (f"MedSRLib.resize.slice_profile_degrade along rows, {tp['profile']} profile, FWHM "
                            f"{tp['thickness']} x r, r uniform in {tp['factors']} per batch"),
            "patch": {"lr_rows": tp["lr_rows"], "cols": train["hr_patch"]},
            "batch": train["batch"],
            "optimizer": {"type": "Adam", **train["optimizer"]},
            "schedule": train["schedule"],
            "loss": train["loss"],
            "seed": cfg["seed"],
        },
        "metrics": metrics,
    }
    target = Path(out) if out is not None else spec.weights_path(spec.scales[-1])
    if target.suffix != ".safetensors":
        target = target / f"{spec.name}.safetensors"
    weights_path, card_path = save_weights(module, target, card=card)
    reloaded = spec.load(spec.scales[0], weights=weights_path)
    probe = torch.from_numpy(pairs[0].lr[None, None].copy())
    with torch.no_grad():
        if not torch.allclose(reloaded(probe, pairs[0].r), module(probe, pairs[0].r), atol=1e-5):
            raise ConfigError(f"{weights_path} does not reproduce the exported network; not shipped")
    return weights_path, card_path, read_card(weights_path)
