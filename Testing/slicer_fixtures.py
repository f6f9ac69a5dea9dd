"""Shared helpers for the Slicer-extension tests: put the module folders on sys.path, build small scenes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "Seg2Med", ROOT / "Seg2MedTraining"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def oblique_labels(shape: tuple[int, int, int] = (6, 20, 24)) -> sitk.Image:
    """A 'total' label map (liver=5, spleen=1, kidney_left=3) with non-trivial spacing, origin and direction."""
    arr = np.zeros(shape, np.uint16)
    arr[1:5, 3:11, 3:11] = 5
    arr[1:5, 11:18, 13:21] = 1
    arr[2:4, 4:8, 15:20] = 3
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((1.25, 0.9, 3.0))
    image.SetOrigin((-31.5, 12.0, 40.0))
    image.SetDirection(sitk.VersorTransform((0.3, -0.2, 0.9), 0.35).GetMatrix())
    return image
