"""TotalSegmentator: which tasks per modality, how to install it without breaking Slicer, how to run it.

Inside Slicer the SlicerTotalSegmentator extension is used when installed (its logic manages its own
environment). Otherwise the ``totalsegmentator`` package runs as a child process. It is installed only when
the user confirms, with ``--no-deps`` plus its real dependencies *except* ``fury`` (fury pins ``vtk<9.4``,
and pip would replace Slicer's own VTK) and ``torch`` (provided by the PyTorch extension / already present).
"""

from __future__ import annotations

import importlib.util
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

#: totalsegmentator 2.x requirements minus fury (vtk pin) and torch (PyTorch extension). Installed one by one
#: with their own dependencies; totalsegmentator itself goes in with --no-deps.
TOTALSEGMENTATOR_DEPENDENCIES: tuple[str, ...] = (
    "nnunetv2>=2.3.1", "nibabel>=2.3.0", "tqdm>=4.45.0", "xvfbwrapper", "requests", "dicom2nifti", "pyarrow",
    "xmltodict", "blosc", "imgkit", "jinja2", "Pillow", "scikit-image", "scipy", "matplotlib", "networkx",
    "pandas", "scikit-learn", "dipy", "SimpleITK",
)


def tasks_for(modality: str) -> tuple[str, ...]:
    """TotalSegmentator tasks for an input image of ``modality`` ('ct' or 'mr')."""
    try:
        return TASKS_FOR_MODALITY[modality]
    except KeyError:
        raise ValueError(f"input modality {modality!r} is not 'ct' or 'mr'") from None


def totalsegmentator_installed() -> bool:
    """True when the ``totalsegmentator`` package can be imported (no import is done: it is slow)."""
    return importlib.util.find_spec("totalsegmentator") is not None


def install_steps() -> list[str]:
    """pip argument strings, in order, for ``slicer.util.pip_install`` (or ``python -m pip install``)."""
    return [" ".join(TOTALSEGMENTATOR_DEPENDENCIES), "--no-deps totalsegmentator"]


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


def run_with_slicer_extension(logic: Any, volume_node: Any, segmentation_node: Any, task: str, fast: bool,
                              cpu: bool) -> None:
    """Run one task through SlicerTotalSegmentator (blocking; that logic keeps the GUI alive itself).

    ``setupPythonRequirements()`` installs TotalSegmentator/PyTorch on first use (asking first); segment names
    are kept as TotalSegmentator class names (``useStandardSegmentNames = False``), because Seg2Med maps
    segment names to label ids — terminology names such as "Left kidney" would not match.
    """
    logic.setupPythonRequirements()
    logic.useStandardSegmentNames = False
    logic.process(volume_node, segmentation_node, fast=fast and task in FAST_TASKS, cpu=cpu, task=task)
