"""Measured anatomy of template phantoms over many seeds: validity checks, volume table and box plot.

    python benchmarks/bench_phantom_anatomy.py [--seeds 20] [--regions abdomen-pelvis torso] [--spacing 3]
                                               [--out benchmarks/results/phantom-anatomy]

For each region and seed (sex alternating, height 150-200 cm and BMI 18-35 drawn from the seed) it builds
``make_template_phantom``, runs ``phantoms.anatomy.check`` (volumes in the cited ranges, laterality,
organ levels along z, pieces, nothing outside the body, Jacobian > 0) and prints/writes

* ``OUT.json``: every phantom's parameters, volumes, violations and Jacobian range;
* ``OUT.md``: per organ the template volume, the phantoms' min / median / max, the cited range and how
  many phantoms lie inside it; the count of valid phantoms; the Jacobian minima;
* ``OUT.png``: box plot of the organ volumes against the templates' volumes and the cited ranges.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seg2med_core.phantom import SIZE_RANGES  # noqa: E402
from seg2med_core.phantoms.anatomy import check, measure, template_measures  # noqa: E402
from seg2med_core.phantoms.template import SIZED_ORGANS, make_template_phantom  # noqa: E402


def case(seed: int) -> dict:
    rng = np.random.default_rng(1000 + seed)
    return {"seed": seed, "sex": "female" if seed % 2 else "male", "height_cm": round(float(rng.uniform(150, 200)), 1),
            "bmi": round(float(rng.uniform(18, 35)), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--regions", nargs="+", default=["abdomen-pelvis", "torso"])
    ap.add_argument("--spacing", type=float, default=3.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "phantom-anatomy"))
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    for region in args.regions:
        for seed in range(args.seeds):
            c = case(seed)
            t = time.perf_counter()
            seg, info = make_template_phantom(seed, sex=c["sex"], height_cm=c["height_cm"], bmi=c["bmi"], region=region,
                                              spacing=(args.spacing,) * 3, return_info=True)
            m = measure(seg)
            bad = check(seg, region, info, measured=m)
            rows.append({"region": region, **c, "seconds": round(time.perf_counter() - t, 2), "size": list(seg.image.GetSize()),
                         "jacobian_min": info.jacobian_min, "jacobian_max": info.jacobian_max,
                         "correction_passes": info.correction_passes, "final_corrections": info.final_corrections,
                         "target_ml": info.target_ml,
                         "volume_ml": {n: m["volume_ml"][n] for n in SIZED_ORGANS if n in m["volume_ml"]},
                         "kidney_length_mm": m["kidney_length_mm"], "violations": bad,
                         "max_pieces": {n: p for n, p in m["pieces"].items() if p > 1}})
            print(f"{region:15s} seed {seed:2d} {c['sex']:6s} {c['height_cm']:5.1f} cm BMI {c['bmi']:4.1f}: "
                  f"J {info.jacobian_min:.2f}..{info.jacobian_max:.2f}, {len(bad)} violations {bad[:2]}", flush=True)
    lines = [f"# Template phantom anatomy ({args.seeds} seeds per region, {args.spacing:g} mm, "
             f"{time.perf_counter() - t0:.0f} s on this machine)", ""]
    for region in args.regions:
        rr = [r for r in rows if r["region"] == region]
        ref = template_measures(region)["volume_ml"]
        valid = sum(1 for r in rr if not r["violations"])
        jmin = [r["jacobian_min"] for r in rr]
        lines += [f"## {region}", "",
                  f"valid phantoms (no violated rule): **{valid} / {len(rr)}**; Jacobian determinant minimum over "
                  f"phantoms {min(jmin):.3f} (median of minima {np.median(jmin):.3f}), maximum {max(r['jacobian_max'] for r in rr):.3f}", "",
                  f"organ-volume correction passes on the coarse grid: median {np.median([r['correction_passes'] for r in rr]):.0f}, "
                  f"max {max(r['correction_passes'] for r in rr)}; phantoms remade by the final correction (an organ outside its "
                  f"range on the output grid): {sum(1 for r in rr if r['final_corrections'])} / {len(rr)}", "",
                  "| organ | template mL | phantoms min | median | max | cited range mL | inside range | largest miss of the target |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, key in SIZED_ORGANS.items():
            vs = [r["volume_ml"][name] for r in rr if name in r["volume_ml"]]
            if not vs:
                continue
            lo, hi = SIZE_RANGES[key]
            inside = sum(lo <= v <= hi for v in vs)
            misses = [abs(r["volume_ml"][name] / r["target_ml"][name] - 1.0) for r in rr if name in r["target_ml"]]
            sized = f"{100 * max(misses):.1f} %" if misses else "not sized (cut by the field of view)"
            lines.append(f"| {name} | {ref.get(name, float('nan')):.0f} | {min(vs):.0f} | {np.median(vs):.0f} | {max(vs):.0f} | "
                         f"{lo:g}-{hi:g} | {inside}/{len(vs)} | {sized} |")
        viol = [v for r in rr for v in r["violations"]]
        lines += ["", f"violations: {len(viol)}" + (": " + "; ".join(sorted(set(viol))[:10]) if viol else ""), ""]
    load_after = os.getloadavg()
    lines += ["Rows marked 'not sized' are organs that the template's field of view cuts (e.g. the prostate and, in "
              "abdomen-pelvis, the liver dome): they show the cut volumes and are neither resized nor range-checked. Jacobian values are "
              "those of the pull-back field (phantom → template): values < 1 mean local growth of the phantom.", "",
              f"Command: `python benchmarks/bench_phantom_anatomy.py {' '.join(sys.argv[1:])}` on this machine "
              f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}); load average (1 min) "
              f"{load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end; OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', 'unset')}."]
    text = "\n".join(lines)
    print(text)
    out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"spacing_mm": args.spacing, "phantoms": rows}, indent=1), encoding="utf-8")
    _plot(rows, args.regions, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.md')}, .json, .png")
    return 0


def _plot(rows: list[dict], regions: list[str], path: Path) -> None:
    """Box plot per sized organ (2 rows of 4): only the regions whose template holds the organ completely, i.e.
    where the generator sizes it and the check tests its range (cut organs are in the table only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = 4
    nrow = -(-len(SIZED_ORGANS) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.9 * ncol, 3.3 * nrow), squeeze=False)
    axes = axes.ravel()
    short = {"abdomen-pelvis": "abd-pel", "abdomen": "abd", "pelvis": "pel"}
    for ax, (name, key) in zip(axes, SIZED_ORGANS.items()):
        lo, hi = SIZE_RANGES[key]
        ax.axhspan(lo, hi, color="0.9", zorder=0, label="cited range")
        data, labels, refs = [], [], []
        for region in regions:
            vs = [r["volume_ml"][name] for r in rows if r["region"] == region and name in r["target_ml"]]
            if vs:
                data.append(vs)
                labels.append(short.get(region, region))
                refs.append(template_measures(region)["volume_ml"].get(name, np.nan))
        if data:
            ax.boxplot(data, widths=0.6)
            ax.scatter(range(1, len(refs) + 1), refs, marker="D", color="tab:red", zorder=3, label="template")
            ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
            top = max(hi, max(max(d) for d in data), max(refs))
            bottom = min(lo, min(min(d) for d in data), min(refs))
            ax.set_ylim(bottom - 0.08 * (top - bottom), top + 0.08 * (top - bottom))
        else:
            ax.set_xticks([])
            ax.text(0.5, 0.5, "cut by the field of view of\nevery template here:\nnot sized (see the table)",
                    ha="center", va="center", fontsize=8, transform=ax.transAxes)
        ax.set_title(name.replace("_", " ") + f" ({lo:g}-{hi:g} mL)", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes[len(SIZED_ORGANS):]:
        ax.axis("off")
    for k in range(0, len(axes), ncol):
        axes[k].set_ylabel("volume (mL)")
    axes[0].legend(fontsize=7, loc="lower left")
    n = max((sum(1 for r in rows if r["region"] == reg) for reg in regions), default=0)
    fig.suptitle(f"Template phantom organ volumes, {n} seeds per region (boxes: phantoms; red diamonds: undeformed "
                 "template; grey: cited adult range).\nOnly regions whose template holds the organ completely "
                 "(organs cut by the field of view are not sized: table only)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    raise SystemExit(main())
