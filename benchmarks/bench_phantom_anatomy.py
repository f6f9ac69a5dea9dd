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
                  "| organ | template mL | phantoms min | median | max | cited range mL | inside range |",
                  "|---|---|---|---|---|---|---|"]
        for name, key in SIZED_ORGANS.items():
            vs = [r["volume_ml"][name] for r in rr if name in r["volume_ml"]]
            if not vs:
                continue
            lo, hi = SIZE_RANGES[key]
            inside = sum(lo <= v <= hi for v in vs)
            lines.append(f"| {name} | {ref.get(name, float('nan')):.0f} | {min(vs):.0f} | {np.median(vs):.0f} | {max(vs):.0f} | "
                         f"{lo:g}-{hi:g} | {inside}/{len(vs)} |")
        viol = [v for r in rr for v in r["violations"]]
        lines += ["", f"violations: {len(viol)}" + (": " + "; ".join(sorted(set(viol))[:10]) if viol else ""), ""]
    text = "\n".join(lines)
    print(text)
    out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"spacing_mm": args.spacing, "phantoms": rows}, indent=1), encoding="utf-8")
    _plot(rows, args.regions, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.md')}, .json, .png")
    return 0


def _plot(rows: list[dict], regions: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SIZED_ORGANS), figsize=(2.2 * len(SIZED_ORGANS), 4.2))
    for ax, (name, key) in zip(axes, SIZED_ORGANS.items()):
        lo, hi = SIZE_RANGES[key]
        ax.axhspan(lo, hi, color="0.9", zorder=0, label="cited range")
        data, labels, refs = [], [], []
        for region in regions:
            vs = [r["volume_ml"][name] for r in rows if r["region"] == region and name in r["volume_ml"]]
            if vs:
                data.append(vs)
                labels.append(region.replace("abdomen-pelvis", "abd-pel"))
                refs.append(template_measures(region)["volume_ml"].get(name, np.nan))
        if data:
            ax.boxplot(data, widths=0.6)
            ax.scatter(range(1, len(refs) + 1), refs, marker="D", color="tab:red", zorder=3, label="template")
            ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, fontsize=8)
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    axes[0].set_ylabel("volume (mL)")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Template phantom organ volumes (boxes: seeds; diamonds: undeformed template; grey: cited adult range)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    raise SystemExit(main())
