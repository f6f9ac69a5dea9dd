"""Side-by-side PNG previews (prior | synthetic | real ...) of a few representative axial slices.

Rendered with matplotlib's Agg canvas directly (no pyplot state, safe in worker threads) and written
atomically through ``io.atomic_path``. The pixel size is fixed by the layout:
``width = n_columns × panel_px``, ``height = HEADER_PX (+ HEADER_PX with a title) + n_rows × panel_px
(+ FOOTER_PX with metrics)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, Union

import numpy as np

from seg2med_core.errors import Seg2MedError

Window = Union[tuple[float, float], Literal["labels"], None]
Column = tuple[str, np.ndarray, Window]

#: Soft-tissue CT window W400 / L40 as (vmin, vmax) in HU.
CT_SOFT_TISSUE = (-160.0, 240.0)
HEADER_PX = 28
FOOTER_PX = 26
DPI = 100
_METRIC_FORMATS = {"ssim": "{:.3f}", "histcc": "{:.3f}", "fsim": "{:.3f}", "psnr": "{:.2f} dB", "mae": "{:.1f}"}


def ct_window(level: float = 40.0, width: float = 400.0) -> tuple[float, float]:
    """CT window (level, width) in HU as (vmin, vmax); the default is soft tissue W400/L40."""
    if not width > 0:
        raise Seg2MedError(f"window width must be > 0 HU, got {width}")
    return (level - width / 2.0, level + width / 2.0)


def choose_slices(area: np.ndarray, n_slices: int) -> list[int]:
    """Slice indices at (i+1)/(n+1) of the extent of slices with ``area > 0`` (25/50/75 % for three).

    ``area`` is the per-slice body (or label) area; falls back to the whole stack when it is all zero.
    """
    nonzero = np.flatnonzero(np.asarray(area) > 0)
    first, last = (int(nonzero[0]), int(nonzero[-1])) if nonzero.size else (0, len(area) - 1)
    picks = [first + (last - first) * (i + 1) / (n_slices + 1) for i in range(n_slices)]
    return sorted({int(round(p)) for p in picks})


def format_metrics(metrics: Mapping[str, Any], modality_unit: str = "") -> str:
    """One line such as ``SSIM 0.912   PSNR 27.31 dB   MAE 35.2 HU   HistCC 0.951``."""
    parts = []
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        fmt = _METRIC_FORMATS.get(key, "{:.4g}")
        text = "inf" if math.isinf(value) else fmt.format(value)
        if key == "mae" and modality_unit:
            text += f" {modality_unit}"
        label = {"histcc": "HistCC", "mae": "MAE"}.get(key, key.upper())
        parts.append(f"{label} {text}")
    return "   ".join(parts)


def save_preview(
    path: str | Path,
    columns: Sequence[Column],
    metrics: Mapping[str, Any] | None = None,
    n_slices: int = 3,
    *,
    body: np.ndarray | None = None,
    reference: Any = None,
    title: str | None = None,
    mae_unit: str = "",
    panel_px: int = 256,
) -> Path:
    """Write a PNG with one column per volume and one row per chosen axial slice.

    ``columns``: ``(title, volume (z, y, x), window)``; ``window`` is ``(vmin, vmax)`` (e.g.
    :data:`CT_SOFT_TISSUE`), ``"labels"`` for a label map drawn in label colours, or ``None`` for the
    volume's 1st–99th percentile (inside ``body`` when given). Slices are picked at 25/50/75 % (for three)
    of the extent of ``body`` (else of the first column's foreground). ``reference`` (a ``sitk.Image`` with
    the volumes' geometry) turns the slices to radiological LPS display and sets the pixel aspect.
    ``metrics`` are printed under the panels. Raises :class:`Seg2MedError` before writing anything when
    the arguments are inconsistent.
    """
    path = Path(path)
    vols, windows = _validate(path, columns, n_slices, body, panel_px)
    body = None if body is None else np.asarray(body, dtype=bool)
    aspect = 1.0
    if reference is not None:
        from seg2med_core.preprocess import array_to_canonical

        direction = reference.GetDirection()
        if tuple(reference.GetSize())[::-1] != vols[0].shape:
            raise Seg2MedError(f"reference size {reference.GetSize()} does not match the volumes {vols[0].shape[::-1]}")
        vols = [array_to_canonical(v, direction) for v in vols]
        body = None if body is None else array_to_canonical(body, direction)
        sp_zyx = _canonical_spacing(reference)
        aspect = sp_zyx[1] / sp_zyx[2]
    area = _slice_area(vols[0], windows[0]) if body is None else body.reshape(body.shape[0], -1).sum(axis=1)
    rows = choose_slices(area, n_slices)
    resolved = [_resolve_window(v, w, body) for v, w in zip(vols, windows)]

    fig = _render([c[0] for c in columns], vols, resolved, rows, metrics, title, mae_unit, panel_px, aspect)
    from seg2med_core.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _validate(
    path: Path, columns: Sequence[Column], n_slices: int, body: np.ndarray | None, panel_px: int
) -> tuple[list[np.ndarray], list[Window]]:
    if path.suffix.lower() != ".png":
        raise Seg2MedError(f"preview path must end in .png, got '{path}'")
    if not columns:
        raise Seg2MedError("preview needs at least one column")
    if int(n_slices) < 1:
        raise Seg2MedError(f"preview needs at least one slice, got n_slices={n_slices}")
    if panel_px < 32:
        raise Seg2MedError(f"preview panel size must be at least 32 pixels, got {panel_px}")
    vols: list[np.ndarray] = []
    windows: list[Window] = []
    for entry in columns:
        if len(entry) != 3:
            raise Seg2MedError(f"preview column must be (title, volume, window), got {len(entry)} items")
        name, vol, window = entry
        vol = np.asarray(vol)
        if vol.ndim != 3:
            raise Seg2MedError(f"preview column '{name}' must be a 3D (z, y, x) volume, got shape {vol.shape}")
        if vols and vol.shape != vols[0].shape:
            raise Seg2MedError(f"preview column '{name}' has shape {vol.shape}, the first column {vols[0].shape}")
        if not (window is None or window == "labels" or _is_range(window)):
            raise Seg2MedError(f"preview window for '{name}' must be (vmin, vmax) with vmin < vmax, 'labels' or None, got {window!r}")
        vols.append(vol)
        windows.append(window)
    if body is not None and np.shape(body) != vols[0].shape:
        raise Seg2MedError(f"preview body mask shape {np.shape(body)} does not match the volumes {vols[0].shape}")
    return vols, windows


def _is_range(window: Any) -> bool:
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        return False
    return math.isfinite(lo) and math.isfinite(hi) and lo < hi


def _canonical_spacing(reference: Any) -> tuple[float, float, float]:
    from seg2med_core.preprocess import SliceGrid

    grid = SliceGrid.from_image(reference, None, 1)
    return tuple(reversed(grid.canonical.spacing))  # type: ignore[return-value]


def _slice_area(vol: np.ndarray, window: Window) -> np.ndarray:
    if window == "labels":
        fg = vol > 0
    else:
        lo = float(np.min(vol)) if window is None else float(window[0])  # type: ignore[index]
        hi = float(np.max(vol)) if window is None else float(window[1])  # type: ignore[index]
        fg = vol > lo + 0.05 * (hi - lo)
    return fg.reshape(fg.shape[0], -1).sum(axis=1)


def _resolve_window(vol: np.ndarray, window: Window, body: np.ndarray | None) -> Window:
    if window is not None:
        return window if window == "labels" else (float(window[0]), float(window[1]))  # type: ignore[index]
    values = vol[body] if body is not None and body.any() else vol
    lo, hi = (float(v) for v in np.percentile(values, [1, 99]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """RGB image: label 0 black, other labels from matplotlib's tab20 (cycled), so neighbours differ."""
    from matplotlib import colormaps

    palette = np.asarray(colormaps["tab20"].colors)
    rgb = palette[(labels.astype(np.int64) - 1) % len(palette)]
    rgb[labels <= 0] = 0.0
    return rgb


def _render(
    titles: list[str],
    vols: list[np.ndarray],
    windows: list[Window],
    rows: list[int],
    metrics: Mapping[str, Any] | None,
    title: str | None,
    mae_unit: str,
    panel_px: int,
    aspect: float,
) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    text = format_metrics(metrics, mae_unit) if metrics else ""
    header = HEADER_PX * (2 if title else 1)
    footer = FOOTER_PX if text else 0
    width, height = len(vols) * panel_px, header + len(rows) * panel_px + footer
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="black")
    FigureCanvasAgg(fig)
    font = max(7.0, min(12.0, panel_px / 22))
    if title:
        fig.text(0.5, 1 - (HEADER_PX / 2) / height, title, ha="center", va="center", color="white", fontsize=font + 1)
    for c, (name, vol, window) in enumerate(zip(titles, vols, windows)):
        fig.text((c + 0.5) * panel_px / width, 1 - (header - HEADER_PX / 2) / height, name,
                 ha="center", va="center", color="white", fontsize=font)
        for r, k in enumerate(rows):
            bottom = (footer + (len(rows) - 1 - r) * panel_px) / height
            ax = fig.add_axes((c * panel_px / width, bottom, panel_px / width, panel_px / height))
            ax.set_axis_off()
            ax.set_facecolor("black")
            if window == "labels":
                ax.imshow(_label_colours(vol[k]), interpolation="nearest", aspect=aspect)
            else:
                vmin, vmax = window  # type: ignore[misc]
                ax.imshow(vol[k], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest", aspect=aspect)
            if c == 0:
                ax.text(0.02, 0.98, f"z={k}", transform=ax.transAxes, ha="left", va="top", color="yellow",
                        fontsize=font - 2)
    if text:
        fig.text(0.5, (FOOTER_PX / 2) / height, text, ha="center", va="center", color="white", fontsize=font)
    return fig


# ------------------------------------------------------------------------------ coronal / sagittal
REFORMAT_VIEWS = ("coronal", "sagittal")


def reformat_planes(vol_canonical: np.ndarray, body: np.ndarray | None = None) -> dict[str, tuple[int, np.ndarray]]:
    """Coronal and sagittal planes of a canonical LPS (z, y, x) volume through the body's centre.

    Returns ``{"coronal": (y index, plane (z, x)), "sagittal": (x index, plane (z, y))}``; the planes are
    flipped so the head is at the top (row 0 = most superior slice); coronal shows the patient's right on
    the left (radiological), sagittal anterior on the left.
    """
    vol = np.asarray(vol_canonical)
    if body is not None and np.asarray(body).any():
        _, ys, xs = np.nonzero(body)
        yc, xc = int(round(float(ys.mean()))), int(round(float(xs.mean())))
    else:
        yc, xc = vol.shape[1] // 2, vol.shape[2] // 2
    return {"coronal": (yc, vol[::-1, yc, :]), "sagittal": (xc, vol[::-1, :, xc])}


def save_reformats(
    path: str | Path,
    columns: Sequence[Column],
    reference: Any,
    *,
    body: np.ndarray | None = None,
    title: str | None = None,
    footer: str | None = None,
    panel_px: int = 320,
) -> Path:
    """PNG with a coronal row and a sagittal row, one column per volume, at the correct physical aspect.

    ``columns``: ``(title, volume (z, y, x) in ``reference``'s array order, window)`` as in
    :func:`save_preview`; ``reference`` (``sitk.Image``) gives the orientation and the voxel spacing, so a
    2.5 mm slice is drawn 2.5 mm tall next to 0.7 mm pixels: bands between generated axial slices show up
    as horizontal stripes. The planes go through the centre of ``body`` (else the volume's centre).
    ``footer`` (e.g. the banding metric line) is printed underneath.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from seg2med_core.io import atomic_path
    from seg2med_core.preprocess import array_to_canonical

    path = Path(path)
    vols, windows = _validate(path, columns, 1, body, max(panel_px, 32))
    if tuple(reference.GetSize())[::-1] != vols[0].shape:
        raise Seg2MedError(f"reference size {reference.GetSize()} does not match the volumes {vols[0].shape[::-1]}")
    direction = reference.GetDirection()
    canon = [array_to_canonical(v, direction) for v in vols]
    body_c = None if body is None else array_to_canonical(np.asarray(body, dtype=bool), direction)
    resolved = [_resolve_window(v, w, body_c) for v, w in zip(canon, windows)]
    sz, sy, sx = _canonical_spacing(reference)
    nz, ny, nx = canon[0].shape
    extent_mm = {"coronal": (nx * sx, nz * sz), "sagittal": (ny * sy, nz * sz)}
    scale = panel_px / max(nx * sx, ny * sy)  # one mm -> px scale for every panel
    col_w = int(round(panel_px))
    row_h = {v: int(round(extent_mm[v][1] * scale)) for v in REFORMAT_VIEWS}
    header = HEADER_PX * (2 if title else 1)
    width = len(canon) * col_w
    font = max(7.0, min(12.0, col_w / 26))
    footer_lines = _wrap_footer(footer, width, max(6.0, font - 2)) if footer else []
    foot = FOOTER_PX * len(footer_lines)
    height = header + sum(row_h.values()) + foot
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="black")
    FigureCanvasAgg(fig)
    if title:
        fig.text(0.5, 1 - (HEADER_PX / 2) / height, title, ha="center", va="center", color="white", fontsize=font + 1)
    planes = [reformat_planes(v, body_c) for v in canon]
    for c, ((name, _, _), window) in enumerate(zip(columns, resolved)):
        fig.text((c + 0.5) * col_w / width, 1 - (header - HEADER_PX / 2) / height, name,
                 ha="center", va="center", color="white", fontsize=font)
        top = header
        for view in REFORMAT_VIEWS:
            index, plane = planes[c][view]
            w_mm, h_mm = extent_mm[view]
            w_px = w_mm * scale
            left = c * col_w + (col_w - w_px) / 2
            ax = fig.add_axes((left / width, 1 - (top + row_h[view]) / height, w_px / width, row_h[view] / height))
            ax.set_axis_off()
            if window == "labels":
                ax.imshow(_label_colours(plane), interpolation="nearest", aspect="auto", extent=(0, w_mm, 0, h_mm))
            else:
                vmin, vmax = window  # type: ignore[misc]
                ax.imshow(plane, cmap="gray", vmin=vmin, vmax=vmax, interpolation="antialiased", aspect="auto",
                          extent=(0, w_mm, 0, h_mm))
            if c == 0:
                where = f"y={index}" if view == "coronal" else f"x={index}"
                ax.text(0.02, 0.98, f"{view} {where}", transform=ax.transAxes, ha="left", va="top", color="yellow",
                        fontsize=font - 2)
            top += row_h[view]
    if footer_lines:
        for i, line in enumerate(footer_lines):
            fig.text(0.5, (foot - FOOTER_PX * (i + 0.5)) / height, line, ha="center", va="center", color="white",
                     fontsize=max(6.0, font - 2))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _wrap_footer(text: str, width_px: int, font_pt: float) -> list[str]:
    """Footer lines that fit ``width_px``: explicit newlines kept, long lines broken at runs of 3 spaces
    (the separators of :func:`format_metrics` / ``metrics.banding_line``), then at single spaces."""
    import textwrap

    max_chars = max(20, int(width_px / (font_pt * DPI / 72.0 * 0.6)))
    lines: list[str] = []
    for line in text.split("\n"):
        current = ""
        for part in line.split("   "):
            candidate = f"{current}   {part}" if current else part
            if len(candidate) <= max_chars or not current:
                current = candidate
            else:
                lines.append(current)
                current = part
        lines.extend(textwrap.wrap(current, max_chars) or [""])
    return lines
