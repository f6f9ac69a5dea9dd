"""Training data: find the cases, prepare their 2D slices once, cache them, and serve batches.

Accepted layouts for ``--data``:

* **CSV** file with columns ``image,segmentation`` and optionally ``tissue_segmentation``, ``split``
  (``train``/``val``/``test``), ``dataset`` and ``case``. Relative paths are relative to the CSV's folder.
* **Folder of case folders**: ``DATA/<case>/`` holding an image (``image``, ``ct``, ``mr`` or ``img``:
  a volume file or a DICOM series folder) and a segmentation (``segmentation``, ``segmentations``, ``seg``
  or ``labels``: multilabel file, folder of masks or ``.seg.nrrd``), optionally ``tissue`` /
  ``tissue_segmentation`` / ``tissue_types``.
* **Flat folder**: ``DATA/<case>_image.nii.gz`` + ``DATA/<case>_seg.nii.gz`` (same stems as above after
  the underscore), optionally ``DATA/<case>_tissue.nii.gz``.
* A folder whose sub-folders are themselves such folders: each sub-folder is a **dataset** (the name is
  the ``dataset`` column of the results); otherwise the dataset is the data folder's name.

Preparation per case (same chain as :func:`seg2med_core.pipeline.synthesize`): read image and
segmentation (+ tissue types merged), check geometry, body contour from the image, prior from the
segmentation inside the body, target normalised to [0, 1] and set to background outside the body,
everything resampled with :class:`~seg2med_core.preprocess.SliceGrid` to axial slices of
``image_size``² at ``spacing_xy`` mm. Slices with less than ``min_body_fraction`` body are dropped from
training, but the prior and a class-code map are kept for *every* slice (``prior_all``/``code_all``):
2.5D conditioning needs the neighbours of the first and last kept slice too. Per class the case's own
measured intensity (median of the real image inside the label and the body) is stored next to the
table value, for prior randomisation (:class:`PriorRandomiser`).
The result is cached as uncompressed ``.npy`` files (memory-mapped when read) under a key hashing the
files' paths, sizes and modification times and the settings, so the second run starts at once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from seg2med_core.errors import Cancelled, Seg2MedError

CACHE_VERSION = 2
VOLUME_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
IMAGE_STEMS = ("image", "ct", "mr", "img")
SEG_STEMS = ("segmentation", "segmentations", "seg", "labels")
TISSUE_STEMS = ("tissue_segmentation", "tissue_types", "tissue")
SPLITS = ("train", "val", "test")

ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class CaseSpec:
    """One training/evaluation case: where its files are and which split/dataset it belongs to."""

    case_id: str
    image: Path
    segmentation: Path
    tissue_segmentation: Path | None = None
    split: str | None = None
    dataset: str = ""
    #: the label file's own ``(id, name)`` table (AMOS, nnU-Net ``dataset.json``): classes are mapped by
    #: name onto ``label_set`` (:mod:`seg2med_core.datasets.labelmap`); None = TotalSegmentator ids
    label_table: tuple[tuple[int, str], ...] | None = None
    #: label set the layout knows its labels are in (e.g. ``total_mr`` for the TotalSegmentator MRI
    #: dataset, the target of ``label_table``); None = guessed from ids/names; ``--label-set`` wins
    label_set: str | None = None
    #: conversion cases (paper Exp. IV, SynthRAD ``--seg-from``): the image the segmentation belongs to;
    #: the body contour comes from it and the labels are converted to the target modality's label set
    source_image: Path | None = None
    source_modality: str | None = None


@dataclass(frozen=True)
class PrepSettings:
    """Everything the prepared slices depend on besides the files (part of the cache key)."""

    modality: str
    sequence: str | None
    label_set: str | None
    spacing_xy: float
    image_size: int
    min_body_fraction: float
    tissue_table: str | None = None


@dataclass
class PreparedCase:
    """Model-space slices of one case: ``target``/``prior`` (n, H, W) in [0, 1], ``body`` (n, H, W) bool,
    ``slice_index`` = canonical (LPS) axial index of each kept slice, of ``n_total`` slices in the volume.

    ``prior_all`` (n_total, H, W): the table prior of every slice; ``code_all`` (n_total, H, W) uint16: 0
    outside the body, 1 inside it without a label, ``label + 1`` for a labelled voxel (nearest neighbour);
    ``info["classes"]``: per code its name, table value and measured median (model space [0, 1])."""

    spec: CaseSpec
    target: np.ndarray
    prior: np.ndarray
    body: np.ndarray
    slice_index: np.ndarray
    n_total: int
    info: dict[str, Any] = field(default_factory=dict)
    prior_all: np.ndarray | None = None
    code_all: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.slice_index.shape[0])


@dataclass
class PreparedDataset:
    cases: list[PreparedCase]
    skipped: list[tuple[str, str]]

    @property
    def n_slices(self) -> int:
        return sum(len(c) for c in self.cases)


# ------------------------------------------------------------------------------------------ discovery
def _stem(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_volume(path: Path) -> bool:
    return path.is_file() and any(path.name.lower().endswith(s) for s in VOLUME_SUFFIXES)


def _find(folder: Path, stems: Sequence[str]) -> Path | None:
    """First file or folder in ``folder`` whose stem (lower-case) is one of ``stems``, in ``stems`` order."""
    entries = {_stem(p).lower(): p for p in sorted(folder.iterdir()) if _is_volume(p) or p.is_dir()}
    for stem in stems:
        if stem in entries:
            return entries[stem]
    return None


def _case_from_folder(folder: Path, dataset: str) -> CaseSpec | None:
    image, seg = _find(folder, IMAGE_STEMS), _find(folder, SEG_STEMS)
    if image is None or seg is None:
        return None
    return CaseSpec(folder.name, image, seg, _find(folder, TISSUE_STEMS), None, dataset)


def _flat_cases(folder: Path, dataset: str) -> list[CaseSpec]:
    groups: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        if not _is_volume(path) or "_" not in _stem(path):
            continue
        case, _, role = _stem(path).rpartition("_")
        for kind, stems in (("image", IMAGE_STEMS), ("seg", SEG_STEMS), ("tissue", TISSUE_STEMS)):
            if role.lower() in stems:
                groups.setdefault(case, {})[kind] = path
    return [
        CaseSpec(case, files["image"], files["seg"], files.get("tissue"), None, dataset)
        for case, files in sorted(groups.items())
        if "image" in files and "seg" in files
    ]


def _folder_cases(folder: Path, dataset: str) -> list[CaseSpec]:
    cases = _flat_cases(folder, dataset)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        case = _case_from_folder(sub, dataset)
        if case is not None:
            cases.append(case)
    return cases


def discover_cases(data: str | os.PathLike[str]) -> list[CaseSpec]:
    """Cases of a CSV file or data folder (layouts in the module docstring); raises if none is found."""
    data = Path(data)
    if not data.exists():
        raise Seg2MedError(f"training data '{data}' does not exist")
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise Seg2MedError(f"training data '{data}' must be a folder or a .csv file")
        return read_case_csv(data)
    cases = _folder_cases(data, data.name)
    if not cases:
        for sub in sorted(p for p in data.iterdir() if p.is_dir()):
            cases.extend(_folder_cases(sub, sub.name))
    if not cases:
        raise Seg2MedError(
            f"no cases found in '{data}': expected <case>/image.nii.gz + <case>/segmentation.nii.gz, "
            "<case>_image.nii.gz + <case>_seg.nii.gz, or a CSV file"
        )
    ids = [(c.dataset, c.case_id) for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise Seg2MedError(f"case id(s) found twice in '{data}': {duplicates[:3]}")
    return cases


def read_case_csv(path: Path) -> list[CaseSpec]:
    """Cases from a CSV with columns image, segmentation[, tissue_segmentation, split, dataset, case]."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in ("image", "segmentation") if c not in columns]
            if missing:
                raise Seg2MedError(f"CSV '{path}' lacks column(s) {missing} (has {columns})")
            rows = [{(k or "").strip(): (v if isinstance(v, str) else "").strip() for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as exc:
        raise Seg2MedError(f"CSV '{path}' is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): save it as UTF-8") from None
    except csv.Error as exc:
        raise Seg2MedError(f"CSV '{path}' cannot be parsed: {exc}") from None
    except OSError as exc:
        raise Seg2MedError(f"cannot read CSV '{path}': {exc.strerror or exc}") from None
    cases: list[CaseSpec] = []
    for line, row in enumerate(rows, start=2):
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise Seg2MedError(f"CSV '{path}' line {line}: split {split!r} must be one of {SPLITS}")
        if not row["image"] or not row["segmentation"]:
            raise Seg2MedError(f"CSV '{path}' line {line}: image and segmentation must not be empty")
        image = _resolve(path.parent, row["image"])
        tissue = _resolve(path.parent, row["tissue_segmentation"]) if row.get("tissue_segmentation") else None
        case_id = row.get("case") or _stem(image).removesuffix("_image")
        extra: dict[str, Any] = {}
        if row.get("label_table"):  # written by `seg2med dataset list --csv` for AMOS / nnU-Net cases
            try:
                table = json.loads(row["label_table"])
                extra["label_table"] = tuple(sorted((int(k), str(v)) for k, v in table.items()))
            except (ValueError, AttributeError):
                raise Seg2MedError(f"CSV '{path}' line {line}: label_table must be a JSON object {{\"1\": \"spleen\", ...}}") from None
        if row.get("label_set"):
            extra["label_set"] = row["label_set"]
        if row.get("source_image"):
            extra["source_image"] = _resolve(path.parent, row["source_image"])
            extra["source_modality"] = row.get("source_modality") or None
        cases.append(
            CaseSpec(case_id, image, _resolve(path.parent, row["segmentation"]), tissue, split, row.get("dataset") or path.stem, **extra)
        )
    if not cases:
        raise Seg2MedError(f"CSV '{path}' lists no cases")
    return cases


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


# ------------------------------------------------------------------------------------------ preparing
def _file_signature(path: Path | None) -> list[Any]:
    if path is None:
        return []
    path = Path(path).resolve()
    if path.is_dir():
        return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(path.rglob("*")) if p.is_file()]
    if not path.exists():
        return [str(path), "missing"]
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def cache_key(spec: CaseSpec, settings: PrepSettings) -> str:
    """Hash of the case files (path, size, mtime) and the settings: any change gives a new key."""
    payload = {
        "version": CACHE_VERSION,
        "files": [_file_signature(spec.image), _file_signature(spec.segmentation), _file_signature(spec.tissue_segmentation)],
        "table": _file_signature(Path(settings.tissue_table)) if settings.tissue_table else None,
        "settings": settings.__dict__,
    }
    if spec.label_table is not None or spec.label_set is not None:  # only then: plain cases keep their keys
        payload["labels"] = [spec.label_set, [list(item) for item in spec.label_table or ()]]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def read_case_segmentation(spec: CaseSpec, label_set: str | None):
    """The case's segmentation, with tissue types merged in (organs win) when given."""
    import SimpleITK as sitk

    from seg2med_core import io, labels

    if spec.label_table is not None:
        from seg2med_core.datasets.labelmap import read_mapped_segmentation

        seg, _ = read_mapped_segmentation(spec.segmentation, dict(spec.label_table), label_set or spec.label_set or "total")
    else:
        seg = io.read_segmentation(spec.segmentation, label_set=label_set or spec.label_set)
    if spec.tissue_segmentation is None:
        return seg
    tissue = io.read_segmentation(spec.tissue_segmentation, label_set=None)
    io.check_same_geometry(seg.image, tissue.image, f"segmentation '{spec.segmentation}'", f"tissue segmentation '{spec.tissue_segmentation}'")
    merged = labels.merge_segmentations(sitk.GetArrayFromImage(seg.image), sitk.GetArrayFromImage(tissue.image))
    img = sitk.GetImageFromArray(merged.astype(np.uint16))
    img.CopyInformation(seg.image)
    return io.Segmentation(image=img, names=labels.names_for(seg.label_set), label_set=seg.label_set)


def prepare_case(spec: CaseSpec, settings: PrepSettings) -> PreparedCase:
    """Read one case and turn it into model-space slices (raises :class:`Seg2MedError` on bad input)."""
    import SimpleITK as sitk

    from seg2med_core import io
    from seg2med_core.pipeline import normalise_image
    from seg2med_core.preprocess import SliceGrid, body_mask_from_image
    from seg2med_core.prior import normalise_prior, prior_image

    if spec.source_image is not None:
        raise Seg2MedError(
            f"case '{spec.case_id}' takes its segmentation from the {spec.source_modality or 'other'} image "
            "(--seg-from): conversion cases are for evaluation, not training"
        )
    image = io.read_image(spec.image)
    seg = read_case_segmentation(spec, settings.label_set)
    io.check_same_geometry(seg.image, image, f"segmentation '{spec.segmentation}'", f"image '{spec.image}'")
    body = body_mask_from_image(image, settings.modality)
    if not body.any():
        raise Seg2MedError(f"image '{spec.image}' has no body contour (is it really {settings.modality.upper()}?)")
    prior = prior_image(seg, settings.modality, sequence=settings.sequence, body=body, table_path=settings.tissue_table)
    prior01 = normalise_prior(sitk.GetArrayFromImage(prior), settings.modality, settings.sequence).astype(np.float32)
    target01 = np.where(body, normalise_image(image, settings.modality), 0.0).astype(np.float32)
    labels_arr = sitk.GetArrayFromImage(seg.image).astype(np.int64)
    code = np.where(body, labels_arr + 1, 0)
    classes = measure_classes(code, target01, prior01, seg.names)

    grid = SliceGrid.from_image(image, spacing_xy=settings.spacing_xy, size=settings.image_size)
    target = grid.forward_array(target01, interpolator="linear")
    prior_stack = grid.forward_array(prior01, interpolator="linear")
    body_stack = grid.forward_array(body.astype(np.float32), interpolator="nearest") > 0.5
    code_stack = np.rint(grid.forward_array(code.astype(np.float32), interpolator="nearest")).astype(np.uint16)
    fraction = body_stack.reshape(body_stack.shape[0], -1).mean(axis=1)
    keep = np.flatnonzero(fraction >= settings.min_body_fraction)
    info = {"label_set": seg.label_set, "spacing": list(image.GetSpacing()), "size": list(image.GetSize()), "classes": classes}
    prior_all = np.clip(prior_stack, 0, 1).astype(np.float16)
    return PreparedCase(
        spec=spec,
        target=np.clip(target[keep], 0, 1).astype(np.float16),
        prior=prior_all[keep],
        body=body_stack[keep],
        slice_index=keep.astype(np.int32),
        n_total=int(grid.n_slices),
        info=info,
        prior_all=prior_all,
        code_all=code_stack,
    )


def measure_classes(code: np.ndarray, target01: np.ndarray, prior01: np.ndarray, names: dict[int, str]) -> dict[str, dict[str, Any]]:
    """Per code present (see :class:`PreparedCase`): ``name``, ``median`` (of the real image inside it, model
    space), ``table`` (the prior's value there) and ``voxels``; keys are the codes as strings (JSON)."""
    flat = code.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_codes = flat[order]
    present, starts = np.unique(sorted_codes, return_index=True)
    bounds = list(starts[1:]) + [flat.size]
    target_flat, prior_flat = target01.ravel(), prior01.ravel()
    out: dict[str, dict[str, Any]] = {}
    for c, start, stop in zip(present.tolist(), starts.tolist(), bounds):
        if c == 0:
            continue
        where = order[start:stop]
        name = "body" if c == 1 else names.get(c - 1, f"label_{c - 1}")
        out[str(c)] = {
            "name": name,
            "median": float(np.median(target_flat[where])),
            "table": float(np.median(prior_flat[where])),
            "voxels": int(stop - start),
        }
    return out


_ARRAYS = ("target", "prior", "body", "slice_index", "prior_all", "code_all")


def _save_cached(folder: Path, case: PreparedCase) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the final folder should not be
    try:
        for name in _ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(case, name), allow_pickle=False)
        (tmp / "case.json").write_text(json.dumps({"n_total": case.n_total, "info": case.info}), encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process (DDP rank) finished the same entry first
            if not (folder / "case.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load_cached(folder: Path, spec: CaseSpec) -> PreparedCase | None:
    if not (folder / "case.json").is_file():
        return None
    try:
        meta = json.loads((folder / "case.json").read_text(encoding="utf-8"))
        arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r", allow_pickle=False) for n in _ARRAYS}
    except (OSError, ValueError):
        return None
    return PreparedCase(spec=spec, n_total=int(meta["n_total"]), info=meta.get("info", {}), **arrays)  # type: ignore[arg-type]


def default_cache_dir() -> Path:
    from seg2med_core.registry import user_dir

    return user_dir() / "cache" / "slices"


def prepare_dataset(
    cases: Sequence[CaseSpec],
    settings: PrepSettings,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    log: Callable[[str], None] | None = None,
) -> PreparedDataset:
    """Prepare (or load from cache) every case; unreadable or mismatched cases are skipped and reported."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    prepared: list[PreparedCase] = []
    skipped: list[tuple[str, str]] = []
    for i, spec in enumerate(cases):
        if cancel is not None and cancel():
            raise Cancelled("data preparation cancelled")
        if progress is not None:
            progress(i, len(cases), "preparing slices")
        folder = cache / cache_key(spec, settings)
        case = _load_cached(folder, spec)
        if case is None:
            try:
                case = prepare_case(spec, settings)
            except (Seg2MedError, RuntimeError, OSError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                skipped.append((spec.case_id, reason))
                if log is not None:
                    log(f"skipped case '{spec.case_id}': {reason}")
                continue
            _save_cached(folder, case)
            case = _load_cached(folder, spec) or case
        if len(case) == 0:
            reason = f"no slice has at least {settings.min_body_fraction:.1%} body"
            skipped.append((spec.case_id, reason))
            if log is not None:
                log(f"skipped case '{spec.case_id}': {reason}")
            continue
        prepared.append(case)
    if progress is not None:
        progress(len(cases), len(cases), "preparing slices")
    return PreparedDataset(prepared, skipped)


# ------------------------------------------------------------------------------------------ splitting
def holdout_block(n_total: int, fraction: float, position: float) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` block of ``fraction`` × ``n_total`` slices centred at ``position``."""
    length = int(round(fraction * n_total))
    if length <= 0:
        return (0, 0)
    start = int(round(position * n_total - length / 2))
    start = min(max(start, 0), n_total - length)
    return (start, start + length)


@dataclass(frozen=True)
class SliceRef:
    """One slice: ``case`` index into the dataset's cases and ``row`` into that case's arrays."""

    case: int
    row: int


@dataclass
class Split:
    train: list[SliceRef]
    val: list[SliceRef]
    holdout: dict[str, tuple[int, int]]


def split_slices(data: PreparedDataset, fraction: float, position: float) -> Split:
    """Training and validation slices: cases with split val/test are held out entirely (test cases are
    not even validated on); in the rest a contiguous block of axial slices is held out when ``fraction`` > 0."""
    train: list[SliceRef] = []
    val: list[SliceRef] = []
    holdout: dict[str, tuple[int, int]] = {}
    for ci, case in enumerate(data.cases):
        split = case.spec.split
        if split == "test":
            continue
        if split == "val":
            val.extend(SliceRef(ci, r) for r in range(len(case)))
            continue
        block = holdout_block(case.n_total, fraction, position)
        if block[1] > block[0]:
            holdout[case.spec.case_id] = block
        for r, k in enumerate(np.asarray(case.slice_index)):
            (val if block[0] <= k < block[1] else train).append(SliceRef(ci, r))
    if not train:
        raise Seg2MedError("no training slices left after the hold-out (check split column and holdout_fraction)")
    return Split(train, val, holdout)


class SliceBatcher:
    """Stacks slices into ``(B, 1, H, W)`` float32 tensors of target and prior (in [0, 1])."""

    def __init__(self, data: PreparedDataset, refs: Sequence[SliceRef]) -> None:
        self.data = data
        self.refs = list(refs)

    def __len__(self) -> int:
        return len(self.refs)

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        target = np.stack([self.data.cases[self.refs[i].case].target[self.refs[i].row] for i in indices])
        prior = np.stack([self.data.cases[self.refs[i].case].prior[self.refs[i].row] for i in indices])
        return target[:, None].astype(np.float32), prior[:, None].astype(np.float32)

    def body(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([self.data.cases[self.refs[i].case].body[self.refs[i].row] for i in indices])


# ------------------------------------------------------------------------------------------ randomisation
@dataclass(frozen=True)
class PriorRandomiser:
    """SynthSeg-style prior randomisation (per sample, per class), all in model space [0, 1].

    * CT: the prior value of class ``c`` is drawn around the case's own measured median ``m_c``:
      ``m_c + s_c + N(0, jitter)``; with probability ``shift_probability`` a sample also gets per-class shifts
      ``s_c ~ U(-shift, shift)`` applied to the *target* inside the class as well (``body`` is never shifted),
      so the prior's value is the truth to follow, whatever it is. ``shift``/``jitter`` are in HU / 2000.
      ``body`` (unlabelled tissue: fat and muscle mixed) keeps its table value (± jitter), as at inference.
    * MR (``random_sequences``): with probability ``shift_probability`` a random sequence (spoiled GRE, spin
      echo or Dixon water, random TR/TE/flip) sets each class's level ``L_c`` = its tissue signal / the table's
      largest signal (like the pipeline's prior); the target inside class ``c`` is scaled by ``L_c / m_c``
      and the prior is ``L_c (1 + N(0, jitter))``. Otherwise the prior is ``m_c (1 + N(0, jitter))`` (``body``:
      its table value).

    The randomised prior is the table prior plus ``(new value - table value)[code]``: partial-volume edges of
    the linearly resampled prior are kept, only class interiors move.
    """

    modality: str = "ct"
    jitter: float = 0.0
    shift: float = 0.0
    shift_probability: float = 0.5
    random_sequences: bool = False

    def levels(self, case: PreparedCase, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
        """``(prior_delta, target_map, how)`` indexed by code: prior = table prior + prior_delta[code];
        target = target + target_map[code] (CT) or target × target_map[code] (MR)."""
        classes = case.info.get("classes") or {}
        size = max((int(k) for k in classes), default=1) + 1
        delta = np.zeros(size, dtype=np.float32)
        mapping = np.zeros(size, dtype=np.float32) if self.modality == "ct" else np.ones(size, dtype=np.float32)
        remap = rng.random() < self.shift_probability
        if self.modality == "ct":
            for key, c in classes.items():
                k = int(key)
                is_body = c["name"] == "body"
                s = float(rng.uniform(-self.shift, self.shift)) if (remap and self.shift > 0 and not is_body) else 0.0
                base = c["table"] if is_body else c["median"]
                value = base + s + (float(rng.normal(0.0, self.jitter)) if self.jitter > 0 else 0.0)
                delta[k] = value - c["table"]
                mapping[k] = s
            return delta, mapping, "add"
        levels = random_sequence_levels([c["name"] for c in classes.values()], rng) if (remap and self.random_sequences) else None
        for i, (key, c) in enumerate(classes.items()):
            k = int(key)
            level = float(levels[i]) if levels is not None else (c["table"] if c["name"] == "body" else c["median"])
            if levels is not None:
                mapping[k] = level / max(c["median"], 1e-3)
            noise = 1.0 + (float(rng.normal(0.0, self.jitter)) if self.jitter > 0 else 0.0)
            delta[k] = level * noise - c["table"]
        return delta, mapping, "mul"


def random_sequence(rng: np.random.Generator):
    """A random but valid MR sequence: spoiled GRE (60 %), spin echo (30 %) or Dixon water (10 %)."""
    from seg2med_core.mrsignal import custom_sequence, in_phase_te_ms, opposed_phase_te_ms

    u = rng.random()
    if u < 0.6:
        tr = float(np.exp(rng.uniform(np.log(3.0), np.log(500.0))))
        te = float(rng.choice([in_phase_te_ms(), opposed_phase_te_ms(), rng.uniform(1.0, min(tr * 0.8, 30.0))]))
        te = min(te, tr * 0.8)
        return custom_sequence(tr, te, float(rng.uniform(5.0, 90.0)), kind="gre")
    if u < 0.9:
        tr = float(np.exp(rng.uniform(np.log(300.0), np.log(8000.0))))
        return custom_sequence(tr, float(rng.uniform(8.0, min(150.0, tr * 0.5))), 90.0, kind="se")
    tr = float(rng.uniform(in_phase_te_ms() + 1.5, 20.0))  # the in-phase echo must fit in TR
    return custom_sequence(tr, in_phase_te_ms(), float(rng.uniform(5.0, 30.0)), kind="dixon_water")


def random_sequence_levels(names: Sequence[str], rng: np.random.Generator, table: Any = None) -> np.ndarray:
    """Model-space prior levels of ``names`` under a random sequence (signal / the table's largest signal)."""
    from seg2med_core.prior import max_table_signal, tissue_signal
    from seg2med_core.tables import load_mr_table

    table = load_mr_table() if table is None else table
    seq = random_sequence(rng)
    peak = max_table_signal(seq, table)
    return np.array([tissue_signal(seq, table[n]) / peak if n in table else 0.0 for n in names], dtype=np.float32)


class TrainingBatcher(SliceBatcher):
    """Training/validation batches with the conditioning the network takes: ``2k + 1`` neighbouring prior
    slices (edge slices repeated, :func:`seg2med_core.network.neighbour_stack`), optional prior
    randomisation and a random ``crop`` × ``crop`` window (the same for target and every prior channel,
    centred on a random body pixel)."""

    def __init__(self, data: PreparedDataset, refs: Sequence[SliceRef], neighbours: int = 0,
                 randomiser: PriorRandomiser | None = None, crop: int | None = None) -> None:
        super().__init__(data, refs)
        self.neighbours = int(neighbours)
        self.randomiser = randomiser
        self.crop = crop

    def _sample(self, i: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
        ref = self.refs[i]
        case = self.data.cases[ref.case]
        target = np.asarray(case.target[ref.row], dtype=np.float32)
        if case.prior_all is None or case.code_all is None:  # kept slices only (e.g. built in memory): no codes
            rows = np.clip(np.arange(ref.row - self.neighbours, ref.row + self.neighbours + 1), 0, len(case) - 1)
            return target, np.asarray(case.prior[rows], dtype=np.float32), None
        z = int(case.slice_index[ref.row])
        zs = np.clip(np.arange(z - self.neighbours, z + self.neighbours + 1), 0, case.n_total - 1)
        prior = np.asarray(case.prior_all[zs], dtype=np.float32)
        window = None
        if self.crop is not None and rng is not None and self.crop < target.shape[-1]:
            code = np.asarray(case.code_all[z])
            window = _crop_window(code > 0, self.crop, rng)
        if window is not None:
            (y0, x0), c = window, self.crop
            target, prior = target[y0 : y0 + c, x0 : x0 + c], prior[:, y0 : y0 + c, x0 : x0 + c]
        if self.randomiser is not None and rng is not None:
            codes = np.asarray(case.code_all[zs], dtype=np.int64)
            if window is not None:
                codes = codes[:, y0 : y0 + c, x0 : x0 + c]
            delta, mapping, how = self.randomiser.levels(case, rng)
            codes = np.minimum(codes, delta.shape[0] - 1)
            prior = np.clip(prior + delta[codes], 0.0, 1.0)
            centre = codes[self.neighbours]
            target = np.clip(target + mapping[centre] if how == "add" else target * mapping[centre], 0.0, 1.0)
        return target, prior, window

    def conditioned(self, indices: Sequence[int], rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(target (B, 1, h, w), prior (B, 2k+1, h, w))`` float32 in [0, 1]; ``rng`` None: no randomisation,
        no crop (validation: the table prior, as at inference)."""
        samples = [self._sample(i, rng) for i in indices]
        target = np.stack([t for t, _, _ in samples])[:, None]
        prior = np.stack([p for _, p, _ in samples])
        return target.astype(np.float32), prior.astype(np.float32)


def _crop_window(body: np.ndarray, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a ``crop`` window centred on a random body pixel (anywhere if there is none)."""
    h, w = body.shape
    ys, xs = np.nonzero(body)
    if ys.size:
        k = int(rng.integers(ys.size))
        cy, cx = int(ys[k]), int(xs[k])
    else:
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0 = min(max(cy - crop // 2, 0), h - crop)
    x0 = min(max(cx - crop // 2, 0), w - crop)
    return y0, x0
