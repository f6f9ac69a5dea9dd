"""Tissue tables (editable CSV data files) and overlap resolution for per-structure masks.

``data/ct_tissue_table.csv`` (``name,hu,source``) and ``data/mr_tissue_table.csv``
(``name,t1_ms,t2_ms,t2star_ms,pd,fat_fraction,source``) hold one row per class name of every supported
label set plus ``body`` (unlabelled soft tissue inside the body contour) and ``background`` (air).
Values come from the seg2med authors' published tables where they exist; the ``source`` column says
where every other value comes from (T2* values and fat fractions are approximate, 1.5 T). Users copy a
CSV, edit it and pass it as ``--tissue-table``; it is validated here (missing names, non-numbers).

CT contrast phases (``--phase``): ``native`` is ``ct_tissue_table.csv``; ``arterial`` and ``portal-venous``
are ``ct_tissue_table_arterial.csv`` / ``ct_tissue_table_portal_venous.csv``, the same rows with the
enhancing tissues (vessels, heart, liver, spleen, kidneys, pancreas, ...) at typical adult values of that
phase (sources in their ``source`` column). They are ordinary tables: copy one, edit it, pass it as
``--tissue-table``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import Seg2MedError
from .labels import all_class_names

CT_COLUMNS: tuple[str, ...] = ("hu",)
MR_COLUMNS: tuple[str, ...] = ("t1_ms", "t2_ms", "t2star_ms", "pd")
MR_OPTIONAL: dict[str, float] = {"fat_fraction": 0.0}
EXTRA_NAMES: tuple[str, ...] = ("body", "background")


@dataclass(frozen=True)
class MRTissue:
    """MR properties of one tissue: relaxation times in ms, proton density (relative, 0..1), fat fraction."""

    t1_ms: float
    t2_ms: float
    t2star_ms: float
    pd: float
    fat_fraction: float = 0.0


def required_names() -> list[str]:
    """Names every tissue table must contain: all classes of all label sets, ``body`` and ``background``."""
    return all_class_names() + list(EXTRA_NAMES)


def _read_rows(path: str | Path | None, default: str) -> tuple[str, list[dict[str, str]], list[str]]:
    """Return (display name, rows, header) of a user CSV or of the packaged default."""
    if path is None:
        label = f"packaged {default}"
        text = resources.files("seg2med_core").joinpath(f"data/{default}").read_text(encoding="utf-8")
    else:
        label = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise Seg2MedError(f"tissue table '{path}' does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise Seg2MedError(f"tissue table '{path}' cannot be read: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    return label, list(reader), header


def _parse(
    path: str | Path | None, default: str, columns: Iterable[str], optional: Mapping[str, float],
    required: Iterable[str] | None,
) -> dict[str, dict[str, float]]:
    label, rows, header = _read_rows(path, default)
    columns = list(columns)
    missing_cols = [c for c in ["name", *columns] if c not in header]
    if missing_cols:
        raise Seg2MedError(f"tissue table '{label}' lacks column(s) {', '.join(missing_cols)} (header: {','.join(header)})")
    out: dict[str, dict[str, float]] = {}
    for line, row in enumerate(rows, start=2):
        name = (row.get("name") or "").strip()
        if not name:
            raise Seg2MedError(f"tissue table '{label}' row {line} has an empty name")
        if name in out:
            raise Seg2MedError(f"tissue table '{label}' row {line}: name '{name}' appears twice")
        values: dict[str, float] = {}
        for col in columns + [c for c in optional if c in header]:
            raw = (row.get(col) or "").strip()
            try:
                value = float(raw)
            except ValueError:
                raise Seg2MedError(f"tissue table '{label}' row {line} ('{name}') column '{col}': '{raw}' is not a number") from None
            if not math.isfinite(value):
                raise Seg2MedError(f"tissue table '{label}' row {line} ('{name}') column '{col}': '{raw}' is not finite")
            values[col] = value
        for col, default_value in optional.items():
            values.setdefault(col, default_value)
        out[name] = values
    needed = required_names() if required is None else list(required)
    missing = [n for n in needed if n not in out]
    if missing:
        more = f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""
        raise Seg2MedError(f"tissue table '{label}' lacks class name(s): {', '.join(missing[:10])}{more}")
    return out


#: CT contrast phases and their packaged tables (``portal-venous`` is also accepted as ``portal_venous``).
CT_PHASES: dict[str, str] = {
    "native": "ct_tissue_table.csv",
    "arterial": "ct_tissue_table_arterial.csv",
    "portal-venous": "ct_tissue_table_portal_venous.csv",
}


def ct_phase_table(phase: str | None) -> str:
    """Packaged table file of a CT phase (``None`` = native); unknown phases raise :class:`Seg2MedError`."""
    key = "native" if phase is None else str(phase).strip().lower().replace("_", "-")
    if key not in CT_PHASES:
        raise Seg2MedError(f"unknown CT phase '{phase}' (choose one of: {', '.join(CT_PHASES)})")
    return CT_PHASES[key]


def load_ct_table(path: str | Path | None = None, required: Iterable[str] | None = None,
                  phase: str | None = None) -> dict[str, float]:
    """Read ``name -> HU`` from ``path`` (default: the packaged table of ``phase``, native when None);
    ``required`` names must be present (default: every supported class plus body/background)."""
    if path is not None and phase is not None:
        raise Seg2MedError("give either a CT phase or your own tissue table, not both (the table sets every value)")
    return {n: v["hu"] for n, v in _parse(path, ct_phase_table(phase), CT_COLUMNS, {}, required).items()}


def load_mr_table(path: str | Path | None = None, required: Iterable[str] | None = None) -> dict[str, MRTissue]:
    """Read ``name -> MRTissue`` from ``path`` (default: packaged). ``fat_fraction`` is optional (default 0).

    Relaxation times must be > 0, proton density >= 0 and fat fraction within [0, 1].
    """
    table: dict[str, MRTissue] = {}
    label = path if path is not None else "packaged mr_tissue_table.csv"
    for name, v in _parse(path, "mr_tissue_table.csv", MR_COLUMNS, MR_OPTIONAL, required).items():
        for col in ("t1_ms", "t2_ms", "t2star_ms"):
            if v[col] <= 0:
                raise Seg2MedError(f"tissue table '{label}' ('{name}') column '{col}': {v[col]:g} must be > 0 ms")
        if v["pd"] < 0:
            raise Seg2MedError(f"tissue table '{label}' ('{name}') column 'pd': {v['pd']:g} must be >= 0")
        if not 0.0 <= v["fat_fraction"] <= 1.0:
            raise Seg2MedError(f"tissue table '{label}' ('{name}') column 'fat_fraction': {v['fat_fraction']:g} is outside [0, 1]")
        table[name] = MRTissue(v["t1_ms"], v["t2_ms"], v["t2star_ms"], v["pd"], v["fat_fraction"])
    return table


def paint_by_volume(shape: tuple[int, ...], flat_indices: Mapping[str, np.ndarray], ids: Mapping[str, int]) -> np.ndarray:
    """Paint structures given as flat voxel indices into a uint16 label map, largest first.

    Smaller structures are painted last, so where masks overlap the smaller (usually inner) structure wins,
    e.g. a kidney cyst over its kidney or the spinal cord over a vertebra. Ties are broken by name.
    """
    out = np.zeros(int(np.prod(shape)), dtype=np.uint16)
    order = sorted(flat_indices, key=lambda n: (-len(flat_indices[n]), n))
    for name in order:
        out[flat_indices[name]] = ids[name]
    return out.reshape(shape)


def resolve_overlaps(masks: Mapping[str, np.ndarray], ids: Mapping[str, int] | None = None) -> np.ndarray:
    """Combine binary masks ``{name: bool array}`` into one uint16 label map, smaller structures winning.

    ``ids`` gives the label value per name (default: 1, 2, ... in the order of ``masks``).
    """
    if not masks:
        raise Seg2MedError("no masks to combine")
    ids = dict(ids) if ids is not None else {n: i for i, n in enumerate(masks, start=1)}
    shapes = {np.shape(m) for m in masks.values()}
    if len(shapes) != 1:
        raise Seg2MedError(f"masks have different shapes: {sorted(shapes)}")
    shape = shapes.pop()
    flat = {n: np.flatnonzero(np.asarray(m)) for n, m in masks.items()}
    return paint_by_volume(shape, flat, ids)
