"""AMOS22: abdominal CT and MRI with 15 manually labelled organs (``amos22``).

Layout, as published (Ji et al., "AMOS: A Large-Scale Abdominal Multi-Organ Benchmark", NeurIPS 2022
Datasets and Benchmarks, arXiv:2206.08023; https://zenodo.org/records/7155725, ``amos22.zip``;
https://amos22.grand-challenge.org)::

    amos22/
    ├── dataset.json     # "labels": {"0": "background", "1": "spleen", ...}, "training"/"validation": [{"image", "label"}]
    ├── imagesTr/amos_0001.nii.gz ...   labelsTr/amos_0001.nii.gz ...   # training split
    ├── imagesVa/ ...                   labelsVa/ ...                   # validation split
    └── imagesTs/ ...                  (labelsTs/ in later releases)    # test split

Case ids up to 500 are CT, ids above 500 MRI (the AMOS paper's numbering), so ``--modality`` picks the
subset. Splits are the dataset's own (Tr -> train, Va -> val, Ts -> test); test images without labels
are left out. Labels are AMOS's own numbering and are mapped by name onto ``total`` (CT) or ``total_mr``
(MR) with :mod:`.labelmap` (``prostate/uterus`` has no counterpart and is reported).
"""

from __future__ import annotations

import re
from pathlib import Path

from seg2med_core.errors import Seg2MedError
from seg2med_core.training.dataset import CaseSpec

from .base import LayoutOptions, check_modality, natural_key, no_conversion, read_dataset_json, strip_ending

NAME = "amos22"
TITLE = "AMOS22"
CASE = re.compile(r"^amos_(\d+)$")
FOLDERS = (("imagesTr", "labelsTr", "train"), ("imagesVa", "labelsVa", "val"), ("imagesTs", "labelsTs", "test"))
MAX_CT_ID = 500
EXPECTED = "imagesTr/amos_NNNN.nii.gz + labelsTr/amos_NNNN.nii.gz + dataset.json"


def modality_of(case_id: str) -> str:
    """``amos_0500`` and below are CT, ``amos_0501`` and above MRI."""
    match = CASE.match(case_id)
    if match is None:
        raise Seg2MedError(f"AMOS22 case '{case_id}' is not named amos_NNNN")
    return "ct" if int(match.group(1)) <= MAX_CT_ID else "mr"


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_file() and CASE.match(strip_ending(p.name))), key=lambda p: natural_key(p.name))


def detect(root: Path) -> bool:
    """``imagesTr/amos_NNNN.nii.gz`` next to ``labelsTr``, or a ``dataset.json`` whose name says AMOS."""
    if not root.is_dir():
        return False
    if _images(root / "imagesTr") and (root / "labelsTr").is_dir():
        return True
    meta = root / "dataset.json"
    if meta.is_file() and (root / "imagesTr").is_dir():
        try:
            return "amos" in str(read_dataset_json(meta, TITLE).get("name", "")).lower()
        except Seg2MedError:
            return False
    return False


def label_table(meta: dict, path: Path) -> tuple[tuple[int, str], ...]:
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise Seg2MedError(f"AMOS22 file '{path}' has no 'labels' table")
    try:
        table = sorted((int(k), str(v)) for k, v in labels.items())
    except ValueError:
        raise Seg2MedError(f"AMOS22 file '{path}': 'labels' keys must be ids (\"1\": \"spleen\")") from None
    return tuple(table)


def cases(root: Path, options: LayoutOptions) -> list[CaseSpec]:
    meta_path = root / "dataset.json"
    meta = read_dataset_json(meta_path, TITLE)
    table = label_table(meta, meta_path)
    found: list[tuple[str, Path, Path, str]] = []
    for images, labels, split in FOLDERS:
        for image in _images(root / images):
            case_id = strip_ending(image.name)
            label = next((root / labels / f"{case_id}{e}" for e in (".nii.gz", ".nii") if (root / labels / f"{case_id}{e}").is_file()), None)
            if label is None:
                if split == "test":
                    continue  # the challenge's test images come without labels
                raise Seg2MedError(f"AMOS22 case '{case_id}' ('{image}') has no label file {labels}/{case_id}.nii.gz")
            found.append((case_id, image, label, split))
    if not found:
        raise Seg2MedError(f"AMOS22 dataset '{root}' has no labelled case (imagesTr/amos_NNNN.nii.gz + labelsTr/)")
    for _, labels, _ in FOLDERS:
        images = labels.replace("labels", "images")
        for label in _images(root / labels):
            if not (root / images / label.name).is_file():
                raise Seg2MedError(f"AMOS22 label '{label}' has no image {images}/{label.name}")
    available = tuple(m for m in ("ct", "mr") if any(modality_of(c[0]) == m for c in found))
    modality = check_modality(options, available, TITLE, root)
    no_conversion(options, modality, TITLE)
    label_set = "total_mr" if modality == "mr" else "total"
    return [
        CaseSpec(case_id, image, label, None, split, f"{NAME}-{modality}", label_table=table, label_set=label_set)
        for case_id, image, label, split in found
        if modality_of(case_id) == modality
    ]
