"""Write ``seg2med_core/data/label_sets.json`` from TotalSegmentator's class maps.

Why: the core reads label sets from ``totalsegmentator.map_to_binary.class_map`` when the package is
installed; this vendored copy lets it work without TotalSegmentator. Re-run after upgrading
TotalSegmentator (``python tools/vendor_label_sets.py``) and commit the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seg2med_core.labels import LABEL_SETS  # noqa: E402  (needs the repo on sys.path)

DEFAULT_OUT = REPO / "seg2med_core" / "data" / "label_sets.json"


def build_label_sets() -> dict[str, object]:
    """Return the JSON document: source version plus ``{set: {id: name}}`` for every set in LABEL_SETS."""
    from importlib.metadata import version

    from totalsegmentator.map_to_binary import class_map

    sets = {name: {str(k): v for k, v in sorted(class_map[name].items())} for name in LABEL_SETS}
    return {"source": f"totalsegmentator {version('TotalSegmentator')} map_to_binary.class_map", "label_sets": sets}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: write the vendored JSON (atomically) and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSON (default: %(default)s)")
    args = parser.parse_args(argv)
    doc = build_label_sets()
    tmp = args.out.with_name(args.out.name + ".tmp-vendor")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    counts = {k: len(v) for k, v in doc["label_sets"].items()}  # type: ignore[union-attr]
    print(f"wrote {args.out} ({doc['source']}): {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
