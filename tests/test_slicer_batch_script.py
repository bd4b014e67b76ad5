"""The headless batch script (Testing/MedSRBatch.py) end to end on slicer-core's real MRML.

In Slicer it runs as ``Slicer --no-main-window --python-script Testing/MedSRBatch.py -- IN OUT ...``;
here its ``main(argv)`` runs with Slicer's real archetype reader and writer (real storage nodes) and
its output file is compared with what MedSRLib writes for the same input.
"""

import importlib.util

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO_ROOT, shared_path
from slicer_double import medsr  # noqa: F401  (fixture)


@pytest.fixture
def batch(medsr, monkeypatch):
    import slicer

    monkeypatch.setattr(slicer.modules, "medsr", object(), raising=False)  # "the module is loaded"
    spec = importlib.util.spec_from_file_location("MedSRBatch", REPO_ROOT / "Testing" / "MedSRBatch.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_batch_script_writes_what_MedSRLib_writes(batch, tmp_path, capsys):
    from MedSRLib.run import RunOptions, run_volume

    source = shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    through_slicer, through_medsrlib = tmp_path / "slicer.nrrd", tmp_path / "medsrlib.nrrd"
    assert batch.main(["--", str(source), str(through_slicer), "--model", "bicubic", "--scale", "2"]) == 0
    assert "MedSR: wrote" in capsys.readouterr().out
    run_volume(source, through_medsrlib, RunOptions(model="bicubic", scale=2))

    written, expected = sitk.ReadImage(str(through_slicer)), sitk.ReadImage(str(through_medsrlib))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected))
    np.testing.assert_allclose(written.GetSpacing(), expected.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(written.GetOrigin(), expected.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), expected.GetDirection(), atol=1e-6)
    assert written.GetSize() == (35, 512, 512)  # i is the 4.8 mm slice axis here: j and k are in-plane


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["{missing}", "{out}"], "does not exist"),
        (["{source}", "{out}", "--model", "mdrn", "--scale", "3"], "does not support scale 3"),
        (["{source}", "{tmp}/out.xyz"], "unsupported file type"),
        (["{source}", "{out}", "--model", "no-such-model"], "unknown model"),
        (["{source}", "{out}", "--batch-size", "many"], "Batch size must be a whole number"),
        (["{source}", "{out}", "--threads", "0"], "threads must be a positive integer"),
    ],
    ids=["missing-input", "unsupported-scale", "bad-output-extension", "unknown-model", "bad-batch-size", "bad-threads"],
)
def test_batch_script_bad_input_exits_2_with_one_line_and_writes_nothing(batch, tmp_path, capsys, arguments, message):
    source = shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    values = {"missing": tmp_path / "nope.nii.gz", "out": tmp_path / "out.nrrd", "source": source, "tmp": tmp_path}
    assert batch.main([a.format(**values) for a in arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("MedSR: error:") and message in error and "\n" not in error
    assert list(tmp_path.iterdir()) == []


def test_batch_script_refuses_when_the_module_is_not_loaded(batch, tmp_path, capsys, monkeypatch):
    import slicer

    monkeypatch.delattr(slicer.modules, "medsr")
    assert batch.main([str(tmp_path / "in.nrrd"), str(tmp_path / "out.nrrd")]) == 2
    assert "--additional-module-paths" in capsys.readouterr().err


def test_batch_script_missing_torch_exits_2_in_testing_mode_even_when_asked_to_install(batch, tmp_path, capsys, monkeypatch):
    import PyTorchUtils
    from MedSRSlicerLib import dependencies

    monkeypatch.setattr(dependencies, "isSatisfied", lambda requirement: not requirement.startswith("torch"))
    source = shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    assert batch.main([str(source), str(tmp_path / "out.nrrd"), "--install-dependencies"]) == 2
    assert "testing mode" in capsys.readouterr().err
    assert PyTorchUtils.installTorchCalls == [] and list(tmp_path.iterdir()) == []


def test_install_dependencies_flag_installs_without_any_dialog_outside_testing_mode(batch, tmp_path, capsys, monkeypatch):
    """Issue 19: ``--install-dependencies`` says "without asking"; a modal box would block a headless Slicer."""
    import PyTorchUtils
    import slicer
    from MedSRSlicerLib import dependencies

    def modal_dialog(*args, **kwargs):
        raise AssertionError("a modal dialog was opened in a headless batch run")

    slicer.app.setTestingEnabled(False)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", modal_dialog)
    monkeypatch.setattr(dependencies, "isSatisfied", lambda requirement: not requirement.startswith("torch"))
    source = shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    # the shim's installTorch installs nothing (returns None, as a declined/failed install): exit 2, nothing written
    assert batch.main([str(source), str(tmp_path / "out.nrrd"), "--install-dependencies"]) == 2
    assert "PyTorch was not installed" in capsys.readouterr().err
    assert PyTorchUtils.installTorchCalls == [
        {"askConfirmation": False, "torchVersionRequirement": dependencies.TORCH_INSTALL_VERSION, "forceComputationBackend": None}
    ]
    assert list(tmp_path.iterdir()) == []


def test_batch_script_offers_medsrs_engine_flags_and_they_become_the_same_EngineOptions(batch):
    """The batch script's engine flags are `medsr run`'s (derived from EngineOptions), read as the CLI reads them."""
    from MedSRSlicerLib import engine_settings

    from MedSRLib.cli import _engine_options, build_parser
    from MedSRLib.engine import option_fields

    flags = ["--device", "cpu", "--batch-size", "3", "--memory-budget", "64", "--tile", "48", "--tile-overlap", "8",
             "--ensemble", "--precision", "bf16", "--threads", "auto", "--compile"]
    arguments = batch.parseArguments(["--", "in.nrrd", "out.nrrd", *flags])
    values = {s.field: getattr(arguments, s.field) for s in engine_settings.SETTINGS}
    cli = build_parser().parse_args(["run", "in.nii", "out.nii", "--scale", "2", *flags])
    assert engine_settings.engineOptions(values) == _engine_options(cli)
    assert {s.flag for s in engine_settings.SETTINGS} == {m["flag"] for m in option_fields(offered_only=True).values()}
    assert (arguments.plane, arguments.target_spacing, arguments.adapt) == ("in", 0.0, 0.0)  # --scale keeps its meaning
