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
  perpendicular to each numpy axis in ``axes`` (``slice`` = the acquisition axis from the header);
  ``diagonals: n`` (default 0 = none) adds every ``n``-th diagonal plane through each axis in ``axes``
  and a diagonal of the two other axes, as the four-view inference cuts them
  (:class:`MedSRLib.throughplane._Diagonals`: voxels of the grid, columns sqrt(2) pixels apart), kept
  upright (that axis stays the degraded rows, :func:`MedSRLib.throughplane.random_view`); planes
  shorter than ``DIAGONAL_MIN_COLUMNS`` columns are left out.
* ``{kind: image, path, normalise}``: one 2D image file (PNG/JPEG/DICOM/.mat).
* any source may set ``max_items`` (first n slices).

The trainer is :class:`training.loop._Trainer` with the data and the validation replaced
(:class:`ThroughPlaneTrainer`): checkpoints, resume, time budget, logs are the loop's. Validation
scores the network against the one-axis cubic B-spline (:func:`MedSRLib.resize.interpolate_axis`) on
the validation slices at ``val_factors`` (thickness = r, Gaussian), PSNR/SSIM on [0, 1] over the
rows the LR samples cover.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
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


#: Diagonal training planes shorter than this (columns) are left out: mostly background corners.
DIAGONAL_MIN_COLUMNS = 32


@dataclass
class SliceStore:
    """Every slice of the sources, as [0, 1] float32 (8-bit images as uint8), plus names; ``upright[k]``:
    slice ``k``'s rows must stay the degraded direction (a diagonal plane), empty = none is."""

    planes: list[np.ndarray]
    names: list[str]
    upright: list[bool] = field(default_factory=list)

    def image(self, k: int) -> np.ndarray:
        """Slice ``k`` as float32 in [0, 1]."""
        p = self.planes[k]
        return p.astype(np.float32) / np.float32(255.0) if p.dtype == np.uint8 else p


def _volume_planes(src: Mapping[str, Any]) -> tuple[list[np.ndarray], list[str], list[bool]]:
    from MedSRLib.geometry import resolve_slice_axis
    from MedSRLib.intensity import IntensityMapping, guess_modality
    from MedSRLib.io import read_volume

    path = resolve_root(src["path"])
    volume = read_volume(path)
    modality = str(src.get("modality") or volume.modality or guess_modality(volume)).upper()
    unit = np.clip(IntensityMapping.fit(volume.array, modality=modality).to_unit(volume.array), 0.0, 1.0)
    axes = src.get("axes", ["slice"])
    step = int(src.get("step", 1))
    diagonal_step = int(src.get("diagonals", 0))
    planes, names, upright = [], [], []
    for axis in axes:
        ax = resolve_slice_axis(volume, None) if axis == "slice" else int(axis)
        for k in range(0, unit.shape[ax], step):
            planes.append(np.ascontiguousarray(np.take(unit, k, axis=ax), dtype=np.float32))
            names.append(f"{path.name}:axis{ax}:{k}")
            upright.append(False)
        if diagonal_step > 0:
            for plane, name in _diagonal_planes(np.moveaxis(unit, ax, 0), diagonal_step):
                planes.append(plane)
                names.append(f"{path.name}:axis{ax}:{name}")
                upright.append(True)
    return planes, names, upright


def _diagonal_planes(view: np.ndarray, step: int) -> list[tuple[np.ndarray, str]]:
    """Every ``step``-th diagonal plane of a ``(rows, p, q)`` array and of its anti-diagonal twin, as
    ``(rows x length)`` float32 images (voxels of the grid; the rows stay the first axis)."""
    from MedSRLib.throughplane import _Diagonals

    out = []
    for anti in (False, True):
        diagonals = _Diagonals(view.shape[1], view.shape[2], anti=anti)
        for c in range(0, len(diagonals.rows), step):
            i, j = diagonals.rows[c], diagonals.cols[c]
            if len(i) >= DIAGONAL_MIN_COLUMNS:
                out.append((np.ascontiguousarray(view[:, i, j], dtype=np.float32), f"{'anti' if anti else 'diag'}{c}"))
    return out


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
    upright: list[bool] = []
    for src in sources:
        kind = src["kind"]
        u: list[bool] | None = None
        if kind == "volume":
            p, n, u = _volume_planes(src)
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
        u = u or [False] * len(p)
        if src.get("max_items"):
            p, n, u = p[: int(src["max_items"])], n[: int(src["max_items"])], u[: int(src["max_items"])]
        planes += [_compact(x) for x in p]
        names += n
        upright += u
    if not planes:
        raise ConfigError("the through-plane sources hold no slices")
    return SliceStore(planes, names, upright if any(upright) else [])


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
        self._upright = store.upright or None

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
                           lr_rows=int(tp["lr_rows"]), cols=self.cols, min_std=float(tp["min_std"]),
                           upright=self._upright)
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


#: Ground-truth volumes of issue 20 item 6: ``(key, path under ../shared/data, thicknesses in mm,
#: modality, held out)``. ``held_out`` False: the volume (or its other contrast's grid) was a training source.
GT_VOLUMES: tuple[tuple[str, str, tuple[float, ...], str, bool], ...] = (
    ("seg3d-mr", "isotropic-mr/seg3d-mr/MR.nii.gz", (3.0, 5.0, 7.0), "MR", True),
    ("sct-spine-t1w", "isotropic-mr/sct-spine/t1w.nii.gz", (3.0, 5.0, 7.0), "MR", True),
    ("sct-spine-t2", "isotropic-mr/sct-spine/t2.nii.gz", (3.0, 5.0, 7.0), "MR", False),
    ("stroke-t1", "isotropic-mr/stroke-cstar/T1.nii.gz", (3.0, 5.0, 7.0), "MR", False),
    ("stroke-t2", "isotropic-mr/stroke-cstar/T2.nii.gz", (3.0, 5.0, 7.0), "MR", False),
    ("stroke-flair", "isotropic-mr/stroke-cstar/FLAIR.nii.gz", (3.0, 5.0, 7.0), "MR", False),
    ("totalseg-ct", "totalseg-ct/example_ct_dicom", (6.0,), "CT", False),
)
#: Adapted runs (``--adapt``) on the held-out MR volumes: ``(key, mm, seconds)``.
GT_ADAPT: tuple[tuple[str, float, int], ...] = (
    ("seg3d-mr", 5.0, 120), ("sct-spine-t1w", 5.0, 120), ("sct-spine-t2", 5.0, 120), ("stroke-t1", 5.0, 120),
    ("stroke-t2", 5.0, 120), ("stroke-flair", 5.0, 120),
)
#: Marker lines of the through-plane section of training/RESULTS.md (kept by ``python -m training results``).
RESULTS_BEGIN = "<!-- through-plane ground truth: python -m training.throughplane results -->"
RESULTS_END = "<!-- end through-plane ground truth -->"
GT_CONVENTION = ("through-plane ground truth: Gaussian slice profile FWHM = spacing = the stated mm along the axis with "
                 "the largest spacing, super-resolved back to the original grid; PSNR on [0,1] (data range 1) over "
                 "the foreground mask (> 0.5 x Otsu, dilated 3 voxels), SSIM = mean 2D SSIM over the slices "
                 "containing the thick axis; 'bicubic_*' = cubic B-spline")


def gt_command(key: str, *, adapt: int | None = None, threads: int = 1) -> str:
    """The ``medsr evaluate`` command whose ``--json`` output is ground-truth result ``key``."""
    _, rel, mms, _, _ = next(v for v in GT_VOLUMES if v[0] == key)
    mm = [a[1] for a in GT_ADAPT if a[0] == key][0] if adapt else None
    mm_text = " ".join(f"{m:g}" for m in ((mm,) if adapt else mms))
    return (f"medsr evaluate ../shared/data/{rel} --through-plane --mm {mm_text}"
            + (f" --adapt {adapt}" if adapt else "") + f" --threads {threads} --json")


def source_key(src: Mapping[str, Any]) -> str:
    """The :data:`training.export.DATASETS` key of a through-plane source (by kind, else by its path)."""
    from .export import DATASETS

    kind = src["kind"]
    if kind in ("covid-ct", "alzheimer", "alzheimer-srda"):
        return kind
    path = resolve_root(src.get("path") or src.get("root"))
    shared = resolve_root("${MEDSR_SHARED_DATA}")
    try:
        parts = path.resolve().relative_to(shared.resolve()).parts
    except ValueError:
        parts = ()
    key = None
    if parts[:1] == ("mr-volumes",) and len(parts) > 1:
        key = {"t1_fl2d": "dcm-qa-decubitus", "dcm_qa_": "dcm-qa-decubitus", "vs-seg_": "vs-seg",
               "ixi-sli": "ixi"}.get(parts[1][:7])
    elif parts[:1] == ("thick-slice",):
        key = "sct-t2s"
    elif parts:
        key = parts[0]
    if key not in DATASETS:
        raise ConfigError(f"no card facts for through-plane source {path}; add its licence, source and images to "
                          "training.export.DATASETS before exporting")
    return key


def _source_label(src: Mapping[str, Any]) -> str:
    if src["kind"] not in ("volume", "image"):
        return f"{src['kind']} '{src.get('split', 'train')}' split"
    path = resolve_root(src["path"])
    label = "/".join(path.parts[-2:])
    axes = src.get("axes", ["slice"])
    if src["kind"] == "volume":
        label += " (all three axes" if sorted(map(str, axes)) == ["0", "1", "2"] else " (in-plane slices"
        label += f", one in {src['diagonals']} diagonal planes too)" if src.get("diagonals") else ")"
    return label


def throughplane_card(cfg: Mapping[str, Any], ckpt: Mapping[str, Any], spec: Any, metrics: Mapping[str, Any], *,
                      checkpoint_name: str, counts: Sequence[int], val_counts: Mapping[str, int],
                      ground_truth: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The version-2 card of a through-plane run, from :data:`training.export.DATASETS` (one entry per source
    dataset) and the same shared facts as the in-plane cards (licence, references, out of scope, inference input).

    Args:
        counts: slices per ``throughplane.sources`` entry (training images).
        val_counts: validation slices per dataset key.
        ground_truth: evaluation entries on ground-truth volumes (:func:`results_entries`).
    """
    from MedSRLib.models.cards import CARD_VERSION

    from .export import (DATASETS, INFERENCE_INPUT, OUT_OF_SCOPE, REFERENCES, WEIGHTS_LICENCE, _COMMON_FAILURES,
                         evaluation_entry)
    from .config import load_config, total_iterations

    tp, train = cfg["throughplane"], cfg["train"]
    modality = spec.modality
    groups: dict[str, dict[str, Any]] = {}
    for src, n in zip(tp["sources"], counts):
        key = source_key(src)
        g = groups.setdefault(key, {"facts": DATASETS[key], "labels": [], "n": 0})
        g["labels"].append(_source_label(src))
        g["n"] += int(n)
    lo_r, hi_r = int(tp["factors"][0]), int(tp["factors"][1])
    spacings = [s for g in groups.values() for s in (g["facts"].get("spacing") or ())]
    in_plane = [round(min(spacings), 3), round(max(spacings), 3)] if spacings else None
    through = [round(lo_r * in_plane[0], 3), round(hi_r * in_plane[1], 3)] if in_plane else None
    units, mapping = INFERENCE_INPUT[modality]
    training_data = []
    for key, g in groups.items():
        f = g["facts"]
        images = f["images"] if f["images"].endswith(":") or key not in ("covid-ct", "alzheimer", "alzheimer-srda") \
            else f"{f['images']};"
        training_data.append({
            "dataset": f["dataset"], "images": f"{images} {', '.join(g['labels'])}", "values": f["values"],
            "split": f["split"], "n_train": g["n"], "n_val": val_counts.get(key), "n_test": None})
    licence_data = [{k: g["facts"][k] for k in ("dataset", "licence", "source", "note") if k in g["facts"]}
                    for g in groups.values()]
    paper = load_config("dridsr_x4")
    pt = paper["train"]
    paper_iterations = total_iterations(paper, 0)
    iterations = int(ckpt["iteration"])
    mean_r = (lo_r + hi_r) / 2.0
    fraction = (iterations * train["batch"] * tp["lr_rows"] * mean_r * train["hr_patch"]) / (
        paper_iterations * pt["batch"] * pt["hr_patch"] ** 2)
    hardware = (f"{ckpt['hardware']}; the machine's 2 CPU cores were shared by up to 4 processes (this run "
                "included) during training, so the wall time is longer than on an idle CPU")
    evaluation = []
    for r in map(str, spec.scales):
        ours, ref = metrics["per_factor"][r], metrics["bspline_per_factor"][r]
        evaluation.append(evaluation_entry(
            {"convention": CONVENTION.replace("mean over val_factors", f"factor {r}") + "; 'bicubic_*' = cubic B-spline",
             "psnr": ours["psnr"], "ssim": ours["ssim"], "bicubic_psnr": ref["psnr"], "bicubic_ssim": ref["ssim"]},
            data=next(iter(DATASETS[source_key(s)]["dataset"] for s in tp["val_sources"])),
            split="validation slices (val_sources)", n_images=metrics["n_images"], scale=int(r),
            source="training/throughplane.py at export (float16 weights)",
            note=f"Rows degraded with the {tp['profile']} slice profile, FWHM = {r} px, sampled every {r} px."))
    evaluation += [dict(e) for e in ground_truth]
    used = " ".join(str(resolve_root(src.get("path") or src.get("root"))) for src in tp["sources"])
    held = [rel for _, rel, _, mod, held_out in GT_VOLUMES if mod == modality and held_out]
    leaked = [rel for rel in held if rel in used]
    if leaked:
        raise ConfigError(f"{', '.join(leaked)} is a ground-truth test volume held out from training; remove it from "
                          "throughplane.sources")
    held_out_text = (f"held out from training entirely: {' and '.join(held)} (the ground-truth test below)" if held else
                     f"nothing: the only fine {modality} volume here (the 20-slice TotalSegmentator series, 2 mm) is also "
                     "a training source, so the ground-truth number below is NOT on held-out data")
    what = "MR" if modality == "MR" else "CT"
    limitations = [
        "The slice profile is assumed Gaussian with FWHM = slice thickness (DICOM SliceThickness, else the spacing; "
        "--thickness overrides). Other profiles (rectangular, overlapping or gapped reconstructions) are outside "
        "what the network learned.",
        "Not a substitute for a thin-slice acquisition: detail between the thick slices is estimated from what the "
        "network learned on other images, not measured. Small structures that fall between slices are not recovered.",
        "Trained on CPU for a small fraction of DRIDSR's in-plane schedule (see Training budget), not to convergence.",
        "The network sees 2D slices that contain the thick axis; the two orientations are averaged, nothing else "
        "makes the volume consistent in 3D. Factors above 8 are refused.",
    ]
    if modality == "CT":
        limitations.insert(1, "CT trained largely on COVID-CT's 8-bit display images (figures from papers, already "
                              "windowed); the only HU data were 20 axial slices of one abdominal series. It never saw "
                              "head, pelvis or limb CT, metal, contrast phases or other kernels.")
        limitations.insert(2, "No CT ground truth held out from training exists here: the 6 mm TotalSegmentator number "
                              "on this card is on a training volume and overstates what to expect on unseen CT.")
    else:
        limitations.insert(1, _TP_MR_LIMITS)
    failure_modes = [
        "Can sharpen noise and motion artefacts along the slice axis and add ringing at strong edges; can invent "
        "plausible structure between slices that is not in the patient. `medsr run --check` re-degrades the output "
        "along the slice axis and flags where it disagrees with the input.",
    ] + [m for m in _COMMON_FAILURES[1:]]
    return {
        "card_version": CARD_VERSION,
        "name": spec.name,
        "scale": spec.check_scale(int(ckpt["scale"])),
        "task": "through-plane",
        "factors": [int(s) for s in spec.scales],
        "reference": dict(REFERENCES.get("DRIDSR" if "DRIDSR" in spec.network else "MDRN")),
        "licence": {"weights": dict(WEIGHTS_LICENCE), "training_data": licence_data},
        "intended_use": (f"Research: make a thick-slice {what} volume near-isotropic along its slice axis (e.g. 4-7 mm "
                         "axial slices to about the in-plane spacing) for viewing coronal and sagittal reformats "
                         "without a staircase and for 3D tools that need near-isotropic input; `medsr run IN OUT` "
                         "picks it for thick-slice volumes. The output is an estimate, not a measurement."),
        "out_of_scope_use": list(OUT_OF_SCOPE) + [
            "Volumes whose slices do not sample a roughly Gaussian profile of about the slice spacing (large gaps, "
            "overlapping reconstructions) unless --thickness states the real thickness."],
        "input": {
            "modality": modality,
            "units": units,
            "intensity_mapping": {"inference": mapping,
                                  "training": "; ".join(f"{g['facts']['dataset']}: {g['facts']['values']}"
                                                        for g in groups.values())},
            "spacing_mm": {
                "in_plane": in_plane, "through_plane": through,
                "note": (f"Training pairs are made from fine pixels: rows degraded with the {tp['profile']} profile, "
                         f"FWHM {tp['thickness'][0]:g}-{tp['thickness'][1]:g} x r pixels, sampled every r pixels, "
                         f"r = {lo_r}-{hi_r}; the in-plane range is that of the volumes with a known spacing, and "
                         "through-plane is r x that; the 2D image datasets carry no spacing."),
            },
            "plane": ("through-plane along the slice axis (default the axis with the largest spacing): the slices that "
                      "contain that axis are cut along both other axes, the network upsamples their coarse direction "
                      f"by an integer r in {lo_r}-{hi_r} (r = ceil(spacing / target)) and the two orientations are "
                      "averaged; a non-integer factor is finished with the one-axis cubic B-spline"),
            "min_lr_side_px": int(max(1, spec.min_lr_size)),
        },
        "training_data": training_data,
        "training": {
            "data": (f"{sum(counts)} training slices from {len(groups)} source dataset(s) (below); validation: "
                     f"{metrics['n_images']} slices of val_sources; {held_out_text}"),
            "held_out": held_out_text,
            "config": cfg["name"],
            "config_file": f"training/configs/{cfg['name']}.yaml",
            "iterations": iterations,
            "planned_iterations": int(ckpt["planned_iterations"]),
            "wall_time_s": round(float(ckpt["elapsed_s"]), 1),
            "hardware": hardware,
            "checkpoint": checkpoint_name,
            "degradation": (f"MedSRLib.resize.slice_profile_degrade along rows, {tp['profile']} profile, FWHM "
                            f"{tp['thickness']} x r, r uniform in {tp['factors']} per batch"),
            "patch": {"lr_rows": tp["lr_rows"], "cols": train["hr_patch"]},
            "hr_patch": train["hr_patch"],
            "batch": train["batch"],
            "optimizer": {"type": "Adam", **train["optimizer"]},
            "schedule": train["schedule"],
            "loss": train["loss"],
            "seed": cfg["seed"],
            "paper_schedule": {
                "config_file": "training/configs/dridsr_x4.yaml",
                "description": str(paper.get("description")),
                "iterations": int(paper_iterations),
                "batch": int(pt["batch"]),
                "hr_patch": int(pt["hr_patch"]),
                "fraction_of_paper_pixels": float(f"{fraction:.4g}"),
                "note": ("DRIDSR has no through-plane schedule: its in-plane x4 recipe is the comparison. HR pixels "
                         f"per sample here: lr_rows x mean r x cols = {tp['lr_rows']} x {mean_r:g} x {train['hr_patch']}."),
            },
        },
        "metrics": dict(metrics),
        "evaluation": evaluation,
        "limitations": limitations,
        "failure_modes": failure_modes,
    }


_TP_MR_LIMITS = ("Trained on head, brain and neck/cervical-spine MR of a handful of subjects (T1, T2, FLAIR, T2*, PD, "
                 "8-bit Alzheimer JPEG slices): never saw other body parts, diffusion, perfusion or dynamic series, "
                 "nor children.")


#: Columns of the through-plane table in training/RESULTS.md (one row per model, volume and thickness).
TABLE_HEADER = ("model", "volume", "held out", "mm", "factor", "B-spline PSNR", "B-spline SSIM", "linear PSNR",
                "PSNR", "SSIM", "gain dB", "adapted PSNR", "adapted SSIM", "adapted gain dB", "adapt s")


def results_entries(name: str, text: str | None = None) -> list[dict[str, Any]]:
    """The ground-truth card entries of model ``name`` from the through-plane table of training/RESULTS.md
    (:data:`TABLE_HEADER`; the adapted columns may be ``–``)."""
    import re

    from .export import RESULTS_FILE, evaluation_entry

    text = RESULTS_FILE.read_text(encoding="utf-8") if text is None else text
    if RESULTS_BEGIN not in text:
        return []
    section = text.split(RESULTS_BEGIN, 1)[1].split(RESULTS_END, 1)[0]
    entries = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 13 or cells[0] != name:
            continue
        key, held, mm, factor = cells[1], cells[2], float(cells[3]), float(cells[4])
        _, rel, _, _, held_out = next(v for v in GT_VOLUMES if v[0] == key)
        split = "held out from training" if held_out else "NOT held out (a training source)"
        note = f"Simulated at {mm:g} mm: factor {factor:g} along the thick axis (network factor {math.ceil(factor - 1e-6)})."
        scores = {"convention": GT_CONVENTION, "psnr": float(cells[8]), "ssim": float(cells[9]),
                  "bicubic_psnr": float(cells[5]), "bicubic_ssim": float(cells[6])}
        entries.append(evaluation_entry(scores, data=f"../shared/data/{rel} at {mm:g} mm", split=split, n_images=1,
                                        scale=max(2, math.ceil(factor - 1e-6)), source="training/RESULTS.md (through-plane table)",
                                        command=gt_command(key), note=note))
        if len(cells) >= 15 and cells[11] not in ("–", "-", ""):
            seconds = int(float(cells[14]))
            adapted = dict(scores, psnr=float(cells[11]), ssim=float(cells[12]))
            entries.append(evaluation_entry(adapted, data=f"../shared/data/{rel} at {mm:g} mm, adapted {seconds} s",
                                            split=split, n_images=1, scale=max(2, math.ceil(factor - 1e-6)),
                                            source="training/RESULTS.md (through-plane table)",
                                            command=gt_command(key, adapt=seconds, threads=2),
                                            note=note + f" Network fine-tuned for {seconds} s on the simulated volume's "
                                                        "own in-plane slices (--adapt), 2 threads."))
    return entries


def export_throughplane(checkpoint: str | Path, *, out: str | Path | None = None) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``MedSRLib/weights/<name>.safetensors`` + its version-2 card from a through-plane run (best.pt, else last.pt).

    The card (:func:`throughplane_card`) is built from the same facts as the in-plane cards
    (:data:`training.export.DATASETS`); its validation entries are the validation slices scored at every
    factor 2-8 (network and cubic B-spline) with the fp16-rounded weights that ship; the ground-truth
    entries come from the through-plane table of training/RESULTS.md when it has rows for this model.
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
    counts = [len(load_slices([src]).planes) for src in tp["sources"]]
    val_counts: dict[str, int] = {}
    for src in tp["val_sources"]:
        val_counts[source_key(src)] = val_counts.get(source_key(src), 0) + len(load_slices([src]).planes)
    card = throughplane_card(cfg, ckpt, spec, metrics, checkpoint_name=path.name, counts=counts, val_counts=val_counts,
                             ground_truth=results_entries(spec.name))
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


# --------------------------------------------------------------------------------------------------
# ground truth: the RESULTS.md table and the cards' ground-truth entries

#: Where the ``--json`` outputs of :func:`gt_command` are kept (``<key>.json``, ``<key>_adapt<s>.json``).
GT_DIR = Path(__file__).resolve().parent / "results_throughplane"


def _held_out(key: str) -> bool:
    return any(k == key and held for k, _, _, _, held in GT_VOLUMES)


def _mean(values: Any) -> float:
    items = list(values)
    return sum(items) / len(items)


def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def results_section(folder: str | Path = GT_DIR, *, machine: str = "") -> str:
    """The through-plane section of training/RESULTS.md (between :data:`RESULTS_BEGIN` and :data:`RESULTS_END`)
    from the ``medsr evaluate --through-plane --json`` outputs in ``folder``."""
    import json

    folder = Path(folder)
    loaded = {key: json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
              for key, *_ in GT_VOLUMES if (folder / f"{key}.json").is_file()}  # each result read once
    rows, gains, adapted_gains = [], {}, []
    for key, rel, mms, modality, held_out in GT_VOLUMES:
        if key not in loaded:
            continue
        adapt = {}
        for k, mm, seconds in GT_ADAPT:
            apath = folder / f"{k}_adapt{seconds}.json"
            if k == key and apath.is_file():
                for r in json.loads(apath.read_text(encoding="utf-8")):
                    adapt[float(r["mm"])] = (r, seconds)
        for r in loaded[key]:
            s = r["scores"]
            gain = s["network"]["psnr"] - s["bspline3"]["psnr"]
            gains.setdefault((modality, float(r["mm"])), []).append((key, held_out, gain))
            cells = [r["model"], key, "yes" if held_out else "no (training source)", f"{r['mm']:g}", f"{r['factor']:.3g}",
                     _f(s["bspline3"]["psnr"]), _f(s["bspline3"]["ssim"], 4), _f(s["linear"]["psnr"]),
                     _f(s["network"]["psnr"]), _f(s["network"]["ssim"], 4), f"{gain:+.2f}"]
            if float(r["mm"]) in adapt:
                ar, seconds = adapt[float(r["mm"])]
                a = ar["scores"]["adapted"]
                a_gain = a["psnr"] - ar["scores"]["bspline3"]["psnr"]
                adapted_gains.append((key, a_gain, ar["scores"]["network"]["psnr"] - ar["scores"]["bspline3"]["psnr"],
                                      ar["adaptation"]))
                cells += [_f(a["psnr"]), _f(a["ssim"], 4), f"{a_gain:+.2f}", str(seconds)]
            else:
                cells += ["–", "–", "–", "–"]
            rows.append("| " + " | ".join(cells) + " |")
    lines = [RESULTS_BEGIN, "", "### Through-plane: ground truth on near-isotropic volumes (issue 20 item 6)", "",
             "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)] + rows + [""]
    precisions = sorted({str(r.get("precision")) for results in loaded.values() for r in results})
    for (modality, mm), values in sorted(gains.items()):
        mean = sum(g for _, _, g in values) / len(values)
        held = [g for _, h, g in values if h]
        text = (f"* {modality} at {mm:g} mm: mean gain over cubic B-spline {mean:+.2f} dB over {len(values)} volume(s), "
                f"lowest {min(g for _, _, g in values):+.2f} dB ({min(values, key=lambda v: v[2])[0]})")
        if held:
            text += f"; held-out volumes {', '.join(f'{g:+.2f}' for g in held)} dB (mean {sum(held) / len(held):+.2f})"
        lines.append(text + ".")
    five = gains.get(("MR", 5.0))
    if five:
        mean5 = sum(g for _, _, g in five) / len(five)
        lines.append(
            f"* Issue 20 targets at 5 mm (MR): mean >= +2 dB over cubic B-spline: {'reached' if mean5 >= 2 else 'NOT reached'} "
            f"({mean5:+.2f} dB); above B-spline on every volume: {'yes' if min(g for *_, g in five) > 0 else 'NO'}"
            + (f"; >= +3 dB with --adapt: {'reached' if _mean(a for _, a, _, _ in adapted_gains) >= 3 else 'NOT reached'} "
               f"(mean over the {len(adapted_gains)} adapted volume(s) {_mean(a for _, a, _, _ in adapted_gains):+.2f} dB, "
               f"shipped weights alone on them {_mean(p for _, _, p, _ in adapted_gains):+.2f} dB; "
               f"{', '.join(f'{k} {a:+.2f} dB' for k, a, _, _ in adapted_gains)})" if adapted_gains else "") + ".")
        ensemble5 = _variant_gains(folder, loaded, "ensemble").get(5.0)
        if ensemble5:
            mean_e = _mean(gv for *_, gv in ensemble5)
            lines.append(f"* The same target with `--ensemble` (shipped weights, 4x network time) on the {len(ensemble5)} "
                         f"volume(s) run with it: {'reached' if mean_e >= 2 else 'NOT reached'} ({mean_e:+.3f} dB; the "
                         f"default on them {_mean(gd for *_, gd, _ in ensemble5):+.3f} dB).")
        if any(not _held_out(k) for k, *_ in adapted_gains):
            lines.append("* --adapt on a training-source volume is not a test of adaptation: the shipped network was "
                         "trained on that volume's own planes, the through-plane ones included, so its result there is "
                         "a fit to data it has seen, which adapting to the in-plane slices alone may undo; the held-out "
                         "rows are the test.")
    lines += _variant_lines(folder, loaded)
    for key, a_gain, plain_gain, rep in adapted_gains:
        lines.append(f"* {key} at 5 mm with --adapt: {a_gain:+.2f} dB over cubic B-spline (shipped weights alone "
                     f"{plain_gain:+.2f} dB); adaptation ran {rep['seconds']:.0f} s, {rep['iterations']} steps, "
                     f"its own held-back patches {rep['heldout_psnr_before']:.2f} -> {rep['heldout_psnr_after']:.2f} dB.")
    lines += [
        f"* Convention: {GT_CONVENTION}. 'factor' = mm / the original spacing along that axis; the network runs at "
        "r = ceil(factor) and a non-integer factor is finished with the one-axis cubic B-spline.",
        "* Models: the shipped tp-dridsr (MR) and tp-dridsr-ct (CT) weights. 'held out': yes = never a training "
        "source (isotropic-mr/seg3d-mr/MR.nii.gz, isotropic-mr/sct-spine/t1w.nii.gz); the other MR volumes were "
        "training sources (all three axes); the CT series is the only fine CT here and was also a training source, "
        "so the CT row is not a held-out result.",
        "* Commands (from the repository root, `../shared/data` beside it): "
        + "; ".join(f"`{gt_command(k)}`" for k, *_ in GT_VOLUMES) + "; adapted: "
        + "; ".join(f"`{gt_command(k, adapt=s, threads=2)}`" for k, _, s in GT_ADAPT)
        + ". Each `--json` output is kept in `training/results_throughplane/<volume>.json` "
          "(`<volume>_adapt120.json`; "
        + "; ".join(f"`<volume>_{suffix}.json`: the same commands without --adapt, with `{option}`"
                    for suffix, option, _ in GT_VARIANTS)
        + "); this section and the cards' ground-truth entries are made from them by "
          "`python -m training.throughplane results`.",
        f"* Machine: {machine or 'not recorded'}. Network precision on this CPU (auto): {', '.join(precisions)} "
        "(the image path, B-spline base and tails in fp32).",
        "",
        RESULTS_END,
    ]
    return "\n".join(lines) + "\n"


#: Ground-truth variants kept beside each volume's default result ``<key>.json``: ``(file suffix, the
#: option added to the default command, what it runs)``; ``<key>_<suffix>.json`` is that command's output.
GT_VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("views2", "--views 2", "2 fused views (the two in-plane orientations only; the default fuses 4: both "
                            "orientations and both voxel diagonals)"),
    ("ensemble", "--ensemble", "the flip self-ensemble (each view run on the 4 flips that keep the thick axis "
                               "as rows, averaged: 4x the network time)"),
)


def _variant_gains(folder: Path, loaded: Mapping[str, list[dict[str, Any]]], suffix: str
                   ) -> dict[float, list[tuple[str, bool, float, float]]]:
    """Per mm: ``(key, held out, default gain, variant gain)`` of the MR volumes with a ``<key>_<suffix>.json``."""
    import json

    pairs: dict[float, list[tuple[str, bool, float, float]]] = {}
    for key, _rel, _mms, modality, held_out in GT_VOLUMES:
        path = folder / f"{key}_{suffix}.json"
        if modality != "MR" or key not in loaded or not path.is_file():
            continue
        variant = {float(r["mm"]): r["gain_db"]["network"] for r in json.loads(path.read_text(encoding="utf-8"))}
        for r in loaded[key]:
            if float(r["mm"]) in variant and r.get("views", 2) == 4:
                pairs.setdefault(float(r["mm"]), []).append((key, held_out, r["gain_db"]["network"], variant[float(r["mm"])]))
    return pairs


def _variant_lines(folder: Path, loaded: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """Each :data:`GT_VARIANTS` entry against the default, per mm (``loaded``: each volume's ``<key>.json`` rows)."""
    lines = []
    for suffix, option, what in GT_VARIANTS:
        for mm, values in sorted(_variant_gains(folder, loaded, suffix).items()):
            held = [(k, gv - gd) for k, h, gd, gv in values if h]
            lines.append(
                f"* `{option}` at {mm:g} mm (MR), {what}: mean gain over cubic B-spline "
                f"{_mean(gv for *_, gv in values):+.2f} dB vs the default's {_mean(gd for *_, gd, _ in values):+.2f} dB; "
                "per volume (variant - default) " + ", ".join(f"{k} {gv - gd:+.3f}" for k, _, gd, gv in values)
                + (f" (held out: {', '.join(f'{k} {d:+.3f}' for k, d in held)})" if held else "") + ".")
    return lines


def replace_results_section(text: str, section: str) -> str:
    """``text`` (RESULTS.md) with its through-plane section replaced by ``section`` (appended when absent)."""
    if RESULTS_BEGIN in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_BEGIN, 1)
        tail = rest.split(RESULTS_END, 1)[1].lstrip("\n")
        return head + section + (("\n" + tail) if tail else "")
    return text.rstrip("\n") + "\n\n" + section


def kept_results_section(text: str) -> str:
    """The through-plane section of an existing RESULTS.md ('' when none): ``python -m training results``
    regenerates the in-plane tables and keeps this section as it is."""
    if RESULTS_BEGIN not in text or RESULTS_END not in text:
        return ""
    return RESULTS_BEGIN + text.split(RESULTS_BEGIN, 1)[1].split(RESULTS_END, 1)[0] + RESULTS_END + "\n"


def refresh_card(card: Mapping[str, Any], text: str | None = None) -> dict[str, Any]:
    """``card`` (a through-plane card) with its ground-truth entries replaced by :func:`results_entries`
    (weights and sha256 untouched)."""
    keep = [e for e in card["evaluation"] if not e["source"].startswith("training/RESULTS.md")]
    return {**card, "evaluation": keep + results_entries(card["name"], text)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.throughplane results [--dir DIR] [--machine TEXT]``: write the through-plane section
    of training/RESULTS.md from the ``--json`` outputs in DIR and refresh the ground-truth entries of the
    shipped through-plane cards (JSON cards only; the weights files are untouched)."""
    import argparse
    import json

    from MedSRLib.models import list_models
    from MedSRLib.models.cards import write_card

    from .export import RESULTS_FILE

    parser = argparse.ArgumentParser(prog="python -m training.throughplane")
    parser.add_argument("command", choices=["results"])
    parser.add_argument("--dir", type=Path, default=GT_DIR, help="folder of the `medsr evaluate --json` outputs")
    parser.add_argument("--machine", default="", help="the CPU and whether it was shared, for the section")
    args = parser.parse_args(argv)
    section = results_section(args.dir, machine=args.machine)
    text = replace_results_section(RESULTS_FILE.read_text(encoding="utf-8"), section)
    RESULTS_FILE.write_text(text, encoding="utf-8")
    print(f"wrote the through-plane section of {RESULTS_FILE}")
    for spec in list_models(through_plane=True):
        path = spec.weights_path(max(spec.scales)).with_suffix(".json")
        if path.is_file():
            write_card(path, refresh_card(json.loads(path.read_text(encoding="utf-8")), text))
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
