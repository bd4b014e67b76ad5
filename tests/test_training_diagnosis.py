"""SRDA's Table III experiment (training/diagnosis.py): the classifier is a plain ResNet-50, the inputs
are the LR / bicubic / SR / HR versions of the same real images, training learns, resumes exactly after
an interruption, and bad options are rejected by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import shared_path
from training.config import ConfigError
from training.diagnosis import LabelledImages, Recipe, load_results, make_inputs, markdown_table, train_classifier


def test_plain_resnet50_is_the_diagnosis_network_without_its_attention():
    from MedSRLib.models.srda import SRDADiagnosisNet

    with torch.device("meta"):
        plain = SRDADiagnosisNet(attention_at=None)
        guided = SRDADiagnosisNet(attention_at="stem")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert plain.attention is None
    assert count(guided) == 23_508_006  # networks.md Section 1
    assert count(guided) - count(plain) == 99  # the 7x7 2->1 attention conv and its bias
    small = SRDADiagnosisNet(attention_at=None, width_mult=0.25)
    logits, w_diag = small(torch.rand(2, 1, 52, 44))
    assert logits.shape == (2, 3) and w_diag is None


@pytest.mark.parametrize(("options", "name"), [({"epochs": 0}, "epochs"), ({"batch": 2.5}, "batch"),
                                               ({"width": 0}, "width"), ({"lr": -1.0}, "lr"),
                                               ({"weight_decay": -0.1}, "weight_decay")])
def test_bad_recipe_values_are_rejected_by_name(options, name):
    with pytest.raises(ConfigError, match=name):
        Recipe(**options)


@pytest.fixture(scope="module")
def srda_data():
    from training.config import load_config, validate

    shared_path("alzheimer-mri")
    return validate(load_config("srda_x4_cpu"))["data"]


@pytest.mark.shared
def test_inputs_are_lr_bicubic_sr_and_hr_versions_of_the_same_images(srda_data):
    got = {k: make_inputs(k, srda_data, "val", scale=4, max_images=3) for k in ("lr", "bicubic", "hr", "srda-small")}
    assert got["lr"].images.shape == (3, 52, 44)
    for k in ("bicubic", "hr", "srda-small"):
        assert got[k].images.shape == (3, 208, 176) and got[k].images.dtype == np.float32
        np.testing.assert_array_equal(got[k].labels, got["lr"].labels)
    mse = lambda k: float(np.mean((got[k].images - got["hr"].images) ** 2))  # noqa: E731
    assert mse("srda-small") < mse("bicubic")  # the shipped network beats bicubic on these images
    with pytest.raises(ConfigError, match="no shipped weights"):
        make_inputs("srda", srda_data, "val", scale=4, max_images=1)


def _inverted_task(data, n):
    """Real HR slices, label 1 for an intensity-inverted copy: learnable in a few epochs."""
    hr = make_inputs("lr", data, "train", scale=4, max_images=n).images
    images = np.concatenate([hr, 1.0 - hr]).astype(np.float32)
    return LabelledImages(images, np.repeat(np.array([0, 1], dtype=np.int64), n))


@pytest.mark.shared
def test_classifier_learns_and_resumes_exactly_after_an_interruption(srda_data, tmp_path, monkeypatch):
    import training.diagnosis as diagnosis

    task = _inverted_task(srda_data, 40)
    # 100 steps: BatchNorm's running statistics (momentum 0.1, used in eval mode) must forget the
    # first steps' activations, which are orders of magnitude larger in a fresh deep ResNet
    recipe = Recipe(epochs=5, batch=4, lr=1e-3, bf16=False, threads=None)
    whole = train_classifier(task, task, task, recipe=recipe, n_classes=2, checkpoint=tmp_path / "a.pt", log=lambda s: None)
    assert whole["test_acc"] >= 0.9 and whole["best_epoch"] >= 1

    real_predict, calls = diagnosis.predict, []

    def failing_predict(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # validation of epoch 2
            raise KeyboardInterrupt
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(diagnosis, "predict", failing_predict)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(task, task, task, recipe=recipe, n_classes=2, checkpoint=tmp_path / "b.pt", log=lambda s: None)
    monkeypatch.setattr(diagnosis, "predict", real_predict)
    resumed = train_classifier(task, task, task, recipe=recipe, n_classes=2, checkpoint=tmp_path / "b.pt", log=lambda s: None)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert resumed["test_acc"] == whole["test_acc"]
    with pytest.raises(ConfigError, match="another recipe"):
        train_classifier(task, task, task, recipe=Recipe(epochs=6, batch=4), n_classes=2, checkpoint=tmp_path / "b.pt")


def test_table_lists_each_input_beside_the_papers_accuracy(tmp_path):
    recipe = {"width": 0.25, "lr": 1e-3, "weight_decay": 1e-4, "batch": 32, "epochs": 10, "seed": 0, "bf16": True}
    for kind, acc in (("srda-small", 0.61), ("lr", 0.5), ("bicubic", 0.6)):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "result.json").write_text(json.dumps({
            "kind": kind, "test_acc": acc, "val_acc": acc, "best_epoch": 3, "train_seconds": 60.0, "recipe": recipe,
            "classes": ["NonDemented", "MildDemented", "VeryMildDemented"], "scale": 4,
            "image_size": [52, 44] if kind == "lr" else [208, 176]}))
    results = load_results(tmp_path)
    assert [r["kind"] for r in results] == ["lr", "bicubic", "srda-small"]
    table = markdown_table(results)
    assert "| LR | 52x44 | 0.5000 | 0.6515 |" in table
    assert "| srda-small (ours) | 208x176 | 0.6100 | 0.7348 |" in table
    assert "| Bicubic | 208x176 | 0.6000 | – |" in table
