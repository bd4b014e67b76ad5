"""One Predictor runs every network: the same images give identical outputs through every path
(pipeline, ``medsr evaluate``, the comparison panel, training's validation, the SRDA diagnosis
inputs), and ``medsr evaluate`` honours every engine option it offers.

The panel/evaluate test fails on the old code, whose panel path skipped the inference rewrites
(mdrn x2 27.2053 dB in the panel vs 27.2111 dB from evaluate on the same image); the option tests fail
on the old ``medsr evaluate``, which accepted ``--precision/--tile/--batch-size/--memory-budget`` and
ignored them, invalid values included.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_path

from MedSRLib.engine import EngineOptions, Predictor
from MedSRLib.evaluate import degrade_and_super_resolve, evaluate
from MedSRLib.intensity import IntensityMapping, image_to_unit
from MedSRLib.io import list_images_2d, read_image_2d
from MedSRLib.panel import panel_for_path, super_resolve_and_score
from MedSRLib.pipeline import super_resolve
from MedSRLib.volume import Volume

FP32 = EngineOptions(device="cpu", precision="fp32")


def _folder():
    return shared_path("alzheimer-mri", "test", "ModerateDemented")


def _first_image() -> tuple[str, np.ndarray]:
    path = list_images_2d(_folder())[0]
    return path.name, image_to_unit(read_image_2d(path))


def test_panel_and_evaluate_give_the_same_mdrn_scores(tmp_path):
    folder = _folder()
    scores = panel_for_path(folder, tmp_path / "p.png", model="mdrn", scale=2, convention="basicsr", options=FP32)
    row = evaluate(folder, model="mdrn", scale=2, convention="basicsr", limit=1, options=FP32).per_image[0]
    got = scores[row["image"]]["mdrn"]
    assert got["psnr"] == row["psnr"] and got["ssim"] == row["ssim"]  # identical, not approximately equal


def test_every_path_gives_identical_outputs_for_the_same_images():
    """evaluate's step, the panel, training's validation, the pipeline and a reused Predictor agree bit for bit."""
    from training.data import EvalImage
    from training.evaluate import predictor_for_module, super_resolve_images

    name, hr = _first_image()
    predictor = Predictor("mdrn", 2, options=FP32)
    hr_c, lr, sr_evaluate = degrade_and_super_resolve(predictor, hr)
    panel = super_resolve_and_score(hr, scale=2, models=["mdrn"], options=FP32)
    np.testing.assert_array_equal(panel.outputs["mdrn"], sr_evaluate)

    raw = predictor.spec.load(2)  # a module as training holds it: not rewritten; the copy is
    train_out = super_resolve_images(predictor_for_module(raw, predictor.spec, 2), [EvalImage(name, hr_c.astype(np.float32), lr)])
    np.testing.assert_array_equal(train_out[0], sr_evaluate)
    assert not any(type(m).__name__.startswith("_Inference") for m in raw.modules())  # training's module untouched

    # the pipeline on a volume of that slice: its mapping's round trip around the same network output
    volume = Volume(lr[None].astype(np.float32) * 1000.0, spacing=(1.0, 1.0, 5.0), origin=(0.0, 0.0, 0.0),
                    direction=np.eye(3), modality="MR")
    result = super_resolve(volume, model="mdrn", scale=2, axis=0, output_dtype="float32", options=FP32)
    mapping = IntensityMapping.fit(volume.array, modality="MR")
    expected = mapping.from_unit(Predictor("mdrn", 2, options=FP32).run(mapping.to_unit(volume.array).astype(np.float32)),
                                 dtype=np.float32)
    np.testing.assert_array_equal(result.array, expected)
    assert result.metadata["medsr"]["precision"] == "fp32"
    # reusing one predictor across volumes (batch runs) gives the same output again
    again = super_resolve(volume, axis=0, output_dtype="float32", predictor=Predictor("mdrn", 2, options=FP32))
    np.testing.assert_array_equal(again.array, result.array)


def test_diagnosis_inputs_run_through_the_same_predictor():
    from training.diagnosis import inputs_for

    _, hr = _first_image()
    hr_c, lr, sr_evaluate = degrade_and_super_resolve(Predictor("mdrn", 2, options=FP32), hr)
    got = inputs_for("mdrn", {"test": (hr_c[None], lr[None], np.zeros(1, np.int64))}, scale=2)["test"].images[0]
    np.testing.assert_array_equal(got, sr_evaluate.astype(np.float32))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tile", "-3"], "tile"),
        (["--batch-size", "0"], "batch_size"),
        (["--memory-budget", "-5"], "memory_budget_mb"),
        (["--precision", "fp16", "--device", "cpu"], "fp16"),
        (["--threads", "0"], "threads"),
    ],
)
def test_evaluate_rejects_invalid_engine_options(capsys, flags, message):
    from MedSRLib.cli import main

    code = main(["evaluate", str(_folder()), "--model", "bicubic", "--scale", "2", "--limit", "1", *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err


def test_evaluate_honours_precision_and_reports_it(capsys):
    from MedSRLib.cli import main

    args = ["evaluate", str(_folder()), "--model", "mdrn", "--scale", "2", "--limit", "1", "--json", "--device", "cpu",
            "--threads", "1", "--tile", "64", "--tile-overlap", "8"]
    assert main([*args, "--precision", "bf16"]) == 0
    bf16 = json.loads(capsys.readouterr().out)
    assert main([*args, "--precision", "fp32"]) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert (bf16["precision"], fp32["precision"]) == ("bf16", "fp32")
    assert bf16["psnr"] != fp32["psnr"]  # the precision really changed what ran
    assert abs(bf16["psnr"] - fp32["psnr"]) < 0.1


def test_a_reused_predictor_refuses_conflicting_model_scale_or_options():
    from MedSRLib.errors import OptionError

    volume = Volume(np.random.default_rng(2).random((2, 12, 10)).astype(np.float32), spacing=(1.0, 1.0, 3.0),
                    origin=(0.0, 0.0, 0.0), direction=np.eye(3), modality="MR")
    predictor = Predictor("bicubic", 3, options=FP32)
    assert super_resolve(volume, predictor=predictor, axis=0).shape == (2, 36, 30)
    assert super_resolve(volume, predictor=predictor, model="bicubic", scale=3, axis=0).shape == (2, 36, 30)
    for bad in ({"model": "nearest"}, {"scale": 2}, {"precision": "fp32"}, {"options": FP32}):
        with pytest.raises(OptionError, match="predictor"):
            super_resolve(volume, predictor=predictor, axis=0, **bad)
