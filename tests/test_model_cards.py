"""Model cards (issue 18): every shipped card validates against card version 2 and says what a reader
needs (licence, input spec, training data, budget, evaluation, limitations); its numbers match
training/RESULTS.md and its weights file; `medsr models` reads the cached table without torch and
the table matches what building the networks gives."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from MedSRLib.cli import main
from MedSRLib.errors import ModelNotFoundError, ScaleError, WeightsError
from MedSRLib.models import cards
from MedSRLib.models.cards import CARD_VERSION, card_text, format_card, load_card, shipped_cards, validate_card

REPO = Path(__file__).resolve().parent.parent
SHIPPED = shipped_cards()
CT_CARDS = [p for p in SHIPPED if json.loads(p.read_text())["modality"] == "CT" and json.loads(p.read_text())["task"] == "in-plane"]
TP_CARDS = [p for p in SHIPPED if json.loads(p.read_text())["task"] == "through-plane"]


def _card(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_shipped_cards_for_every_weights_file() -> None:
    assert len(SHIPPED) >= 12
    assert {p.with_suffix(".safetensors") for p in SHIPPED} == set(cards.WEIGHTS_DIR.glob("*.safetensors"))
    for path in SHIPPED:
        assert path.is_file(), f"{path.name} missing beside {path.with_suffix('.safetensors').name}"


def test_every_registered_weights_file_is_a_shipped_card_multi_factor_ones_included() -> None:
    from MedSRLib.models import list_models

    expected = set()
    for spec in list_models() + list_models(through_plane=True):
        for scale in spec.scales:
            if spec.learned and spec.has_weights(scale):
                expected.add(spec.weights_path(scale).with_suffix(".json"))
    assert expected == set(SHIPPED)
    assert any(p.stem.startswith("tp-") for p in SHIPPED), "the through-plane weights ship with cards (issue 20)"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_card_validates_and_matches_its_weights(path: Path) -> None:
    card = _card(path)
    assert validate_card(card) == [], validate_card(card)
    assert card["card_version"] == CARD_VERSION
    weights = path.with_suffix(".safetensors")
    assert card["weights_file"] == weights.name
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["sha256"]
    for item in card["licence"]["training_data"]:  # shipped weights name their data's licence and source
        assert not item["licence"].startswith("not recorded") and item["source"] != "not recorded"
    assert card["licence"]["weights"]["licence"]
    assert card["training"]["paper_schedule"]["fraction_of_paper_pixels"] < 1  # CPU budget runs


@pytest.mark.parametrize("path", [p for p in SHIPPED if p not in TP_CARDS], ids=lambda p: p.stem)
def test_card_held_out_numbers_are_those_of_results_md(path: Path) -> None:
    from training.export import results_evaluations

    card = _card(path)
    expected = results_evaluations(card["name"], card["scale"])
    assert expected, f"{card['name']} x{card['scale']} is in no table of training/RESULTS.md"
    found = [e for e in card["evaluation"] if e["source"].startswith("training/RESULTS.md")]
    assert found == expected, "card out of date with training/RESULTS.md: rerun `python -m training.export upgrade-cards`"


@pytest.mark.parametrize("path", CT_CARDS, ids=lambda p: p.stem)
def test_ct_cards_state_how_the_model_does_on_real_hu(path: Path) -> None:
    card = _card(path)
    real = [e for e in card["evaluation"] if e.get("command", "").startswith("medsr evaluate ../shared/data/totalseg-ct")]
    assert len(real) == 1, "every CT card carries the real-HU measurement (issue 18 item 3)"
    entry = real[0]
    assert entry["n_images"] == 20 and entry["scale"] == card["scale"] and entry["convention"] == "dridsr-y"
    assert f"--model {card['name']} --scale {card['scale']}" in entry["command"]
    statement = [s for s in card["limitations"] if s.startswith("On real HU slices")]
    assert len(statement) == 1 and f"{entry['gain_db']:+.2f} dB" in statement[0] and entry["command"] in statement[0]
    windowed = [e for e in card["evaluation"] if "window-pngs" in e.get("command", "")]
    for e in windowed:  # the same 20 slices as 8-bit windowed images: stated beside the HU gain
        assert e["n_images"] == 20 and f"{e['gain_db']:+.2f} dB in a" in statement[0]
    assert card["input"]["units"].startswith("HU") and "-1024..3071" in card["input"]["intensity_mapping"]["inference"]
    assert "8-bit" in card["training_data"][0]["values"]


@pytest.mark.parametrize("path", TP_CARDS, ids=lambda p: p.stem)
def test_through_plane_cards_say_what_issue_20_asks(path: Path) -> None:
    """Multi-factor card: every factor validated against the cubic B-spline, the ground-truth volume numbers
    of training/RESULTS.md's through-plane table, what was held out, and the slice-profile limitation."""
    from training.throughplane import results_entries

    card = _card(path)
    assert card["weights_file"] == f"{card['name']}.safetensors" and card["factors"] == list(range(2, 9))
    validation = [e for e in card["evaluation"] if e["source"].startswith("training/throughplane.py")]
    assert sorted(e["scale"] for e in validation) == card["factors"]
    truth = [e for e in card["evaluation"] if e["source"].startswith("training/RESULTS.md")]
    assert truth == results_entries(card["name"]), "card out of date with training/RESULTS.md: rerun " \
        "`python -m training.throughplane results`"
    assert truth, "ground-truth volume numbers (issue 20 item 6) on the card"
    assert "plane" in card["input"] and card["input"]["plane"].startswith("through-plane along the slice axis")
    assert "held" in card["training"]["held_out"] and card["training"]["held_out"] != card["training"]["config"]
    assert any("Gaussian with FWHM = slice thickness" in x for x in card["limitations"])
    assert any("not a substitute for a thin-slice acquisition" in x.lower() for x in card["limitations"])
    if card["modality"] == "CT":
        assert "NOT" in card["training"]["held_out"] and all("NOT held out" in e["split"] for e in truth)
        assert any("8-bit" in x for x in card["limitations"])
    else:
        held = {e["data"].split(" at ")[0] for e in truth if e["split"] == "held out from training"}
        assert held == {"../shared/data/isotropic-mr/seg3d-mr/MR.nii.gz", "../shared/data/isotropic-mr/sct-spine/t1w.nii.gz"}


def test_cli_prints_the_through_plane_cards() -> None:
    for path in TP_CARDS:
        name = path.stem
        text = card_text(name)
        assert text == card_text(name, 5) and "through-plane, factors x2, x3, x4, x5, x6, x7, x8" in text
        assert max(len(line) for line in text.splitlines()) <= cards.TEXT_WIDTH
        assert load_card(name) == [_card(path)]


def _valid() -> dict:
    return _card(SHIPPED[0])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("licence"), "missing 'licence'"),
        (lambda c: c["licence"]["training_data"].clear(), "licence.training_data: needs at least 1"),
        (lambda c: c.update(sha256="abc"), "sha256"),
        (lambda c: c.update(task="sideways"), "task: must be one of"),
        (lambda c: c.update(factors=[c["scale"], 8]), "in-plane card serves its scale only"),
        (lambda c: c.update(scale=True), "scale: must be integer"),
        (lambda c: c["input"].update(modality="PET"), "input.modality"),
        (lambda c: c["input"]["spacing_mm"].update(in_plane=[0.5]), "in_plane: needs at least 2"),
        (lambda c: c["evaluation"][0].update(gain_db=c["evaluation"][0]["gain_db"] + 1), "gain_db"),
        (lambda c: c["training"].pop("paper_schedule"), "missing 'paper_schedule'"),
        (lambda c: c.update(limitations=[]), "limitations: needs at least 1"),
        (lambda c: c.update(card_version=1), "card_version: must be 2"),
        (lambda c: c.update(weights_file="other_x2.safetensors"), "weights_file"),
    ],
)
def test_validator_catches_broken_cards(change, message) -> None:
    card = _valid()
    change(card)
    errors = validate_card(card)
    assert any(message in e for e in errors), errors


def test_format_fits_a_through_plane_model_serving_several_factors() -> None:
    card = copy.deepcopy(_valid())
    card.update(task="through-plane", factors=[2, 3, 4, 5], scale=5, weights_file=f"{card['name']}.safetensors")
    card["input"]["plane"] = "through-plane: along the slice axis"
    card["input"]["spacing_mm"].update(in_plane=[0.9, 1.1], through_plane=[2.0, 5.5])
    assert validate_card(card) == []
    text = format_card(card)
    assert "through-plane, factors x2, x3, x4, x5" in text and "through-plane 2-5.5 mm" in text
    card["factors"] = [3, 4]
    assert any("must include scale 5" in e for e in validate_card(card))
    card.update(factors=[2, 3, 4, 5, 6])
    assert any("largest factor" in e for e in validate_card(card))
    card.update(factors=[2, 3, 4, 5], weights_file=f"{card['name']}_x5.safetensors")
    assert any("weights_file" in e for e in validate_card(card))


def test_card_text_shows_licence_input_training_data_and_limitations() -> None:
    card = load_card("dridsr", 2)[0]
    text = card_text("dridsr", 2)
    for heading in ("Licence", "Intended use", "Out of scope", "Input", "Training data", "Training budget",
                    "Evaluation", "Limitations", "Known failure modes"):
        assert f"\n{heading}\n" in text, heading
    assert card["sha256"] in text and card["licence"]["weights"]["licence"] in text
    assert "COVID-CT" in text and "8-bit" in text and "HU" in text and "totalseg-ct" in text
    assert max(len(line) for line in text.splitlines()) <= cards.TEXT_WIDTH
    both = card_text("dridsr")  # every scale with weights
    assert both.count("\nTraining budget\n") == len(load_card("dridsr")) == 3
    assert "not learned" in card_text("bicubic", 2)


def test_card_lookup_errors_are_one_line_user_errors() -> None:
    with pytest.raises(ModelNotFoundError, match="unknown model 'nope'"):
        card_text("nope", 2)
    with pytest.raises(ScaleError, match="supported: x2, x3, x4"):
        card_text("dridsr", 8)
    with pytest.raises(WeightsError, match="no weights"):
        card_text("idman", 2)


def test_cli_models_card_prints_text_and_json(capsys) -> None:
    assert main(["models", "--card", "dridsr:2"]) == 0
    out = capsys.readouterr().out
    assert out == card_text("dridsr", 2)
    assert main(["models", "--card", "dridsr:x2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == load_card("dridsr", 2)[0]
    assert main(["models", "--card", "idman-small"]) == 0
    assert capsys.readouterr().out.count("idman-small x") == 2
    for path in TP_CARDS:  # a multi-factor through-plane card, for any of its factors
        assert main(["models", "--card", f"{path.stem}:5"]) == 0
        assert capsys.readouterr().out == card_text(path.stem)
    assert main(["models", "--card", "dridsr:two"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medsr: error:") and len(err.strip().splitlines()) == 1


def test_models_command_reads_json_only_and_never_imports_torch() -> None:
    code = ("import sys; from MedSRLib.cli import main; rc = main(['models']); rc2 = main(['models', '--card', 'dridsr:2']); "
            "print('TORCH', 'torch' in sys.modules, rc, rc2)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "TORCH False 0 0"
    assert "kMACs/LR px" in proc.stdout and "dridsr" in proc.stdout


def test_cached_table_matches_the_registry_and_the_built_networks() -> None:
    """Builds every registered network at every scale (meta device where possible)."""
    cached = cards.read_table()
    fresh = cards.compute_table()
    assert cached == fresh, f"MedSRLib/weights/model_table.json is stale: run `{cards.TABLE_COMMAND}`"
    rows = {r["name"]: r for r in cached["models"]}
    assert rows["dridsr"]["parameters"]["x4"] == 515_425  # the pinned counts of README's table
    assert rows["idman-small"]["parameters"]["x2"] == 919_746


def test_save_weights_refuses_an_incomplete_versioned_card(tmp_path: Path) -> None:
    from MedSRLib.models import get_model
    from MedSRLib.models.weights import save_weights

    module = get_model("dridsr").build(2)
    with pytest.raises(WeightsError, match="card version 2.*missing 'licence'"):
        save_weights(module, tmp_path / "dridsr_x2.safetensors", card={"name": "dridsr", "scale": 2, "card_version": 2})
    assert list(tmp_path.iterdir()) == []


def test_cards_and_registry_share_the_weights_folder() -> None:
    from MedSRLib.models.base import WEIGHTS_DIR

    assert cards.WEIGHTS_DIR == WEIGHTS_DIR and cards.TABLE_FILE.parent == WEIGHTS_DIR


def test_window_pngs_writes_the_real_ct_in_a_display_window(tmp_path: Path) -> None:
    """The 8-bit windowed copies of the real CT that the CT cards' windowed evaluations score."""
    import numpy as np
    from PIL import Image

    from conftest import shared_path
    from MedSRLib.io import read_volume
    from training.export import WINDOWS, window_pngs

    volume = shared_path("totalseg-ct", "example_ct_dicom")
    written = window_pngs(volume, tmp_path, window="soft")
    hu = read_volume(volume).array  # axial slices are numpy axis 0 here (2 mm, the largest spacing)
    assert len(written) == hu.shape[0] == 20
    level, width = WINDOWS["soft"]
    png = np.asarray(Image.open(written[7]))
    assert png.dtype == np.uint8 and png.shape == hu.shape[1:]
    expected = np.round(np.clip((hu[7].astype(float) - (level - width / 2)) / width, 0, 1) * 255)
    assert np.array_equal(png, expected.astype(np.uint8))
    assert (png == 0).mean() > 0.2 and (png == 255).any()  # air below the window, bone above it
