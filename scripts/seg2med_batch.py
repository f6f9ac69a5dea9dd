"""Batch synthesis: every case of a folder → synthetic volume (+ metrics when a real image exists) + one CSV.

Runs the same way everywhere:
    Slicer --no-main-window --python-script scripts/seg2med_batch.py --input-dir IN --output-dir OUT --model demo_ct
    PythonSlicer scripts/seg2med_batch.py ...
    python scripts/seg2med_batch.py ...
Input layout: either ``IN/<case>/segmentation.nii.gz`` (+ optional ``IN/<case>/image.nii.gz``, the real image
of the target modality), or ``IN/<case>.nii.gz`` segmentation files (case id = file name without
``.nii.gz``/``.nii``/``.seg.nrrd``). Two inputs with the same case id are refused (exit 2); a case folder
without a segmentation gets a "skipped" row. Exit code: 0 all cases done, 1 some case failed or was
skipped, 2 bad arguments or input folder. Each case runs as one
``python -m seg2med_core synthesize`` child process through the Slicer module's ``ProcessRunner``, so a
failing case is reported and skipped, and the CSV (written atomically) has one row per case.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Seg2Med"))

from Seg2MedLib.commands import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS, SynthesisOptions, child_environment, synthesize_command  # noqa: E402
from Seg2MedLib.process import ProcessRunner, RunEvent, RunState  # noqa: E402

SEG_NAMES = ("segmentation.nii.gz", "segmentation.nii", "seg.nii.gz", "segmentation.seg.nrrd")
IMAGE_NAMES = ("image.nii.gz", "image.nii", "ct.nii.gz", "mr.nii.gz")
METRIC_KEYS = ("ssim", "psnr", "mae", "histcc")


SEG_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd")


@dataclass(frozen=True)
class Case:
    """One input case: its name, segmentation file (None: a case folder without one) and optional real image."""

    name: str
    seg: Path | None
    image: Path | None
    source: Path | None = None

    @property
    def problem(self) -> str:
        """Why the case cannot run ("" when it can)."""
        if self.seg is None:
            return f"case folder '{self.source}' has no segmentation (expected one of {', '.join(SEG_NAMES)})"
        return ""


def case_name(path: Path) -> str:
    """Case id of a loose segmentation file: its name without the segmentation suffix (``dup.v1.nii.gz`` →
    ``dup.v1``), so files that differ only after the first dot stay distinct cases."""
    for suffix in SEG_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def find_cases(input_dir: Path, skip: Path | None = None) -> list[Case]:
    """Case folders and loose ``*.nii.gz`` / ``*.nii`` / ``*.seg.nrrd`` segmentation files, sorted by name.

    A folder without a segmentation file is returned as a case with ``seg=None`` (reported, not run); hidden
    entries and ``skip`` (the output folder, when it lies inside the input folder) are ignored. Two inputs
    that would give the same case id (and so overwrite each other's outputs) are refused, naming both.
    """
    if not input_dir.is_dir():
        raise ValueError(f"input folder '{input_dir}' does not exist")
    cases: list[Case] = []
    for entry in sorted(input_dir.iterdir()):
        if entry.name.startswith(".") or (skip is not None and entry.resolve() == skip.resolve()):
            continue
        if entry.is_dir():
            seg = next((entry / n for n in SEG_NAMES if (entry / n).exists()), None)
            image = next((entry / n for n in IMAGE_NAMES if (entry / n).exists()), None)
            cases.append(Case(entry.name, seg, image, entry))
        elif entry.name.lower().endswith(SEG_SUFFIXES):
            cases.append(Case(case_name(entry), entry, None, entry))
    seen: dict[str, Case] = {}
    for case in cases:
        other = seen.get(case.name.casefold())
        if other is not None:
            raise ValueError(
                f"'{other.source}' and '{case.source}' would both be case '{case.name}' (their outputs would "
                "overwrite each other): rename one"
            )
        seen[case.name.casefold()] = case
    if not any(c.seg is not None for c in cases):
        folders = [c.name for c in cases if c.seg is None]
        extra = f" ({len(folders)} folder(s) without a segmentation: {', '.join(folders[:5])})" if folders else ""
        raise ValueError(f"no cases in '{input_dir}': expected <case>/segmentation.nii.gz folders or *.nii.gz files{extra}")
    return cases


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def run_case(case: Case, args: argparse.Namespace, out_dir: Path) -> dict[str, object]:
    """Synthesize one case; returns the CSV row (status, output, metrics or the error message)."""
    row: dict[str, object] = {"case": case.name, "segmentation": str(case.seg or ""), "image": str(case.image or "")}
    if case.seg is None:
        row.update(status="skipped", error=case.problem, output="")
        print(f"{case.name}: SKIPPED: {case.problem}", file=sys.stderr)
        return row
    out = out_dir / f"{case.name}_synthetic.nii.gz"
    metrics_path = out_dir / f"{case.name}_metrics.json"
    options = SynthesisOptions(steps=args.steps, sampler=args.sampler, seed=args.seed, device=args.device)
    command = synthesize_command(case.seg, Path(args.model) if Path(args.model).exists() else args.model, out, options,
                                 image=case.image)
    if case.image is not None:
        command += ["--metrics", str(metrics_path)]
    stale = _file_identity(metrics_path)  # a metrics file from an earlier run is never reported as this run's

    def show(event: RunEvent) -> None:
        if event.kind == "progress" and not args.quiet:
            print(f"\r{case.name}: {event.message} {event.data.get('done')}/{event.data.get('total')}", end="", flush=True)

    runner = ProcessRunner(on_event=show)
    runner.start(command, env=child_environment())
    runner.wait(timeout_s=args.timeout)
    if not args.quiet:
        print(flush=True)
    if runner.state != RunState.SUCCEEDED:
        row.update(status="failed", error=runner.error or "unknown error", output="")
        print(f"{case.name}: FAILED: {row['error']}", file=sys.stderr)
        return row
    row.update(status="ok", error="", output=str(out))
    fresh = _file_identity(metrics_path)
    if case.image is not None and fresh is not None and fresh != stale:
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            metrics = metrics.get("metrics", metrics) if isinstance(metrics, dict) else {}
        except (OSError, ValueError):
            metrics = {}
        row.update({k: metrics.get(k, "") for k in METRIC_KEYS})
    return row


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    """Atomic CSV: a temp file in the same folder (mode 0666 minus the umask, like any new file), then
    ``os.replace``; on any error the temp file is removed and an older table is left as it was."""
    fields = ["case", "status", "output", "segmentation", "image", *METRIC_KEYS, "error"]
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in fields})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input-dir", required=True, type=Path)
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--model", default="demo_ct", help="bundle folder or model registry name (default demo_ct)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps, or cuda:0,cuda:1 to split each case over GPUs")
    p.add_argument("--timeout", type=float, default=None, help="seconds per case before it is cancelled")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        SynthesisOptions(steps=args.steps, sampler=args.sampler, seed=args.seed, device=args.device).validate()
        cases = find_cases(args.input_dir, skip=args.output_dir)
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as exc:
        print(f"seg2med: error: {exc}", file=sys.stderr)
        return 2
    rows = [run_case(case, args, args.output_dir) for case in cases]
    csv_path = args.output_dir / "seg2med_batch.csv"
    try:
        write_csv(rows, csv_path)
    except OSError as exc:
        print(f"seg2med: error: cannot write '{csv_path}': {exc.strerror or exc}", file=sys.stderr)
        return 2
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows) - failed}/{len(rows)} cases done; table: {csv_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    slicer_module = sys.modules.get("slicer")
    if slicer_module is not None and hasattr(slicer_module, "app"):  # inside Slicer: leave the application
        slicer_module.util.exit(code)
    else:
        sys.exit(code)
