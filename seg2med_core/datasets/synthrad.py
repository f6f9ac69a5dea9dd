"""SynthRAD2023 and SynthRAD2025: paired MR or CBCT and CT per patient, with a body mask.

Layouts, as published (SynthRAD2023: Thummerer et al., Med. Phys. 2023, arXiv:2303.16320,
https://doi.org/10.5281/zenodo.7260705; SynthRAD2025: Thummerer et al. 2025, arXiv:2502.17609,
https://doi.org/10.5281/zenodo.14918089; challenge pages https://synthrad2023.grand-challenge.org and
https://synthrad2025.grand-challenge.org)::

    Task1/                      # Task 1 = MRI -> CT, Task 2 = CBCT -> CT
    ├── pelvis/                 # 2023: brain, pelvis; 2025: AB, HN, TH (abdomen, head & neck, thorax)
    │   ├── 1PA001/             # <task><anatomy><centre><number>; 2025: 1ABA005, 2HNC012, ...
    │   │   ├── mr.nii.gz       # cbct.nii.gz in Task 2; 2025 ships MetaImage: mr.mha, ct.mha, mask.mha
    │   │   ├── ct.nii.gz       # CT rigidly (2025: also deformably) registered to the MR / CBCT grid
    │   │   └── mask.nii.gz     # body outline
    │   └── overview/           # spreadsheets with acquisition parameters (not needed here)
    └── brain/ ...

The datasets ship no organ segmentations: run TotalSegmentator on the image whose labels you want
(``TotalSegmentator -i 1PA001/ct.nii.gz -o 1PA001/ct_seg.nii.gz --ml``; for MR ``-ta total_mr`` into
``mr_seg.nii.gz``; the tissue types, used by the paper for MR, with ``-ta tissue_types`` / ``tissue_types_mr``
into ``ct_tissue.nii.gz`` / ``mr_tissue.nii.gz``). Segmentations are looked for in the patient folder as
``<modality>_seg``, ``<modality>_segmentation`` (multilabel file) or ``<modality>_segmentations/`` (folder
of masks, TotalSegmentator's default output). The released training sets have no split column, so cases get
no split (``seg2med dataset list --test N`` writes a CSV with a fixed one). CT and MR share one grid, which is
what makes the paper's Experiment IV (CT <-> MR conversion, ``--seg-from``) possible.
"""

from __future__ import annotations

import re
from pathlib import Path

from seg2med_core.errors import Seg2MedError
from seg2med_core.training.dataset import CaseSpec

from .base import IMAGE_ENDINGS, LayoutOptions, natural_key, volume

PATIENT = re.compile(r"^(?P<task>[12])(?P<anatomy>B|P|AB|HN|TH)(?P<centre>[A-Z])\d{3}$")
ANATOMY = {"B": "brain", "P": "pelvis", "AB": "abdomen", "HN": "head-neck", "TH": "thorax"}
ANATOMY_2023 = ("B", "P")
SEG_STEMS = ("{m}_seg", "{m}_segmentation", "{m}_segmentations")
TISSUE_STEMS = ("{m}_tissue", "{m}_tissue_types")
SOURCE_STEM = {"ct": "ct", "mr": "mr"}


def _find_seg(folder: Path, modality: str, stems) -> Path | None:
    for stem in stems:
        stem = stem.format(m=modality)
        found = volume(folder, stem)
        if found is not None:
            return found
        if (folder / stem).is_dir():
            return folder / stem
    return None


def patient_folders(root: Path, depth: int = 3) -> list[Path]:
    """Folders below ``root`` (``root`` itself included, at most ``depth`` levels) named like a SynthRAD patient."""
    found: list[Path] = []
    level = [root]
    for _ in range(depth + 1):
        following = []
        for folder in level:
            if PATIENT.match(folder.name):
                found.append(folder)
                continue
            try:
                following.extend(p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
        level = following
    return sorted(found, key=lambda p: natural_key(p.name))


class _SynthRADLayout:
    def __init__(self, name: str, title: str, year: int) -> None:
        self.NAME = name
        self.TITLE = title
        self.year = year
        ext = "nii.gz" if year == 2023 else "mha"
        code = "1PA001" if year == 2023 else "1ABA005"
        self.EXPECTED = f"patient folders like {code}/ with mr.{ext} or cbct.{ext}, ct.{ext}, mask.{ext}"

    def _mine(self, folder: Path) -> bool:
        """2023 has brain (B) and pelvis (P) patients, 2025 abdomen (AB), head & neck (HN) and thorax (TH)."""
        code = PATIENT.match(folder.name)
        return code is not None and (code.group("anatomy") in ANATOMY_2023) == (self.year == 2023)

    def detect(self, root: Path) -> bool:
        """Patient folders named like ``1PA001`` / ``1ABA005`` holding ``mr`` or ``cbct`` and ``ct``."""
        if not root.is_dir():
            return False
        for folder in patient_folders(root):
            if self._mine(folder) and any(volume(folder, s) is not None for s in ("mr", "cbct", "ct")):
                return True
        return False

    def cases(self, root: Path, options: LayoutOptions) -> list[CaseSpec]:
        folders = [f for f in patient_folders(root) if self._mine(f)]
        if not folders:
            raise Seg2MedError(f"no {self.TITLE} patient folders (like 1PA001) in '{root}'")
        modality = options.modality or "ct"
        seg_from = options.seg_from or modality
        cases: list[CaseSpec] = []
        for folder in folders:
            code = PATIENT.match(folder.name)
            assert code is not None
            source = "mr" if code.group("task") == "1" else "cbct"
            if modality == "mr" and source != "mr":
                raise Seg2MedError(f"{self.TITLE} patient '{folder.name}' is from Task 2 (CBCT): it has no MR image for an MR model")
            if seg_from == "mr" and source != "mr":
                raise Seg2MedError(f"{self.TITLE} patient '{folder.name}' is from Task 2 (CBCT): --seg-from mr needs Task 1 (MR) data")
            ct = volume(folder, "ct")
            if ct is None:
                raise Seg2MedError(f"{self.TITLE} patient '{folder.name}' ('{folder}') has no ct image (ct{' / ct'.join(IMAGE_ENDINGS[:3])})")
            other = volume(folder, source)
            if other is None:
                raise Seg2MedError(f"{self.TITLE} patient '{folder.name}' ('{folder}') has no {source} image ({source}.nii.gz or {source}.mha)")
            images = {"ct": ct, "mr": other if source == "mr" else None}
            target = images[modality]
            assert target is not None
            seg = _find_seg(folder, seg_from, SEG_STEMS)
            if seg is None:
                task = " -ta total_mr" if seg_from == "mr" else ""
                raise Seg2MedError(
                    f"{self.TITLE} patient '{folder.name}' has no {seg_from} segmentation ({seg_from}_seg.nii.gz or "
                    f"{seg_from}_segmentations/): run TotalSegmentator -i {images[seg_from]} -o {folder / (seg_from + '_seg.nii.gz')} --ml{task}"
                )
            tissue = _find_seg(folder, seg_from, TISSUE_STEMS)
            dataset = f"{self.NAME}-{ANATOMY[code.group('anatomy')]}"
            conversion = seg_from != modality
            cases.append(
                CaseSpec(
                    folder.name,
                    target,
                    seg,
                    tissue,
                    None,
                    dataset,
                    source_image=images[seg_from] if conversion else None,
                    source_modality=seg_from if conversion else None,
                    label_set="total_mr" if seg_from == "mr" else None,  # TotalSegmentator's total_mr task
                )
            )
        return cases


SYNTHRAD2023 = _SynthRADLayout("synthrad2023", "SynthRAD2023", 2023)
SYNTHRAD2025 = _SynthRADLayout("synthrad2025", "SynthRAD2025", 2025)
