"""Render the Seg2Med and Seg2MedTraining module panels with the test harness (PyQt5 offscreen, the real
module files and .ui, Slicer's own framework files) and save them as PNGs (QWidget.grab()).

    QT_QPA_PLATFORM=offscreen python tools/slicer_screenshots.py [--tag v5.12.3] [--out docs/screenshots]

The Seg2Med panel is shown after a user generated a phantom segmentation (as in the README walk-through).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Testing"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="v5.12.3")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--width", type=int, default=520)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from slicerharness import SlicerHarness, missing_reason

    reason = missing_reason(args.tag)
    if reason:
        print(f"seg2med: error: {reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        harness = SlicerHarness(args.tag, Path(work)).start()
        try:
            shots = []
            widget = harness.load_module("Seg2Med").enter()
            widget.ui.phantomRegionComboBox.currentText = "abdomen"
            widget.ui.phantomButton.click()
            shots.append((harness.slicer.modules.seg2med.widgetRepresentation(), "seg2med-panel.png"))
            harness.load_module("Seg2MedTraining").enter()
            shots.append((harness.slicer.modules.seg2medtraining.widgetRepresentation(), "seg2med-training-panel.png"))
            for panel, name in shots:
                with harness.qt.pyqt_semantics():
                    panel.resize(args.width, panel.sizeHint().height())
                    panel.show()
                    harness.qapp.processEvents()
                    pixmap = panel.grab()
                    path = args.out / name
                    if not pixmap.save(str(path), "PNG"):
                        print(f"seg2med: error: could not write {path}", file=sys.stderr)
                        return 2
                    print(f"{path} ({pixmap.width()}x{pixmap.height()})")
        finally:
            harness.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
