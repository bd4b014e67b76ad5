"""Training data: the official splits of the real datasets, LUNA16-style scans split by scan id, and
aligned, deterministic LR/HR patches made with the project's one degradation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_path
from MedSRLib.resize import degrade
from training.config import DEFAULTS, ConfigError
from training.data import PairDataset, Split, list_split, load_hr, make_pair, to_unit


def _data(**kw):
    return {**DEFAULTS["data"], **kw}


def test_covid_ct_official_split_present_files_only():
    data = _data(dataset="covid-ct", root=str(shared_path("covid-ct")), normalise="uint8")
    counts = {s: len(list_split(data, s).items) for s in ("train", "val", "test")}
    assert counts == {"train": 229, "val": 118, "test": 203}  # covid-ct/README.md "What is present"
    train = list_split(data, "train")
    assert train.classes == ("COVID", "NonCOVID")
    assert sum(i.label == 0 for i in train.items) == 104 and sum(i.label == 1 for i in train.items) == 125
    names = {s: {i.name for i in list_split(data, s).items} for s in ("train", "val", "test")}
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"]) and not (names["val"] & names["test"])
    hr = load_hr(train.items[0], data)  # RGB/RGBA/L figure images -> one grey channel in [0, 1]
    assert hr.ndim == 2 and hr.dtype == np.float32 and 0 <= hr.min() and hr.max() <= 1
    assert np.allclose(hr * 255, np.round(hr * 255), atol=1e-4)


def test_alzheimer_srda_protocol_and_folders():
    root = shared_path("alzheimer-mri")
    data = _data(dataset="alzheimer-srda", root=str(root), normalise="uint8")
    splits = {s: list_split(data, s) for s in ("train", "val", "test")}
    assert [len(splits[s].items) for s in ("train", "val", "test")] == [2136, 267, 267]
    for s, per_class in (("train", 712), ("val", 89), ("test", 89)):
        assert np.bincount([i.label for i in splits[s].items]).tolist() == [per_class] * 3
    assert splits["train"].classes == ("NonDemented", "MildDemented", "VeryMildDemented")
    folders = _data(dataset="alzheimer", root=str(root), normalise="uint8")
    train, val, test = (list_split(folders, s) for s in ("train", "val", "test"))
    assert len(train.classes) == 4 and "ModerateDemented" in train.classes
    assert len(test.items) == 548 and len(train.items) + len(val.items) == 2186  # alzheimer-mri/README.md
    assert not {i.name for i in train.items} & {i.name for i in val.items}
    moderate = train.classes.index("ModerateDemented")
    assert all(("ModerateDemented" in i.name) == (i.label == moderate) for i in train.items)


def _write_scans(tmp_path, n_scans=4):
    """Real CT (TotalSegmentator example) cut into small .mhd/.raw scans, two per subset folder."""
    import SimpleITK as sitk

    ct = sitk.ReadImage(str(shared_path("totalseg-ct", "example_ct.nii.gz")))
    paths = []
    for k in range(n_scans):
        slab = ct[:, :, 20 + 10 * k : 26 + 10 * k]  # 6 axial slices each
        path = tmp_path / f"subset{k // 2}" / f"1.3.6.1.4.1.{k}.mhd"
        path.parent.mkdir(exist_ok=True)
        sitk.WriteImage(sitk.Cast(slab, sitk.sitkInt16), str(path))
        paths.append(path)
    return paths, sitk.GetArrayFromImage(ct)


def test_luna16_reader_splits_by_scan_never_by_slice(tmp_path):
    paths, hu = _write_scans(tmp_path)
    data = _data(dataset="luna16", root=str(tmp_path), normalise="ct", split_fractions=[0.5, 0.25, 0.25])
    splits = {s: list_split(data, s) for s in ("train", "val", "test")}
    scans = {s: {i.path.stem for i in splits[s].items} for s in splits}
    assert [len(scans[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert not (scans["train"] & scans["val"]) and not (scans["train"] & scans["test"]) and not (scans["val"] & scans["test"])
    for s in splits:  # every slice of a scan goes with it
        assert len(splits[s].items) == 6 * len(scans[s])
    item = splits["train"].items[0]
    z0 = 20 + 10 * int(item.path.stem.split(".")[-1])
    expected = np.clip((hu[z0 + item.index].astype(np.float64) + 1024) / 4095, 0, 1)  # CT window of MedSRLib.intensity
    assert np.allclose(load_hr(item, data), expected, atol=1e-6)
    by_subset = list_split({**data, "train": ["subset0"], "val": ["subset1"]}, "train")
    assert {i.path.parent.name for i in by_subset.items} == {"subset0"} and len(by_subset.items) == 12
    data2 = {**data, "slice_step": 2}
    assert len(list_split(data2, "train").items) == 6
    ds = PairDataset(splits["train"], data=data, scale=2, hr_patch=32, length=4, augment={}, seed=1)
    sample = ds[3]
    assert sample["lr"].shape == (1, 16, 16) and sample["hr"].shape == (1, 32, 32)


def test_luna16_missing_scans_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no .mhd scans found"):
        list_split(_data(dataset="luna16", root=str(tmp_path)), "train")


def _real_split(n=6):
    data = _data(dataset="covid-ct", root=str(shared_path("covid-ct")), normalise="uint8")
    split = list_split(data, "val")
    return Split(split.items[:n], split.classes), data


def test_patches_are_aligned_with_the_degradation_and_augmented_together():
    split, data = _real_split()
    scale, hr_patch = 3, 60
    ds = PairDataset(split, data=data, scale=scale, hr_patch=hr_patch, length=24, augment={"hflip": True, "rot90": True}, seed=5)
    for index in range(24):
        s = ds[index]
        lr, hr = s["lr"][0].numpy(), s["hr"][0].numpy()
        assert lr.shape == (20, 20) and hr.shape == (60, 60)
        relr = degrade(hr.astype(np.float64), scale=scale)
        # away from the patch border (bicubic support: 2 LR px) the patch's own degradation is the LR patch
        assert np.abs(relr[3:-3, 3:-3] - lr[3:-3, 3:-3]).max() < 1e-5, index
    shifted = degrade(np.roll(ds[0]["hr"][0].numpy().astype(np.float64), 1, axis=1), scale=scale)
    assert np.abs(shifted[3:-3, 3:-3] - ds[0]["lr"][0].numpy()[3:-3, 3:-3]).max() > 1e-3  # the check can fail


def test_sampling_is_deterministic_per_seed_epoch_index_and_worker_count():
    split, data = _real_split()
    kw = dict(data=data, scale=2, hr_patch=48, length=8, augment={"hflip": True, "rot90": True})
    a, b = PairDataset(split, seed=3, **kw), PairDataset(split, seed=3, **kw)
    assert torch.equal(a[5]["hr"], b[5]["hr"])
    b.set_epoch(1)
    assert not torch.equal(a[5]["hr"], b[5]["hr"])
    assert not torch.equal(a[5]["hr"], PairDataset(split, seed=4, **kw)[5]["hr"])
    assert a[2]["label"].item() == split.items[2].label
    serial = next(iter(torch.utils.data.DataLoader(a, batch_size=8, num_workers=0)))
    parallel = next(iter(torch.utils.data.DataLoader(a, batch_size=8, num_workers=2)))
    assert torch.equal(serial["lr"], parallel["lr"]) and torch.equal(serial["hr"], parallel["hr"])


def test_small_images_are_skipped_and_too_large_patch_is_an_error():
    split, data = _real_split()
    ds = PairDataset(split, data=data, scale=4, hr_patch=200, augment={}, seed=0)
    sizes = [min(load_hr(i, data).shape) for i in split.items]
    assert ds.n_skipped == sum(s < 200 for s in sizes) and len(ds.items) == sum(s >= 200 for s in sizes)
    with pytest.raises(ConfigError, match="no training image is at least 4000 px"):
        PairDataset(split, data=data, scale=4, hr_patch=4000, augment={}, seed=0)


def test_normalisations():
    img = np.array([[0, 128], [255, 64]], dtype=np.float32)
    assert np.allclose(to_unit(img, normalise="uint8"), img / 255)
    assert np.allclose(to_unit(img, normalise="auto"), img / 255)
    mr = np.array([[0, 1000], [2500, 4000]], dtype=np.float32)
    assert np.allclose(to_unit(mr, normalise="clip", clip_max=2000), [[0, 0.5], [1, 1]])  # MDRN: clip 2000, /2000
    ct = np.array([[-1024, 0], [3071, 5000]], dtype=np.float32)
    assert np.allclose(to_unit(ct, normalise="ct"), [[0, 1024 / 4095], [1, 1]])
    with pytest.raises(ConfigError, match="needs 8-bit images"):
        to_unit(mr, normalise="uint8")
    hr, lr = make_pair(np.random.default_rng(0).random((50, 47)).astype(np.float32), 4)
    assert hr.shape == (48, 44) and lr.shape == (12, 11)
