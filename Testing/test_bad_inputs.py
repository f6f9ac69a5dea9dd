"""Bad-input corpus (issue 13): segmentations, images, output paths and full disks, each through the real
command line in a subprocess (``python -m seg2med_core ...``).

Every case must end with exit code 2, exactly one stderr line ``seg2med: error: ...`` (the last one) naming
the file or value, no traceback, nothing new in its output folder, and every input byte-identical afterwards. The
inputs are generated here (tiny volumes); synthesis uses the tiny test bundle and one step. The cases run
a few at a time in a thread pool (each is its own process), so the file stays well under a minute.
Full-disk cases need a small tmpfs (root); they are skipped with the reason where it cannot be mounted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from seg2med_core import io
from seg2med_core.labels import names_for

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    argv: list[str]
    expect: str  # text the error line must contain ({name} placeholders already filled in)
    out_dir: Path  # must look exactly the same afterwards
    needs_mount: bool = False
    result: subprocess.CompletedProcess[str] | None = field(default=None, repr=False)


class Corpus:
    """Generated inputs (one folder, hashed before and after) and per-case output folders."""

    def __init__(self, root: Path, seg: Path, ct: Path, model: Path) -> None:
        self.root = root
        self.inp = root / "inputs"
        self.inp.mkdir()
        self.seg = self._copy(seg, "seg.nii.gz")
        self.ct = self._copy(ct, "ct.nii.gz")
        self.model = model
        self.mounts: list[Path] = []
        self.mount_error: str | None = None
        self.seg_img = sitk.ReadImage(str(self.seg))
        self.ct_img = sitk.ReadImage(str(self.ct))

    def _copy(self, src: Path, name: str) -> Path:
        dst = self.inp / name
        shutil.copyfile(src, dst)
        return dst

    def out(self, name: str) -> Path:
        folder = self.root / "out" / name
        folder.mkdir(parents=True)
        return folder

    def like_seg(self, arr: np.ndarray, name: str, spacing=None, direction=None) -> Path:
        img = sitk.GetImageFromArray(arr)
        img.CopyInformation(self.seg_img)
        if spacing is not None:
            img.SetSpacing(spacing)
        if direction is not None:
            img.SetDirection(direction)
        path = self.inp / name
        sitk.WriteImage(img, str(path), True)
        return path

    def truncated(self, src: Path, name: str, fraction: float = 0.5) -> Path:
        blob = src.read_bytes()
        path = self.inp / name
        path.write_bytes(blob[: int(len(blob) * fraction)])
        return path

    def small_disk(self, name: str, free_kib: int) -> Path | None:
        """A tmpfs with about ``free_kib`` KiB free (None, and the reason kept, where mounting is not allowed)."""
        mnt = self.root / "mnt" / name
        mnt.mkdir(parents=True)
        size = free_kib + 64
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}k", "tmpfs", str(mnt)], capture_output=True, text=True)
        if proc.returncode != 0:
            self.mount_error = proc.stderr.strip() or "mount failed"
            return None
        self.mounts.append(mnt)
        filler = mnt / "filler.bin"
        with open(filler, "wb") as f:  # leave free_kib free
            try:
                f.write(b"\0" * (64 * 1024))
            except OSError:
                pass
        return mnt

    def read_only_folder(self, name: str) -> Path | None:
        mnt = self.root / "mnt" / name
        mnt.mkdir(parents=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
        if proc.returncode != 0:
            self.mount_error = proc.stderr.strip() or "mount failed"
            return None
        self.mounts.append(mnt)
        return mnt

    def unmount(self) -> None:
        for mnt in self.mounts:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# --------------------------------------------------------------------------------------------- the cases
def _synth(c: Corpus, out: Path, **over: str | None) -> list[str]:
    args: dict[str, str | None] = {"--seg": str(c.seg), "--model": str(c.model), "--steps": "1", "--device": "cpu",
                                   "--out": str(out / "sct.nii.gz"), "--progress-format": "none"}  # fmt: skip
    args.update(over)
    return ["synthesize"] + [x for k, v in args.items() if v is not None for x in (k, v)]


def _prior(c: Corpus, out: Path, **over: str | None) -> list[str]:
    args: dict[str, str | None] = {"--seg": str(c.seg), "--modality": "ct", "--out": str(out / "prior.nii.gz"),
                                   "--progress-format": "none"}  # fmt: skip
    args.update(over)
    return ["prior"] + [x for k, v in args.items() if v is not None for x in (k, v)]


def _labels_convert(c: Corpus, seg: Path, out: Path) -> list[str]:
    return ["labels", "convert", "--seg", str(seg), "--to", "total_mr", "--out", str(out)]


def _seg_nrrd_with(c: Corpus, name: str, directions: str) -> Path:
    good = io.write_segmentation(io.read_segmentation(c.seg), c.inp / name)
    head, sep, body = good.read_bytes().partition(b"\n\n")
    lines = [ln for ln in head.split(b"\n") if not ln.startswith(b"space directions:")]
    lines.insert(3, b"space directions: " + directions.encode())
    good.write_bytes(b"\n".join(lines) + sep + body)
    return good


def _noise_seg(c: Corpus, name: str, shape=(40, 64, 64)) -> Path:
    """A larger label map of random organ ids (compresses badly: fills a small disk)."""
    arr = np.random.default_rng(0).integers(1, 100, size=shape).astype(np.uint16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((5.0, 5.0, 5.0))
    return io.write_segmentation(io.Segmentation(img, names_for("total"), "total"), c.inp / name)


def _seg_cases() -> dict[str, Callable[[Corpus], Case]]:
    cases: dict[str, Callable[[Corpus], Case]] = {}

    def add(name: str):  # noqa: ANN202
        def deco(fn: Callable[[Corpus], Case]) -> Callable[[Corpus], Case]:
            cases[name] = fn
            return fn

        return deco

    # --- segmentations -------------------------------------------------------------------------------
    for suffix in (".nii.gz", ".nii", ".mha", ".nrrd", ".seg.nrrd"):

        @add(f"seg truncated {suffix}")
        def _(c: Corpus, suffix: str = suffix) -> Case:
            full = c.inp / f"full_seg{suffix}"
            if suffix in (".nii.gz", ".nii", ".seg.nrrd"):
                io.write_segmentation(io.read_segmentation(c.seg), full)
            else:
                sitk.WriteImage(c.seg_img, str(full), True)
            bad = c.truncated(full, f"half_seg{suffix}")
            out = c.out(f"trunc{suffix}")
            return Case(_prior(c, out, **{"--seg": str(bad)}), f"segmentation '{bad}' is truncated or corrupt", out)

    @add("seg is a FIFO")
    def _(c: Corpus) -> Case:
        fifo = c.inp / "fifo_seg.nii.gz"
        os.mkfifo(fifo)
        out = c.out("fifo")
        return Case(_synth(c, out, **{"--seg": str(fifo)}), f"segmentation '{fifo}' is a FIFO, not a regular file", out)

    @add("seg 0 bytes")
    def _(c: Corpus) -> Case:
        empty = c.inp / "zero_bytes.nii.gz"
        empty.write_bytes(b"")
        out = c.out("zero_bytes")
        return Case(_prior(c, out, **{"--seg": str(empty)}), f"segmentation '{empty}' is empty (0 bytes)", out)

    @add("seg NaN in float labels")
    def _(c: Corpus) -> Case:
        arr = sitk.GetArrayFromImage(c.seg_img).astype(np.float32)
        arr[2, 10, 10] = np.nan
        path = c.inp / "nan_labels.nii.gz"
        nib.save(nib.Nifti1Image(np.transpose(arr, (2, 1, 0)), np.diag([5.0, 5.0, 5.0, 1.0])), str(path))
        out = c.out("nan_labels")
        return Case(_prior(c, out, **{"--seg": str(path)}), f"segmentation '{path}' has 1 NaN/infinite label value", out)

    @add("seg NIfTI spacing 0")
    def _(c: Corpus) -> Case:
        arr = np.transpose(sitk.GetArrayFromImage(c.seg_img), (2, 1, 0))
        img = nib.Nifti1Image(arr, np.diag([5.0, 5.0, 5.0, 1.0]))
        img.header["pixdim"][1:4] = (5.0, 5.0, 0.0)
        path = c.inp / "pixdim0.nii.gz"
        nib.save(img, str(path))
        out = c.out("pixdim0")
        return Case(_prior(c, out, **{"--seg": str(path)}), f"segmentation '{path}' has spacing 0 mm along z", out)

    for label, sp, value in (("0.003 mm (metres)", (0.003, 0.003, 0.005), "0.003 mm is outside"),
                             ("1e5 mm", (1e5, 1e5, 5.0), "100000 mm is outside"),
                             ("1e-6 mm in-plane", (1e-6, 1e-6, 5.0), "1e-06 mm is outside")):  # fmt: skip

        @add(f"seg spacing {label}")
        def _(c: Corpus, sp=sp, value=value, label=label) -> Case:
            path = c.like_seg(sitk.GetArrayFromImage(c.seg_img), f"spacing_{label.split()[0]}.nii.gz", spacing=sp)
            out = c.out(f"spacing_{label.split()[0]}")
            return Case(_synth(c, out, **{"--seg": str(path)}), value, out)

    @add("seg skewed .mha")
    def _(c: Corpus) -> Case:
        path = c.inp / "skew.mha"
        img = sitk.Image(c.seg_img)
        img.SetDirection((1.0, 0.4, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        sitk.WriteImage(img, str(path))
        out = c.out("skew_mha")
        return Case(_prior(c, out, **{"--seg": str(path)}), f"segmentation '{path}' has skewed (non-orthogonal) voxel axes", out)

    for label, directions, expect in (("zero", "(5,0,0) (0,0,0) (0,0,5)", "a zero space direction for axis j"),
                                      ("NaN", "(nan,0,0) (0,5,0) (0,0,5)", "non-finite space directions"),
                                      ("skewed", "(5,0,0) (3,5,0) (0,0,5)", "skewed (non-orthogonal)")):  # fmt: skip

        @add(f"seg.nrrd {label} space direction")
        def _(c: Corpus, label=label, directions=directions, expect=expect) -> Case:
            path = _seg_nrrd_with(c, f"dir_{label}.seg.nrrd", directions)
            out = c.out(f"nrrd_{label}")
            return Case(_prior(c, out, **{"--seg": str(path)}), f"segmentation '{path}' has {expect}", out)

    @add("seg CaretExtension Key=one")
    def _(c: Corpus) -> Case:
        img = nib.load(str(c.seg))
        xml = img.header.extensions[0].get_content().replace(b'Key="1"', b'Key="one"', 1)
        img.header.extensions.clear()
        img.header.extensions.append(nib.nifti1.Nifti1Extension(0, xml))
        path = c.inp / "key_one.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, header=img.header), str(path))
        out = c.out("key_one")
        return Case(_prior(c, out, **{"--seg": str(path)}), "non-integer Key 'one'", out)

    @add("seg header promising 1.8e12 voxels")
    def _(c: Corpus) -> Case:
        hdr = nib.Nifti1Header()
        hdr.set_data_shape((30000, 30000, 2000))
        hdr.set_data_dtype(np.uint16)
        hdr["pixdim"][1:4] = 1.0
        path = c.inp / "huge.nii"
        path.write_bytes(hdr.binaryblock + b"\0" * 1028)
        out = c.out("huge")
        return Case(_synth(c, out, **{"--seg": str(path)}), "has 1.8e+12 voxels (30000x30000x2000): working on it needs about", out)

    @add("seg .mhd without its data file")
    def _(c: Corpus) -> Case:
        sub = c.inp / "mhd"
        sub.mkdir()
        sitk.WriteImage(c.seg_img, str(sub / "seg.mhd"), True)
        (sub / "seg.zraw").unlink()
        out = c.out("mhd_no_data")
        return Case(_prior(c, out, **{"--seg": str(sub / "seg.mhd")}), "seg.zraw' (ElementDataFile) does not exist", out)

    @add("seg single voxel (synthesize)")
    def _(c: Corpus) -> Case:
        arr = np.zeros_like(sitk.GetArrayFromImage(c.seg_img))
        arr[3, 18, 20] = 5
        path = c.like_seg(arr, "one_voxel.nii.gz")
        out = c.out("one_voxel")
        return Case(_synth(c, out, **{"--seg": str(path)}), "the body is too small to synthesise", out)

    # --- images --------------------------------------------------------------------------------------
    @add("image truncated .nii.gz (synthesize)")
    def _(c: Corpus) -> Case:
        bad = c.truncated(c.ct, "half_ct.nii.gz")
        out = c.out("img_trunc_gz")
        return Case(_synth(c, out, **{"--image": str(bad)}), f"image '{bad}' is truncated or corrupt", out)

    @add("image truncated .nii (prior)")
    def _(c: Corpus) -> Case:
        full = c.inp / "ct_plain.nii"
        sitk.WriteImage(c.ct_img, str(full))
        bad = c.truncated(full, "half_ct.nii", 0.7)
        out = c.out("img_trunc_nii")
        return Case(_prior(c, out, **{"--image": str(bad)}), f"image '{bad}' is truncated or corrupt", out)

    @add("image constant (prior)")
    def _(c: Corpus) -> Case:
        img = sitk.Image(c.ct_img)
        img = sitk.GetImageFromArray(np.full(sitk.GetArrayFromImage(c.ct_img).shape, 40, np.int16))
        img.CopyInformation(c.ct_img)
        path = c.inp / "constant_ct.nii.gz"
        sitk.WriteImage(img, str(path), True)
        out = c.out("img_constant")
        return Case(_prior(c, out, **{"--image": str(path)}), f"image '{path}' is constant (every voxel is 40)", out)

    @add("image is a FIFO")
    def _(c: Corpus) -> Case:
        fifo = c.inp / "fifo_ct.nii.gz"
        os.mkfifo(fifo)
        out = c.out("img_fifo")
        return Case(_prior(c, out, **{"--image": str(fifo)}), f"image '{fifo}' is a FIFO", out)

    @add("image NIfTI spacing 0")
    def _(c: Corpus) -> Case:
        arr = np.transpose(sitk.GetArrayFromImage(c.ct_img), (2, 1, 0))
        img = nib.Nifti1Image(arr, np.diag([5.0, 5.0, 5.0, 1.0]))
        img.header["pixdim"][1:4] = (0.0, 5.0, 5.0)
        path = c.inp / "ct_pixdim0.nii.gz"
        nib.save(img, str(path))
        out = c.out("img_pixdim0")
        return Case(_prior(c, out, **{"--image": str(path)}), f"image '{path}' has spacing 0 mm along x", out)

    @add("evaluate on a truncated segmentation")
    def _(c: Corpus) -> Case:
        bad = c.truncated(c.seg, "half_eval_seg.nii.gz")
        out = c.out("eval_trunc")
        argv = ["evaluate", "--baseline", "prior", "--modality", "ct", "--image", str(c.ct), "--segmentation", str(bad),
                "--out", str(out / "eval"), "--no-fid", "--no-dice", "--progress-format", "none"]  # fmt: skip
        return Case(argv, "is truncated or corrupt", out)

    @add("evaluate --compare missing folder")
    def _(c: Corpus) -> Case:
        out = c.out("eval_compare")
        argv = ["evaluate", "--baseline", "prior", "--modality", "ct", "--image", str(c.ct), "--segmentation", str(c.seg),
                "--out", str(out / "eval"), "--no-fid", "--no-dice", "--compare", str(out / "missing"), "--progress-format", "none"]  # fmt: skip
        return Case(argv, f"--compare folder '{out / 'missing'}' does not exist", out)

    # --- output paths --------------------------------------------------------------------------------
    @add("out == --seg")
    def _(c: Corpus) -> Case:
        return Case(_synth(c, c.inp, **{"--out": str(c.seg)}), f"--out '{c.seg}' is the same file as input --seg", c.inp)

    @add("out == --image")
    def _(c: Corpus) -> Case:
        return Case(_synth(c, c.inp, **{"--image": str(c.ct), "--out": str(c.ct)}), "is the same file as input --image", c.inp)

    @add("out is a symlink to --seg")
    def _(c: Corpus) -> Case:
        out = c.out("symlink")
        (out / "link.nii.gz").symlink_to(c.seg)
        return Case(_synth(c, out, **{"--out": str(out / "link.nii.gz")}), "is the same file as input --seg", out)

    @add("out is --seg spelled differently")
    def _(c: Corpus) -> Case:
        spelled = f"{c.inp}/../inputs/./seg.nii.gz"
        return Case(_prior(c, c.inp, **{"--out": spelled}), f"--out '{Path(spelled)}' is the same file as input --seg", c.inp)

    @add("out is a hard link to --image")
    def _(c: Corpus) -> Case:
        out = c.out("hardlink")
        os.link(c.ct, out / "ct_link.nii.gz")
        return Case(_prior(c, out, **{"--image": str(c.ct), "--out": str(out / "ct_link.nii.gz")}), "is the same file as input --image", out)

    @add("out == --tissue-seg")
    def _(c: Corpus) -> Case:
        tissue = c.inp / "tissue.nii.gz"
        arr = (sitk.GetArrayFromImage(c.seg_img) > 0).astype(np.uint16)
        img = sitk.GetImageFromArray(arr)
        img.CopyInformation(c.seg_img)
        io.write_segmentation(io.Segmentation(img, names_for("tissue_types"), "tissue_types"), tissue)
        return Case(_prior(c, c.inp, **{"--tissue-seg": str(tissue), "--out": str(tissue)}),
                    f"--out '{tissue}' is the same file as input --tissue-seg", c.inp)  # fmt: skip

    @add("labels convert --out == --seg")
    def _(c: Corpus) -> Case:
        return Case(_labels_convert(c, c.seg, c.seg), f"--out '{c.seg}' is the same file as input --seg", c.inp)

    @add("prior-out == out")
    def _(c: Corpus) -> Case:
        out = c.out("prior_eq_out")
        same = str(out / "x.nii.gz")
        return Case(_synth(c, out, **{"--out": same, "--prior-out": same}), f"--prior-out '{same}' is the same file as output --out", out)

    @add("preview == reformat")
    def _(c: Corpus) -> Case:
        out = c.out("preview_eq_reformat")
        png = str(out / "p.png")
        return Case(_synth(c, out, **{"--preview": png, "--reformat": png}), f"--reformat '{png}' is the same file as output --preview", out)

    @add("out upper-case .MHD")
    def _(c: Corpus) -> Case:
        out = c.out("upper_mhd")
        return Case(_prior(c, out, **{"--out": str(out / "X.MHD")}), "give .mhd outputs a lower-case suffix", out)

    @add("out exists as a FIFO")
    def _(c: Corpus) -> Case:
        out = c.out("out_fifo")
        os.mkfifo(out / "o.nii.gz")
        return Case(_prior(c, out, **{"--out": str(out / "o.nii.gz")}), "exists and is not a regular file", out)

    # --- full disks / read-only folders (tmpfs) --------------------------------------------------------
    for suffix in (".nii.gz", ".nii", ".mha", ".nrrd", ".mhd"):

        @add(f"full disk: prior {suffix}")
        def _(c: Corpus, suffix: str = suffix) -> Case:
            big = c.inp / "noise_seg.nii.gz"
            if not big.exists():
                _noise_seg(c, big.name)
            disk = c.small_disk(f"prior{suffix}", 96)
            out = disk or c.out(f"nodisk_prior{suffix}")
            return Case(_prior(c, out, **{"--seg": str(big), "--out": str(out / f"prior{suffix}")}),
                        f"cannot write", out, needs_mount=True)  # fmt: skip

    @add("full disk: synthesize .nii.gz")
    def _(c: Corpus) -> Case:
        big = c.inp / "noise_seg_synth.nii.gz"
        _noise_seg(c, big.name)
        disk = c.small_disk("synth", 96)
        out = disk or c.out("nodisk_synth")
        return Case(_synth(c, out, **{"--seg": str(big), "--out": str(out / "sct.nii.gz"), "--prior-out": str(out / "p.nii.gz")}),
                    "cannot write", out, needs_mount=True)  # fmt: skip

    @add("full disk before work: synthesize")
    def _(c: Corpus) -> Case:
        disk = c.small_disk("synth_full", 0)
        out = disk or c.out("nodisk_synth_full")
        return Case(_synth(c, out, **{"--out": str(out / "sct.nii.gz")}), "its disk is full", out, needs_mount=True)

    for suffix in (".nii.gz", ".seg.nrrd"):

        @add(f"full disk: labels convert {suffix}")
        def _(c: Corpus, suffix: str = suffix) -> Case:
            big = c.inp / "noise_seg_labels.nii.gz"
            if not big.exists():
                _noise_seg(c, big.name, (60, 64, 64))
            disk = c.small_disk(f"labels{suffix}", 96)
            out = disk or c.out(f"nodisk_labels{suffix}")
            return Case(_labels_convert(c, big, out / f"mr{suffix}"), "cannot write", out, needs_mount=True)

    @add("read-only output folder")
    def _(c: Corpus) -> Case:
        ro = c.read_only_folder("ro")
        out = ro or c.out("nodisk_ro")
        return Case(_synth(c, out, **{"--out": str(out / "sct.nii.gz")}), "cannot be written: Read-only file system", out, needs_mount=True)

    return cases


CASES = _seg_cases()


# --------------------------------------------------------------------------------------------- running
def _snapshot(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not p.exists():
            out[str(p.relative_to(folder))] = "link"
        elif p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(folder))] = "fifo" if not p.is_dir() else "dir"
    return out


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    try:  # generous: the shared CI machine can be very busy; a hang (FIFO) still ends as a failure of its case
        return subprocess.run([sys.executable, "-m", "seg2med_core", *argv], capture_output=True, text=True, timeout=600,
                              env=env, cwd=REPO)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(argv, -1, "", f"timed out after {exc.timeout} s")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, synthetic_case: dict[str, Path], tiny_bundle: Path):  # noqa: ANN201
    c = Corpus(tmp_path_factory.mktemp("bad_inputs"), synthetic_case["seg"], synthetic_case["ct"], tiny_bundle)
    try:  # the small disks are unmounted whatever happens
        cases = {name: build(c) for name, build in CASES.items()}
        inputs_before = _snapshot(c.inp)
        outs_before = {name: _snapshot(case.out_dir) for name, case in cases.items()}
        runnable = [name for name, case in cases.items() if not (case.needs_mount and c.mount_error)]
        with ThreadPoolExecutor(max_workers=3) as pool:
            for name, result in zip(runnable, pool.map(lambda n: _run(cases[n].argv), runnable)):
                cases[name].result = result
        yield c, cases, inputs_before, outs_before, _snapshot(c.inp)
    finally:
        c.unmount()


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_bad_input_through_the_cli(corpus, name: str) -> None:  # noqa: ANN001
    c, cases, inputs_before, outs_before, inputs_after = corpus
    case = cases[name]
    if case.result is None:
        pytest.skip(f"needs a small tmpfs, which cannot be mounted here: {c.mount_error}")
    proc = case.result
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("seg2med: error: ")]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    # one error line, the last; before it only the progress remarks of a run that got as far as writing
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert case.expect in errors[0], errors[0]
    assert _snapshot(case.out_dir) == outs_before[name], "output folder changed"
    assert inputs_after == inputs_before, "an input changed"


def test_corpus_covers_at_least_35_kinds() -> None:
    assert len(CASES) >= 35


# --------------------------------------------------------------------------------------------- signals
def test_sigterm_during_synthesize_exits_143_and_leaves_nothing(tmp_path: Path, synthetic_case: dict[str, Path], tiny_bundle: Path) -> None:
    """SIGTERM (what a GUI sends on Cancel) while sampling: exit 143, a 'cancelled' line, no file at all."""
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "seg2med_core", "synthesize", "--seg", str(synthetic_case["seg"]), "--model", str(tiny_bundle),
         "--steps", "400", "--sampler", "ddim", "--device", "cpu", "--out", str(out / "sct.nii.gz"),
         "--prior-out", str(out / "prior.nii.gz"), "--progress-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until sampling runs
        if '"progress"' in line:
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and "seg2med: cancelled: terminated by SIGTERM" in stderr
    assert '"cancelled"' in stdout
    assert list(out.iterdir()) == []
