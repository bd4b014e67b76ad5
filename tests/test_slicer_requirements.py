"""What the MedSR module installs inside Slicer (issue 19): only what runs there, and a bounded torch range.

* ``Resources/requirements.txt`` names only packages the module imports in Slicer: the module runs
  end to end (a trained network, the data-consistency check, on real MRML) in a fresh interpreter in
  which tqdm and pylibjpeg cannot be imported, and that run does import every listed requirement;
* the torch range handed to the PyTorch extension has an upper bound that excludes torch 2.13
  (installed through light-the-torch it broke Slicer 5.12.2 on Windows) and the lower bound MedSRLib
  declares, while an installed torch is accepted in MedSRLib's whole range (never reinstalled).
"""

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, shared_path
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from slicer_double import DOUBLE_DIR, medsr  # noqa: F401  (fixture)

#: import names of the distributions in requirements.txt
IMPORT_NAMES = {"safetensors": "safetensors", "scikit-image": "skimage"}


def test_module_runs_a_network_and_the_check_without_tqdm_or_pylibjpeg_and_uses_every_requirement(medsr):
    from MedSRSlicerLib import dependencies

    source = shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    listed = {Requirement(r).name for r in dependencies.readRequirements()}
    assert listed == set(IMPORT_NAMES)
    blocked = sorted(dependencies.NOT_USED_IN_SLICER)
    code = f"""
import json, sys
for name in ("tqdm", "pylibjpeg", "openjpeg", "pylibjpeg_openjpeg"):
    sys.modules[name] = None  # not installed in Slicer
sys.path[:0] = [{str(DOUBLE_DIR.parent)!r}, {str(REPO_ROOT)!r}]
import torch; torch.set_num_threads(1)
import slicer_double
MedSR = slicer_double.activate(); slicer_double.reset()
import slicer
from MedSRSlicerLib import selftest
node = slicer.util.loadVolume({str(source)!r})
slab = selftest.slabAlongSliceAxis(node, 2)
out = MedSR.MedSRLogic().process(slab, model="mdrn", scale=2, check=True)
print(json.dumps({{"dims": out.GetImageData().GetDimensions(), "modules": sorted(m for m in sys.modules if sys.modules[m] is not None)}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["dims"] == [2, 512, 512]  # sagittal slab: 2 thick slices kept, 256 x 256 in-plane doubled
    for distribution, module in IMPORT_NAMES.items():
        assert module in report["modules"], f"{distribution} is listed in requirements.txt but not used"
    assert blocked == ["pylibjpeg", "pylibjpeg-openjpeg", "tqdm"]


def test_torch_install_range_is_bounded_and_excludes_2_13_while_any_supported_torch_is_kept(medsr):
    from MedSRSlicerLib import dependencies

    install = SpecifierSet(dependencies.TORCH_INSTALL_VERSION)
    supported = SpecifierSet(dependencies.TORCH_VERSION)
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in install), "unbounded torch install request"
    assert not install.contains("2.13.0") and not install.contains("2.14.1")
    assert install.contains("2.12.0") and install.contains("2.1.0")
    assert all(supported.contains(v) for v in ("2.1.0", "2.12.0", "2.13.0"))  # an installed 2.13 is used, not replaced
    pyproject_torch = next(r for r in __import__("tomllib").loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                           if r.startswith("torch"))
    assert Requirement(pyproject_torch).specifier == supported
    assert min(Version(s.version) for s in install if s.operator in (">=", ">")) == Version("2.1")
