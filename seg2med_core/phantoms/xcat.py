"""XCAT label volumes → a TotalSegmentator-labelled (``total``) segmentation.

XCAT (Segars et al.; licensed, not shipped) writes raw activity and attenuation phantoms: little-endian
float32 voxels, ``array_size`` × ``array_size`` per slice, slices ``startslice`` … ``endslice`` one after
the other. Its parameter file (``.par``, echoed in the run's log) sets ``pixel_width`` and ``slice_width``
in cm and one activity value per organ (``liver_activity = 3``, ``myoLV_act = 1``, …). Give every organ a
unique integer activity and ``subvoxel_index = 1`` and the activity phantom is a label map whose organ
table is the parameter file; ``read_xcat`` reads both:

* geometry from the parameters: spacing (``pixel_width``, ``pixel_width``, ``slice_width``) × 10 mm; the
  raw file must hold exactly array_size² × (endslice - startslice + 1) values; axis directions from
  ``orientation`` (what the column, row and slice index point to; default ``LPI``: columns to patient
  left, rows to posterior, slices from head to feet, XCAT's usual display) and the origin at the centre
  column/row, z = -(slice number - 1) × slice_width;
* labels: each value is looked up in the organ table and the organ in the mapping file (default
  ``seg2med_core/data/xcat_to_total.json``, editable: ``--xcat-map``) gives the ``total`` class;
  organs without a counterpart (``null``) and organs missing from the mapping become 0 and are reported.

Errors (one line): a parameter file without organ table or geometry, a raw file of the wrong size,
non-integer values, values that no organ has, two organs that share a value but map to different classes,
a mapping entry that names no ``total`` class.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import Seg2MedError
from ..io import Segmentation, write_json
from ..labels import names_for

_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([^#\s]+)")
_AXES = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


@dataclass
class XcatReport:
    """Which XCAT organs became which ``total`` class, and what stayed unlabelled."""

    raw: str
    parameters: str
    mapping: str
    size: list[int]
    spacing_mm: list[float]
    mapped: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    unmapped_voxels: int = 0
    absent: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def save_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def summary(self) -> str:
        text = (f"XCAT {self.size} voxels at {self.spacing_mm} mm: {len(self.mapped)} organs mapped, "
                f"{len(self.unmapped)} without a 'total' class")
        if self.unmapped:
            text += f" ({', '.join(self.unmapped[:8])}{', ...' if len(self.unmapped) > 8 else ''}; {self.unmapped_voxels} voxels set to 0)"
        return text


def parse_parameters(path: str | Path) -> dict[str, str]:
    """``key = value`` lines of an XCAT .par or log file (comments after ``#`` ignored)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise Seg2MedError(f"XCAT parameter file '{p}' cannot be read: {exc.strerror or exc}") from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def organ_table(params: dict[str, str], source: str = "parameter file") -> dict[str, float]:
    """``{organ parameter name: activity value}`` of the ``*_activity`` / ``*_act`` parameters."""
    table = {}
    for key, value in params.items():
        if key.endswith(("_activity", "_act")):
            try:
                table[key] = float(value)
            except ValueError:
                raise Seg2MedError(f"XCAT {source}: {key} = '{value}' is not a number") from None
    if not table:
        raise Seg2MedError(f"XCAT {source} has no organ table (no '<organ>_activity = ID' lines)")
    return table


def _number(params: dict[str, str], key: str, source: str, kind: type = float) -> float:
    if key not in params:
        raise Seg2MedError(f"XCAT {source} has no '{key}' (needed for the geometry)")
    try:
        value = kind(float(params[key])) if kind is int else float(params[key])
    except ValueError:
        raise Seg2MedError(f"XCAT {source}: {key} = '{params[key]}' is not a number") from None
    if value <= 0:
        raise Seg2MedError(f"XCAT {source}: {key} must be positive, got {params[key]}")
    return value


def load_mapping(path: str | Path | None = None) -> tuple[dict[str, object], str]:
    """The XCAT organ → ``total`` class mapping (``organs`` of the JSON file) and where it came from."""
    if path is None:
        text = resources.files("seg2med_core").joinpath("data/xcat_to_total.json").read_text(encoding="utf-8")
        where = "seg2med_core/data/xcat_to_total.json"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise Seg2MedError(f"XCAT mapping '{path}' cannot be read: {exc.strerror or exc}") from None
        where = str(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Seg2MedError(f"XCAT mapping '{where}' is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    organs = doc.get("organs") if isinstance(doc, dict) else None
    if not isinstance(organs, dict):
        raise Seg2MedError(f"XCAT mapping '{where}' needs an object \"organs\": {{xcat organ: total class}}")
    known = set(names_for("total").values())
    for organ, target in organs.items():
        targets = list(target.values()) if isinstance(target, dict) else [target]
        if isinstance(target, dict) and set(target) != {"left", "right"}:
            raise Seg2MedError(f"XCAT mapping '{where}': {organ} must map to a class, null or {{\"left\": .., \"right\": ..}}")
        for t in targets:
            if t is not None and t not in known:
                raise Seg2MedError(f"XCAT mapping '{where}': {organ} -> '{t}' is not a 'total' class")
    return organs, where


def _direction(orientation: str) -> np.ndarray:
    code = orientation.upper()
    if len(code) != 3 or any(c not in _AXES for c in code) or len({_AXES[c][0] for c in code}) != 3:
        raise Seg2MedError(f"XCAT orientation must be three letters from L/R, P/A, S/I (one per axis), got '{orientation}'")
    d = np.zeros((3, 3))
    for col, c in enumerate(code):
        axis, sign = _AXES[c]
        d[axis, col] = sign
    return d


def read_xcat(raw: str | Path, parameters: str | Path, mapping: str | Path | None = None,
              orientation: str = "LPI") -> tuple[Segmentation, XcatReport]:
    """Read an XCAT activity label volume + its parameter/log file as a ``total`` segmentation."""
    raw, parameters = Path(raw), Path(parameters)
    src = f"parameter file '{parameters}'"
    params = parse_parameters(parameters)
    table = organ_table(params, src)
    n = int(_number(params, "array_size", src, int))
    pw = _number(params, "pixel_width", src) * 10.0
    sw = _number(params, "slice_width", src) * 10.0
    start = int(_number(params, "startslice", src, int)) if "startslice" in params else 1
    end = int(_number(params, "endslice", src, int))
    if end < start:
        raise Seg2MedError(f"XCAT {src}: endslice {end} is before startslice {start}")
    direction = _direction(orientation)
    organs, where = load_mapping(mapping)
    nz = end - start + 1
    try:
        nbytes = raw.stat().st_size
    except OSError as exc:
        raise Seg2MedError(f"XCAT volume '{raw}' cannot be read: {exc.strerror or exc}") from None
    expected = n * n * nz * 4
    if nbytes != expected:
        raise Seg2MedError(f"XCAT volume '{raw}' has {nbytes} bytes; array_size {n} and slices {start}-{end} of "
                           f"{src} need {expected} (float32)")
    vol = np.fromfile(raw, dtype="<f4").reshape(nz, n, n)
    if not np.isfinite(vol).all():
        raise Seg2MedError(f"XCAT volume '{raw}' has NaN/infinite values")
    frac = vol != np.round(vol)
    if frac.any():
        raise Seg2MedError(f"XCAT volume '{raw}' has non-integer values (e.g. {float(vol[frac][0]):g}): give each organ "
                           "an integer activity and set subvoxel_index = 1")
    by_value: dict[float, list[str]] = {}
    for organ, value in table.items():
        by_value.setdefault(value, []).append(organ)
    values = [float(v) for v in np.unique(vol) if v != 0]
    unknown = [v for v in values if v not in by_value]
    if unknown:
        raise Seg2MedError(f"XCAT volume '{raw}' has values no organ of {src} has: "
                           + ", ".join(f"{v:g}" for v in unknown[:8]))
    ids = {name: i for i, name in names_for("total").items()}
    out = np.zeros(vol.shape, np.uint16)
    cols = np.arange(n)
    left_half = (direction[0, 0] * (cols - (n - 1) / 2.0)) > 0  # columns on the patient's left (x > 0)
    report = XcatReport(raw=str(raw), parameters=str(parameters), mapping=where, size=[n, n, nz], spacing_mm=[pw, pw, sw])
    for v in values:
        names = by_value[v]
        targets = {json.dumps(organs.get(o)) for o in names}
        if len(targets) > 1:
            raise Seg2MedError(f"XCAT {src}: organs {', '.join(names)} share the activity value {v:g} but map to "
                               "different classes; give each organ its own value")
        target = organs.get(names[0])
        mask = vol == v
        if target is None:
            report.unmapped += names
            report.unmapped_voxels += int(mask.sum())
            continue
        if isinstance(target, dict):
            side = np.broadcast_to(left_half[None, None, :], mask.shape)
            out[mask & side] = ids[target["left"]]
            out[mask & ~side] = ids[target["right"]]
            label = f"{target['left']} / {target['right']}"
        else:
            out[mask] = ids[target]
            label = target
        for o in names:
            report.mapped[o] = label
    report.absent = sorted(o for o, val in table.items() if float(val) not in values)
    img = sitk.GetImageFromArray(out)
    img.SetSpacing((pw, pw, sw))
    img.SetDirection(tuple(float(x) for x in direction.ravel()))
    centre = np.array([(n - 1) / 2.0 * pw, (n - 1) / 2.0 * pw, 0.0])
    origin = -(direction @ centre)
    origin[2] = -(start - 1) * sw * (-direction[2, 2]) if direction[2, 2] != 0 else origin[2]
    img.SetOrigin(tuple(float(x) for x in origin))
    return Segmentation(image=img, names=names_for("total"), label_set="total"), report
