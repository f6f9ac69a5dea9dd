"""Label maps numbered by a dataset's own id -> name table (AMOS, nnU-Net ``dataset.json``), mapped onto a
TotalSegmentator label set (``total`` for CT, ``total_mr`` for MR) by class name.

This is the small interface the dataset layouts use: :func:`map_names` turns an ``{id: name}`` table into
a look-up table of TotalSegmentator ids (names matched by :mod:`seg2med_core.label_tables`, with the
editable aliases of ``seg2med_core/data/label_schemes/aliases.json``); :func:`read_mapped_segmentation`
reads a label file with it. Classes without a counterpart are set to background (inside the body they get the prior's
``body`` value) and reported, as for CT <-> MR label conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from seg2med_core.errors import Seg2MedError


@dataclass
class NameMapping:
    """``lut[source id] = target id`` (0 for classes without counterpart); ``mapped``/``unmapped`` by name."""

    label_set: str
    lut: dict[int, int]
    mapped: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{len(self.mapped)} classes mapped onto '{self.label_set}'"
        if self.unmapped:
            text += f"; without counterpart (set to background): {', '.join(self.unmapped)}"
        return text


def map_names(names: Mapping[int, str], label_set: str) -> NameMapping:
    """Map a dataset's ``{id: name}`` table (background 0 ignored) onto ``label_set`` by class name, with the
    project's one name matcher (:func:`seg2med_core.label_tables.table_to_label_set`: case, spaces, hyphens,
    slashes and the left/right position do not count, plus ``data/label_schemes/aliases.json``)."""
    from seg2med_core.label_tables import table_to_label_set
    from seg2med_core.labels import names_for

    target = {name: i for i, name in names_for(label_set).items()}
    table = {int(i): str(n) for i, n in names.items() if int(i) != 0}
    resolved = table_to_label_set(table, label_set)
    mapping = NameMapping(label_set, {})
    for source_id, name in sorted(table.items()):
        cls = resolved.get(source_id)
        mapping.lut[source_id] = target[cls] if cls is not None else 0
        if cls is not None:
            mapping.mapped[name] = cls
        else:
            mapping.unmapped.append(name)
    if not mapping.mapped:
        raise Seg2MedError(f"no class of the label table ({', '.join(list(table.values())[:6])}) has a counterpart in '{label_set}'")
    return mapping


def read_mapped_segmentation(path: Path, names: Mapping[int, str], label_set: str):
    """Read label file ``path`` numbered by ``names`` and relabel it into ``label_set``.

    Returns ``(Segmentation, NameMapping)``. Errors (one line, naming the file): unreadable file,
    non-integer labels, ids missing from the table, nothing left after mapping."""
    import SimpleITK as sitk

    from seg2med_core.io import Segmentation
    from seg2med_core.labels import names_for

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise Seg2MedError(f"label file '{path}' cannot be read ({str(exc).strip().splitlines()[-1][:120]})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise Seg2MedError(f"label file '{path}' must be a 3D scalar image")
    arr = sitk.GetArrayFromImage(img)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise Seg2MedError(f"label file '{path}' has non-integer labels")
        arr = arr.astype(np.int64)
    ids = {int(i) for i in np.unique(arr) if i != 0}
    if not ids:
        raise Seg2MedError(f"label file '{path}' is empty (no labelled voxel)")
    mapping = map_names(names, label_set)
    unknown = sorted(ids - set(mapping.lut))
    if unknown:
        raise Seg2MedError(f"label file '{path}' has ids {unknown[:8]} that its dataset.json label table does not list")
    lut = np.zeros(max(max(ids), max(mapping.lut)) + 1, dtype=np.uint16)
    for source_id, target_id in mapping.lut.items():
        lut[source_id] = target_id
    out_arr = lut[np.clip(arr, 0, None).astype(np.int64)]
    if not out_arr.any():
        raise Seg2MedError(f"label file '{path}' has no class with a counterpart in '{label_set}' ({mapping.summary()})")
    out = sitk.GetImageFromArray(out_arr)
    out.CopyInformation(img)
    return Segmentation(out, names_for(label_set), label_set), mapping
