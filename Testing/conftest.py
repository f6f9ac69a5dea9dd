"""Shared fixtures: the real example data (skipped when absent) and small synthetic volumes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_models import TINY_NO_ATTENTION

# The same numbers on every CI machine: the CPU fast path uses bf16 only where the CPU has it natively
# (AMX / AVX-512 BF16), so the suite pins fp32; test_fast.py and test_pipeline.py exercise bf16 explicitly.
os.environ.setdefault("SEG2MED_CPU_BF16", "0")

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
TINY_NETWORK = TINY_NO_ATTENTION
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


# ------------------------------------------------------------------------------ small synthetic case
#: Direction of the synthetic case: voxel axis i runs anterior (-y), j runs to the patient's left (+x), so
#: every path through the pipeline has to undo a permutation and a flip.
SYNTHETIC_DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def make_synthetic_case(folder: Path) -> dict[str, Path]:
    """Write a small CT + ``total`` segmentation pair (40×36×6 voxels, 5 mm, permuted direction).

    The body is an elliptic cylinder (40 HU) in air (-1000 HU); the liver (id 5) and spleen (id 1) are
    ellipses inside it with 60 and 45 HU. Returns the paths ``{"seg", "ct"}``.
    """
    import numpy as np
    import SimpleITK as sitk

    from seg2med_core import io
    from seg2med_core.labels import names_for

    nz, ny, nx = 6, 36, 40
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    body = ((x - 20) / 15.0) ** 2 + ((y - 18) / 12.0) ** 2 <= 1.0
    liver = ((x - 14) / 5.0) ** 2 + ((y - 17) / 5.0) ** 2 <= 1.0
    spleen = ((x - 27) / 3.0) ** 2 + ((y - 19) / 3.0) ** 2 <= 1.0
    labels = np.zeros((nz, ny, nx), dtype=np.uint16)
    labels[liver] = 5
    labels[spleen] = 1
    ct = np.full((nz, ny, nx), -1000, dtype=np.int16)
    ct[body] = 40
    ct[liver] = 60
    ct[spleen] = 45

    def geometry(img: sitk.Image) -> sitk.Image:
        img.SetSpacing((5.0, 5.0, 5.0))
        img.SetOrigin((-80.0, 90.0, 10.0))
        img.SetDirection(SYNTHETIC_DIRECTION)
        return img

    folder.mkdir(parents=True, exist_ok=True)
    seg = io.Segmentation(geometry(sitk.GetImageFromArray(labels)), names_for("total"), "total")
    paths = {"seg": folder / "case_seg.nii.gz", "ct": folder / "case_ct.nii.gz"}
    io.write_segmentation(seg, paths["seg"])
    io.write_image(geometry(sitk.GetImageFromArray(ct)), paths["ct"])
    return paths


@pytest.fixture(scope="session")
def synthetic_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of a small CT and its ``total`` segmentation with a permuted direction (see make_synthetic_case)."""
    return make_synthetic_case(tmp_path_factory.mktemp("synthetic_case"))


@pytest.fixture()
def one_thread():  # noqa: ANN201
    """Run the test with one torch thread (the shared 2-core CI machine thrashes with more), then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
