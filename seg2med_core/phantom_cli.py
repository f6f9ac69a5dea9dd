"""``seg2med phantom``: write a procedural phantom, or (``--compose``) a composite of several subjects.

    seg2med phantom --out PHANTOM.nii.gz [--seed S] [--sex male|female] [--height CM]
                    [--spacing 3 3 3] [--region abdomen|pelvis|abdomen-pelvis]
    seg2med phantom --compose --body SEG [--body-label-set SET] --organs SEG:liver,spleen [...]
                    [--no-skeleton] [--report JSON] --out OUT.nii.gz

Outputs are written atomically with the class names embedded (``io.write_segmentation``).
"""

from __future__ import annotations

import argparse
from typing import Any

from .cli_common import add_progress_argument, make_reporter
from .errors import Seg2MedError


def add_subcommands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="procedural torso phantom, or a composite phantom from several segmentations (--compose)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output segmentation (.nii.gz, .nii or .seg.nrrd)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (shapes, sizes, positions)")
    p.add_argument("--sex", choices=("male", "female"), default="male")
    p.add_argument("--height", type=float, default=175.0, help="body height in cm (140-210)")
    p.add_argument("--spacing", type=float, nargs=3, default=(3.0, 3.0, 3.0), metavar=("X", "Y", "Z"), help="voxel size in mm")
    p.add_argument("--region", choices=("abdomen", "pelvis", "abdomen-pelvis"), default="abdomen-pelvis")
    p.add_argument("--compose", action="store_true", help="build a composite phantom from --body and --organs")
    p.add_argument("--body", help="segmentation giving the body contour and skeleton (with --compose)")
    p.add_argument("--body-label-set", default=None, help="label set of --body when it cannot be guessed")
    p.add_argument(
        "--organs",
        nargs="+",
        default=[],
        metavar="SEG:ORGAN[,ORGAN...]",
        help="organ source and the organs to take from it (names in that segmentation's label set)",
    )
    p.add_argument("--no-skeleton", action="store_true", help="do not keep the body source's bones")
    p.add_argument("--report", default=None, help="write the composite report as JSON")
    add_progress_argument(p)
    p.set_defaults(func=run_phantom)


def parse_organ_spec(spec: str) -> tuple[str, list[str]]:
    """``path:liver,spleen`` → (path, [liver, spleen]); the last ':' separates (paths may contain ':')."""
    path, sep, names = spec.rpartition(":")
    organs = [n.strip() for n in names.split(",") if n.strip()]
    if not sep or not path or not organs:
        raise Seg2MedError(f"--organs entry '{spec}' must look like SEG:organ[,organ...]")
    return path, organs


def run_phantom(args: argparse.Namespace) -> int:
    from . import io

    from .phantom import check_seed

    check_seed(args.seed)
    reporter = make_reporter(args)
    try:
        if args.compose:
            seg = _compose(args, reporter)
        else:
            if args.body or args.organs or args.report:
                raise Seg2MedError("--body, --organs and --report need --compose")
            from .phantom import make_phantom

            reporter.progress(0, 2, "phantom")
            seg = make_phantom(
                seed=args.seed, sex=args.sex, height_cm=args.height, spacing=tuple(args.spacing), region=args.region
            )
            reporter.progress(1, 2, "phantom")
        io.write_segmentation(seg, args.out)
        reporter.progress(2, 2, "phantom")
        reporter.done(output=str(args.out))
    finally:
        reporter.close()
    return 0


def _compose(args: argparse.Namespace, reporter: Any) -> Any:
    from . import io
    from .composite import compose

    if not args.body:
        raise Seg2MedError("--compose needs --body SEG")
    if not args.organs:
        raise Seg2MedError("--compose needs at least one --organs SEG:organ[,organ...]")
    specs = [parse_organ_spec(s) for s in args.organs]
    total = len(specs) + 2
    reporter.progress(0, total, "composite phantom")
    body = io.read_segmentation(args.body, label_set=args.body_label_set)
    sources = []
    for k, (path, organs) in enumerate(specs, start=1):
        sources.append((io.read_segmentation(path), organs))
        reporter.progress(k, total, "composite phantom")
    seg, report = compose(
        body, sources, keep_skeleton=not args.no_skeleton, body_name=str(args.body), source_names=[p for p, _ in specs]
    )
    reporter.info(str(report))
    if args.report:
        report.save_json(args.report)
    reporter.progress(total - 1, total, "composite phantom")
    return seg
