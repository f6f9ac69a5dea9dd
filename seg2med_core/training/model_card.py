"""MODEL_CARD.md for a trained bundle: data, settings and measured metrics vs the prior-only baseline.

``python -m seg2med_core.training.model_card --bundle RUN/bundle --run RUN --eval EVAL --baseline-eval PRIOR
[--install DEST]`` writes the card into the bundle (and optionally installs the bundle at ``DEST``).
Every number in the card is read from the run's and the evaluations' output files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from seg2med_core.io import read_json
from seg2med_core.training import stats

METRICS = ("ssim", "psnr", "mae", "histcc")


def _summary(eval_dir: Path) -> dict[str, stats.Summary]:
    rows = stats.read_rows_csv(eval_dir / "per_case.csv")
    return {s.metric: s for s in stats.summarise(rows, METRICS) if s.dataset == stats.OVERALL}


def render_model_card(bundle: Path, run: Path, eval_dir: Path, baseline_dir: Path | None) -> str:
    """The card's Markdown text."""
    meta = read_json(bundle / "metadata.json", "bundle metadata")
    config = read_json(run / "config.json", "training config")
    data = read_json(run / "data.json", "training data list")
    model = _summary(eval_dir)
    base = _summary(baseline_dir) if baseline_dir is not None else {}
    evaluation = read_json(eval_dir / "eval.json", "evaluation")
    cases = ", ".join(f"`{Path(c['image']).name}` + `{Path(c['segmentation']).name}`" for c in data["cases"])
    holdout = ", ".join(f"{k}: axial slices {v[0]}:{v[1]}" for k, v in data.get("holdout_slices", {}).items()) or "none"
    m = meta.get("metrics", {})
    lines = [
        f"# {meta['name']}",
        "",
        "**Demonstration model trained on one public case, not for clinical use.** It shows the seg2med",
        "workflow end to end; it has seen a single patient and will not generalise.",
        "",
        "## Model",
        "",
        f"- Kind: {meta['model_kind']} ({meta['network'].get('class', 'DiffusionModelUNet')}), modality {meta['modality'].upper()}"
        + (f", prior sequence `{meta['sequence']}`" if meta.get("sequence") else ""),
        f"- Network: `{json.dumps(meta['network'])}`",
        f"- Slices: {meta['image_size']}×{meta['image_size']} px at {meta['spacing_xy']:g} mm, label set `{meta['label_set']}`",
        "",
        "## Training data",
        "",
        f"- {cases} (TotalSegmentator example data, Apache-2.0)",
        f"- {data['train_slices']} training slices; held out (never trained on): {holdout} "
        "(canonical LPS axial index, stop exclusive)",
        "",
        "## Training",
        "",
        f"- Adam lr {config['lr']:g}, betas {tuple(config['betas'])}, loss {config.get('loss') or ('mse' if config['model_kind'] == 'diffusion' else 'l1')}, "
        f"batch {config['batch_size']}, augmentation {'on' if config['augment'] else 'off'}",
        f"- {m.get('steps', '?')} steps in {m.get('train_minutes', '?')} min on {m.get('device', '?')} (stopped by {m.get('stopped_by', '?')}); "
        f"bundle weights from step {m.get('bundle_step', '?')}",
        "",
        "## Measured on the held-out slices",
        "",
        f"Evaluation settings: `{json.dumps(evaluation.get('settings', {}))}`. Metrics inside the body"
        + (" (MAE in HU)." if meta["modality"] == "ct" else " (MAE in model space [0, 1])."),
        "",
        "| metric | this model | prior only (baseline) |",
        "|---|---|---|",
    ]
    for metric in METRICS:
        if metric in model:
            lines.append(f"| {metric.upper()} | {model[metric].formatted(3)} | {base[metric].formatted(3) if metric in base else '–'} |")
    notes = evaluation.get("notes", {})
    if notes:
        lines += ["", "Not computed here:", ""] + [f"- {v}" for v in notes.values()]
    lines += ["", f"Created {meta.get('created', '')} with {', '.join(f'{k} {v}' for k, v in meta.get('package_versions', {}).items())}.", ""]
    return "\n".join(lines)


def install_bundle(bundle: Path, dest: Path) -> Path:
    """Copy the bundle folder to ``dest`` atomically (replacing an older one)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the installed bundle should not be
    try:
        for item in bundle.iterdir():
            shutil.copyfile(item, tmp / item.name)
            (tmp / item.name).chmod(0o644)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--eval", required=True)
    parser.add_argument("--baseline-eval", default=None)
    parser.add_argument("--install", default=None, help="copy the bundle (with its card) to this folder")
    args = parser.parse_args(argv)
    from seg2med_core.io import atomic_path

    bundle = Path(args.bundle)
    text = render_model_card(bundle, Path(args.run), Path(args.eval), Path(args.baseline_eval) if args.baseline_eval else None)
    with atomic_path(bundle / "MODEL_CARD.md") as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    if args.install:
        print(f"installed {install_bundle(bundle, Path(args.install))}")
    print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
