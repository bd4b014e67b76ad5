"""The training loop on real data: the loss drops, checkpoints load with weights_only=True, resuming
gives exactly the uninterrupted run's next losses and weights, and SRDA's joint loss is what it says."""

from __future__ import annotations

import csv
import shutil

import pytest
import torch

from conftest import shared_path
from training.config import load_config
from training.loop import read_checkpoint, train


@pytest.fixture(scope="module")
def covid_folder(tmp_path_factory):
    """A small folder dataset (train/ and val/) of real COVID-CT images copied from ../shared/data."""
    root = shared_path("covid-ct")
    out = tmp_path_factory.mktemp("covid_small")
    for split, lst, n in (("train", "trainCT_NonCOVID.txt", 10), ("val", "valCT_NonCOVID.txt", 3)):
        (out / split).mkdir()
        names = [n_ for n_ in (root / "Data-split/NonCOVID" / lst).read_text().split() if (root / "Images-processed/CT_NonCOVID" / n_).is_file()]
        for name in names[:n]:
            shutil.copy(root / "Images-processed/CT_NonCOVID" / name, out / split / name)
    return out


def small_config(data_root, log_root, **overrides):
    """dridsr_x4_cpu shrunk to seconds: LR 16 px patches, batch 4, no time budget, one thread (two
    threads on a loaded 2-core machine spin-wait and run ~5x slower)."""
    base = {
        "data.dataset": "folder", "data.root": str(data_root), "log.root": str(log_root),
        "train.hr_patch": 64, "train.batch": 4, "train.iterations": 30, "train.time_budget": None,
        "train.patches_per_image": 1, "train.threads": 1, "val.every": 30, "val.max_side": 128,
        "log.every": 1, "log.checkpoint_every": 10,
    }
    return load_config("dridsr_x4_cpu", overrides={**base, **overrides})


@pytest.fixture(scope="module")
def short_run(covid_folder, tmp_path_factory):
    """30 iterations of DRIDSR x4 on real CT images (shared with the export test)."""
    log_root = tmp_path_factory.mktemp("runs")
    return train(small_config(covid_folder, log_root), resume=False, progress=False)


def test_short_real_run_lowers_the_loss_and_writes_its_logs(short_run):
    losses = [loss for _, loss in short_run.losses]
    assert len(losses) == 30 and short_run.finished
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3, losses
    d = short_run.run_dir
    rows = list(csv.DictReader((d / "train.csv").open()))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 31))
    assert float(rows[-1]["loss"]) == pytest.approx(losses[-1], rel=1e-6)
    val = list(csv.DictReader((d / "val.csv").open()))
    assert val[-1]["convention"] == "dridsr-y" and float(val[-1]["bicubic_psnr"]) > 20
    assert list((d / "tb").glob("events.out.tfevents.*"))
    best = read_checkpoint(d / "best.pt")  # weights_only=True inside
    last = read_checkpoint(d / "last.pt")
    assert best["iteration"] == last["iteration"] == 30 and best["best"]["psnr"] == pytest.approx(float(val[-1]["psnr"]))
    assert set(last) >= {"optimizer", "scheduler", "rng", "step", "model", "planned_iterations"}


def test_resume_reproduces_the_uninterrupted_run_exactly(covid_folder, tmp_path):
    overrides = {"train.iterations": 8, "log.checkpoint_every": 4, "val.every": 100, "train.workers": 0,
                 "log.tensorboard": False, "train.schedule": {"type": "step", "every": 0.25, "gamma": 0.5, "min_lr": 0.0}}
    straight = train(small_config(covid_folder, tmp_path / "a", **overrides), resume=False, progress=False)
    first = train(small_config(covid_folder, tmp_path / "b", **overrides), resume=False, progress=False, stop_at=4)
    assert first.iteration == 4 and not first.finished
    resumed = train(small_config(covid_folder, tmp_path / "b", **overrides), resume=True, progress=False)
    assert [i for i, _ in resumed.losses] == [5, 6, 7, 8]
    assert [loss for _, loss in resumed.losses] == [loss for _, loss in straight.losses[4:]]
    a, b = read_checkpoint(straight.run_dir / "last.pt"), read_checkpoint(resumed.run_dir / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["scheduler"]["_last_lr"] == b["scheduler"]["_last_lr"] == [1e-3 * 0.5**4]
    rows = list(csv.DictReader((resumed.run_dir / "train.csv").open()))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 9))


def test_resume_refuses_a_checkpoint_of_another_config(covid_folder, tmp_path):
    overrides = {"train.iterations": 2, "val.every": 100, "log.tensorboard": False}
    train(small_config(covid_folder, tmp_path, **overrides), resume=False, progress=False)
    with pytest.raises(Exception, match="written by another config"):
        train(small_config(covid_folder, tmp_path, **{**overrides, "train.batch": 2}), resume=True, progress=False)


def test_srda_joint_loss_run_uses_labels_and_attention(tmp_path):
    """srda-small x4 on real Alzheimer images with class labels: all three loss terms are live."""
    root = shared_path("alzheimer-mri")
    small = tmp_path / "alz"
    for cls in ("NonDemented", "MildDemented", "VeryMildDemented"):
        (small / "train" / cls).mkdir(parents=True)
        for path in sorted((root / "train" / cls).iterdir())[:4]:
            shutil.copy(path, small / "train" / cls / path.name)
    cfg = load_config("srda_x4", overrides={
        "model": "srda-small", "data.dataset": "alzheimer", "data.root": str(small), "data.split_fractions": [0.75, 0.25, 0.0],
        "train.hr_patch": 32, "train.batch": 3, "train.epochs": None, "train.iterations": 3, "train.workers": 0, "train.threads": 1,
        "val.every": 100, "val.max_side": 64, "log.root": str(tmp_path / "runs"), "log.every": 1, "log.tensorboard": False,
    })
    result = train(cfg, resume=False, progress=False)
    rows = list(csv.DictReader((result.run_dir / "train.csv").open()))
    assert len(rows) == 3
    for r in rows:
        total, sr, diag, atten = (float(r[k]) for k in ("loss", "loss_sr", "loss_diag", "loss_atten"))
        assert diag > 0.1 and atten > 0  # cross-entropy of 3 classes, attention-map disagreement
        assert total == pytest.approx(sr + 6e-4 * diag + 1e-4 * atten, rel=1e-5)
    ckpt = read_checkpoint(result.run_dir / "last.pt")
    assert any(k.startswith("diag.") for k in ckpt["step"]) and not any(k.startswith("diag.") for k in ckpt["model"])
