"""Prior images ("simulated CT/MR masks"): each class gets its tissue value, as in the seg2med paper.

CT: every labelled voxel gets its class HU, unlabelled voxels inside the body contour get ``body``, and
everything outside the body ``background`` (-1000 HU), labels included (the body contour regularises the
mask, e.g. removes arms). MR: the same with the sequence signal of each tissue (``mrsignal.signal``);
0 outside the body. Values are looked up per label id (a lookup table), so any volume size is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import Seg2MedError
from .io import Segmentation
from .mrsignal import Sequence, get_sequence, signal
from .tables import MRTissue, load_ct_table, load_mr_table

CT_WINDOW = (-1000.0, 1000.0)  # level 0, width 2000 (paper)
DEFAULT_MR_SEQUENCE = "vibe_in"


def _body_mask(seg: Segmentation, body: np.ndarray | None) -> np.ndarray:
    shape = tuple(reversed(seg.image.GetSize()))
    if body is None:
        from .preprocess import body_mask_from_segmentation  # lazy: only needed without a body mask

        body = body_mask_from_segmentation(seg)
    body = np.asarray(body)
    if body.shape != shape:
        raise Seg2MedError(f"body mask shape {body.shape} differs from segmentation shape {shape} (z, y, x)")
    return body.astype(bool, copy=False)


def _lookup(seg: Segmentation, value_of: Callable[[str], float], body_value: float, outside: float,
            body: np.ndarray, missing_from: str) -> sitk.Image:
    arr = sitk.GetArrayViewFromImage(seg.image)
    ids = [int(i) for i in np.unique(arr) if i != 0]
    nameless = [i for i in ids if i not in seg.names]
    if nameless:
        raise Seg2MedError(f"segmentation label ids {nameless[:8]} have no name in label set '{seg.label_set}'")
    lut = np.full(max(ids, default=0) + 1, body_value, dtype=np.float64)
    missing: list[str] = []
    for i in ids:
        try:
            lut[i] = value_of(seg.names[i])
        except KeyError:
            missing.append(seg.names[i])
    if missing:
        raise Seg2MedError(f"tissue table {missing_from} has no row for: {', '.join(sorted(missing)[:10])}")
    out = lut[arr].astype(np.float32)
    out[~body] = outside
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(seg.image)
    return img


def _table_row(table: Mapping[str, object], name: str, label: str) -> object:
    if name not in table:
        raise Seg2MedError(f"tissue table {label} has no row for '{name}'")
    return table[name]


def ct_prior(seg: Segmentation, body: np.ndarray | None, table: Mapping[str, float] | None = None) -> sitk.Image:
    """Float32 HU prior in the segmentation's geometry (``body`` None: derived from the segmentation)."""
    table = load_ct_table() if table is None else table
    label = "(CT)"
    body_hu = float(_table_row(table, "body", label))  # type: ignore[arg-type]
    air = float(_table_row(table, "background", label))  # type: ignore[arg-type]
    return _lookup(seg, lambda n: float(table[n]), body_hu, air, _body_mask(seg, body), label)


def tissue_signal(sequence: Sequence | str, tissue: MRTissue) -> float:
    """Signal of one tissue-table row under ``sequence``."""
    return float(signal(sequence, tissue.t1_ms, tissue.t2_ms, tissue.t2star_ms, tissue.pd, tissue.fat_fraction))


def max_table_signal(sequence: Sequence | str, table: Mapping[str, MRTissue] | None = None) -> float:
    """Largest signal of any tissue in the table under ``sequence`` (the MR prior's normaliser)."""
    table = load_mr_table() if table is None else table
    return max(tissue_signal(sequence, t) for t in table.values())


def mr_prior(seg: Segmentation, body: np.ndarray | None, sequence: Sequence | str,
             table: Mapping[str, MRTissue] | None = None) -> sitk.Image:
    """Float32 MR signal prior for ``sequence``; 0 outside the body, ``body`` tissue for unlabelled voxels."""
    seq = get_sequence(sequence)
    table = load_mr_table() if table is None else table
    label = "(MR)"
    body_signal = tissue_signal(seq, _table_row(table, "body", label))  # type: ignore[arg-type]
    return _lookup(seg, lambda n: tissue_signal(seq, table[n]), body_signal, 0.0, _body_mask(seg, body), label)


def prior_image(seg: Segmentation, modality: str, sequence: Sequence | str | None = None,
                body: np.ndarray | None = None, table_path: str | Path | None = None,
                phase: str | None = None) -> sitk.Image:
    """CT or MR prior; ``table_path`` is a user tissue table (validated; must name every class present).

    ``sequence`` defaults to ``vibe_in`` for MR (the paper's VIBE) and is ignored for CT. ``phase`` picks a
    packaged CT contrast-phase table (``native``, ``arterial``, ``portal-venous``; see
    :data:`seg2med_core.tables.CT_PHASES`); it is an error for MR and together with ``table_path``.
    """
    names = sorted({seg.names[int(i)] for i in np.unique(sitk.GetArrayViewFromImage(seg.image))
                    if i != 0 and int(i) in seg.names} | {"body", "background"})
    if modality == "ct":
        table = load_ct_table(table_path, required=names, phase=phase) if (table_path is not None or phase is not None) else None
        return ct_prior(seg, body, table)
    if phase is not None:
        raise Seg2MedError(f"contrast phase '{phase}' applies to CT only (MR contrast is set by --sequence)")
    if modality == "mr":
        mr_table = load_mr_table(table_path, required=names) if table_path is not None else None
        return mr_prior(seg, body, sequence if sequence is not None else DEFAULT_MR_SEQUENCE, mr_table)
    raise Seg2MedError(f"unknown modality '{modality}' (choose 'ct' or 'mr')")


def normalise_prior(prior: np.ndarray, modality: str, sequence: Sequence | str | None = None,
                    table: Mapping[str, MRTissue] | None = None) -> np.ndarray:
    """Map a prior to [0, 1] like its modality: CT window level 0 / width 2000; MR divided by the largest
    tissue signal of the table for that sequence (values are clipped to [0, 1]). Returns float32."""
    arr = np.asarray(prior, dtype=np.float32)
    if modality == "ct":
        lo, hi = CT_WINDOW
        return np.clip((arr - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if modality == "mr":
        peak = max_table_signal(sequence if sequence is not None else DEFAULT_MR_SEQUENCE, table)
        if peak <= 0:
            raise Seg2MedError("every tissue in the MR table has zero signal for this sequence; cannot normalise")
        return np.clip(arr / peak, 0.0, 1.0).astype(np.float32)
    raise Seg2MedError(f"unknown modality '{modality}' (choose 'ct' or 'mr')")
