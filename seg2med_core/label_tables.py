"""Label tables (id → name files that come with a label map) and other datasets' label schemes.

A label map numbered differently from TotalSegmentator is read through its id → name table and mapped
onto a TotalSegmentator label set *by name*:

* :func:`read_label_table` reads CSV (``id,name``; or any header with an id column such as ``id``,
  ``label``, ``value``, ``LabelValue`` and a name column such as ``name``, ``structure``, ``label_name``,
  as in ``structures.csv`` of the LIDC example: ``group,original_idx,structure,id``), JSON
  (``{"1": "spleen"}``, ``{"spleen": 1}``, MSD / nnU-Net ``dataset.json`` with a ``labels`` object, or a
  list of ``{"id", "name"}``), ITK-SNAP label description files (``IDX R G B A VIS MSH "LABEL"``) and
  3D Slicer colour tables (``.ctbl`` / ``.txt``: ``id name r g b a``; Slicer's ``.csv`` colour tables
  go through the CSV reader).
* :func:`match_class_name` finds the class of a label set a name means: case, spaces, hyphens and slashes
  do not count, ``left kidney`` / ``kidney left`` / ``Kidney_Left`` all mean ``kidney_left``
  (``left rib 1`` means ``rib_left_1``), plus the few aliases of ``data/label_schemes/aliases.json``.
* Label schemes of public datasets and models (``data/label_schemes/*.json``, one per scheme, each with its
  source): ids, the dataset's own names, and the ``total`` class each one maps to (``null``: no counterpart).
  :func:`load_scheme` reads one; :func:`scheme_names` lists them.

Nothing here reads images: ``io.read_segmentation`` and :func:`relabel` apply the mapping to label arrays.
"""

from __future__ import annotations

import csv
import io as _io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import Seg2MedError

InfoFn = Callable[[str], None]
#: How many offending ids/names a message lists before "(+N more)".
LIST_LIMIT = 12
_ID_COLUMNS = ("id", "label_id", "labelid", "label_value", "labelvalue", "value", "label", "index", "idx", "key")
_NAME_COLUMNS = ("name", "structure", "label_name", "labelname", "class", "class_name", "segment", "description", "label")
_SIDES = ("left", "right")
_ITKSNAP_LINE = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([0-9.eE+-]+)\s+(\d+)\s+(\d+)\s+"(.*)"\s*$')


def few(items: list, limit: int = LIST_LIMIT) -> str:
    """``1, 2, 3`` or ``1, 2, ... (+N more)``: every item up to ``limit``, then a count."""
    head = ", ".join(str(x) for x in items[:limit])
    return head + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


# ------------------------------------------------------------------------------------------ names
def normalise_name(name: str) -> str:
    """``"Kidney - Left"`` → ``kidney_left``: lower case, runs of spaces/hyphens/slashes/dots → one ``_``."""
    return re.sub(r"[\s\-/.,()]+", "_", str(name).strip().lower()).strip("_")


def _side_variants(norm: str) -> list[str]:
    """``left_rib_1`` → [``rib_1_left``, ``rib_left_1``]; ``kidney_left`` → [``left_kidney``] and so on."""
    parts = norm.split("_")
    out: list[str] = []
    for side in _SIDES:
        if side in parts and len(parts) > 1:
            rest = [p for p in parts if p != side]
            out.append("_".join(rest + [side]))  # side last: kidney_left
            out.append("_".join(rest[:1] + [side] + rest[1:]))  # side second: rib_left_1
            out.append("_".join([side] + rest))  # side first
    return out


@lru_cache(maxsize=1)
def _aliases() -> dict[str, str]:
    text = resources.files("seg2med_core").joinpath("data/label_schemes/aliases.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    return {normalise_name(alias): target for target, names in doc["aliases"].items() for alias in names}


def match_class_name(name: str, known: set[str] | frozenset[str]) -> str | None:
    """The class in ``known`` that ``name`` means (see the module docstring), or None."""
    norm = normalise_name(name)
    for candidate in [norm, *_side_variants(norm)]:
        if candidate in known:
            return candidate
        alias = _aliases().get(candidate)
        if alias in known:
            return alias
    lower = {k.lower(): k for k in known}  # vertebrae_L1 and friends: case differs
    for candidate in [norm, *_side_variants(norm)]:
        if candidate in lower:
            return lower[candidate]
    return None


# ------------------------------------------------------------------------------------------ tables
def _as_id(text: object, path: Path, where: str) -> int:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise Seg2MedError(f"label table '{path}' {where}: id {str(text).strip()!r} is not a number") from None
    if value != int(value) or value < 0:
        raise Seg2MedError(f"label table '{path}' {where}: id {str(text).strip()!r} is not a non-negative integer")
    return int(value)


def _add(table: dict[int, str], label_id: int, name: str, path: Path, where: str) -> None:
    name = str(name).strip()
    if not name:
        raise Seg2MedError(f"label table '{path}' {where}: id {label_id} has an empty name")
    if label_id in table and table[label_id] != name:
        raise Seg2MedError(f"label table '{path}' {where}: id {label_id} is named twice ({table[label_id]!r} and {name!r})")
    table[label_id] = name


def _read_csv(text: str, path: Path) -> dict[int, str]:
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = [r for r in csv.reader(_io.StringIO(text), dialect) if r and any(c.strip() for c in r)
            and not r[0].lstrip().startswith("#")]
    if not rows:
        raise Seg2MedError(f"label table '{path}' has no rows")
    header = [normalise_name(c) for c in rows[0]]
    first_is_id = bool(re.fullmatch(r"\s*\d+\s*", rows[0][0]))
    if first_is_id:  # no header: id, name
        id_col, name_col, body, start = 0, 1, rows, 1
    else:
        id_col = next((header.index(c) for c in _ID_COLUMNS if c in header), None)
        name_col = next((header.index(c) for c in _NAME_COLUMNS if c in header and header.index(c) != id_col), None)
        if id_col is None or name_col is None:
            raise Seg2MedError(f"label table '{path}' needs an id column and a name column (header: {', '.join(rows[0])}); "
                               "e.g. 'id,name'")
        body, start = rows[1:], 2
    table: dict[int, str] = {}
    for n, row in enumerate(body, start=start):
        if len(row) <= max(id_col, name_col):
            raise Seg2MedError(f"label table '{path}' line {n}: expected at least {max(id_col, name_col) + 1} columns")
        _add(table, _as_id(row[id_col], path, f"line {n}"), row[name_col], path, f"line {n}")
    return table


def _read_json(text: str, path: Path) -> dict[int, str]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Seg2MedError(f"label table '{path}' is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if isinstance(doc, dict) and isinstance(doc.get("labels"), (dict, list)):
        doc = doc["labels"]  # MSD / nnU-Net dataset.json, or a seg2med label scheme
    table: dict[int, str] = {}
    if isinstance(doc, list):
        for n, item in enumerate(doc):
            if not isinstance(item, dict) or "id" not in item or "name" not in item:
                raise Seg2MedError(f"label table '{path}' item {n}: expected an object with 'id' and 'name'")
            _add(table, _as_id(item["id"], path, f"item {n}"), item["name"], path, f"item {n}")
        return table
    if not isinstance(doc, dict) or not doc:
        raise Seg2MedError(f"label table '{path}' must hold an object of id -> name (or name -> id)")
    keys_are_ids = all(re.fullmatch(r"\s*\d+\s*", str(k)) for k in doc)
    for key, value in doc.items():
        if keys_are_ids:
            name = value.get("name") if isinstance(value, dict) else value
            if not isinstance(name, str):
                raise Seg2MedError(f"label table '{path}': id {key} has no name string")
            _add(table, _as_id(key, path, f"key {key!r}"), name, path, f"key {key!r}")
        else:
            if isinstance(value, list) and len(value) == 1:  # nnU-Net region lists such as "liver": [1]
                value = value[0]
            if not isinstance(value, int) or isinstance(value, bool):
                raise Seg2MedError(f"label table '{path}': {key!r} maps to {value!r}, not an integer id")
            _add(table, _as_id(value, path, f"key {key!r}"), key, path, f"key {key!r}")
    return table


def _read_lines(text: str, path: Path) -> dict[int, str]:
    """ITK-SNAP label descriptions (quoted label names) or 3D Slicer colour tables (``id name r g b a``)."""
    table: dict[int, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if '"' in stripped:
            m = _ITKSNAP_LINE.match(stripped)
            if not m:
                raise Seg2MedError(f"label table '{path}' line {n}: not an ITK-SNAP label line "
                                   '(IDX R G B A VIS MSH "LABEL")')
            _add(table, int(m.group(1)), m.group(8), path, f"line {n}")
            continue
        tokens = stripped.split()
        if len(tokens) < 2:
            raise Seg2MedError(f"label table '{path}' line {n}: expected 'id name [r g b a]'")
        name = " ".join(tokens[1:-4]) if len(tokens) >= 6 else tokens[1]
        _add(table, _as_id(tokens[0], path, f"line {n}"), name, path, f"line {n}")
    return table


def read_label_table(path: str | Path) -> dict[int, str]:
    """``{id: name}`` from a CSV, JSON, ITK-SNAP or 3D Slicer label table (id 0, the background, is left out).

    The format follows the suffix (``.json``, ``.csv``/``.tsv``, ``.ctbl``); ``.txt`` and other files are
    ITK-SNAP or Slicer tables, or CSV when their first line has commas. Errors name the file and the line.
    """
    p = Path(path)
    if not p.is_file():
        raise Seg2MedError(f"label table '{p}' does not exist" if not p.exists() else f"label table '{p}' is not a file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise Seg2MedError(f"label table '{p}' is not a text file (UTF-8)") from None
    name = p.name.lower()
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    if name.endswith(".json"):
        table = _read_json(text, p)
    elif name.endswith((".csv", ".tsv")) or ("," in first and '"' not in first) or "\t" in first and not name.endswith(".ctbl"):
        table = _read_csv(text, p)
    else:
        table = _read_lines(text, p)
    table.pop(0, None)
    if not table:
        raise Seg2MedError(f"label table '{p}' names no label (only the background, or nothing)")
    return table


# ------------------------------------------------------------------------------------------ schemes
@dataclass(frozen=True)
class LabelScheme:
    """Another dataset's or model's labels: ``{id: own name}``, ``{id: total class or None}`` and where from."""

    name: str
    title: str
    source: str
    names: dict[int, str]
    to_total: dict[int, str | None]
    notes: dict[int, str] = field(default_factory=dict)
    #: ids whose class covers both sides (KiTS ``kidney``): split into these two ``total`` classes by side
    split_by_side: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: id that marks the body outside every other class (MAISI's 200), if the scheme has one
    body_id: int | None = None


def _scheme_dir() -> "resources.abc.Traversable":  # type: ignore[name-defined]
    return resources.files("seg2med_core").joinpath("data/label_schemes")


@lru_cache(maxsize=1)
def scheme_names() -> tuple[str, ...]:
    """Names of the shipped label schemes (``amos``, ``btcv``, ``maisi``, ...), sorted."""
    return tuple(sorted(f.name[: -len(".json")] for f in _scheme_dir().iterdir()
                        if f.name.endswith(".json") and f.name != "aliases.json"))


@lru_cache(maxsize=None)
def load_scheme(name: str) -> LabelScheme:
    """One shipped scheme from ``data/label_schemes/NAME.json`` (checked against the ``total`` label set)."""
    from .labels import names_for

    if name not in scheme_names():
        raise Seg2MedError(f"unknown label scheme '{name}' (choose one of: {', '.join(scheme_names())})")
    doc = json.loads(_scheme_dir().joinpath(f"{name}.json").read_text(encoding="utf-8"))
    total = set(names_for("total").values())
    names: dict[int, str] = {}
    to_total: dict[int, str | None] = {}
    notes: dict[int, str] = {}
    split: dict[int, tuple[str, str]] = {}
    for key, entry in doc["labels"].items():
        i = int(key)
        names[i] = entry["name"]
        target = entry.get("total")
        if isinstance(target, list):  # [right, left]: one class for both sides
            if len(target) != 2 or not set(target) <= total:
                raise Seg2MedError(f"label scheme '{name}': id {i} splits into {target}, not two 'total' classes")
            split[i] = (target[0], target[1])
            target = None
        elif target is not None and target not in total:
            raise Seg2MedError(f"label scheme '{name}': id {i} maps to '{target}', which is not a 'total' class")
        to_total[i] = target
        if entry.get("note"):
            notes[i] = entry["note"]
    body = doc.get("body_id")
    return LabelScheme(doc["name"], doc["title"], doc["source"], names, to_total, notes, split,
                       int(body) if body is not None else None)


# ------------------------------------------------------------------------------------------ mapping
@dataclass
class TableReport:
    """What relabelling through a table did: mapped ``{src id: (src name, dst name)}``, the present ids
    that have no counterpart (dropped, or the error), and table entries without counterpart not present."""

    source: str
    label_set: str
    mapped: dict[int, tuple[str, str]] = field(default_factory=dict)
    dropped: dict[int, str] = field(default_factory=dict)
    dropped_voxels: int = 0
    absent_unmapped: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable report lines (for ``info``)."""
        out = [f"{self.source}: {len(self.mapped)} label ids mapped by name onto '{self.label_set}'"]
        if self.dropped:
            items = [f"{i} ({n})" if n else str(i) for i, n in sorted(self.dropped.items())]
            out.append(f"dropped label ids without a class in '{self.label_set}': {few(items)} "
                       f"({self.dropped_voxels} voxels set to 0)")
        if self.absent_unmapped:
            items = [f"{i} ({n})" for i, n in sorted(self.absent_unmapped.items())]
            out.append(f"table entries without a class in '{self.label_set}' (not present in the label map): {few(items)}")
        out.extend(self.notes)
        return out


def table_to_label_set(table: Mapping[int, str], label_set: str) -> dict[int, str | None]:
    """``{table id: class of label_set or None}`` by name (see :func:`match_class_name`)."""
    from .labels import names_for

    known = frozenset(names_for(label_set).values())
    return {i: match_class_name(n, known) for i, n in table.items()}


def guess_label_set_for_table(table: Mapping[int, str]) -> str:
    """The TotalSegmentator label set whose class names the table's names match best."""
    from .labels import _GUESS_ORDER, names_for

    scores = {s: sum(v is not None for v in table_to_label_set(table, s).values()) for s in _GUESS_ORDER}
    best = max(_GUESS_ORDER, key=lambda s: scores[s])
    if scores[best] == 0:
        raise Seg2MedError(f"no supported label set knows any of these class names: {few(sorted(set(table.values())), 5)}")
    return best


def split_sides(mask: np.ndarray, direction: tuple[float, ...], origin: tuple[float, ...], spacing: tuple[float, ...]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Split a (z, y, x) mask covering both sides into (right, left) by connected component: a component
    goes to the patient's left when its centroid lies left (LPS +x) of the field of view's centre."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    right = np.zeros(mask.shape, bool)
    left = np.zeros(mask.shape, bool)
    if n == 0:
        return right, left
    d = np.array(direction, float).reshape(3, 3)
    sp, org = np.array(spacing, float), np.array(origin, float)
    shape_xyz = np.array(mask.shape[::-1], float)
    centre_x = (org + d @ (sp * (shape_xyz - 1) / 2))[0]
    centroids = ndimage.center_of_mass(mask, lab, range(1, n + 1))
    for k, c in enumerate(centroids, start=1):
        x = (org + d @ (sp * np.array(c[::-1])))[0]
        (left if x > centre_x else right)[lab == k] = True
    return right, left


# ------------------------------------------------------------------------------------------ export
@dataclass
class ExportReport:
    """Classes of a ``total`` map written in another scheme's ids: mapped ``{total class: scheme name}``,
    the classes with no counterpart (set to 0) and how many unlabelled body voxels got the body label."""

    scheme: str
    mapped: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    unmapped_voxels: int = 0
    body_voxels: int = 0

    def summary(self) -> str:
        text = f"total -> {self.scheme}: {len(self.mapped)} classes mapped, {len(self.unmapped)} without a counterpart"
        if self.unmapped:
            text += f" ({few(self.unmapped, 10)}; {self.unmapped_voxels} voxels set to 0)"
        if self.body_voxels:
            text += f"; {self.body_voxels} body voxels outside every class labelled body"
        return text


def export_to_scheme(arr: np.ndarray, scheme: LabelScheme, body: np.ndarray | None = None
                     ) -> tuple[np.ndarray, ExportReport]:
    """A ``total`` label array (tissue classes at 201-203 allowed) in ``scheme``'s ids, by name.

    Each ``total`` class goes to the scheme id that maps onto it (the lowest when several do); tissue
    classes and, when ``body`` (bool, same shape) is given, every unlabelled body voxel get the scheme's body
    label (MAISI: 200) when it has one. Classes without a counterpart become 0 and are reported.
    """
    from .labels import TISSUE_OFFSET, names_for

    total = names_for("total")
    reverse: dict[str, int] = {}
    for i in sorted(scheme.names):
        target = scheme.to_total.get(i)
        for t in ([target] if target else []) + list(scheme.split_by_side.get(i, ())):
            reverse.setdefault(t, i)
    arr = np.asarray(arr)
    present = [int(i) for i in np.unique(arr) if i != 0]
    unknown = [i for i in present if i not in total]
    if unknown:
        raise Seg2MedError(f"label ids {few(unknown)} are not in label set 'total'")
    lut = np.zeros(max(present, default=0) + 1, dtype=np.uint16)
    report = ExportReport(scheme.name)
    for i in present:
        name = total[i]
        if i > TISSUE_OFFSET and scheme.body_id is not None:
            lut[i] = scheme.body_id
            report.mapped[name] = scheme.names[scheme.body_id]
        elif name in reverse:
            lut[i] = reverse[name]
            report.mapped[name] = scheme.names[reverse[name]]
        else:
            report.unmapped.append(name)
    out = lut[arr.astype(np.int64)]
    report.unmapped_voxels = int(np.count_nonzero((out == 0) & (arr != 0)))
    if body is not None and scheme.body_id is not None:
        fill = np.asarray(body, bool) & (out == 0) & (arr == 0)
        out[fill] = scheme.body_id
        report.body_voxels = int(fill.sum())
    return out, report
