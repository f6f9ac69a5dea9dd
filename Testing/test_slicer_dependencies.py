"""First-use installation of the module's Python dependencies (clicked through under the harness, with
Slicer's own util.py / packaging.py of 5.8.1 and 5.12.3), the child process's import check, the lean
TotalSegmentator fallback install and the packaging metadata (Python 3.9 for Slicer 5.8)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("slicer")
import slicer_fixtures  # noqa: E402,F401  (module folders on sys.path)
from slicerharness import fakes  # noqa: E402
from slicerharness.fixtures import harness, slicer_tag  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
ABSENT = "seg2med-harness-absent-package>=1.0"


def open_module(harness, monkeypatch, requirements):  # noqa: ANN001, ANN201
    requirements_file = harness.workdir / "requirements.txt"
    requirements_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    module = harness.load_module("Seg2Med")
    from Seg2MedLib import dependencies

    monkeypatch.setattr(dependencies, "REQUIREMENTS_FILE", requirements_file)
    return module.enter()


def test_declined_installation_gives_a_clear_message(harness, monkeypatch) -> None:
    widget = open_module(harness, monkeypatch, [ABSENT])
    harness.answer(harness.qt.QMessageBox.Cancel)
    widget.ui.phantomButton.click()
    assert widget.logic.getParameterNode().segmentation is None  # nothing ran
    assert harness.pip_calls() == []
    question, error = harness.dialogs[0], harness.dialogs[-1]
    assert "seg2med-harness-absent-package" in question["detailedText"]
    assert "installation was declined" in error["text"] and "slicer.util.pip_install(" in error["text"]
    assert "\n" not in error["text"]


def test_accepted_installation_installs_with_slicer_packages_pinned(harness, monkeypatch) -> None:
    widget = open_module(harness, monkeypatch, [ABSENT])
    harness.answer(harness.qt.QMessageBox.Ok)
    widget.ui.phantomButton.click()
    calls = harness.pip_calls()
    assert len(calls) == 1 and calls[0][0] == "install" and ABSENT in calls[0]
    constraints = Path(calls[0][calls[0].index("-c") + 1]).read_text(encoding="utf-8")
    import numpy

    assert f"numpy=={numpy.__version__}" in constraints and "SimpleITK==" in constraints
    assert widget.logic.getParameterNode().segmentation is not None  # then the phantom was made
    assert "Installed Python packages: " + ABSENT in widget.ui.logTextEdit.plainText
    if harness.version >= (5, 12):  # slicer.packaging.pip_ensure asked (its own dialog title)
        assert "Seg2Med - Install Python Packages" in harness.dialogs[0]["windowTitle"]


def test_torch_comes_from_the_pytorch_extension(harness, monkeypatch) -> None:
    widget = open_module(harness, monkeypatch, [])
    from Seg2MedLib import dependencies

    monkeypatch.setattr(dependencies, "torch_installed", lambda: False)
    monkeypatch.delitem(sys.modules, "PyTorchUtils", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "PyTorch" not in p])
    widget.ui.phantomButton.click()
    assert "install the 'PyTorch' extension from the Extensions Manager" in harness.dialogs[-1]["text"]
    utils = fakes.install_fake_pytorch_utils(torch_present=False, install_result=None)
    widget.ui.phantomButton.click()
    assert utils.state["install_calls"] == [{"askConfirmation": True, "torchVersionRequirement": ">=2.1"}]
    assert "PyTorch was not installed" in harness.dialogs[-1]["text"]
    sys.modules.pop("PyTorchUtils", None)


def test_requirements_cover_every_third_party_import_of_the_core() -> None:
    """A clean Slicer ships numpy, scipy, SimpleITK, requests; everything else the core imports is listed."""
    from Seg2MedLib import dependencies

    listed = {re.split(r"[<>=!~ ;]", r)[0].lower() for r in dependencies.read_requirements()}
    import_to_dist = {"skimage": "scikit-image"}
    shipped = {"numpy", "scipy", "simpleitk", "requests", "pydicom", "torch"}  # torch: PyTorch extension
    imported = set()
    for path in (ROOT / "seg2med_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "seg2med_core"}
    optional = {"totalsegmentator", "nnunetv2", "torchmetrics", "piq"}  # extras, imported on demand
    needed = {import_to_dist.get(m, m).lower() for m in third_party - optional}
    assert needed - shipped <= listed, f"not in requirements.txt: {sorted(needed - shipped - listed)}"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    core = {re.split(r"[<>=!~ ;\[]", d)[0].lower() for d in pyproject["project"]["dependencies"]}
    assert listed <= core, "requirements.txt lists packages that pyproject.toml does not"
    from seg2med_core.requirements import REQUIRED_IMPORTS

    assert {d.lower() for d in REQUIRED_IMPORTS.values()} == core


def test_child_process_reports_a_missing_package_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "sitecustomize.py"  # makes 'tqdm' unimportable in the child, like a clean Slicer
    blocker.write_text("import sys\nsys.modules['tqdm'] = None\n"
                       "import importlib.util as u\n_f = u.find_spec\n"
                       "u.find_spec = lambda n, *a: None if n == 'tqdm' else _f(n, *a)\n", encoding="utf-8")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "seg2med_core", "synthesize", "--help"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seg2med: error: Python package(s) not installed") and "tqdm" in lines[0]


def test_totalsegmentator_fallback_install_is_lean(monkeypatch) -> None:
    """Like the SlicerTotalSegmentator extension: --no-deps, then dependencies minus what Slicer provides."""
    from Seg2MedLib import segment

    calls: list[list[str]] = []
    requires = {"nnunetv2": ["torch>=2.1.2", "acvl-utils>=0.2", "SimpleITK>=2.2.1", "requests", "dicom2nifti",
                             "graphviz; extra == 'dev'"],
                "TotalSegmentator": ["torch>=2.1.2", "numpy", "SimpleITK", "nibabel>=2.3.0", "tqdm>=4.45.0",
                                     "xvfbwrapper", "nnunetv2>=2.3.1", "requests==2.27.1", "rt_utils", "fury",
                                     "dicom2nifti", "pyarrow"]}
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "requires", lambda name: requires[name])
    segment.install_totalsegmentator(calls.append, installed=lambda name: name in {"numpy", "pandas"}, log=lambda t: None)
    flat = [a for c in calls for a in c]
    assert calls[0] == ["dicom2nifti<=2.5.1"] and ["--no-deps", "nnunetv2>=2.3.1"] in calls
    assert ["--no-deps", "TotalSegmentator"] in calls
    for banned in ("torch", "SimpleITK", "requests", "rt_utils", "fury", "graphviz"):
        assert not any(a.split(">")[0].split("=")[0].split(";")[0] == banned for a in flat), banned
    assert ["acvl-utils>=0.2"] in calls and "nibabel>=2.3.0" in flat and "numpy" not in flat


def test_requires_python_allows_slicer_5_8() -> None:
    """Slicer 5.8 ships Python 3.9.10: the package must install there, and the code must parse as 3.9."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["requires-python"] == ">=3.9"
    for folder in ("seg2med_core", "Seg2Med", "Seg2MedTraining"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            ast.parse(text, filename=str(path), feature_version=(3, 9))
            assert not re.search(r"\bzip\([^)]*strict=|itertools\.pairwise|kw_only=True|slots=True", text), path
