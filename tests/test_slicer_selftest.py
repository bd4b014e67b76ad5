"""``MedSRTest`` (ctest ``py_MedSR``) outside Slicer: its checks run on slicer-core's real MRML with the real
thick-slice MR, whose thick axis is I (numpy axis 2), not K.

Issue 19: the self-test used to keep 3 slices along numpy axis 0 (K); on a volume whose thick axis is not
K that slab is super-resolved across the slab and the geometry check fails. ``selftest.slabAlongSliceAxis``
keeps the slices along the slice axis (largest spacing); ``superResolveAndVerify`` is exactly what
``MedSRTest`` runs after loading SampleData (which needs the network and the application).
"""

import unittest

import numpy as np
import pytest
from conftest import shared_path
from slicer_double import medsr  # noqa: F401  (fixture)

T1 = ("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")  # 256 x 256 x 35 (i = 35 sagittal slices 4.8 mm apart)


def load_t1():
    import slicer

    return slicer.util.loadVolume(str(shared_path(*T1)))


def test_slab_keeps_slices_along_the_thick_axis_at_their_positions(medsr):
    from MedSRSlicerLib import nodes, selftest

    node = load_t1()
    assert node.GetImageData().GetDimensions() == (35, 256, 256)
    assert selftest.sliceAxis(node) == 2  # numpy axis 2 = IJK axis I, the 4.8 mm axis: not K
    slab = selftest.slabAlongSliceAxis(node, 3)
    assert slab.GetImageData().GetDimensions() == (3, 256, 256)
    np.testing.assert_allclose(slab.GetSpacing(), node.GetSpacing())
    first = (35 - 3) // 2
    full, part = nodes.ijkToRasArray(node), nodes.ijkToRasArray(slab)
    for ijk in [(0, 0, 0), (2, 255, 0), (1, 17, 200)]:
        np.testing.assert_allclose(part @ [*ijk, 1], full @ [ijk[0] + first, ijk[1], ijk[2], 1], atol=1e-6)
    import slicer

    np.testing.assert_array_equal(slicer.util.arrayFromVolume(slab), slicer.util.arrayFromVolume(node)[:, :, first:first + 3])
    assert selftest.sliceAxis(slab) == 2  # still super-resolved in-plane


class _Case(unittest.TestCase):
    def runTest(self):  # pragma: no cover - only the assertion methods are used
        pass


def test_MedSRTest_checks_pass_on_a_slab_of_a_volume_whose_thick_axis_is_not_K(medsr):
    """The network path of MedSRTest (3-slice slab, shipped MR network, x2) on the real sagittal MR."""
    from MedSRLib.models import default_model

    spec = default_model("MR", 2)
    if not spec.learned:
        pytest.skip("no trained MR network with x2 weights is shipped")
    output = medsr.selftest.superResolveAndVerify(_Case(), load_t1(), spec.name, slices=3, scale=2)
    assert output.GetImageData().GetDimensions() == (3, 512, 512)


def test_MedSRTest_checks_pass_on_the_whole_volume_with_bicubic(medsr):
    output = medsr.selftest.superResolveAndVerify(_Case(), load_t1(), "bicubic", scale=2)
    assert output.GetImageData().GetDimensions() == (35, 512, 512)


def test_MedSRTest_runs_its_own_entry_on_a_loaded_volume(medsr, monkeypatch):
    """``MedSRTest._superResolveSample`` with SampleData replaced by the real MR (the application's download)."""
    import sys
    import types

    sample_data = types.SimpleNamespace(downloadSample=lambda name: load_t1())
    monkeypatch.setitem(sys.modules, "SampleData", sample_data)
    test = medsr.MedSRTest()
    test.setUp()
    test._superResolveSample("T1", "bicubic", slices=3)
