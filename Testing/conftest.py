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


# --------------------------------------------------------------------------------- tiny model bundles
#: A DiffusionModelUNet small enough that sampling the 3 mm examples takes seconds on a CPU.
TINY_NETWORK = dict(
    spatial_dims=2,
    in_channels=2,
    out_channels=1,
    channels=(8, 16),
    attention_levels=(False, False),
    num_res_blocks=1,
    norm_num_groups=8,
    num_head_channels=8,
)
#: In-plane grid of the tiny bundles: 32 px at 12 mm = 384 mm, enough for the examples' 366 mm field of view.
TINY_IMAGE_SIZE = 32
TINY_SPACING_XY = 12.0


def make_tiny_bundle(folder: Path, modality: str, sequence: str | None = None, seed: int = 0) -> Path:
    """Save a randomly initialised tiny diffusion bundle (real ``bundle.save_bundle``) into ``folder``."""
    import torch

    from seg2med_core.bundle import BundleMetadata, save_bundle
    from seg2med_core.network import PAPER_SCHEDULER, build_network

    torch.manual_seed(seed)
    network = build_network(TINY_NETWORK)
    metadata = BundleMetadata(
        name=f"tiny_{modality}",
        version="0",
        modality=modality,
        sequence=sequence,
        label_set="total_mr" if modality == "mr" else "total",
        network=dict(TINY_NETWORK),
        scheduler=dict(PAPER_SCHEDULER),
        spacing_xy=TINY_SPACING_XY,
        image_size=TINY_IMAGE_SIZE,
        intensity={"kind": "ct_window", "level": 0, "width": 2000}
        if modality == "ct"
        else {"kind": "mr_percentile", "p_lo": 10, "p_hi": 90},
        training_data="none: random weights for tests",
        licence="Apache-2.0",
    )
    return save_bundle(folder, network, metadata)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny CT diffusion bundle (random weights, 32² px at 12 mm, label set ``total``)."""
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny_ct", "ct")


@pytest.fixture(scope="session")
def tiny_mr_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny MR diffusion bundle (random weights, ``total_mr`` labels, sequence ``t1_gre``)."""
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny_mr", "mr", sequence="t1_gre", seed=1)
