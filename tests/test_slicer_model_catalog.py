"""The panel's model list, cards and estimates never import torch on Slicer's GUI thread (issue 19).

In Slicer the first listing of models took about 4 s (torch import) and each first selection of a model
up to 4 s (card, weights lookup, network built for the estimate), all on the GUI thread. Now:

* the list, the card and the Apply check come from ``MedSR/Resources/models.json`` (cached metadata);
  a fresh interpreter in which torch cannot be imported lists every model and shows their cards;
* the cache equals MedSRLib's registry, in-plane and through-plane networks (this test fails when a
  model, scale, weights file or card changes: regenerate with ``python MedSR/MedSRSlicerLib/model_catalog.py``);
* the time estimate runs in a background thread and gives MedSRLib's number.
"""

import subprocess
import sys
import threading

import numpy as np
import pytest
from slicer_double import DOUBLE_DIR, medsr  # noqa: F401  (fixture)


def test_cached_catalog_equals_MedSRLibs_registry(medsr):
    from MedSRSlicerLib import model_catalog

    stored = model_catalog.CATALOG_FILE.read_text(encoding="utf-8")
    assert stored == model_catalog.dumps(model_catalog.build()), (
        "MedSR/Resources/models.json is stale: run python MedSR/MedSRSlicerLib/model_catalog.py")


def test_catalog_answers_like_the_registry(medsr):
    from MedSRLib.models import list_models
    from MedSRSlicerLib import model_catalog

    specs = list_models()
    assert [m.name for m in model_catalog.models()] == [s.name for s in specs]
    for spec in specs:
        cached = model_catalog.find(spec.name.upper())  # case-insensitive, like get_model
        assert cached.scales == tuple(spec.scales) and cached.modality == spec.modality
        for scale in spec.scales:
            assert cached.hasWeights(scale) == (spec.learned and spec.has_weights(scale))
    assert model_catalog.find("no-such-model") is None
    through = list_models(through_plane=True)
    assert [m.name for m in model_catalog.throughPlaneModels()] == [s.name for s in through] != []
    for spec, cached in zip(through, model_catalog.throughPlaneModels()):
        assert cached.scales == tuple(spec.scales) and cached.modality == spec.modality
        assert all(cached.hasWeights(f) == spec.has_weights(f) for f in spec.scales)
        assert model_catalog.find(spec.name) is None  # never offered as an in-plane model


def test_panel_information_works_where_torch_cannot_be_imported():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        f"sys.path[:0] = [{str(DOUBLE_DIR.parent)!r}]\n"
        "import numpy as np, slicer_double\n"
        "MedSR = slicer_double.activate(); slicer_double.reset()\n"
        "import slicer\n"
        "logic = MedSR.MedSRLogic()\n"
        "node = slicer.util.addVolumeFromArray(np.zeros((3, 8, 8), np.int16), name='v')\n"
        "choices = logic.modelChoices()\n"
        "print(len(choices), choices[0][0])\n"
        "print(logic.describeModel('mdrn', 4).count('<br>') > 3, 'Not available at x3' in logic.describeModel('mdrn', 3))\n"
        "print(logic.problemWith(node, None, 'mdrn', 2), '|', logic.problemWith(node, None, 'mdrn', 3))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('MedSRLib.models', 'MedSRLib.engine', 'MedSRLib.pipeline'))))\n"
        "from MedSRSlicerLib import panel_text\n"  # the card text and the slice-direction plan: torch-free too
        "parameters = logic.getParameterNode(); parameters.inputVolume = node; parameters.model = 'mdrn'\n"
        "text = panel_text.panelText(logic, parameters)\n"
        "print(text.cardText.splitlines()[0], '|', 'Auto is through-plane' in text.planeText)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    from MedSRLib.models import list_models

    assert lines[0] == f"{len(list_models())} bicubic"
    assert lines[1] == "True True"
    assert lines[2].startswith("None | ") and "x3" in lines[2]
    # only the torch-free options type (the engine settings derive from it); no registry, no pipeline run
    assert lines[3] == "['MedSRLib.engine', 'MedSRLib.engine.options']"
    assert lines[4].startswith("mdrn x2: MDRN") and lines[4].endswith("| True")


def test_estimate_runs_off_the_calling_thread_and_gives_MedSRLibs_number(medsr):
    import slicer
    from MedSRLib.pipeline import estimate_seconds

    node = slicer.util.addVolumeFromArray(np.zeros((5, 64, 48), np.int16), ijkToRAS=np.diag([-1.0, -1.0, 3.0, 1.0]))
    call = medsr.MedSRLogic.estimateInBackground(node, "mdrn", 2, device="cpu")
    assert call.wait(120)
    assert call.threadIdent is not None and call.threadIdent != threading.get_ident()
    expected = estimate_seconds((5, 64, 48), node.GetSpacing(), model="mdrn", scale=2, device="cpu")
    assert call.result() == pytest.approx(expected, rel=1e-9)
    failing = medsr.MedSRLogic.estimateInBackground(node, "mdrn", 3, device="cpu")
    failing.wait(120)
    from MedSRLib.errors import ScaleError

    with pytest.raises(ScaleError):
        failing.result()  # MedSRLib's error reaches the caller's thread
