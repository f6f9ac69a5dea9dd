"""TotalSegmentator label sets, merging of organ + tissue maps, label-set guessing and CT<->MR conversion.

Label sets come from ``totalsegmentator.map_to_binary.class_map`` when that package is importable (it
imports nothing heavy), otherwise from the vendored ``data/label_sets.json`` written by
``tools/vendor_label_sets.py``. Tissue-type classes (subcutaneous_fat, torso_fat, skeletal_muscle) are
merged into a main segmentation as ``TISSUE_OFFSET + id`` (201, 202, 203), as in the seg2med paper.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from .errors import Seg2MedError

LABEL_SETS: tuple[str, ...] = ("total", "total_v1", "total_v3", "total_mr", "tissue_types", "tissue_types_mr")
TISSUE_OFFSET = 200
#: Which tissue-type set is merged into each main set (tissue_types_mr for MR, tissue_types for CT).
TISSUE_SET_FOR: dict[str, str] = {
    "total": "tissue_types",
    "total_v1": "tissue_types",
    "total_v3": "tissue_types",
    "total_mr": "tissue_types_mr",
}
CT_SETS: tuple[str, ...] = ("total", "total_v1", "total_v3")
MR_SETS: tuple[str, ...] = ("total_mr",)
# Preference when several sets fit equally well (the most common TotalSegmentator outputs first).
_GUESS_ORDER: tuple[str, ...] = ("total", "total_mr", "total_v1", "total_v3", "tissue_types", "tissue_types_mr")


def _check_name(name: str) -> None:
    if name not in LABEL_SETS:
        from .label_tables import scheme_names

        raise Seg2MedError(f"unknown label set '{name}' (choose one of: {', '.join(LABEL_SETS)}; "
                           f"or a label scheme mapped onto total: {', '.join(scheme_names())})")


@lru_cache(maxsize=1)
def _vendored() -> dict[str, dict[int, str]]:
    text = resources.files("seg2med_core").joinpath("data/label_sets.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    return {name: {int(k): v for k, v in ids.items()} for name, ids in doc["label_sets"].items()}


@lru_cache(maxsize=None)
def _label_set(name: str) -> tuple[tuple[int, str], ...]:
    try:
        from totalsegmentator.map_to_binary import class_map
    except ImportError:
        class_map = {}
    if name not in class_map:  # package absent, or an older version without this set
        return tuple(sorted(_vendored()[name].items()))
    return tuple(sorted((int(k), str(v)) for k, v in class_map[name].items()))


def get_label_set(name: str) -> dict[int, str]:
    """Return ``{id: class name}`` of a TotalSegmentator label set (a fresh dict the caller may change)."""
    _check_name(name)
    return dict(_label_set(name))


def names_for(label_set: str, include_tissue: bool = True) -> dict[int, str]:
    """``{id: name}`` of a label set; for main sets optionally with the tissue classes at ``200 + id``."""
    names = get_label_set(label_set)
    if include_tissue and label_set in TISSUE_SET_FOR:
        for tid, tname in get_label_set(TISSUE_SET_FOR[label_set]).items():
            names[TISSUE_OFFSET + tid] = tname
    return names


def all_class_names() -> list[str]:
    """Every class name of every supported label set (sorted, unique): the names tissue tables must cover."""
    return sorted({n for s in LABEL_SETS for n in get_label_set(s).values()})


def class_names_to_ids(names: Iterable[str], label_set: str) -> dict[str, int]:
    """Map class names to ids of ``label_set`` (tissue names to 200+id); unknown names raise Seg2MedError."""
    lookup = {v: k for k, v in names_for(label_set).items()}
    names = list(names)
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise Seg2MedError(
            f"class names not in label set '{label_set}': {', '.join(sorted(unknown)[:8])}"
            + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")
        )
    return {n: lookup[n] for n in names}


def merge_segmentations(main: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Merge a tissue-type map into a main map: tissue id t fills voxels where ``main == 0`` as ``200 + t``.

    Organs win over tissue (the paper's merge of ``total_mr`` and ``tissue_types_mr``). Returns uint16.
    """
    if main.shape != tissue.shape:
        raise Seg2MedError(f"main segmentation shape {main.shape} differs from tissue segmentation shape {tissue.shape}")
    tissue = np.asarray(tissue)
    if tissue.size and (tissue.min() < 0 or tissue.max() >= TISSUE_OFFSET):
        bad = int(tissue.max() if tissue.max() >= TISSUE_OFFSET else tissue.min())
        raise Seg2MedError(f"tissue segmentation has label {bad}; expected ids 0..{TISSUE_OFFSET - 1}")
    out = np.asarray(main).astype(np.uint16, copy=True)
    fill = (out == 0) & (tissue > 0)
    out[fill] = tissue[fill].astype(np.uint16) + TISSUE_OFFSET
    return out


def _name_score(label_set: str, names: Mapping[int, str]) -> tuple[int, int]:
    """(number of id->name pairs matching exactly, number of names known to the set)."""
    ref = names_for(label_set)
    known = set(ref.values())
    exact = sum(1 for i, n in names.items() if ref.get(int(i)) == n)
    return exact, sum(1 for n in names.values() if n in known)


def guess_label_set(ids: set[int], names: Mapping[int, str] | None = None) -> str:
    """Guess the label set of a segmentation from its names (preferred) or its label ids.

    With names (e.g. from the NIfTI header): the set whose id->name pairs agree best wins. With ids only:
    a set must contain every id; ids above 104 mean ``total`` (v2); tissue ids 201-203 with all other ids
    <= 50 mean a merged ``total_mr`` map; otherwise ``total`` (TotalSegmentator's default task). Pass the
    label set explicitly when this guess is wrong.
    """
    ids = {int(i) for i in ids if int(i) != 0}
    if names:
        names = {int(k): v for k, v in names.items() if int(k) != 0}
        scores = {s: _name_score(s, names) for s in _GUESS_ORDER}
        best = max(_GUESS_ORDER, key=lambda s: scores[s])  # max keeps the first of equal scores
        if scores[best][1] == 0:
            raise Seg2MedError(
                f"no supported label set knows these class names: {', '.join(sorted(names.values())[:5])}"
            )
        return best
    fitting = [s for s in _GUESS_ORDER if s in TISSUE_SET_FOR and ids <= set(names_for(s))]
    if not fitting:
        raise Seg2MedError(f"label ids {sorted(ids)[:8]} fit no supported label set ({', '.join(LABEL_SETS)})")
    main_ids = {i for i in ids if i < TISSUE_OFFSET}
    if "total_mr" in fitting and main_ids and max(main_ids) <= 50 and ids - main_ids:
        return "total_mr"
    return fitting[0]


# ----------------------------------------------------------------------------------------------------
# Conversion between CT (total, total_v1, total_v3) and MR (total_mr) label sets


@dataclass
class ConversionReport:
    """Which source classes present in the array were mapped (src name -> dst name) and which were not.

    Unmapped classes become 0 (unlabelled; inside the body they get the ``body`` tissue in priors).
    """

    mapped: dict[str, str]
    unmapped: list[str]
    unmapped_voxels: int = 0
    src: str = ""
    dst: str = ""
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs/CLI output."""
        text = f"{self.src} -> {self.dst}: {len(self.mapped)} classes mapped, {len(self.unmapped)} unmapped"
        if self.unmapped:
            text += f" ({', '.join(self.unmapped[:10])}{', ...' if len(self.unmapped) > 10 else ''};"
            text += f" {self.unmapped_voxels} voxels set to 0)"
        return text


@lru_cache(maxsize=1)
def _conversion_doc() -> dict:
    text = resources.files("seg2med_core").joinpath("data/label_conversion.json").read_text(encoding="utf-8")
    return json.loads(text)


def conversion_table(src: str, dst: str) -> dict[str, str | None]:
    """Name map ``src class -> dst class`` (None: no counterpart) for every class of ``src`` incl. tissue.

    CT->MR uses ``ct_to_mr``; MR->CT uses ``mr_to_ct[dst]`` (many-to-one reversed to a representative class
    with the same tissue); CT->CT maps equal names plus ``ct_to_ct`` aliases. Tissue classes keep their names.
    """
    _check_name(src)
    _check_name(dst)
    doc = _conversion_doc()
    dst_names = set(names_for(dst).values())
    if src in CT_SETS and dst in MR_SETS:
        explicit: Mapping[str, str | None] = doc["ct_to_mr"]
    elif src in MR_SETS and dst in CT_SETS:
        explicit = doc["mr_to_ct"][dst]
    elif src in CT_SETS and dst in CT_SETS:
        explicit = doc["ct_to_ct"].get(dst, {})
    elif src == dst:
        explicit = {}
    else:
        raise Seg2MedError(f"no label conversion from '{src}' to '{dst}' (supported: total/total_v1/total_v3 <-> total_mr)")
    table: dict[str, str | None] = {}
    for name in names_for(src).values():
        if name in explicit:
            target = explicit[name]
        else:
            target = name if name in dst_names else None
        if target is not None and target not in dst_names:
            raise Seg2MedError(f"label_conversion.json maps '{name}' to '{target}', which is not in '{dst}'")
        table[name] = target
    return table


def convert_labels(arr: np.ndarray, src: str, dst: str) -> tuple[np.ndarray, ConversionReport]:
    """Convert a label array from label set ``src`` to ``dst`` by class name (see ``conversion_table``).

    Ids >= 200 are tissue classes and are carried over when both sets have them. Returns a uint16 array and
    a report of the classes present in ``arr``.
    """
    table = conversion_table(src, dst)
    src_names = names_for(src)
    dst_ids = {v: k for k, v in names_for(dst).items()}
    present = [int(i) for i in np.unique(arr) if i != 0]
    unknown = [i for i in present if i not in src_names]
    if unknown:
        raise Seg2MedError(f"label ids {unknown[:8]} are not in label set '{src}'")
    lut = np.zeros(max(present, default=0) + 1, dtype=np.uint16)
    mapped: dict[str, str] = {}
    unmapped: list[str] = []
    for i in present:
        target = table[src_names[i]]
        if target is None:
            unmapped.append(src_names[i])
        else:
            mapped[src_names[i]] = target
            lut[i] = dst_ids[target]
    out = lut[np.asarray(arr, dtype=np.int64)]
    unmapped_voxels = int(np.count_nonzero((out == 0) & (np.asarray(arr) != 0)))
    return out, ConversionReport(mapped, unmapped, unmapped_voxels, src, dst)
