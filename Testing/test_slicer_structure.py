"""Static checks of the extension: .ui files are valid XML and hold every widget the code uses, module files
parse and stay thin, CMake lists every Lib file, and the Lib files that must run outside Slicer import no Qt."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
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


def parameter_fields(module: str) -> dict[str, ast.AnnAssign]:
    """The annotated fields of ``<module>.py``'s ``@parameterNodeWrapper`` class, by name."""
    source = ast.parse((ROOT / module / f"{module}.py").read_text(encoding="utf-8"))
    wrapper = next(n for n in ast.walk(source) if isinstance(n, ast.ClassDef) and n.name.endswith("ParameterNode"))
    return {n.target.id: n for n in wrapper.body if isinstance(n, ast.AnnAssign)}


def used_ui_names(path: Path) -> set[str]:
    return set(re.findall(r"\bui\.(\w+)", path.read_text(encoding="utf-8")))


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
    fields = set(parameter_fields(module))
    assert bound <= fields, f"{module}.ui binds unknown parameters {sorted(bound - fields)}"
    assert bound, "no widget is bound to the parameter node"


@pytest.mark.parametrize("module", MODULES)
def test_module_file_is_thin_and_complete(module: str) -> None:
    path = ROOT / module / f"{module}.py"
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 200
    tree = ast.parse(text)
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {module, f"{module}Logic", f"{module}Widget", f"{module}Test"} <= classes
    assert (ROOT / module / "Resources" / "Icons" / f"{module}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("module", MODULES)
def test_cmake_lists_all_python_files(module: str) -> None:
    cmake = (ROOT / module / "CMakeLists.txt").read_text(encoding="utf-8")
    for py in sorted((ROOT / module).rglob("*.py")):
        rel = py.relative_to(ROOT / module).as_posix().replace(module, "${MODULE_NAME}", 1)
        assert rel in cmake, f"{py.relative_to(ROOT)} is not in {module}/CMakeLists.txt"
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert f"add_subdirectory({module})" in top and "EXTENSION_DESCRIPTION" in top


def test_plain_python_lib_files_import_no_qt() -> None:
    for path in list((ROOT / "Seg2Med" / "Seg2MedLib").glob("*.py")) + list((ROOT / "Seg2MedTraining" / "Seg2MedTrainingLib").glob("*.py")):
        if path.name == "widget.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"qt", "ctk", "slicer.ScriptedLoadableModule"}, f"{path.name} imports Qt"


# --------------------------------------------------------------------------- compile, thin modules, imports
ALL_PY = sorted([*(ROOT / "Seg2Med").rglob("*.py"), *(ROOT / "Seg2MedTraining").rglob("*.py"),
                 *(ROOT / "scripts").glob("*.py")])
LIB_FILES = sorted([*(ROOT / "Seg2Med" / "Seg2MedLib").glob("*.py"),
                    *(ROOT / "Seg2MedTraining" / "Seg2MedTrainingLib").glob("*.py")])
HEAVY = {"torch", "monai", "seg2med_core"}


@pytest.mark.parametrize("path", ALL_PY, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_extension_file_compiles(path: Path) -> None:
    compile(path.read_text(encoding="utf-8"), str(path), "exec", dont_inherit=True)


def _import_time_modules(tree: ast.Module) -> set[str]:
    """Top-level package names imported when the module is imported: module body and class bodies, but not
    function bodies (run later) nor ``if TYPE_CHECKING:`` blocks (never run)."""
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, ast.With)):
                visit(node.body)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return found


def test_import_time_scanner_sees_imports() -> None:
    tree = ast.parse("import torch\nclass A:\n    import monai\nif TYPE_CHECKING:\n    import seg2med_core\n"
                     "def f():\n    import seg2med_core.io\n")
    assert _import_time_modules(tree) == {"torch", "monai"}


@pytest.mark.parametrize("path", LIB_FILES + [ROOT / "Seg2Med" / "Seg2Med.py", ROOT / "Seg2MedTraining" / "Seg2MedTraining.py"],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_heavy_import_at_module_import_time(path: Path) -> None:
    heavy = _import_time_modules(ast.parse(path.read_text(encoding="utf-8"))) & HEAVY
    assert not heavy, f"{path.relative_to(ROOT)} imports {sorted(heavy)} at import time: move it into the function"


def test_importing_the_lib_packages_loads_neither_core_nor_torch() -> None:
    pytest.importorskip("slicer")
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import Seg2MedLib.logic, Seg2MedLib.nodes, Seg2MedLib.tables, Seg2MedLib.segment, Seg2MedLib.estimate\n"
        "import Seg2MedLib.process, Seg2MedLib.commands, Seg2MedTrainingLib.logic\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'seg2med_core')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "Seg2Med"), str(ROOT / "Seg2MedTraining")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"imported at module import time: {done.stdout}"


@pytest.mark.parametrize("module", MODULES)
def test_module_file_holds_only_imports_and_the_module_classes(module: str) -> None:
    tree = ast.parse((ROOT / module / f"{module}.py").read_text(encoding="utf-8"))
    allowed = {module, f"{module}Logic", f"{module}Widget", f"{module}Test", f"{module}ParameterNode"}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # docstring
            continue
        assert isinstance(node, ast.ClassDef) and node.name in allowed, (
            f"{module}.py line {node.lineno}: only the module classes belong here; put code in {module}Lib")


# ------------------------------------------------------------------------------------------- .ui layouts
@pytest.mark.parametrize("module", MODULES)
def test_ui_layout_items_hold_one_widget_and_rows_do_not_collide(module: str) -> None:
    tree = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    for layout in tree.iter("layout"):
        cells: set[tuple[int, int]] = set()
        for item in layout.findall("item"):
            children = [c for c in item if c.tag in ("widget", "layout", "spacer")]
            assert len(children) == 1, f"{module}.ui: an item of layout {layout.get('name')} holds {len(children)} children"
            assert not (item.text or "").strip(), f"{module}.ui: stray text {item.text.strip()[:60]!r} in {layout.get('name')}"
            if item.get("row") is None:
                continue
            row, col, span = int(item.get("row")), int(item.get("column", 0)), int(item.get("colspan", 1))
            for c in range(col, col + span):
                assert (row, c) not in cells, f"{module}.ui: two items at row {row}, column {c} of {layout.get('name')}"
                cells.add((row, c))


BINDABLE = {"bool": {"QCheckBox"}, "int": {"QSpinBox"}, "float": {"QDoubleSpinBox", "ctkSliderWidget"}}


@pytest.mark.parametrize("module", MODULES)
def test_bound_widgets_fit_the_parameter_types(module: str) -> None:
    types = {name: ast.unparse(field.annotation) for name, field in parameter_fields(module).items()}
    tree = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    for widget in tree.iter("widget"):
        bound = next((p.find("string").text for p in widget.findall("property") if p.get("name") == "SlicerParameterName"), None)
        if bound is None:
            continue
        kind = types[bound]
        if kind.startswith("Annotated[int, WithinRange("):  # a range for the spin box (parameterNodeWrapper)
            kind = "int"
        if kind.startswith("slicer.vtkMRML"):
            assert widget.get("class") == "qMRMLNodeComboBox", f"{bound}: node parameter on a {widget.get('class')}"
            node_types = [s.text for p in widget.findall("property") if p.get("name") == "nodeTypes"
                          for s in p.iter("string")]
            assert node_types == [kind.split(".")[1]], f"{widget.get('name')} lists {node_types} for {kind}"
        elif kind.startswith("Annotated[") and "Choice(" in kind:  # Slicer fills the combo box from the Choice
            assert widget.get("class") == "QComboBox", f"{bound}: Choice parameter on a {widget.get('class')}"
            assert not widget.findall("item"), f"{widget.get('name')}: items come from the Choice, not the .ui"
        else:
            assert widget.get("class") in BINDABLE[kind], f"{bound}: {kind} parameter on a {widget.get('class')}"


# ---------------------------------------------------------------------------------- Slicer API names
GUI_FILES = ["Seg2Med/Seg2Med.py", "Seg2Med/Seg2MedLib/widget.py", "Seg2Med/Seg2MedLib/segment.py",
             "Seg2MedTraining/Seg2MedTraining.py"]
#: Receivers whose capitalised attributes are classes or functions of other libraries, not MRML methods.
NON_MRML_RECEIVERS = {"qt", "sitk", "threading", "slicer", "util", "PyTorchUtils", "vtk", "np", "ctk", "segment",
                      "dependencies"}
#: App-only logic methods that slicer-core lacks, with where they are documented.
APP_ONLY = {"ShowChartInLayout"}  # vtkSlicerPlotsLogic (Modules/Loadable/Plots/Logic)


def test_slicer_util_and_mrml_names_exist_in_slicer_core() -> None:
    slicer = pytest.importorskip("slicer")
    import vtk

    text = "\n".join((ROOT / f).read_text(encoding="utf-8") for f in GUI_FILES)
    for name in set(re.findall(r"slicer\.util\.(\w+)", text)):
        assert hasattr(slicer.util, name), f"slicer.util.{name} does not exist"
    for cls in set(re.findall(r"slicer\.(vtk\w+)", text)):
        assert hasattr(slicer, cls), f"slicer.{cls} does not exist"
    for cls, const in set(re.findall(r"slicer\.(vtk\w+)\.([A-Z]\w+)\b(?!\()", text)):
        assert hasattr(getattr(slicer, cls), const), f"slicer.{cls}.{const} does not exist"
    classes = ["vtkMRMLScene", "vtkMRMLSliceCompositeNode", "vtkMRMLScalarVolumeDisplayNode", "vtkMRMLSegmentationNode",
               "vtkMRMLScalarVolumeNode", "vtkMRMLSelectionNode", "vtkMRMLTableNode", "vtkMRMLPlotChartNode",
               "vtkMRMLApplicationLogic", "vtkSlicerSegmentationsModuleLogic", "vtkSegmentation"]
    import SimpleITK as sitk

    objects = [getattr(slicer, c) for c in classes] + [vtk.vtkImageData, sitk.Image]  # self-tests use images too
    called = {m for receiver, m in re.findall(r"(\w+)\.([A-Z]\w*)\(", text) if receiver not in NON_MRML_RECEIVERS}
    unknown = sorted(m for m in called - APP_ONLY if not any(hasattr(o, m) for o in objects))
    assert not unknown, f"VTK/MRML methods not found on any MRML class: {unknown}"


def test_slicer_sampling_defaults_match_the_core() -> None:
    """The Slicer side may not import seg2med_core, so its copies of the defaults are checked here."""
    import slicer_fixtures  # noqa: F401  (puts Seg2Med/ on sys.path, so this test also runs on its own)
    from Seg2MedLib import commands

    from seg2med_core import defaults

    assert commands.DEFAULT_SAMPLER == defaults.DEFAULT_SAMPLER and commands.DEFAULT_STEPS == defaults.DEFAULT_STEPS
    assert commands.SAMPLERS == defaults.SAMPLER_KINDS
    assert commands.SynthesisOptions() == commands.SynthesisOptions(steps=defaults.DEFAULT_STEPS, sampler=defaults.DEFAULT_SAMPLER)
    fields = parameter_fields("Seg2Med")
    assert ast.literal_eval(fields["sampler"].value) == defaults.DEFAULT_SAMPLER
    assert ast.literal_eval(fields["steps"].value) == defaults.DEFAULT_STEPS
    choice = next(c for c in ast.walk(fields["sampler"].annotation) if isinstance(c, ast.Call))
    assert tuple(ast.literal_eval(choice.args[0])) == defaults.SAMPLER_KINDS
