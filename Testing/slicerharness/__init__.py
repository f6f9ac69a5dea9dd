"""Run the real Slicer module files (``Seg2Med.py``, ``Seg2MedTraining.py`` and their ``.ui``) without Slicer.

What is real: MRML and the module logics (PyPI ``slicer-core``), Slicer's own unmodified Python framework
files (``ScriptedLoadableModule``, ``parameterNodeWrapper``, ``util``, ``i18n``, ``packaging``) loaded from
``../shared/slicer-python/<tag>/slicer``, Qt (PyQt5, offscreen), the module code and its child processes.
What is a stand-in: PythonQt's ``qt`` conventions (:mod:`.pythonqt`), the CTK and qMRML widgets
(:mod:`.ctk`, :mod:`.mrmlwidgets`), ``slicer.app`` with a layout manager on ``vtkMRMLLayoutLogic`` and
``vtkMRMLSliceLogic``, ``slicer.modules``, and a ``PythonSlicer`` launcher that, like Slicer's, runs the
interpreter as a *child* process and forwards no signals (``-m pip`` calls are recorded, not run).

Message boxes never block: ``ctk.DIALOGS`` records them and ``ctk.ANSWERS`` holds the buttons to press.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SEG2MED_SLICER_PYTHON", str(ROOT.parent / "shared" / "slicer-python")))
TAGS = ("v5.8.1", "v5.12.3")
FRAMEWORK = ("util", "i18n", "ScriptedLoadableModule", "parameterNodeWrapper", "packaging")


def missing_reason(tag: str) -> str | None:
    """Why the harness cannot run for ``tag`` (``None`` when it can)."""
    if not (SHARED / tag / "slicer" / "ScriptedLoadableModule.py").is_file():
        return f"Slicer's framework files not found at {SHARED / tag / 'slicer'} (set SEG2MED_SLICER_PYTHON)"
    if importlib.util.find_spec("PyQt5") is None:
        return "PyQt5 is not installed (pip install pyqt5; it is in the 'test' extra)"
    if importlib.util.find_spec("slicer") is None:
        return "slicer-core is not installed (it is in the 'test' extra)"
    return None


LAUNCHER = '''#!{python}
"""PythonSlicer stand-in (seg2med test harness). Slicer's launcher starts python-real as a child process and
forwards no signals; this one does the same. "-m pip" is recorded in $SEG2MED_HARNESS_PIP_LOG, not run."""
import json, os, subprocess, sys
args = sys.argv[1:]
if args[:2] == ["-m", "pip"]:
    with open(os.environ["SEG2MED_HARNESS_PIP_LOG"], "a", encoding="utf-8") as f:
        f.write(json.dumps(args[2:]) + "\\n")
    print("harness pip:", " ".join(args[2:]), flush=True)
    site = os.environ.get("SEG2MED_HARNESS_SITE")
    if site and args[2:3] == ["install"] and os.environ.get("SEG2MED_HARNESS_PIP_RC", "0") == "0":
        import re
        skip = False
        for arg in args[3:]:
            if skip or arg.startswith("-"):
                skip = arg in ("-c", "--constraint", "-r")
                continue
            m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\\s*(?:[=>~]=\\s*([0-9][0-9.]*))?", arg)
            name, version = m.group(1), m.group(2) or "99.0"
            info = os.path.join(site, f"{name.replace('-', '_')}-{version}.dist-info")
            os.makedirs(info, exist_ok=True)
            with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as f:
                f.write(f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n")
    sys.exit(int(os.environ.get("SEG2MED_HARNESS_PIP_RC", "0")))
child = subprocess.Popen([sys.executable, *args])
pids = os.environ.get("SEG2MED_HARNESS_CHILD_PIDS")
if pids:
    with open(pids, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {child.pid}\\n")
sys.exit(child.wait())
'''


_RETIRED: list[Any] = []


class ModuleParent:
    """What a scripted module's ``__init__(parent)`` receives (qSlicerScriptedLoadableModule's properties)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.title = ""
        self.categories: list[str] = []
        self.dependencies: list[str] = []
        self.contributors: list[str] = []
        self.helpText = ""
        self.acknowledgementText = ""
        self.icon = None
        self.hidden = False


class Module:
    """``slicer.modules.<name>``: path, widgetRepresentation(), and the Python module and instance."""

    def __init__(self, harness: SlicerHarness, name: str, python_module: Any, instance: Any, path: str) -> None:
        self.harness, self.name, self.python, self.instance, self.path = harness, name, python_module, instance, path
        self.title = instance.parent.title
        self._panel = None

    def widgetRepresentation(self) -> Any:  # noqa: N802
        if self._panel is None:
            from . import mrmlwidgets, pythonqt

            class Panel(mrmlwidgets.qMRMLWidget):
                def __init__(self) -> None:
                    super().__init__()
                    self.isEntered = False
                    self._self = None

                def self(self) -> Any:
                    return self._self

            panel = Panel()
            panel.setLayout(pythonqt.QVBoxLayout())
            panel.setMRMLScene(self.harness.scene)
            widget = getattr(self.python, f"{self.name}Widget")(panel)
            panel._self = widget
            widget.setup()
            setattr(self.harness.slicer.modules, f"{self.name}Widget", widget)
            self._panel = panel
        return self._panel

    def enter(self) -> Any:
        panel = self.widgetRepresentation()
        panel.isEntered = True
        if hasattr(panel.self(), "enter"):  # Slicer calls enter() only when the widget defines it
            panel.self().enter()
        return panel.self()

    def exit(self) -> None:
        if self._panel is not None:
            if hasattr(self._panel.self(), "exit"):
                self._panel.self().exit()
            self._panel.isEntered = False


class Modules:
    """``slicer.modules``: attributes per loaded module."""


class SlicerHarness:
    """Install the stand-ins and Slicer's framework files of ``tag`` into this interpreter (undo with stop())."""

    def __init__(self, tag: str, workdir: Path) -> None:
        self.tag = tag
        self.workdir = Path(workdir)
        self.version = tuple(int(x) for x in tag.lstrip("v").split("."))
        self._saved_modules: dict[str, Any] = {}
        self._saved_env: dict[str, str | None] = {}
        self._saved_path = list(sys.path)
        self.loaded: dict[str, Module] = {}

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> SlicerHarness:
        self._setenv("QT_QPA_PLATFORM", "offscreen")
        runtime = self.workdir / "xdg-runtime"
        runtime.mkdir(parents=True, exist_ok=True)
        runtime.chmod(0o700)
        self._setenv("XDG_RUNTIME_DIR", str(runtime))
        from PyQt5 import QtCore, QtWidgets

        self.qapp = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["SlicerHarness"])
        QtCore.QCoreApplication.setOrganizationName("seg2med-harness")
        QtCore.QCoreApplication.setApplicationName(f"Slicer-{self.tag}")
        QtCore.QSettings.setDefaultFormat(QtCore.QSettings.IniFormat)
        QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(self.workdir / "settings"))
        self._previous_excepthook = sys.excepthook
        sys.excepthook = _record_exception

        from . import ctk, mrmlwidgets, pythonqt

        self.qt, self.ctk = pythonqt, ctk
        pythonqt.install()
        self._swap_module("qt", pythonqt)
        self._swap_module("ctk", ctk)
        import slicer

        self.slicer = slicer
        for name in list(sys.modules):
            if name == "slicer.util" or any(name == f"slicer.{f}" or name.startswith(f"slicer.{f}.") for f in FRAMEWORK):
                self._saved_modules.setdefault(name, sys.modules.pop(name))
        for name in list(sys.modules):
            if name.split(".")[0] in self._module_packages():
                self._saved_modules.setdefault(name, sys.modules.pop(name))
        self._saved_slicer_attrs = {k: getattr(slicer, k) for k in
                                    (*FRAMEWORK, "app", "mrmlScene", "modules", "selfTests") if hasattr(slicer, k)}
        self._saved_slicer_path = list(slicer.__path__)
        slicer.__path__.insert(0, str(SHARED / self.tag / "slicer"))
        import vtk

        self.scene = slicer.vtkMRMLScene()
        slicer.mrmlScene = self.scene
        slicer.modules = Modules()
        for name in ("qMRMLWidget", "qMRMLNodeComboBox", "qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget",
                     "qMRMLCheckableNodeComboBox", "qMRMLSubjectHierarchyTreeView"):
            setattr(slicer, name, getattr(mrmlwidgets, name))
        from .application import SlicerApplication

        slicer.app = SlicerApplication(self)
        self.app = slicer.app
        for framework in FRAMEWORK:
            if (SHARED / self.tag / "slicer" / f"{framework}.py").is_file() or \
                    (SHARED / self.tag / "slicer" / framework).is_dir():
                setattr(slicer, framework, importlib.import_module(f"slicer.{framework}"))
            elif hasattr(slicer, framework):
                delattr(slicer, framework)
        self._register_core_modules()
        vtk.vtkObject.GlobalWarningDisplayOff()
        # the PythonSlicer launcher stand-in, first on PATH; pip calls and launcher→child pids are recorded
        bin_dir = self.workdir / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        launcher = bin_dir / "PythonSlicer"
        launcher.write_text(LAUNCHER.replace("{python}", sys.executable, 1), encoding="utf-8")
        launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)
        self.pip_log = self.workdir / "pip.log"
        self.child_pids = self.workdir / "launcher-children.txt"
        self._setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        self._setenv("SEG2MED_HARNESS_PIP_LOG", str(self.pip_log))
        self._setenv("SEG2MED_HARNESS_CHILD_PIDS", str(self.child_pids))
        self.site = self.workdir / "site-packages"  # where the recorded pip installs leave their dist-info
        self.site.mkdir(exist_ok=True)
        self._setenv("SEG2MED_HARNESS_SITE", str(self.site))
        sys.path.append(str(self.site))
        self._setenv("SEG2MED_REGISTRY", str(self.workdir / "registry.json"))
        self._setenv("SEG2MED_HOME", str(self.workdir / "seg2med-home"))
        ctk.DIALOGS.clear()
        ctk.ANSWERS.clear()
        pythonqt.SLOT_ERRORS.clear()
        return self

    def stop(self) -> None:
        from . import mrmlwidgets

        for module in self.loaded.values():
            if module._panel is None:
                continue
            widget = module._panel.self()
            if hasattr(widget, "cleanup"):  # what Slicer does when the module is unloaded
                try:
                    widget.cleanup()
                except Exception as exc:  # noqa: BLE001  (teardown must go on; recorded for the test)
                    self.qt.SLOT_ERRORS.append(f"cleanup of {module.name}: {exc!r}")
            with self.qt.pyqt_semantics():
                combos = module._panel.findChildren(mrmlwidgets.qMRMLNodeComboBox)
            for combo in combos:
                combo.setMRMLScene(None)
        self.scene.Clear(0)
        for module in self.loaded.values():
            if module._panel is not None:
                module._panel.deleteLater()
        self.qapp.processEvents()
        self.loaded.clear()
        self.app.shutdown()
        slicer = self.slicer
        for name in list(sys.modules):
            if name in ("qt", "ctk") or name == "slicer.util" or any(
                    name == f"slicer.{f}" or name.startswith(f"slicer.{f}.") for f in FRAMEWORK) or \
                    name.split(".")[0] in self._module_packages():
                sys.modules.pop(name, None)
        sys.modules.update(self._saved_modules)
        for key in ("app", "mrmlScene", "modules", "selfTests", *FRAMEWORK):
            if hasattr(slicer, key):
                delattr(slicer, key)
        for key, value in self._saved_slicer_attrs.items():
            setattr(slicer, key, value)
        slicer.__path__[:] = self._saved_slicer_path
        sys.path[:] = self._saved_path
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.excepthook = self._previous_excepthook
        self.qt.uninstall()
        _RETIRED.append((self.scene, self.app))  # MRML logics must not be destroyed before the scene

    # -- helpers --------------------------------------------------------------------------------------------
    def _setenv(self, key: str, value: str) -> None:
        self._saved_env.setdefault(key, os.environ.get(key))
        os.environ[key] = value

    def _swap_module(self, name: str, module: Any) -> None:
        self._saved_modules.setdefault(name, sys.modules.get(name))
        if self._saved_modules[name] is None:
            del self._saved_modules[name]
        sys.modules[name] = module

    @staticmethod
    def _module_packages() -> set[str]:
        return {"Seg2Med", "Seg2MedLib", "Seg2MedTraining", "Seg2MedTrainingLib", "TotalSegmentator", "PyTorchUtils"}

    def _register_core_modules(self) -> None:
        """The built-in module logics the Seg2Med modules call (real logics from slicer-core)."""
        import vtk

        slicer = self.slicer

        class LogicModule:
            def __init__(self, logic: Any) -> None:
                self._logic = logic

            def logic(self) -> Any:
                return self._logic

        segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
        segmentations.SetMRMLScene(self.scene)
        plots = slicer.vtkSlicerPlotsLogic()
        plots.SetMRMLScene(self.scene)
        plots.SetMRMLApplicationLogic(self.app.applicationLogic())
        tables = slicer.vtkSlicerTablesLogic()
        tables.SetMRMLScene(self.scene)
        subject_hierarchy = slicer.vtkSlicerSubjectHierarchyModuleLogic()  # adds an item for every data node
        subject_hierarchy.SetMRMLScene(self.scene)
        slicer.modules.subjecthierarchy = LogicModule(subject_hierarchy)

        def add_item(scene: Any, event: str, node: Any) -> None:
            # what qSlicerSubjectHierarchyPluginLogic does in Slicer: every new data node gets an item
            if isinstance(node, (slicer.vtkMRMLSubjectHierarchyNode,)) or node.GetHideFromEditors() or \
                    not (node.IsA("vtkMRMLDisplayableNode") or node.IsA("vtkMRMLTableNode")):
                return
            sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
            if sh is not None and not sh.GetItemByDataNode(node):
                sh.CreateItem(sh.GetSceneItemID(), node)

        add_item.CallDataType = vtk.VTK_OBJECT
        self.scene.AddObserver(self.scene.NodeAddedEvent, add_item)
        slicer.modules.segmentations = LogicModule(segmentations)
        slicer.modules.plots = LogicModule(plots)
        slicer.modules.tables = LogicModule(tables)

    # -- modules ------------------------------------------------------------------------------------------
    def load_module(self, name: str, folder: Path | None = None) -> Module:
        """Load ``<folder>/<name>.py`` the way Slicer loads a scripted module (folder on sys.path)."""
        folder = Path(folder) if folder else ROOT / name
        path = folder / f"{name}.py"
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        spec = importlib.util.spec_from_file_location(name, path)
        python_module = importlib.util.module_from_spec(spec)
        sys.modules[name] = python_module
        spec.loader.exec_module(python_module)
        parent = ModuleParent(str(path))
        instance = getattr(python_module, name)(parent)
        module = Module(self, name, python_module, instance, str(path))
        setattr(self.slicer.modules, name.lower(), module)
        setattr(self.slicer.modules, f"{name}Instance", instance)
        self.loaded[name] = module
        return module

    # -- what the user sees ---------------------------------------------------------------------------------
    @property
    def dialogs(self) -> list[dict[str, Any]]:
        return self.ctk.DIALOGS

    def answer(self, *buttons: Any) -> None:
        """Buttons to press in the next message boxes, in order (``qt.QMessageBox.Cancel`` etc.)."""
        self.ctk.ANSWERS.extend(int(b) for b in buttons)

    def pip_calls(self) -> list[list[str]]:
        if not self.pip_log.is_file():
            return []
        return [json.loads(line) for line in self.pip_log.read_text(encoding="utf-8").splitlines() if line.strip()]

    def launcher_children(self) -> list[tuple[int, int]]:
        if not self.child_pids.is_file():
            return []
        return [tuple(int(x) for x in line.split()) for line in self.child_pids.read_text().splitlines() if line.strip()]

    def process_events_until(self, condition: Any, timeout_s: float = 60.0, interval_s: float = 0.02) -> bool:
        """Spin the Qt event loop (timers fire, as in Slicer) until ``condition()`` or the timeout."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.qapp.processEvents()
            if condition():
                return True
            time.sleep(interval_s)
        self.qapp.processEvents()
        return bool(condition())

    def slot_errors(self) -> list[str]:
        from . import pythonqt

        return list(pythonqt.SLOT_ERRORS)


def _record_exception(exc_type: Any, exc: Any, tb: Any) -> None:
    """PyQt5 aborts on an exception escaping a slot unless sys.excepthook is replaced; PythonQt prints it."""
    import traceback

    from . import pythonqt

    text = "".join(traceback.format_exception(exc_type, exc, tb))
    pythonqt.SLOT_ERRORS.append(text)
    print(text, file=sys.stderr)
