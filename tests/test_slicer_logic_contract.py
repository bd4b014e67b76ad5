"""The MedSR logic contract (MedSR/Testing/Python/MedSRLogicContractTest.py) run on slicer-core's real MRML.

The same test case runs inside real Slicer as ctest ``py_MedSRLogicContractTest``; here it runs on the
real MRML library (slicer-core) with the application shims of tests/slicer_double.
"""

import importlib.util

import slicer_double

slicer_double.activate()

_spec = importlib.util.spec_from_file_location(
    "MedSRLogicContractTest", slicer_double.MODULE_DIR / "Testing" / "Python" / "MedSRLogicContractTest.py"
)
_contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_contract)


class TestMedSRLogicContractOnRealMRML(_contract.MedSRLogicContractTest):
    def setUp(self):
        slicer_double.reset()
        super().setUp()
