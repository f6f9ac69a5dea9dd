"""Static checks of the extension: .ui files are valid XML and hold every widget the code uses, module files
parse and stay thin, CMake lists every Lib file, and the Lib files that must run outside Slicer import no Qt."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = {
    "Seg2Med": ["Seg2Med/Seg2Med.py", "Seg2Med/Seg2MedLib/widget.py"],
    "Seg2MedTraining": ["Seg2MedTraining/Seg2MedTraining.py"],
}


def ui_names(module: str) -> dict[str, str]:
    tree = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    return {w.get("name"): w.get("class") for w in tree.iter("widget")}


def used_ui_names(path: Path) -> set[str]:
    return set(re.findall(r"\bui\.(\w+)", path.read_text()))


@pytest.mark.parametrize("module", MODULES)
def test_every_ui_name_used_exists(module: str) -> None:
    names = ui_names(module)
    for source in MODULES[module]:
        missing = used_ui_names(ROOT / source) - set(names)
        assert not missing, f"{source} uses widgets missing from {module}.ui: {sorted(missing)}"


@pytest.mark.parametrize("module", MODULES)
def test_parameter_names_match_wrapper_fields(module: str) -> None:
    tree = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    bound = {p.find("string").text for p in tree.iter("property") if p.get("name") == "SlicerParameterName"}
    source = ast.parse((ROOT / module / f"{module}.py").read_text())
    wrapper = next(n for n in ast.walk(source) if isinstance(n, ast.ClassDef) and n.name.endswith("ParameterNode"))
    fields = {n.target.id for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    assert bound <= fields, f"{module}.ui binds unknown parameters {sorted(bound - fields)}"
    assert bound, "no widget is bound to the parameter node"


@pytest.mark.parametrize("module", MODULES)
def test_module_file_is_thin_and_complete(module: str) -> None:
    path = ROOT / module / f"{module}.py"
    text = path.read_text()
    assert len(text.splitlines()) < 200
    tree = ast.parse(text)
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {module, f"{module}Logic", f"{module}Widget", f"{module}Test"} <= classes
    assert (ROOT / module / "Resources" / "Icons" / f"{module}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("module", MODULES)
def test_cmake_lists_all_python_files(module: str) -> None:
    cmake = (ROOT / module / "CMakeLists.txt").read_text()
    for py in sorted((ROOT / module).rglob("*.py")):
        rel = py.relative_to(ROOT / module).as_posix().replace(module, "${MODULE_NAME}", 1)
        assert rel in cmake, f"{py.relative_to(ROOT)} is not in {module}/CMakeLists.txt"
    top = (ROOT / "CMakeLists.txt").read_text()
    assert f"add_subdirectory({module})" in top and "EXTENSION_DESCRIPTION" in top


def test_plain_python_lib_files_import_no_qt() -> None:
    for path in list((ROOT / "Seg2Med" / "Seg2MedLib").glob("*.py")) + list((ROOT / "Seg2MedTraining" / "Seg2MedTrainingLib").glob("*.py")):
        if path.name == "widget.py":
            continue
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"qt", "ctk", "slicer.ScriptedLoadableModule"}, f"{path.name} imports Qt"
