"""Static checks of the Slicer extension that CI can do without Slicer.

* CMake: every listed file exists (``slicerMacroBuildScriptedModule`` stops with FATAL_ERROR otherwise)
  and every module/helper/test ``.py`` is listed (unlisted files are not packaged);
  the root file follows the extension template and installs MedSRLib beside the module
  (slicer-conventions.md 1.1-1.5);
* the ``.ui``: every widget the module uses exists; every ``SlicerParameterName`` is a parameter-node
  field of a type its widget can bind (section 2.3); MRML combo boxes receive the scene;
* the module imports without torch (it must load before the PyTorch extension installs it).
"""

import ast
import re
import subprocess
import sys
import typing
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from PIL import Image
from slicer_double import DOUBLE_DIR, medsr  # noqa: F401  (fixture)

MODULE_DIR = REPO_ROOT / "MedSR"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MedSR.ui"


def cmake_text(path: Path) -> str:
    """CMake source without comments, whitespace collapsed."""
    lines = [line.split("#", 1)[0] if not line.lstrip().startswith("## NEXT_MODULE") else line for line in path.read_text().splitlines()]
    return " ".join(" ".join(lines).split())


def cmake_set(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable} ([^)]*)\)", text)
    assert match, f"set({variable} ...) not found"
    return match.group(1).split()


def ui_widgets() -> dict[str, ElementTree.Element]:
    return {w.get("name"): w for w in ElementTree.parse(UI_FILE).iter("widget")}


def ui_parameter_bindings() -> dict[str, ElementTree.Element]:
    """SlicerParameterName value -> widget element."""
    bindings = {}
    for widget in ui_widgets().values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", "SlicerParameterName must be a dynamic property (stdset=0)"
                bindings[prop.findtext("string")] = widget
    return bindings


def widget_property(widget: ElementTree.Element, name: str):
    prop = next((p for p in widget.findall("property") if p.get("name") == name), None)
    return None if prop is None else next(iter(prop)).text


# -- CMake -------------------------------------------------------------------------------------------


def test_module_cmake_lists_exactly_the_module_files_and_they_exist():
    text = cmake_text(MODULE_DIR / "CMakeLists.txt").replace("${MODULE_NAME}", "MedSR")
    scripts = cmake_set(text, "MODULE_PYTHON_SCRIPTS")
    resources = cmake_set(text, "MODULE_PYTHON_RESOURCES")
    for listed in scripts + resources:
        assert (MODULE_DIR / listed).is_file(), f"MedSR/CMakeLists.txt lists missing file {listed}"
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for p in [*MODULE_DIR.glob("*.py"), *MODULE_DIR.glob("MedSRSlicerLib/*.py")]}
    assert set(scripts) == on_disk
    resource_files = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert set(resources) == resource_files
    assert "slicerMacroBuildScriptedModule( NAME MedSR SCRIPTS ${MODULE_PYTHON_SCRIPTS} RESOURCES ${MODULE_PYTHON_RESOURCES} WITH_GENERIC_TESTS )" in text
    assert "slicer_add_python_unittest(SCRIPT MedSR.py)" in text and "add_subdirectory(Testing)" in text


def test_testing_cmake_registers_every_test_script():
    assert "add_subdirectory(Python)" in cmake_text(MODULE_DIR / "Testing" / "CMakeLists.txt")
    python_dir = MODULE_DIR / "Testing" / "Python"
    registered = re.findall(r"slicer_add_python_unittest\(SCRIPT (\S+)\)", cmake_text(python_dir / "CMakeLists.txt"))
    assert registered and sorted(registered) == sorted(p.name for p in python_dir.glob("*.py"))


def test_root_cmake_is_an_extension_that_installs_MedSRLib_beside_the_module():
    text = cmake_text(REPO_ROOT / "CMakeLists.txt")
    order = ["cmake_minimum_required(", "project(MedSR)", "set(EXTENSION_DEPENDS PyTorch)", "find_package(Slicer REQUIRED)",
             "include(${Slicer_USE_FILE})", "ctkMacroCompilePythonScript(", "add_subdirectory(MedSR)", "## NEXT_MODULE",
             "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"]
    positions = [text.find(token) for token in order]
    assert -1 not in positions and positions == sorted(positions), dict(zip(order, positions))
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL"):
        assert cmake_set(text, variable)
    call = text[text.find("ctkMacroCompilePythonScript("):]
    call = call[: call.find(")") + 1]
    for argument in ("TARGET_NAME MedSRLib", "SCRIPTS \"${MedSRLib_PYTHON_SCRIPTS}\"", "SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR}",
                     "DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}",
                     "INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}", "NO_INSTALL_SUBDIR"):
        assert argument in call
    # the glob (relative to the repository root) reaches every MedSRLib module, sub-packages included
    glob = re.search(r"file\(GLOB_RECURSE MedSRLib_PYTHON_SCRIPTS RELATIVE \$\{CMAKE_CURRENT_SOURCE_DIR\} CONFIGURE_DEPENDS (\S+)\)", text)
    assert glob and glob.group(1) == "MedSRLib/*.py"
    assert {"MedSRLib/__init__.py", "MedSRLib/pipeline.py", "MedSRLib/geometry.py"} <= {
        p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("MedSRLib/**/*.py")}


def test_extension_and_module_icons_are_png():
    with Image.open(REPO_ROOT / "Resources" / "MedSR.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
    with Image.open(MODULE_DIR / "Resources" / "Icons" / "MedSR.png") as icon:
        assert icon.format == "PNG"


# -- .ui ------------------------------------------------------------------------------------------------


def test_every_widget_the_module_uses_exists_in_the_ui():
    tree = ast.parse((MODULE_DIR / "MedSR.py").read_text())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}
    assert {"applyButton", "progressBar", "modelComboBox", "modelCardLabel", "estimateLabel", "statusLabel"} <= used
    assert used - set(ui_widgets()) == set()


def test_ui_parameter_bindings_match_the_parameter_node_fields(medsr):
    hints = typing.get_type_hints(medsr.MedSRParameterNode, include_extras=True)
    bindings = ui_parameter_bindings()
    # model and throughModel are filled from the cached catalog at run time, plane with its labels (PLANE_LABELS)
    assert set(bindings) == set(hints) - {"model", "plane", "throughModel"}
    assert widget_property(ui_widgets()["modelComboBox"], "SlicerParameterName") is None
    assert widget_property(ui_widgets()["throughModelComboBox"], "SlicerParameterName") is None
    assert widget_property(ui_widgets()["planeComboBox"], "SlicerParameterName") is None
    for name, widget in bindings.items():
        base, *annotations = typing.get_args(hints[name]) or (hints[name],)
        widget_class = widget.get("class")
        if widget_class == "qMRMLNodeComboBox":
            assert issubclass(base, medsr.slicer.vtkMRMLNode)
        elif widget_class == "QComboBox":  # the connector needs a Choice (it refills the items from it)
            assert any(type(a).__name__ == "Choice" for a in annotations), name
        elif widget_class == "QCheckBox":
            assert base is bool
        elif widget_class in ("QSpinBox", "QDoubleSpinBox"):
            (bounds,) = [a for a in annotations if type(a).__name__ == "WithinRange"]
            number = int if widget_class == "QSpinBox" else float
            assert base is number
            assert (bounds.minimum, bounds.maximum) == (number(widget_property(widget, "minimum")), number(widget_property(widget, "maximum")))
        elif widget_class == "QLineEdit":
            assert base is str
        else:
            pytest.fail(f"{name} is bound to a {widget_class}, which this test does not know")


def test_ui_offers_every_engine_option_as_EngineOptions_and_medsr_describe_it(medsr):
    """One widget per EngineOptions field that `medsr` offers, bound to the parameter named as the field,
    labelled and explained as engine_settings derives them from the field's metadata (a new field or a
    changed help text fails here until the .ui follows)."""
    from MedSRSlicerLib import engine_settings

    from MedSRLib.engine import option_fields

    widgets, bindings = ui_widgets(), ui_parameter_bindings()
    assert [s.field for s in engine_settings.SETTINGS] == list(option_fields(offered_only=True))
    for setting in engine_settings.SETTINGS:
        widget = bindings[setting.field]
        assert widget.get("name") == setting.widgetName
        assert widget.get("class") == {"bool": "QCheckBox", "choice": "QComboBox", "text": "QLineEdit"}[setting.kind]
        assert widget_property(widget, "toolTip") == f"{setting.help} (medsr {setting.flag})"
        assert widget_property(widgets[setting.labelName], "text") == setting.label
    for gone in ("selfEnsemble", "memoryBudgetMB"):  # the hand-listed copies of engine options are gone
        assert gone not in bindings


def test_apply_button_and_mrml_combo_boxes(medsr):
    widgets = ui_widgets()
    assert widget_property(widgets["applyButton"], "text") == medsr.APPLY_TEXT == "Super-resolve volume"
    receivers = {c.findtext("receiver") for c in ElementTree.parse(UI_FILE).iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)" and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert receivers == {name for name, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"}
    for name in receivers:  # labelmaps and vectors are subclasses of scalar volumes: keep them out of the lists
        assert widget_property(widgets[name], "showChildNodeTypes") == "false"


# -- import without torch -------------------------------------------------------------------------


def test_module_imports_and_describes_itself_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        f"sys.path[:0] = [{str(DOUBLE_DIR.parent)!r}]\n"
        "from types import SimpleNamespace\n"
        "import slicer_double\n"
        "MedSR = slicer_double.activate()\n"
        "MedSR.MedSR(SimpleNamespace())\n"
        "print(MedSR.MedSRLogic().getParameterNode().model, sorted(m for m in sys.modules if m.startswith('MedSRLib')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("bicubic ")
    assert "MedSRLib.models" not in result.stdout and "MedSRLib.pipeline" not in result.stdout
    # the engine settings derive from the options type, which is torch-free; nothing else of the engine loads
    assert [m for m in eval(result.stdout.split(" ", 1)[1]) if m.startswith("MedSRLib.engine")] == [
        "MedSRLib.engine", "MedSRLib.engine.options"]


# -- MedSR.py stays thin (issue 14 item 5) -------------------------------------------------------------


def test_module_file_holds_only_module_widget_and_test_entry():
    """Logic, parameters and helpers live in MedSRSlicerLib; MedSR.py defines the three Slicer classes only."""
    tree = ast.parse((MODULE_DIR / "MedSR.py").read_text())
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    functions = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert classes == ["MedSR", "MedSRWidget", "MedSRTest"] and functions == []
    imported = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
                and node.module.startswith("MedSRSlicerLib") for alias in node.names}
    assert {"MedSRLogic", "MedSRParameterNode"} <= imported  # re-exported where Slicer looks for them
