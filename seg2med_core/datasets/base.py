"""What every dataset-layout module shares: the options a layout is read with and small file helpers.

A layout module (one per public dataset format) provides ``NAME``, ``TITLE``, ``detect(root) -> bool`` and
``cases(root, options) -> list[CaseSpec]``; :mod:`seg2med_core.datasets` keeps the registry and the detector.
Cases are :class:`seg2med_core.training.dataset.CaseSpec` objects, the same as for the generic folder / CSV
layouts, so training, caching and evaluation do not care where a case came from.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from seg2med_core.errors import Seg2MedError

#: Image file endings the layouts accept, longest first (``.nii.gz`` before ``.gz``-less names).
IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


@dataclass(frozen=True)
class LayoutOptions:
    """How to read a layout.

    ``modality``: the modality of the images to learn / compare with (``ct`` or ``mr``; None = the layout's
    only one, or an error where it has both). ``seg_from``: which modality's segmentation conditions the
    model in paired layouts (SynthRAD); None = the same as ``modality``. A different one is a conversion
    case (the paper's Experiment IV): the labels are converted and the body contour comes from the source
    image."""

    modality: str | None = None
    seg_from: str | None = None


def volume(folder: Path, stem: str, endings: Iterable[str] = IMAGE_ENDINGS) -> Path | None:
    """``folder/stem<ending>`` for the first ending that exists (a file), else None."""
    for ending in endings:
        path = folder / f"{stem}{ending}"
        if path.is_file():
            return path
    return None


def strip_ending(name: str) -> str:
    for ending in IMAGE_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def read_dataset_json(path: Path, layout: str) -> dict[str, Any]:
    """A ``dataset.json`` as a dict, or a one-line error naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Seg2MedError(f"{layout} dataset '{path.parent}' has no dataset.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Seg2MedError(f"{layout} file '{path}' cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise Seg2MedError(f"{layout} file '{path}' is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise Seg2MedError(f"{layout} file '{path}' must hold a JSON object, got {type(data).__name__}")
    return data


def read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV whose delimiter is ``;`` or ``,`` (TotalSegmentator's meta.csv uses ``;``)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise Seg2MedError(f"table '{path}' cannot be read: {exc}") from None
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def check_modality(options: LayoutOptions, available: tuple[str, ...], layout: str, root: Path) -> str:
    """The modality to use: ``options.modality`` when the layout has it, the only one when it has one."""
    if options.modality is None:
        if len(available) == 1:
            return available[0]
        raise Seg2MedError(f"{layout} dataset '{root}' has {' and '.join(m.upper() for m in available)} images: give --modality ct|mr")
    if options.modality not in available:
        raise Seg2MedError(
            f"{layout} dataset '{root}' has no {options.modality.upper()} images (only {', '.join(m.upper() for m in available)})"
        )
    return options.modality


def no_conversion(options: LayoutOptions, modality: str, layout: str) -> None:
    """Layouts with one image per case cannot take their segmentation from another modality."""
    if options.seg_from is not None and options.seg_from != modality:
        raise Seg2MedError(
            f"--seg-from {options.seg_from} needs paired images (SynthRAD); the {layout} layout has one image per case"
        )


def natural_key(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
