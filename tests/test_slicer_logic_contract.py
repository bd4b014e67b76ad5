"""The MedSR logic contract (MedSR/Testing/Python/MedSRLogicContractTest.py) run against the slicer double.

The same test case runs inside real Slicer as ctest ``py_MedSRLogicContractTest``; here it runs on the
double (tests/slicer_double), so the double is held to the assertions Slicer itself must pass.
"""

import importlib.util

import slicer_double

slicer_double.activate()

_spec = importlib.util.spec_from_file_location(
    "MedSRLogicContractTest", slicer_double.MODULE_DIR / "Testing" / "Python" / "MedSRLogicContractTest.py"
)
_contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_contract)


class TestMedSRLogicContractOnTheDouble(_contract.MedSRLogicContractTest):
    def setUp(self):
        slicer_double.reset()
        super().setUp()
