"""Shared fixtures: the real example data (skipped when absent) and small synthetic volumes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalsegmentator-examples"
EXAMPLES = Path(os.environ.get("SEG2MED_EXAMPLE_DATA", str(_DEFAULT_DATA)))


@pytest.fixture(scope="session")
def examples() -> Path:
    """Folder with the TotalSegmentator example scans (``SEG2MED_EXAMPLE_DATA`` overrides)."""
    if not (EXAMPLES / "example_ct.nii.gz").exists():
        pytest.skip(f"example data not found at {EXAMPLES} (set SEG2MED_EXAMPLE_DATA)")
    return EXAMPLES
