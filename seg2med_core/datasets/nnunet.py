"""nnU-Net raw datasets (``nnunet``): ``imagesTr/<case>_0000.nii.gz`` + ``labelsTr/<case>.nii.gz`` + ``dataset.json``.

Layout, as documented in nnU-Net's ``documentation/dataset_format.md`` (Isensee et al., Nature Methods
2021; https://github.com/MIC-DKFZ/nnUNet)::

    Dataset005_Prostate/
    ├── dataset.json    # v2: "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"
    ├── imagesTr/       # <case>_0000<file_ending>, one file per input channel (_0001, ...)
    ├── imagesTs/       # optional, no labels (not used here)
    └── labelsTr/       # <case><file_ending>

nnU-Net v1 / Medical Segmentation Decathlon style ``dataset.json`` (``"modality": {"0": "CT"}``,
``"labels": {"0": "background", "1": "liver"}``) is read too. Channel 0 is the image; its channel name
decides the modality (``CT`` -> ct, anything else -> mr). The label table maps classes by name onto
``total`` / ``total_mr`` (:mod:`.labelmap`); a dataset labelled with TotalSegmentator's own names maps
completely. Raw nnU-Net datasets carry no split (nnU-Net's cross-validation folds live in the
preprocessed folder), so cases get none.
"""

from __future__ import annotations

from pathlib import Path

from seg2med_core.errors import Seg2MedError
from seg2med_core.training.dataset import CaseSpec

from .base import LayoutOptions, check_modality, natural_key, no_conversion, read_dataset_json

NAME = "nnunet"
TITLE = "nnU-Net"
EXPECTED = "imagesTr/<case>_0000.nii.gz + labelsTr/<case>.nii.gz + dataset.json with channel_names and labels"


def _ending(meta: dict) -> str:
    ending = meta.get("file_ending", ".nii.gz")
    return ending if isinstance(ending, str) and ending.startswith(".") else ".nii.gz"


def detect(root: Path) -> bool:
    """``dataset.json`` with ``channel_names`` (v2) or ``modality`` (v1) and ``imagesTr/*_0000.*``."""
    meta = root / "dataset.json"
    if not (root.is_dir() and meta.is_file() and (root / "imagesTr").is_dir()):
        return False
    try:
        data = read_dataset_json(meta, TITLE)
    except Seg2MedError:
        return False
    if "channel_names" not in data and "modality" not in data:
        return False
    return any(p.name.endswith(f"_0000{_ending(data)}") for p in (root / "imagesTr").iterdir())


def channel_modality(meta: dict, path: Path) -> str:
    channels = meta.get("channel_names", meta.get("modality"))
    if not isinstance(channels, dict) or "0" not in channels:
        raise Seg2MedError(f"nnU-Net file '{path}' has no channel 0 in 'channel_names' (or 'modality')")
    return "ct" if str(channels["0"]).strip().lower() == "ct" else "mr"


def label_table(meta: dict, path: Path) -> tuple[tuple[int, str], ...]:
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise Seg2MedError(f"nnU-Net file '{path}' has no 'labels' table")
    pairs: list[tuple[int, str]] = []
    for key, value in labels.items():
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            pairs.append((value, str(key)))  # v2: name -> id
            continue
        elif isinstance(value, (list, tuple)):
            raise Seg2MedError(f"nnU-Net file '{path}': label '{key}' is a region {list(value)}; region-based labels are not supported")
        elif isinstance(value, str) and str(key).strip().isdigit():
            pairs.append((int(key), value))  # v1 / MSD: "id" -> name
            continue
        raise Seg2MedError(f"nnU-Net file '{path}': label entry {key!r}: {value!r} is neither name -> id nor id -> name")
    return tuple(sorted(pairs))


def cases(root: Path, options: LayoutOptions) -> list[CaseSpec]:
    meta_path = root / "dataset.json"
    meta = read_dataset_json(meta_path, TITLE)
    ending = _ending(meta)
    modality = check_modality(options, (channel_modality(meta, meta_path),), f"{TITLE} ({root.name})", root)
    no_conversion(options, modality, TITLE)
    table = label_table(meta, meta_path)
    label_set = "total_mr" if modality == "mr" else "total"
    images = sorted((p for p in (root / "imagesTr").iterdir() if p.name.endswith(f"_0000{ending}")), key=lambda p: natural_key(p.name))
    if not images:
        raise Seg2MedError(f"nnU-Net dataset '{root}' has no imagesTr/<case>_0000{ending}")
    labels_dir = root / "labelsTr"
    out: list[CaseSpec] = []
    for image in images:
        case_id = image.name[: -len(f"_0000{ending}")]
        label = labels_dir / f"{case_id}{ending}"
        if not label.is_file():
            raise Seg2MedError(f"nnU-Net case '{case_id}' ('{image}') has no label file labelsTr/{case_id}{ending}")
        out.append(CaseSpec(case_id, image, label, None, None, root.name, label_table=table, label_set=label_set))
    known = {c.case_id for c in out}
    if labels_dir.is_dir():
        for label in sorted(labels_dir.iterdir()):
            if label.name.endswith(ending) and label.name[: -len(ending)] not in known:
                raise Seg2MedError(f"nnU-Net label '{label}' has no image imagesTr/{label.name[: -len(ending)]}_0000{ending}")
    return out
