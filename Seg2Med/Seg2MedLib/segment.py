"""TotalSegmentator: which tasks per modality, how to install it without breaking Slicer, how to run it.

Inside Slicer the SlicerTotalSegmentator extension is used when installed (its logic manages its own
environment). Otherwise the ``totalsegmentator`` package runs as a child process. It is installed only when
the user confirms, with ``--no-deps`` plus its real dependencies *except* ``fury`` (fury pins ``vtk<9.4``,
and pip would replace Slicer's own VTK) and ``torch`` (provided by the PyTorch extension / already present).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .commands import python_executable

#: TotalSegmentator tasks run for an input of each modality; MR merges the tissue types (paper, Sec. II.E).
TASKS_FOR_MODALITY: dict[str, tuple[str, ...]] = {"ct": ("total",), "mr": ("total_mr", "tissue_types_mr")}
#: Label set (seg2med_core.labels) of the main task's output.
LABEL_SET_FOR_MODALITY = {"ct": "total", "mr": "total_mr"}
#: Tasks that need a (free academic) TotalSegmentator licence key: `totalseg_set_license -l KEY`.
LICENSED_TASKS = frozenset({"tissue_types", "tissue_types_mr"})
#: Tasks that have a 3 mm "--fast" model.
FAST_TASKS = frozenset({"total", "total_mr"})

#: Installed into Slicer's Python only when neither the SlicerTotalSegmentator extension nor the package is there,
#: the way that extension installs it: each package with ``--no-deps`` and then its own requirements, leaving
#: out what Slicer or other extensions provide. fury pins vtk<9.4 (pip would replace Slicer's VTK).
INSTALL_SKIP: frozenset[str] = frozenset({
    "simpleitk",    # Slicer's SimpleITK has a special IO class: never replace it
    "torch",        # from the PyTorch extension (PyTorchUtils), the right build for the GPU
    "nnunetv2",     # installed on its own first, the same selective way
    "requests",     # shipped with Slicer; TotalSegmentator would force another version (restart needed)
    "rt-utils",     # RTSTRUCT export only; pulls opencv
    "dicom2nifti",  # pinned below; newer versions need Python >= 3.10
    "fury",         # pins vtk<9.4
})
#: Installed first when missing (TotalSegmentator imports them but does not list them all).
PREREQUISITES: tuple[str, ...] = ("dicom2nifti<=2.5.1", "pandas")
#: Installed selectively, in order.
SELECTIVE_PACKAGES: tuple[str, ...] = ("nnunetv2>=2.3.1", "TotalSegmentator")


def tasks_for(modality: str) -> tuple[str, ...]:
    """TotalSegmentator tasks for an input image of ``modality`` ('ct' or 'mr')."""
    try:
        return TASKS_FOR_MODALITY[modality]
    except KeyError:
        raise ValueError(f"input modality {modality!r} is not 'ct' or 'mr'") from None


def totalsegmentator_installed() -> bool:
    """True when the ``totalsegmentator`` package can be imported (no import is done: it is slow)."""
    return importlib.util.find_spec("totalsegmentator") is not None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"invalid requirement {requirement!r}")
    return match.group(1)


def dependencies_to_install(distribution: str, skip: frozenset[str] = INSTALL_SKIP) -> list[str]:
    """Requirements of an installed distribution (from its metadata) minus ``skip`` and extras-only ones."""
    import importlib.metadata

    try:
        requires = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    wanted = []
    for requirement in requires:
        text, _, marker = requirement.partition(";")
        if "extra" in marker:
            continue
        if marker.strip():
            try:
                from packaging.markers import Marker

                if not Marker(marker.strip()).evaluate():
                    continue
            except ImportError:
                pass
        if _canonical(requirement_name(text)) in {_canonical(s) for s in skip}:
            continue
        wanted.append(text.strip())
    return wanted


def install_plan() -> list[tuple[str, list[str]]]:
    """What the fallback installation does, as (description, pip arguments) steps, before it starts.

    The selective steps' dependency lists are read after their ``--no-deps`` step ran (see
    :func:`install_totalsegmentator`), so here they only say which package is installed that way.
    """
    steps = [(f"{r} (if missing)", [r]) for r in PREREQUISITES]
    for requirement in SELECTIVE_PACKAGES:
        steps.append((f"{requirement} without its dependencies, then those of them Slicer lacks",
                      ["--no-deps", requirement]))
    return steps


def install_totalsegmentator(pip_install: Any, installed: Any = None, log: Any = print) -> None:
    """Install TotalSegmentator like the SlicerTotalSegmentator extension does (torch must be there already).

    ``pip_install(args: list[str])`` runs one pip install (``slicer.util.pip_install``); ``installed(name)``
    tells whether a distribution is present (default: importlib.metadata).
    """
    import importlib.metadata

    def present(name: str) -> bool:
        if installed is not None:
            return bool(installed(name))
        try:
            importlib.metadata.version(name)
            return True
        except importlib.metadata.PackageNotFoundError:
            return False

    for requirement in PREREQUISITES:
        if not present(requirement_name(requirement)):
            log(f"Installing {requirement}")
            pip_install([requirement])
    for requirement in SELECTIVE_PACKAGES:
        log(f"Installing {requirement} (--no-deps)")
        pip_install(["--no-deps", requirement])
        importlib.invalidate_caches()
        dependencies = [d for d in dependencies_to_install(requirement_name(requirement))
                        if not present(requirement_name(d))]
        if dependencies:
            log(f"Installing the dependencies of {requirement_name(requirement)}: {', '.join(dependencies)}")
            pip_install(dependencies)


def segment_command(image: Path, output: Path, task: str, fast: bool = True, device: str = "gpu") -> list[str]:
    """Child-process command writing one multilabel NIfTI ``output`` for ``task``."""
    if device not in ("gpu", "cpu", "mps") and not device.startswith("gpu:"):
        raise ValueError(f"TotalSegmentator device {device!r} is not gpu, gpu:N, cpu or mps")
    cmd = [python_executable(), "-m", "totalsegmentator.bin.TotalSegmentator", "-i", str(image), "-o", str(output),
           "--ml", "-ta", task, "--device", device]
    if fast and task in FAST_TASKS:
        cmd.append("--fast")
    return cmd


def merge_task_outputs(main: sitk.Image, tissue: sitk.Image | None) -> sitk.Image:
    """Main labels plus tissue types (ids + ``labels.TISSUE_OFFSET`` where the main map is 0)."""
    if tissue is None:
        return sitk.Cast(main, sitk.sitkUInt16)
    if main.GetSize() != tissue.GetSize():
        raise ValueError(f"tissue segmentation size {tissue.GetSize()} differs from main segmentation {main.GetSize()}")
    from seg2med_core.labels import merge_segmentations

    merged = merge_segmentations(sitk.GetArrayFromImage(main), sitk.GetArrayFromImage(tissue))
    out = sitk.GetImageFromArray(merged.astype(np.uint16))
    out.CopyInformation(main)
    return out


def slicer_totalsegmentator_logic() -> Any | None:
    """A new ``TotalSegmentatorLogic`` of the SlicerTotalSegmentator extension when it is installed, else ``None``.

    The logic class is created directly (as other modules do) rather than through the module's widget.
    """
    try:
        import slicer

        if not hasattr(slicer, "modules") or not hasattr(slicer.modules, "totalsegmentator"):
            return None
        from TotalSegmentator import TotalSegmentatorLogic  # the extension's module file

        return TotalSegmentatorLogic()
    except (ImportError, AttributeError, RuntimeError):
        return None


class SegmentationCancelled(Exception):
    """The user pressed Cancel while TotalSegmentator ran."""


class TaskFailed(Exception):
    """A TotalSegmentator task failed (e.g. a licensed task without a licence); the message says why."""


def quality_arguments(process: Callable[..., Any], fast: bool) -> dict[str, Any]:
    """Keyword for the speed setting in the installed extension's ``process`` signature.

    Branch 5.8: ``process(..., fast=True, ...)``; main (Slicer 5.10+): ``process(..., quality=None, ...)`` with
    "normal" / "fast" / "faster". Unknown signatures get neither (the extension's default quality).
    """
    try:
        parameters = inspect.signature(process).parameters
    except (TypeError, ValueError):
        return {}
    if "quality" in parameters:
        return {"quality": "fast" if fast else "normal"}
    if "fast" in parameters:
        return {"fast": bool(fast)}
    return {}


class ExtensionRun:
    """One blocking SlicerTotalSegmentator ``process`` call that the Cancel button can stop.

    The extension starts TotalSegmentator with ``slicer.util.launchConsoleProcess`` and reads its output until
    it ends; while it runs, the processes it launches are recorded so that :meth:`cancel` can kill them with
    everything they started (the PythonSlicer launcher's child), which ends the extension's read loop.
    """

    def __init__(self) -> None:
        self.processes: list[Any] = []
        self.cancelled = False

    def cancel(self) -> None:
        from .process import terminate_tree

        self.cancelled = True
        for proc in self.processes:
            terminate_tree(proc, force=True, own_group=False)

    @contextlib.contextmanager
    def recording(self, util: Any) -> Iterator[None]:
        original = util.launchConsoleProcess

        def launch(*args: Any, **kwargs: Any) -> Any:
            proc = original(*args, **kwargs)
            self.processes.append(proc)
            if self.cancelled:
                self.cancel()
            return proc

        util.launchConsoleProcess = launch
        try:
            yield
        finally:
            util.launchConsoleProcess = original


def run_with_slicer_extension(logic: Any, volume_node: Any, segmentation_node: Any, task: str, fast: bool,
                              cpu: bool, log: Callable[[str], None] | None = None,
                              run: ExtensionRun | None = None) -> None:
    """Run one task through SlicerTotalSegmentator (blocking; its output goes to ``log`` line by line).

    ``setupPythonRequirements()`` installs TotalSegmentator/PyTorch on first use (asking first); segment names
    are kept as TotalSegmentator class names (``useStandardSegmentNames = False``), because Seg2Med maps
    segment names to label ids — terminology names such as "Left kidney" would not match. Raises
    SegmentationCancelled after ``run.cancel()``, TaskFailed when TotalSegmentator fails.
    """
    import slicer

    logic.setupPythonRequirements()
    logic.useStandardSegmentNames = False
    if log is not None:
        logic.logCallback = log
    run = run or ExtensionRun()
    kwargs = quality_arguments(logic.process, fast and task in FAST_TASKS)
    with run.recording(slicer.util):
        try:
            logic.process(volume_node, segmentation_node, cpu=cpu, task=task, **kwargs)
        except Exception as exc:  # noqa: BLE001  (the extension raises CalledProcessError, RuntimeError, ...)
            if run.cancelled:
                raise SegmentationCancelled() from None
            raise TaskFailed(f"TotalSegmentator task {task} failed: {type(exc).__name__}: {exc}") from exc
    if run.cancelled:
        raise SegmentationCancelled()
