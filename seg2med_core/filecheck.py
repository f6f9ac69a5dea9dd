"""Checks on image files that SimpleITK does not make: completeness, plausible geometry, memory.

SimpleITK reads a truncated ``.nii.gz`` or ``.nii`` by filling the missing voxels with zeros, reads a NIfTI
spacing of 0 as 1 mm, and its writers do not report a full disk. Before a file is trusted
(:func:`check_image_file`, called by ``io`` on every file it reads and on every file it has just written)
its header is parsed here and the data it promises is counted: the whole compressed stream is decompressed
(gzip / zlib / bzip2 integrity, CRC included) or the file size is compared with the header's. Formats:
NIfTI-1/2 (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd`` + data file), NRRD (``.nrrd``,
``.seg.nrrd``, ``.nhdr``). Other formats (DICOM, ...) are left to SimpleITK.

:func:`check_geometry` bounds what a file may claim: spacings between :data:`MIN_SPACING_MM` and
:data:`MAX_SPACING_MM`, finite origin, orthonormal direction cosines (a skewed grid cannot be written back
to NIfTI without changing it). :func:`check_memory` refuses a volume whose header promises more voxels than
the machine can hold, before anything is allocated. Every failure is a one-line ``Seg2MedError`` naming
the file and the value.
"""

from __future__ import annotations

import bz2
import os
import re
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import Seg2MedError

#: Smallest and largest voxel spacing (mm) accepted from a file: 0.003 mm is a spacing written in metres,
#: 1e5 mm a unit or header error; both would make the pipeline allocate absurd grids or produce nonsense.
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 100.0
#: Direction cosines must be orthonormal within this tolerance (float32 headers round at ~1e-7).
DIRECTION_TOLERANCE = 1e-3
#: Bytes of working memory per voxel beyond the file's own voxel size (float copies, masks, labels).
WORKING_BYTES_PER_VOXEL = 12
_CHUNK = 1 << 20

_COMPOUND = (".seg.nrrd", ".nii.gz")


@dataclass(frozen=True)
class FileInfo:
    """What a header promises: sizes (x, y, z, ...), bytes per voxel (all components), header spacing."""

    sizes: tuple[int, ...]
    voxel_bytes: int
    spacing: tuple[float, ...] | None = None

    @property
    def voxels(self) -> int:
        return int(np.prod(self.sizes, dtype=np.float64)) if self.sizes else 0


def suffix_of(name: str) -> str:
    """Lower-cased format suffix of a file name (``.nii.gz``, ``.seg.nrrd``, ``.mha``, ...)."""
    low = name.lower()
    for suffix in _COMPOUND:
        if low.endswith(suffix):
            return suffix
    dot = low.rfind(".")
    return low[dot:] if dot > 0 else ""


def check_regular_file(path: Path, what: str) -> os.stat_result:
    """The file exists and is a regular file (not a FIFO that would block the reader, a device, a socket)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise Seg2MedError(f"{what} '{path}' does not exist") from None
    except OSError as exc:
        raise Seg2MedError(f"{what} '{path}' cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file"
        raise Seg2MedError(f"{what} '{path}' is {kind}, not a regular file: give an image file")
    if st.st_size == 0:
        raise Seg2MedError(f"{what} '{path}' is empty (0 bytes)")
    return st


def _bad(what: str, path: Path, reason: str) -> Seg2MedError:
    return Seg2MedError(f"{what} '{path}' is truncated or corrupt: {reason}")


# ------------------------------------------------------------------------------------- stream counting
def _count_stream(f, decompressor: Callable[[], object] | None, limit: int) -> tuple[int, bool]:
    """Bytes of (decompressed) data from the file object's position; and whether the stream ended cleanly.

    ``decompressor`` builds a zlib/bz2 decompressor (None: plain bytes). Concatenated gzip members are
    followed. Counting stops once ``limit`` bytes are exceeded (more data than promised is not an error).
    """
    if decompressor is None:
        total = 0
        while chunk := f.read(_CHUNK):
            total += len(chunk)
            if total > limit:
                break
        return total, True
    d = decompressor()
    total, ended = 0, False
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            break
        while chunk:
            total += len(d.decompress(chunk))  # type: ignore[attr-defined]
            if d.eof:  # type: ignore[attr-defined]
                ended = True
                chunk = d.unused_data  # type: ignore[attr-defined]
                if chunk.strip(b"\0"):
                    d, ended = decompressor(), False
                else:
                    chunk = b""
            else:
                chunk = b""
            if total > limit:
                return total, True
    return total, ended


def _gzip() -> object:
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


def _zlib_or_gzip() -> object:
    return zlib.decompressobj(32 + zlib.MAX_WBITS)


def _check_data(f, path: Path, what: str, expected: int, decompressor: Callable[[], object] | None, kind: str) -> None:
    try:
        got, ended = _count_stream(f, decompressor, expected)
    except (zlib.error, OSError, EOFError, ValueError) as exc:
        raise _bad(what, path, f"the {kind} data cannot be decompressed ({exc})") from None
    if not ended:
        raise _bad(what, path, f"the {kind} data ends early ({got} of {expected} bytes); the file was cut off")
    if got < expected:
        raise _bad(what, path, f"{got} bytes of voxel data, the header promises {expected}; the file was cut off")


# ------------------------------------------------------------------------------------------------ NIfTI
def _nifti(path: Path, what: str) -> FileInfo:
    gz = path.name.lower().endswith(".gz")
    with open(path, "rb") as raw:
        if gz:
            d = _gzip()
            head = b""
            try:
                while len(head) < 544:
                    chunk = raw.read(4096)
                    if not chunk:
                        break
                    head += d.decompress(chunk)
            except zlib.error:
                raise Seg2MedError(f"{what} '{path}' cannot be read: not a gzip-compressed file") from None
        else:
            head = raw.read(544)
        info, offset = _nifti_header(head, path, what)
        if info is None:  # .hdr/.img pair: the data lives elsewhere
            return FileInfo((), 0)
        expected = offset + info.voxels * info.voxel_bytes
        raw.seek(0)
        _check_data(raw, path, what, expected, _gzip if gz else None, "gzip-compressed" if gz else "image")
    return info


def _nifti_header(head: bytes, path: Path, what: str) -> tuple[FileInfo | None, int]:
    if len(head) < 348:
        raise _bad(what, path, f"only {len(head)} bytes, shorter than a NIfTI header")
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", head[:4])
        if size in (348, 540):
            break
    else:
        raise Seg2MedError(f"{what} '{path}' cannot be read: not a NIfTI file (header size {size})")
    if size == 348:
        dim = struct.unpack(endian + "8h", head[40:56])
        bitpix = struct.unpack(endian + "h", head[72:74])[0]
        pixdim = struct.unpack(endian + "8f", head[76:108])
        offset = int(struct.unpack(endian + "f", head[108:112])[0])
        magic = head[344:348]
    else:
        if len(head) < 540:
            raise _bad(what, path, f"only {len(head)} bytes, shorter than a NIfTI-2 header")
        bitpix = struct.unpack(endian + "h", head[14:16])[0]
        dim = struct.unpack(endian + "8q", head[16:80])
        pixdim = struct.unpack(endian + "8d", head[104:168])
        offset = int(struct.unpack(endian + "q", head[168:176])[0])
        magic = head[4:8]
    if magic[:3] in (b"ni1", b"ni2"):
        return None, 0
    ndim = int(dim[0])
    if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
        raise Seg2MedError(f"{what} '{path}' cannot be read: corrupt NIfTI header (dim[0]={ndim}, bitpix={bitpix})")
    sizes = tuple(max(1, int(v)) for v in dim[1 : ndim + 1])
    if any(int(v) < 0 for v in dim[1 : ndim + 1]):
        raise Seg2MedError(f"{what} '{path}' cannot be read: negative size in the NIfTI header ({dim[1:ndim + 1]})")
    spacing = tuple(float(v) for v in pixdim[1 : min(ndim, 3) + 1])
    return FileInfo(sizes, bitpix // 8, spacing), max(offset, size + 4 if size == 348 else 544)


# -------------------------------------------------------------------------------------------- MetaImage
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}  # fmt: skip


def _read_header_block(f, end: Callable[[bytes], int], limit: int = 8 << 20) -> tuple[bytes, int] | None:
    """Read from the start until ``end(buffer)`` gives the header length (>= 0); None when never found."""
    buf = b""
    while len(buf) < limit:
        chunk = f.read(65536)
        if not chunk:
            n = end(buf)
            return (buf[:n], n) if n >= 0 else None
        buf += chunk
        n = end(buf)
        if n >= 0:
            return buf[:n], n
    return None


def _meta_end(buf: bytes) -> int:
    m = re.search(rb"(^|\n)\s*ElementDataFile\s*=[^\n]*\n", buf)
    return m.end() if m else -1


def _metaimage(path: Path, what: str) -> FileInfo:
    with open(path, "rb") as f:
        block = _read_header_block(f, _meta_end)
        if block is None:
            raise _bad(what, path, "its MetaImage header has no ElementDataFile line (cut off, or not a MetaImage file)")
        text, n = block
        fields: dict[str, str] = {}
        for line in text.decode("latin-1").splitlines():
            key, eq, value = line.partition("=")
            if eq:
                fields[key.strip()] = value.strip()
        try:
            sizes = tuple(int(v) for v in fields.get("DimSize", "").split())
            channels = int(fields.get("ElementNumberOfChannels", "1"))
            spacing = tuple(float(v) for v in (fields.get("ElementSpacing") or fields.get("ElementSize") or "").split()) or None
        except ValueError:
            raise Seg2MedError(f"{what} '{path}' cannot be read: unreadable DimSize/ElementSpacing in its MetaImage header") from None
        elem = _MET_BYTES.get(fields.get("ElementType", ""))
        info = FileInfo(sizes, (elem or 0) * channels, spacing)
        data_file = fields.get("ElementDataFile", "")
        if not sizes or elem is None or int(fields.get("HeaderSize", "0") or 0) != 0 or data_file.upper() == "LIST" or "%" in data_file:
            return info
        compressed = fields.get("CompressedData", "False").lower() == "true"
        expected = info.voxels * info.voxel_bytes
        if data_file.upper() == "LOCAL":
            f.seek(n)
            _check_data(f, path, what, expected, _zlib_or_gzip if compressed else None, "zlib-compressed" if compressed else "image")
            return info
    data = path.parent / data_file
    if not data.is_file():
        raise Seg2MedError(f"{what} '{path}': its data file '{data}' (ElementDataFile) does not exist")
    with open(data, "rb") as f:
        _check_data(f, data, what, expected, _zlib_or_gzip if compressed else None, "zlib-compressed" if compressed else "image")
    return info


# ------------------------------------------------------------------------------------------------- NRRD
_NRRD_BYTES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
        "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
        "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"),
}  # fmt: skip
_NRRD_TYPE_BYTES = {name: n for n, names in _NRRD_BYTES.items() for name in names}


def _nrrd_end(buf: bytes) -> int:
    i = buf.find(b"\n\n")
    j = buf.find(b"\r\n\r\n")
    ends = [k + 2 for k in (i,) if k >= 0] + [k + 4 for k in (j,) if k >= 0]
    return min(ends) if ends else -1


def _nrrd(path: Path, what: str) -> FileInfo:
    with open(path, "rb") as f:
        if not f.read(4) == b"NRRD":
            raise Seg2MedError(f"{what} '{path}' cannot be read: not a NRRD file (no NRRD magic)")
        f.seek(0)
        block = _read_header_block(f, _nrrd_end)
        if block is None:
            raise _bad(what, path, "the NRRD header does not end (no blank line before the data)")
        text, n = block
        fields: dict[str, str] = {}
        for line in text.decode("latin-1").splitlines()[1:]:
            kv, sep = line.find(":="), line.find(": ")
            if line.startswith("#") or sep < 0 or 0 <= kv < sep:  # comments and key:=value pairs
                continue
            fields[line[:sep].strip().lower()] = line[sep + 2 :].strip()
        try:
            sizes = tuple(int(v) for v in fields.get("sizes", "").split())
        except ValueError:
            raise Seg2MedError(f"{what} '{path}' cannot be read: unreadable 'sizes' in its NRRD header") from None
        elem = _NRRD_TYPE_BYTES.get(fields.get("type", "").lower())
        info = FileInfo(sizes, elem or 0)
        encoding = fields.get("encoding", "raw").lower()
        detached = fields.get("data file") or fields.get("datafile")
        skips = int(fields.get("line skip", fields.get("lineskip", "0")) or 0) or int(fields.get("byte skip", fields.get("byteskip", "0")) or 0)
        if not sizes or elem is None or detached or skips or encoding not in ("raw", "gzip", "gz", "bzip2", "bz2"):
            return info
        f.seek(n)
        decompressor = {"gzip": _gzip, "gz": _gzip, "bzip2": bz2.BZ2Decompressor, "bz2": bz2.BZ2Decompressor}.get(encoding)
        _check_data(f, path, what, info.voxels * elem, decompressor, f"{encoding}-compressed" if decompressor else "image")
    return info


# --------------------------------------------------------------------------------------------- checks
def check_image_file(path: str | Path, what: str) -> FileInfo | None:
    """Refuse a file that is not regular, is cut off or corrupt, or too big for memory; None: not checked.

    Reads the whole file once (decompressing it): a truncated file, a broken gzip/zlib/bzip2 stream or
    fewer voxel bytes than the header promises is a one-line error naming the file.
    """
    p = Path(path)
    check_regular_file(p, what)
    suffix = suffix_of(p.name)
    readers = {".nii": _nifti, ".nii.gz": _nifti, ".mha": _metaimage, ".mhd": _metaimage, ".nrrd": _nrrd,
               ".seg.nrrd": _nrrd, ".nhdr": _nrrd}  # fmt: skip
    reader = readers.get(suffix)
    if reader is None:
        return None
    header = _peek_header(p, reader, what)
    if header is not None:
        check_memory(header, p, what)
        check_header_spacing(header, p, what)
    try:
        return reader(p, what)
    except OSError as exc:
        raise Seg2MedError(f"{what} '{p}' cannot be read: {exc.strerror or exc}") from None


def _peek_header(path: Path, reader: Callable[[Path, str], FileInfo], what: str) -> FileInfo | None:
    """Header sizes without reading the data (so memory is checked before a 10 GB stream is decompressed)."""
    try:
        with open(path, "rb") as f:
            if reader is _nifti:
                head = f.read(65536)
                if path.name.lower().endswith(".gz"):
                    try:
                        head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 1024)
                    except zlib.error:
                        raise Seg2MedError(f"{what} '{path}' cannot be read: not a gzip-compressed file") from None
                return _nifti_header(head, path, what)[0]
    except OSError as exc:
        raise Seg2MedError(f"{what} '{path}' cannot be read: {exc.strerror or exc}") from None
    return None


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def available_memory() -> int:
    """Bytes of memory available for new allocations (MemAvailable + free swap; sysconf as a fallback)."""
    try:
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) * 1024
        return fields.get("MemAvailable", fields.get("MemFree", 0)) + fields.get("SwapFree", 0)
    except (OSError, ValueError, IndexError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 1 << 62


def check_memory(info: FileInfo, path: Path | str, what: str) -> None:
    """Refuse a volume whose voxels need more memory than is available (estimate before allocating)."""
    need = info.voxels * (max(info.voxel_bytes, 1) + WORKING_BYTES_PER_VOXEL)
    have = available_memory()
    if need > have:
        size = "x".join(str(s) for s in info.sizes)
        raise Seg2MedError(
            f"{what} '{path}' has {info.voxels:.3g} voxels ({size}): working on it needs about {_fmt_bytes(need)} "
            f"of memory, {_fmt_bytes(have)} is available"
        )


def check_header_spacing(info: FileInfo, path: Path | str, what: str) -> None:
    """NIfTI/MetaImage header spacing before SimpleITK (which reads a NIfTI pixdim of 0 as 1 mm)."""
    if info.spacing is None:
        return
    for axis, value in zip("xyz", info.spacing):
        if not np.isfinite(value) or value == 0:
            raise Seg2MedError(
                f"{what} '{path}' has spacing {value:g} mm along {axis} in its header (0 or not a number): "
                "fix the header (SimpleITK would silently read 1 mm)"
            )


def check_geometry(spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float], path: Path | str, what: str) -> None:
    """Plausible spacing (MIN..MAX mm), finite origin, orthonormal (not skewed) direction cosines."""
    sp = np.asarray(spacing, dtype=float)
    fmt = "(" + ", ".join(f"{v:.6g}" for v in sp) + ")"
    bad = [v for v in sp if not (np.isfinite(v) and MIN_SPACING_MM <= v <= MAX_SPACING_MM)]
    if bad:
        hint = " (metres instead of millimetres?)" if 0 < bad[0] < MIN_SPACING_MM else ""
        raise Seg2MedError(
            f"{what} '{path}' has spacing {fmt} mm: {bad[0]:.6g} mm is outside the plausible "
            f"{MIN_SPACING_MM:g}-{MAX_SPACING_MM:g} mm{hint}"
        )
    if not np.all(np.isfinite(origin)):
        raise Seg2MedError(f"{what} '{path}' has a non-finite origin {tuple(origin)}")
    n = len(sp)
    d = np.asarray(direction, dtype=float)
    if d.size != n * n or not np.all(np.isfinite(d)):
        raise Seg2MedError(f"{what} '{path}' has a non-finite direction matrix {tuple(direction)}")
    d = d.reshape(n, n)
    err = float(np.abs(d.T @ d - np.eye(n)).max())
    if err > DIRECTION_TOLERANCE:
        raise Seg2MedError(
            f"{what} '{path}' has skewed (non-orthogonal) voxel axes: direction {tuple(round(v, 6) for v in d.ravel())} "
            f"(deviation {err:.3g}); resample it onto an orthogonal grid first"
        )


def fsync_file(path: Path) -> None:
    """Flush ``path`` to the disk: file systems with delayed allocation report a full disk only here."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_bytes(folder: Path) -> int | None:
    """Bytes free for unprivileged users on the file system of ``folder`` (None when unknown)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize
