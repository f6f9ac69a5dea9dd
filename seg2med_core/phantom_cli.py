"""``seg2med phantom``: write a template (default) or procedural phantom, or a composite of several subjects.

    seg2med phantom --out PHANTOM.nii.gz [--kind template|procedural] [--seed S] [--sex male|female]
                    [--height CM] [--bmi KG/M2] [--spacing 3 3 3]
                    [--region thorax|abdomen|pelvis|abdomen-pelvis|torso] [--report INFO.json]
    seg2med phantom --from-xcat ACT.bin --xcat-par XCAT.par|LOG [--xcat-map MAP.json] [--xcat-orientation LPI]
                    --out OUT.nii.gz [--report JSON]
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
        help="template phantom (deformed real anatomy; --kind procedural for the primitive-based one), "
        "or a composite phantom from several segmentations (--compose)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output segmentation (.nii.gz, .nii or .seg.nrrd)")
    p.add_argument("--kind", default="template",
                   help="template (default: a real TotalSegmentator label map, deformed) or procedural (smooth primitives)")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (shapes, sizes, positions)")
    p.add_argument("--sex", default="male", help="male or female")
    p.add_argument("--height", type=float, default=175.0, help="body height in cm (140-210)")
    p.add_argument("--bmi", type=float, default=None, help="body-mass index in kg/m^2 (16-40, template phantoms; default 25)")
    p.add_argument("--spacing", type=float, nargs=3, default=(3.0, 3.0, 3.0), metavar=("X", "Y", "Z"), help="voxel size in mm")
    p.add_argument("--region", default="abdomen-pelvis",
                   help="thorax, abdomen, pelvis, abdomen-pelvis or torso (procedural: abdomen, pelvis, abdomen-pelvis)")
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
    p.add_argument("--from-xcat", default=None, metavar="RAW",
                   help="XCAT activity label volume (raw float32) to import as a 'total' segmentation")
    p.add_argument("--xcat-par", default=None, help="the XCAT .par or log file naming the organ ids and the geometry")
    p.add_argument("--xcat-map", default=None, help="your XCAT organ -> total class JSON (default: seg2med_core/data/xcat_to_total.json)")
    p.add_argument("--xcat-orientation", default="LPI", help="where column, row and slice index point (default LPI)")
    p.add_argument("--no-skeleton", action="store_true", help="do not keep the body source's bones")
    p.add_argument("--report", default=None, help="write the composite report, or the template phantom's parameters, as JSON")
    add_progress_argument(p)
    p.set_defaults(func=run_phantom)


def parse_organ_spec(spec: str) -> tuple[str, list[str]]:
    """``path:liver,spleen`` → (path, [liver, spleen]); the last ':' separates (paths may contain ':')."""
    path, sep, names = spec.rpartition(":")
    organs = [n.strip() for n in names.split(",") if n.strip()]
    if not sep or not path or not organs:
        raise Seg2MedError(f"--organs entry '{spec}' must look like SEG:organ[,organ...]")
    return path, organs


KINDS = ("template", "procedural")


def run_phantom(args: argparse.Namespace) -> int:
    from . import io
    from .cli import check_output
    from .phantom import check_seed

    check_seed(args.seed)
    out = check_output(args.out, "--out", (".nii.gz", ".nii", ".seg.nrrd"))
    report_path = check_output(args.report, "--report", (".json",))
    reporter = make_reporter(args)
    try:
        report: Any = None
        if args.from_xcat and args.compose:
            raise Seg2MedError("--from-xcat and --compose cannot be combined")
        if args.compose:
            seg = _compose(args, reporter)
        elif args.from_xcat:
            seg, report = _from_xcat(args, reporter)
        else:
            if args.body or args.organs:
                raise Seg2MedError("--body and --organs need --compose")
            seg, report = _make(args, reporter)
        io.write_segmentation(seg, out)
        if report is not None and report_path is not None:
            io.write_json(report_path, report)
        reporter.progress(2, 2, "phantom")
        reporter.done(output=str(out))
    finally:
        reporter.close()
    return 0


def _from_xcat(args: argparse.Namespace, reporter: Any) -> tuple[Any, dict]:
    from .phantoms.xcat import read_xcat

    if not args.xcat_par:
        raise Seg2MedError("--from-xcat needs --xcat-par (the .par or log file with the organ table)")
    seg, report = read_xcat(args.from_xcat, args.xcat_par, args.xcat_map, args.xcat_orientation)
    reporter.info(report.summary())
    return seg, report.to_dict()


def _make(args: argparse.Namespace, reporter: Any) -> tuple[Any, dict | None]:
    if args.kind not in KINDS:
        raise Seg2MedError(f"--kind must be one of {', '.join(KINDS)}, got '{args.kind}'")
    if args.kind == "template":
        from .phantoms.template import REFERENCE_BMI, _check_args

        _check_args(args.sex, args.height, REFERENCE_BMI if args.bmi is None else args.bmi, args.region, tuple(args.spacing))
    reporter.progress(0, 2, "phantom")
    if args.kind == "procedural":
        from .phantom import REGIONS, make_phantom

        if args.bmi is not None:
            raise Seg2MedError("--bmi is only for --kind template (the procedural phantom has its own fat model)")
        if args.region not in REGIONS:
            raise Seg2MedError(f"--kind procedural: region must be one of {', '.join(REGIONS)}, got '{args.region}' "
                               "(thorax and torso need --kind template)")
        seg = make_phantom(seed=args.seed, sex=args.sex, height_cm=args.height, spacing=tuple(args.spacing), region=args.region)
        reporter.progress(1, 2, "phantom")
        return seg, None
    from .phantoms.template import REFERENCE_BMI, make_template_phantom

    seg, info = make_template_phantom(
        seed=args.seed, sex=args.sex, height_cm=args.height, bmi=REFERENCE_BMI if args.bmi is None else args.bmi,
        spacing=tuple(args.spacing), region=args.region, return_info=True,
    )
    reporter.info(f"template phantom from '{info.template}': Jacobian determinant {info.jacobian_min:.2f}..{info.jacobian_max:.2f}, "
                  + ", ".join(f"{k} {v:.0f} mL" for k, v in info.volume_ml.items()))
    reporter.progress(1, 2, "phantom")
    return seg, info.to_dict()


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
