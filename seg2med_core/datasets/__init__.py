"""Public dataset layouts for training and evaluation, detected automatically or named with ``--format``.

One small module per layout (each cites where its layout is documented):

=========================  ==========================================================================
``totalsegmentator``       TotalSegmentator CT dataset: ``s0000/ct.nii.gz`` + ``s0000/segmentations/`` + ``meta.csv`` split
``totalsegmentator-mri``   TotalSegmentator MRI dataset: ``s0000/mri.nii.gz`` + ``segmentations/`` + ``meta.csv``
``synthrad2023``           SynthRAD2023 Task 1/2: ``1PA001/{mr|cbct,ct,mask}.nii.gz`` (+ your TotalSegmentator labels)
``synthrad2025``           SynthRAD2025 Task 1/2: ``1ABA005/{mr|cbct,ct,mask}.mha`` (+ your TotalSegmentator labels)
``amos22``                 AMOS22: ``imagesTr``/``labelsTr`` (+ ``Va``, ``Ts``) + ``dataset.json``; CT ids <= 500, MR > 500
``nnunet``                 nnU-Net raw: ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``, ``dataset.json``
``folder`` / ``csv``       seg2med's own layouts (:func:`seg2med_core.training.dataset.discover_cases`)
=========================  ==========================================================================

:func:`detect_format` tries the public layouts in this order and falls back to ``folder`` / ``csv``;
:func:`discover` returns :class:`~seg2med_core.training.dataset.CaseSpec` lists with the datasets' own
splits where they have them.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Protocol, Sequence

from seg2med_core.errors import Seg2MedError
from seg2med_core.training.dataset import CaseSpec, discover_cases

from . import amos, nnunet, synthrad, totalsegmentator
from .base import LayoutOptions

__all__ = ["FORMATS", "GENERIC_FORMATS", "LayoutOptions", "detect_format", "discover", "format_names", "summarise_cases"]


class Layout(Protocol):
    NAME: str
    TITLE: str
    EXPECTED: str

    def detect(self, root: Path) -> bool: ...

    def cases(self, root: Path, options: LayoutOptions) -> list[CaseSpec]: ...


#: The public layouts, in detection order (most specific first).
FORMATS: dict[str, Layout] = {
    layout.NAME: layout
    for layout in (
        totalsegmentator.CT,
        totalsegmentator.MRI,
        synthrad.SYNTHRAD2023,
        synthrad.SYNTHRAD2025,
        amos,  # type: ignore[list-item]  # modules with NAME/TITLE/detect/cases
        nnunet,  # type: ignore[list-item]
    )
}
GENERIC_FORMATS = ("folder", "csv")


def format_names() -> tuple[str, ...]:
    """Everything ``--format`` accepts."""
    return ("auto", *FORMATS, *GENERIC_FORMATS)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The first public layout that recognises ``path``; else ``csv`` for a .csv file, else ``folder``."""
    root = Path(path)
    if not root.exists():
        raise Seg2MedError(f"training data '{root}' does not exist")
    if root.is_file():
        return "csv"
    for name, layout in FORMATS.items():
        if layout.detect(root):
            return name
    return "folder"


def _discover_one(path: Path, fmt: str, options: LayoutOptions) -> list[CaseSpec]:
    if not path.exists():
        raise Seg2MedError(f"training data '{path}' does not exist")
    name = detect_format(path) if fmt == "auto" else fmt
    if name in GENERIC_FORMATS:
        if name == "csv" and not path.is_file():
            raise Seg2MedError(f"--format csv needs a .csv file, '{path}' is a folder")
        if options.seg_from is not None and options.seg_from != options.modality:
            raise Seg2MedError(f"--seg-from {options.seg_from} needs a paired layout (SynthRAD); '{path}' is a {name} layout")
        return discover_cases(path)
    if name not in FORMATS:
        raise Seg2MedError(f"unknown --format {fmt!r} (choose from {', '.join(format_names())})")
    layout = FORMATS[name]
    if not path.is_dir():
        raise Seg2MedError(f"{layout.TITLE} data '{path}' must be a folder")
    if fmt != "auto" and not layout.detect(path):
        raise Seg2MedError(f"'{path}' does not have the {layout.TITLE} layout (expected {layout.EXPECTED})")
    found = layout.cases(path, options)
    if not found:
        raise Seg2MedError(f"{layout.TITLE} dataset '{path}' has no case")
    return found


def discover(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    fmt: str = "auto",
    options: LayoutOptions | None = None,
) -> list[CaseSpec]:
    """Cases of one or more data paths (each detected separately with ``fmt="auto"``)."""
    options = options or LayoutOptions()
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if fmt not in format_names():
        raise Seg2MedError(f"unknown --format {fmt!r} (choose from {', '.join(format_names())})")
    cases: list[CaseSpec] = []
    for path in paths:
        cases.extend(_discover_one(Path(path), fmt, options))
    counts = Counter((c.dataset, c.case_id) for c in cases)
    twice = sorted(k for k, n in counts.items() if n > 1)
    if twice:
        raise Seg2MedError(f"case id(s) found twice: {', '.join(f'{d}/{c}' for d, c in twice[:3])} (the same data given twice?)")
    return cases


def summarise_cases(cases: Sequence[CaseSpec]) -> list[dict[str, object]]:
    """Per dataset: number of cases per split (``none`` = no split) and whether they are conversion cases."""
    rows: dict[str, Counter] = {}
    for case in cases:
        rows.setdefault(case.dataset, Counter())[case.split or "none"] += 1
    return [{"dataset": d, "cases": sum(c.values()), **{s: c.get(s, 0) for s in ("train", "val", "test", "none")}} for d, c in rows.items()]


def assign_splits(cases: Sequence[CaseSpec], test: int = 0, val: int = 0, seed: int = 0) -> list[CaseSpec]:
    """Give a fixed split to the cases of each dataset that has none of its own (SynthRAD, nnU-Net raw).

    Per dataset, the cases without a split are sorted by id and shuffled with ``seed``; the first ``test``
    become ``test``, the next ``val`` become ``val``, the rest ``train``. The same data, numbers and seed give
    the same split in ``train`` and ``evaluate``, and a smaller ``test`` picks a subset of a larger one's test
    cases (same order): the paper's 10 CT test patients are among the 40 MR test patients of one SynthRAD
    folder. Cases that already have a split (the dataset's own) are left as they are."""
    import dataclasses

    import numpy as np

    if test < 0 or val < 0:
        raise Seg2MedError(f"--test-cases and --val-cases must not be negative (got {test}, {val})")
    if test == 0 and val == 0:
        return list(cases)
    chosen: dict[tuple[str, str], str] = {}
    for dataset in sorted({c.dataset for c in cases}):
        free = sorted((c.case_id for c in cases if c.dataset == dataset and c.split is None), key=_natural)
        if not free:
            continue
        if test + val >= len(free):
            raise Seg2MedError(
                f"dataset '{dataset}' has {len(free)} case(s) without a split: --test-cases {test} + --val-cases {val} leave none to train on"
            )
        order = [free[i] for i in np.random.default_rng(seed).permutation(len(free))]
        for i, case_id in enumerate(order):
            chosen[(dataset, case_id)] = "test" if i < test else ("val" if i < test + val else "train")
    return [dataclasses.replace(c, split=chosen[(c.dataset, c.case_id)]) if (c.dataset, c.case_id) in chosen else c for c in cases]


def _natural(text: str):
    from .base import natural_key

    return natural_key(text)


def label_notes(cases: Sequence[CaseSpec]) -> list[str]:
    """One line per dataset whose cases carry their own label table: how its classes map by name."""
    from .labelmap import map_names

    seen: dict[tuple[str, tuple, str], None] = {}
    for case in cases:
        if case.label_table is not None:
            seen.setdefault((case.dataset, case.label_table, case.label_set or "total"), None)
    return [f"{dataset}: {map_names(dict(table), label_set).summary()}" for dataset, table, label_set in seen]
