"""Fake extensions for the harness: SlicerTotalSegmentator's logic (with the *real* ``process`` signature of a
given branch, read from its source), the PyTorch extension's ``PyTorchUtils`` and Slicer's Segment Editor
module (its ``qMRMLSegmentEditorWidget`` setters, recorded).

The fake TotalSegmentator runs like the real one: ``process(...)`` starts a console process with
``slicer.util.launchConsoleProcess``, forwards every output line to ``logCallback`` and raises
``CalledProcessError`` when the process fails; then it fills the output segmentation with segments named
by TotalSegmentator class names, from the label map the test provides (``truth``).
"""

from __future__ import annotations

import ast
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT.parent / "shared" / "reference" / "slicer-extensions"
BRANCHES = {"5.8": "SlicerTotalSegmentator-5.8", "main": "SlicerTotalSegmentator-main"}


def real_process_arguments(branch: str) -> str | None:
    """The parameter list (without ``self``) of ``TotalSegmentatorLogic.process`` on that branch, or None."""
    path = REFERENCE / BRANCHES[branch] / "TotalSegmentator.py"
    if not path.is_file():
        return None
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef) and cls.name == "TotalSegmentatorLogic":
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "process":
                    args = fn.args
                    args.args = args.args[1:]  # drop self
                    if args.defaults and len(args.defaults) > len(args.args):
                        args.defaults = args.defaults[-len(args.args):]
                    return ast.unparse(args)
    return None


CHILD = textwrap.dedent("""
    import sys, time
    task, seconds, fail = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    print(f"TotalSegmentator (fake) task {task}", flush=True)
    for i in range(10):
        print(f"Predicting part {i + 1} of 10 ...", flush=True)
        time.sleep(seconds / 10)
    if fail:
        print(fail, flush=True)
        sys.exit(1)
    print("Saved in /tmp/fake", flush=True)
""")


class FakeTotalSegmentatorLogicBase:
    """Shared behaviour; ``process`` is added per branch with the real signature."""

    #: class attributes the tests set
    truth: Any = None  # callable(input volume node) -> (sitk label map on the input's grid, {id: class name})
    seconds = 0.5
    unlicensed_tasks: set[str] = set()
    instances: list[Any] = []

    def __init__(self) -> None:
        self.logCallback = None
        self.clearOutputFolder = True
        self.useStandardSegmentNames = True
        self.calls: list[dict[str, Any]] = []
        self.setup_calls = 0
        type(self).instances.append(self)

    def setupPythonRequirements(self, upgrade: bool = False) -> None:  # noqa: N802
        self.setup_calls += 1

    def log(self, text: str) -> None:
        if self.logCallback:
            self.logCallback(text)

    def _process(self, arguments: dict[str, Any]) -> None:
        import slicer

        from Seg2MedLib import nodes  # the harness test's own module path

        self.calls.append({k: v for k, v in arguments.items() if k != "self"})
        task = arguments.get("task") or "total"
        self.log("Processing started")
        fail = ""
        if task in self.unlicensed_tasks:
            fail = f"ERROR: task {task} requires a license. Get one at https://backend.totalsegmentator.com/license-academic/"
        proc = slicer.util.launchConsoleProcess([sys.executable, "-c", CHILD, task, str(self.seconds), fail],
                                                useStartupEnvironment=False)
        from subprocess import CalledProcessError

        while True:
            line = proc.stdout.readline()
            if not line:
                break
            self.log(line.rstrip())
        proc.wait()
        if proc.returncode != 0:
            raise CalledProcessError(proc.returncode, proc.args)
        labels, names = type(self).truth(arguments["inputVolume"], task)
        nodes.labelmap_to_segmentation_node(slicer.mrmlScene, labels, names, node=arguments["outputSegmentation"])
        self.log("Processing completed")


def install_fake_totalsegmentator(harness: Any, branch: str, folder: Path) -> type:
    """Write a ``TotalSegmentator.py`` whose logic has ``branch``'s real ``process`` signature, load it as the
    extension's module (``slicer.modules.totalsegmentator``, ``import TotalSegmentator``) and return the class."""
    arguments = real_process_arguments(branch)
    if arguments is None:
        raise FileNotFoundError(f"SlicerTotalSegmentator {branch} reference not found under {REFERENCE}")
    folder.mkdir(parents=True, exist_ok=True)
    source = textwrap.dedent(f'''
        """Fake SlicerTotalSegmentator module ({branch}); process() has the real signature of that branch."""
        from slicerharness.fakes import FakeTotalSegmentatorLogicBase


        class TotalSegmentatorLogic(FakeTotalSegmentatorLogicBase):
            instances = []

            def process(self, {arguments}):
                return self._process(dict(locals()))
    ''')
    (folder / "TotalSegmentator.py").write_text(source, encoding="utf-8")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    sys.modules.pop("TotalSegmentator", None)
    import TotalSegmentator  # noqa: F401  (the fake just written)

    harness.slicer.modules.totalsegmentator = types.SimpleNamespace(path=str(folder / "TotalSegmentator.py"))
    return sys.modules["TotalSegmentator"].TotalSegmentatorLogic


def install_fake_pytorch_utils(torch_present: bool = True, install_result: Any = "torch") -> types.ModuleType:
    """``PyTorchUtils`` with the PyTorch extension's logic API; records installTorch calls."""
    module = types.ModuleType("PyTorchUtils")
    state = {"installed": torch_present, "install_calls": []}

    class PyTorchUtilsLogic:
        def torchInstalled(self) -> bool:  # noqa: N802
            return state["installed"]

        def installTorch(self, askConfirmation=False, forceComputationBackend=None,  # noqa: N802, N803
                         torchVersionRequirement=None, torchvisionVersionRequirement=None):  # noqa: N803
            state["install_calls"].append({"askConfirmation": askConfirmation,
                                           "torchVersionRequirement": torchVersionRequirement})
            if install_result is None:
                return None
            state["installed"] = True
            return install_result

    module.PyTorchUtilsLogic = PyTorchUtilsLogic
    module.state = state
    sys.modules["PyTorchUtils"] = module
    return module


class FakeSegmentEditorWidget:
    """The parts of ``qMRMLSegmentEditorWidget`` (``segmentEditorWidget.editor``) a module calls: the setters
    record the nodes; the getters return them."""

    def __init__(self) -> None:
        self._segmentation = self._source = None
        self.calls: list[tuple[str, Any]] = []

    def setSegmentationNode(self, node: Any) -> None:  # noqa: N802
        self.calls.append(("setSegmentationNode", node))
        self._segmentation = node

    def setSourceVolumeNode(self, node: Any) -> None:  # noqa: N802  (5.2+; setMasterVolumeNode before)
        self.calls.append(("setSourceVolumeNode", node))
        self._source = node

    def segmentationNode(self) -> Any:  # noqa: N802
        return self._segmentation

    def sourceVolumeNode(self) -> Any:  # noqa: N802
        return self._source


class FakeSegmentEditorModule:
    """``slicer.modules.segmenteditor``: ``widgetRepresentation().self().editor`` and enter/exit (selectModule)."""

    def __init__(self) -> None:
        self.editor = FakeSegmentEditorWidget()
        self.entered = 0
        self.isEntered = False

    def widgetRepresentation(self) -> Any:  # noqa: N802
        return types.SimpleNamespace(self=lambda: types.SimpleNamespace(editor=self.editor))

    def enter(self) -> None:
        self.entered += 1
        self.isEntered = True

    def exit(self) -> None:
        self.isEntered = False


def install_fake_segment_editor(harness: Any) -> FakeSegmentEditorModule:
    """``slicer.modules.segmenteditor`` as a fake whose editor records what it is given."""
    module = FakeSegmentEditorModule()
    harness.slicer.modules.segmenteditor = module
    return module
