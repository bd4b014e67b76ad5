"""Extensions Index readiness (issue 19, item 4): the index entry validates against Slicer's schema, the
licence is at the root, contributors are "Name (Organization)", the repository URL is one marked placeholder
used consistently, and the screenshot URL points at a file that exists.

The schema is Slicer's v1.0.1 catalog-entry schema (Testing/ExtensionsIndex/README.md says where it comes
from). ``jsonschema`` is not a dependency, so :func:`validate` implements the draft-07 keywords that
schema uses and refuses a schema with any other keyword; it is itself checked on entries that must fail.
"""

import json
import re

import pytest
from conftest import REPO_ROOT
from PIL import Image

SCHEMA_FILE = REPO_ROOT / "Testing" / "ExtensionsIndex" / "slicer-extension-catalog-entry-schema-v1.0.1.json"
ENTRY_FILE = REPO_ROOT / "MedSR.json"
#: keywords that only annotate (they never make an instance invalid)
ANNOTATIONS = {"$schema", "$id", "title", "description", "default"}
TYPES = {"object": dict, "string": str, "array": list, "boolean": bool, "integer": int}


def validate(instance, schema, path="$") -> list[str]:
    """Every violation of ``schema`` by ``instance`` (empty when valid)."""
    errors = []
    unknown = set(schema) - ANNOTATIONS - {"type", "enum", "required", "additionalProperties", "properties", "items",
                                           "additionalItems"}
    assert not unknown, f"validator does not implement {unknown}"
    if "type" in schema:
        expected = TYPES[schema["type"]]
        wrong_bool = isinstance(instance, bool) and expected is not bool
        if not isinstance(instance, expected) or wrong_bool:
            return [f"{path}: {instance!r} is not of type {schema['type']}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in {schema['enum']}")
    if isinstance(instance, dict):
        for name in schema.get("required", []):
            if name not in instance:
                errors.append(f"{path}: missing required property {name!r}")
        properties = schema.get("properties", {})
        for name, value in instance.items():
            if name in properties:
                errors += validate(value, properties[name], f"{path}.{name}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}: additional property {name!r} not allowed")
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for index, value in enumerate(instance):
            errors += validate(value, schema["items"], f"{path}[{index}]")
    return errors


def load_schema():
    return json.loads(SCHEMA_FILE.read_text())


def cmake_value(name: str) -> str:
    text = (REPO_ROOT / "CMakeLists.txt").read_text()
    match = re.search(rf'set\({name} "([^"]*)"\)', text)
    assert match, f"{name} not set in CMakeLists.txt"
    repository = re.search(r'set\(MEDSR_REPOSITORY "([^"]*)"\)', text).group(1)
    return match.group(1).replace("${MEDSR_REPOSITORY}", repository)


def test_index_entry_validates_against_slicers_schema():
    entry = json.loads(ENTRY_FILE.read_text())
    schema = load_schema()
    assert entry["$schema"] == schema["$id"]
    assert validate(entry, schema) == []
    # the build dependency matches CMake's EXTENSION_DEPENDS, the category CMake's EXTENSION_CATEGORY
    text = (REPO_ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"set\(EXTENSION_DEPENDS ([^)]*)\)", text).group(1).split() == entry["build_dependencies"] == ["PyTorch"]
    assert cmake_value("EXTENSION_CATEGORY") == entry["category"]


@pytest.mark.parametrize("change, problem", [
    ({"category": None}, "missing required property 'category'"),
    ({"tier": 2}, "not in [1, 3, 5]"),
    ({"tier": True}, "is not of type integer"),
    ({"build_dependencies": ["PyTorch", 3]}, "[1]: 3 is not of type string"),
    ({"scmurl": "https://example.org"}, "additional property 'scmurl' not allowed"),
    ({"scm_type": "svn"}, "not in ['git', 'local']"),
])
def test_the_validator_rejects_invalid_entries(change, problem):
    entry = json.loads(ENTRY_FILE.read_text())
    for name, value in change.items():
        if value is None:
            del entry[name]
        else:
            entry[name] = value
    errors = validate(entry, load_schema())
    assert any(problem in error for error in errors), errors


def test_repository_url_is_one_marked_placeholder_used_everywhere():
    entry = json.loads(ENTRY_FILE.read_text())
    repository = cmake_value("MEDSR_REPOSITORY")
    assert entry["scm_url"] == repository
    assert "REPLACE-WITH-OWNER" in repository  # marked: replace before submission (docs/slicer.md)
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert cmake_value(name).startswith(repository + "/")


def test_license_at_the_root_matches_the_package_licence():
    text = (REPO_ROOT / "LICENSE.txt").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert '\nlicense = "Apache-2.0"' in (REPO_ROOT / "pyproject.toml").read_text()
    assert 'license-files = ["LICENSE.txt"]' in (REPO_ROOT / "pyproject.toml").read_text()


def test_contributors_are_name_and_organization_in_cmake_and_module():
    import ast

    contributors = cmake_value("EXTENSION_CONTRIBUTORS").split(", ")
    assert contributors and all(re.fullmatch(r"[^(),]+ \([^()]+\)", c) for c in contributors), contributors
    tree = ast.parse((REPO_ROOT / "MedSR" / "MedSR.py").read_text())
    assigned = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Attribute) and t.attr == "contributors" for t in node.targets)]
    assert [ast.literal_eval(value) for value in assigned] == [contributors]


def test_screenshot_and_icon_urls_point_at_files_in_the_repository():
    repository = cmake_value("MEDSR_REPOSITORY")
    for name in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in cmake_value(name).split():
            relative = url.removeprefix(repository + "/raw/main/")
            assert relative != url, url
            with Image.open(REPO_ROOT / relative) as image:
                assert image.format == "PNG" and min(image.size) >= 128


def test_figure_script_draws_the_modules_outputs_on_real_MRML(tmp_path):
    """Testing/make_slicer_figure.py end to end: logic on real MRML nodes, MedSRLib.panel drawing, scores."""
    import importlib.util

    from conftest import shared_path

    shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    spec = importlib.util.spec_from_file_location("make_slicer_figure", REPO_ROOT / "Testing" / "make_slicer_figure.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = script.main(tmp_path / "figure.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 4 * 256  # LR, bicubic, mdrn, HR columns
    with Image.open(REPO_ROOT / "Resources" / "Screenshots" / "MedSR_reformats.png") as shipped:
        assert shipped.size == Image.open(out).size
