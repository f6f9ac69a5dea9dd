"""``seg2med dataset list``: which layout a data folder has, its cases per split, optionally as a CSV."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from seg2med_core.cli_common import add_progress_argument, make_reporter
from seg2med_core.errors import Seg2MedError


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    from . import format_names

    p = subparsers.add_parser("dataset", help="public dataset layouts: detect, list cases and splits")
    sub = p.add_subparsers(dest="dataset_command", required=True)
    q = sub.add_parser("list", help="detected layout, cases per dataset and split (optionally written as a case CSV)")
    q.add_argument("data", nargs="+", help="dataset folder(s) or CSV")
    q.add_argument("--format", dest="data_format", default="auto", choices=format_names(), help="layout (default: detect)")
    q.add_argument("--modality", choices=("ct", "mr"), default=None, help="images to use where a layout has both (AMOS, SynthRAD)")
    q.add_argument("--seg-from", choices=("ct", "mr"), default=None, help="SynthRAD: the segmentation of this modality's image")
    q.add_argument("--test-cases", type=int, default=0, metavar="N", help="datasets without their own split: N test cases each")
    q.add_argument("--val-cases", type=int, default=0, metavar="N")
    q.add_argument("--split-seed", type=int, default=0)
    q.add_argument("--csv", default=None, help="write the cases as a CSV that --data accepts (splits included)")
    add_progress_argument(q)
    q.set_defaults(func=cmd_list)


CSV_FIELDS = ("case", "dataset", "split", "image", "segmentation", "tissue_segmentation", "label_table", "label_set", "source_image", "source_modality")


def write_case_csv(path: Path, cases) -> None:
    """Cases as a CSV (absolute paths) that :func:`seg2med_core.training.dataset.read_case_csv` reads back."""
    from seg2med_core.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            writer.writeheader()
            for c in cases:
                writer.writerow(
                    {
                        "case": c.case_id,
                        "dataset": c.dataset,
                        "split": c.split or "",
                        "image": str(Path(c.image).resolve()),
                        "segmentation": str(Path(c.segmentation).resolve()),
                        "tissue_segmentation": str(Path(c.tissue_segmentation).resolve()) if c.tissue_segmentation else "",
                        "label_table": json.dumps({str(i): n for i, n in c.label_table}) if c.label_table else "",
                        "label_set": c.label_set or "",
                        "source_image": str(Path(c.source_image).resolve()) if c.source_image else "",
                        "source_modality": c.source_modality or "",
                    }
                )


def cmd_list(args: argparse.Namespace) -> int:
    from . import LayoutOptions, assign_splits, detect_format, discover, label_notes, summarise_cases

    reporter = make_reporter(args)
    if args.csv and Path(args.csv).exists() and Path(args.csv).is_dir():
        raise Seg2MedError(f"--csv '{args.csv}' is a folder")
    formats = [detect_format(d) if args.data_format == "auto" else args.data_format for d in args.data]
    cases = discover(args.data, args.data_format, LayoutOptions(args.modality, args.seg_from))
    cases = assign_splits(cases, args.test_cases, args.val_cases, args.split_seed)
    for path, fmt in zip(args.data, formats):
        reporter.message(f"{path}: {fmt}")
    reporter.message("| dataset | cases | train | val | test | no split |")
    reporter.message("|---|---|---|---|---|---|")
    for row in summarise_cases(cases):
        reporter.message(f"| {row['dataset']} | {row['cases']} | {row['train']} | {row['val']} | {row['test']} | {row['none']} |")
    for note in label_notes(cases):
        reporter.message(note)
    if args.csv:
        write_case_csv(Path(args.csv), cases)
        reporter.message(f"wrote {args.csv}")
    reporter.done(output=args.csv, cases=len(cases), formats=formats)
    return 0
