"""training/RESULTS.md tables: every listed shipped model and the baselines are scored on the same real
test images, the paper's rows sit under ours, gains are our PSNR minus bicubic's, and the targets
table flags a model below its target."""

from __future__ import annotations

import re

import pytest

from conftest import shared_path
from training.evaluate import results_markdown, targets_markdown

SPEC = """
- title: "COVID-CT test (check)"
  data_config: dridsr_x4_cpu
  split: test
  convention: dridsr-y
  scales: [3, 4]
  baselines: [bicubic, nearest]
  models: [dridsr, idman-small]
  published: dridsr-covid-ct
  paper_rows: [Bicubic, DRIDSRS]
  notes: ["a note"]
"""


@pytest.mark.shared
def test_tables_score_models_and_baselines_on_the_same_images_with_paper_rows(tmp_path):
    shared_path("covid-ct")
    tables = tmp_path / "tables.yaml"
    tables.write_text(SPEC)
    markdown, gains = results_markdown(max_images=2, tables=tables, log=lambda s: None)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| method")}
    assert list(rows) == ["Bicubic (ours)", "Nearest (ours)", "dridsr (ours)", "idman-small (ours)",
                          "Bicubic (paper)", "DRIDSRS (paper)"]
    assert rows["idman-small (ours)"][:3] == ["–", "–", "–"]  # no idman-small x3 weights are shipped
    assert rows["Bicubic (paper)"][0] == "29.11" and rows["DRIDSRS (paper)"][3] == "31.89"
    bicubic, nearest, dridsr = (float(rows[k][3]) for k in ("Bicubic (ours)", "Nearest (ours)", "dridsr (ours)"))
    assert nearest < bicubic < dridsr
    x4 = {g["model"]: g for g in gains if g["scale"] == 4}
    assert set(x4) == {"dridsr", "idman-small"}
    assert x4["dridsr"]["gain_db"] == pytest.approx(dridsr - bicubic, abs=0.011)
    assert "* a note" in markdown and re.search(r"x4, 2 covid-ct test images: gain over bicubic", markdown)


def test_targets_table_says_no_when_a_model_misses_its_target():
    gains = [
        {"model": "a", "scale": 2, "psnr": 33.0, "bicubic_psnr": 32.5, "gain_db": 0.5, "target_db": 1.0, "convention": "basicsr"},
        {"model": "a", "scale": 4, "psnr": 26.0, "bicubic_psnr": 25.0, "gain_db": 1.0, "target_db": 0.5, "convention": "basicsr"},
        {"model": "a", "scale": 4, "psnr": 29.0, "bicubic_psnr": 25.0, "gain_db": 4.0, "target_db": 0.5, "convention": "srda"},
    ]
    table = targets_markdown(gains)
    assert "| a | x2 | 33.00 | 32.50 | +0.50 dB | >= 1 dB | **no** |" in table
    assert "| a | x4 | 26.00 | 25.00 | +1.00 dB | >= 0.5 dB | yes |" in table  # the basicsr row, not srda's
    assert "29.00" not in table
