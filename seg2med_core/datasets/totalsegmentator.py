"""The TotalSegmentator training datasets: CT (``totalsegmentator``) and MRI (``totalsegmentator-mri``).

Layout, as published (CT: Wasserthal et al., Radiology: AI 2023, https://doi.org/10.5281/zenodo.6802613
(v1, 104 classes) and https://doi.org/10.5281/zenodo.10047292 (v2.0.1, 117 classes); MRI: D'Antonoli
et al., Radiology 2025, https://doi.org/10.5281/zenodo.14710732; both linked from the "Resources"
section of https://github.com/wasserth/TotalSegmentator)::

    Totalsegmentator_dataset_v201/
    ├── meta.csv                        # ';'-separated: image_id;age;gender;...;split;...
    ├── s0000/
    │   ├── ct.nii.gz                   # mri.nii.gz in the MRI dataset
    │   └── segmentations/
    │       ├── adrenal_gland_left.nii.gz
    │       └── ...                     # one binary mask per class, named by class
    └── s0001/ ...

``meta.csv``'s ``split`` column (``train``/``val``/``test``) is the dataset's own split and is used as
is; subjects missing from it (or a dataset without ``meta.csv``) get no split. The masks' names decide
the label set (``total`` v2 / ``total_v1`` for CT, ``total_mr`` for MRI), as for any folder of masks.
"""

from __future__ import annotations

import re
from pathlib import Path

from seg2med_core.errors import Seg2MedError
from seg2med_core.training.dataset import SPLITS, CaseSpec

from .base import LayoutOptions, check_modality, natural_key, no_conversion, read_table, volume

SUBJECT = re.compile(r"^s\d{4,}$")


class _TotalSegmentatorLayout:
    def __init__(self, name: str, title: str, image_stem: str, modality: str) -> None:
        self.NAME = name
        self.TITLE = title
        self.image_stem = image_stem
        self.modality = modality
        self.EXPECTED = f"s0000/{image_stem}.nii.gz + s0000/segmentations/*.nii.gz (+ meta.csv)"

    def _subjects(self, root: Path) -> list[Path]:
        return sorted((p for p in root.iterdir() if p.is_dir() and SUBJECT.match(p.name)), key=lambda p: natural_key(p.name))

    def detect(self, root: Path) -> bool:
        """A folder of ``sNNNN`` subjects of which at least one has ``<image>.nii.gz`` + ``segmentations/``."""
        if not root.is_dir():
            return False
        return any(volume(s, self.image_stem) is not None and (s / "segmentations").is_dir() for s in self._subjects(root))

    def splits(self, root: Path) -> dict[str, str]:
        meta = root / "meta.csv"
        if not meta.is_file():
            return {}
        rows = read_table(meta)
        if rows and "image_id" not in rows[0]:
            raise Seg2MedError(f"{self.TITLE} table '{meta}' has no image_id column (has {', '.join(rows[0])})")
        out: dict[str, str] = {}
        for line, row in enumerate(rows, start=2):
            split = row.get("split", "")
            if not split:
                continue
            if split not in SPLITS:
                raise Seg2MedError(f"{self.TITLE} table '{meta}' line {line}: split {split!r} must be one of {SPLITS}")
            out[row["image_id"]] = split
        return out

    def cases(self, root: Path, options: LayoutOptions) -> list[CaseSpec]:
        modality = check_modality(options, (self.modality,), self.TITLE, root)
        no_conversion(options, modality, self.TITLE)
        splits = self.splits(root)
        cases = []
        subjects = self._subjects(root)
        if not subjects:
            raise Seg2MedError(f"{self.TITLE} dataset '{root}' has no subject folders (s0000, s0001, ...)")
        for subject in subjects:
            image = volume(subject, self.image_stem)
            masks = subject / "segmentations"
            if image is None:
                raise Seg2MedError(f"{self.TITLE} subject '{subject.name}' ('{subject}') has no {self.image_stem}.nii.gz")
            if not masks.is_dir():
                raise Seg2MedError(f"{self.TITLE} subject '{subject.name}' ('{subject}') has no segmentations/ folder")
            cases.append(
                CaseSpec(subject.name, image, masks, None, splits.get(subject.name), self.NAME, label_set="total_mr" if modality == "mr" else None)
            )
        unknown = sorted(set(splits) - {c.case_id for c in cases})
        if unknown and len(unknown) == len(splits):
            raise Seg2MedError(f"{self.TITLE} table '{root / 'meta.csv'}' lists none of the subject folders (e.g. {unknown[0]})")
        return cases


CT = _TotalSegmentatorLayout("totalsegmentator", "TotalSegmentator CT", "ct", "ct")
MRI = _TotalSegmentatorLayout("totalsegmentator-mri", "TotalSegmentator MRI", "mri", "mr")
