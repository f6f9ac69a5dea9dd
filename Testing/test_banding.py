"""The slice-consistency (banding) metric on constructed volumes with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seg2med_core.errors import Seg2MedError
from seg2med_core.metrics import (
    SOFT_TISSUE_HU,
    banding_comparison,
    banding_line,
    banding_metrics,
    slice_profile,
    soft_tissue_mask,
)


def _staircase(levels: list[float], size: int = 24, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = np.repeat(np.asarray(levels, dtype=np.float64)[:, None, None], size, axis=1).repeat(size, axis=2)
    return vol + rng.normal(0.0, noise, vol.shape) if noise else vol


def test_known_jumps_give_the_known_numbers() -> None:
    levels = [40.0, 45.0, 45.0, 60.0, 52.0]  # jumps 5, 0, 15, 8
    m = banding_metrics(_staircase(levels), np.ones((5, 24, 24), bool))
    assert m["max_jump"] == pytest.approx(15.0)
    assert m["mean_jump"] == pytest.approx(7.0)
    assert m["slices"] == 5
    assert math.isinf(m["gradient_ratio"])  # stripes and nothing in-plane


def test_stripes_on_noise_are_found_and_smooth_volumes_give_almost_nothing() -> None:
    n = 30
    stripes = _staircase([50.0 + 20.0 * (k % 2) for k in range(n)], noise=10.0)
    smooth = _staircase([50.0 + 0.05 * k for k in range(n)], noise=10.0, seed=1)
    mask = np.ones(stripes.shape, bool)
    band, flat = banding_metrics(stripes, mask), banding_metrics(smooth, mask)
    assert band["max_jump"] == pytest.approx(20.0, abs=2.0) and band["mean_jump"] == pytest.approx(20.0, abs=1.0)
    assert flat["max_jump"] < 2.0 and flat["mean_jump"] < 1.0  # noise of the slice mean: 10 / 24 * sqrt(2)
    assert flat["gradient_ratio"] == pytest.approx(1.0, abs=0.05)  # isotropic white noise
    assert band["gradient_ratio"] > 1.5


def test_gradient_ratio_uses_physical_spacing() -> None:
    # I = a * x + b * (k % 2): |dI/dx| = a, |dI/dy| = 0 (in-plane mean a / 2), |dI/dz| = b
    z, y, x = np.meshgrid(np.arange(6), np.arange(20), np.arange(20), indexing="ij")
    vol = 2.0 * x + 3.0 * (z % 2)
    mask = np.ones(vol.shape, bool)
    assert banding_metrics(vol, mask)["gradient_ratio"] == pytest.approx(3.0 / 1.0)
    # 2 mm slices, 0.5 mm pixels: through-plane 3 / 2, in-plane (2 / 0.5) / 2
    assert banding_metrics(vol, mask, spacing=(2.0, 0.5, 0.5))["gradient_ratio"] == pytest.approx(1.5 / 2.0)


def test_mask_limits_the_profile_and_small_slices_are_skipped() -> None:
    vol = _staircase([0.0, 10.0, 100.0, 30.0])
    mask = np.zeros(vol.shape, bool)
    mask[:, 4:20, 4:20] = True
    mask[2] = False
    mask[2, 0, :10] = True  # 10 voxels: below MIN_SLICE_VOXELS, so slice 2 takes no part
    profile = slice_profile(vol, mask)
    assert np.isnan(profile[2]) and profile[3] == pytest.approx(30.0)
    m = banding_metrics(vol, mask)
    assert m["max_jump"] == pytest.approx(10.0) and m["slices"] == 3  # only the pair (0, 1) is adjacent


def test_comparison_reports_both_images_and_their_ratio() -> None:
    n = 20
    real = _staircase([40.0 + 2.0 * (k % 2) for k in range(n)], noise=5.0)
    synthetic = _staircase([40.0 + 8.0 * (k % 2) for k in range(n)], noise=5.0, seed=3)
    body = np.ones(real.shape, bool)
    out = banding_comparison(synthetic, real, body, "ct", spacing=(2.5, 0.7, 0.7))
    assert out["real"]["mean_jump"] == pytest.approx(2.0, abs=0.5)
    assert out["synthetic"]["mean_jump"] == pytest.approx(8.0, abs=0.5)
    assert out["ratio"]["mean_jump"] == pytest.approx(out["synthetic"]["mean_jump"] / out["real"]["mean_jump"])
    assert out["ratio"]["max_jump"] > 2.0
    assert out["voxels"] == real.size and out["window"] == list(SOFT_TISSUE_HU)
    assert "largest slice jump" in banding_line(out, "HU") and "real" in banding_line(out, "HU")


def test_ct_measures_soft_tissue_of_the_real_image_and_clips_the_synthetic() -> None:
    real = _staircase([40.0] * 6)
    real[:, :4] = 900.0  # bone rows in the real image: not soft tissue, left out
    synthetic = real.copy()
    synthetic[3, 10:, :] = 2000.0  # invented bone in one slice: clipped to the top of the window
    tissue = soft_tissue_mask(real, np.ones(real.shape, bool), "ct")
    assert not tissue[:, :4].any() and tissue[:, 4:].all()
    out = banding_comparison(synthetic, real, np.ones(real.shape, bool), "ct")
    frac = (24 - 10) / (24 - 4)
    assert out["synthetic"]["max_jump"] == pytest.approx(frac * (SOFT_TISSUE_HU[1] - 40.0))
    assert out["real"]["max_jump"] == 0.0 and math.isnan(out["ratio"]["max_jump"])


def test_bad_input_is_an_error() -> None:
    with pytest.raises(Seg2MedError, match="same shape"):
        slice_profile(np.zeros((3, 4, 4)), np.ones((3, 4, 5), bool))
    with pytest.raises(Seg2MedError, match="soft-tissue"):
        banding_comparison(np.zeros((3, 8, 8)), np.full((3, 8, 8), 1000.0), np.ones((3, 8, 8), bool), "ct")
    with pytest.raises(Seg2MedError, match="spacing"):
        banding_metrics(np.zeros((3, 8, 8)), np.ones((3, 8, 8), bool), spacing=(0.0, 1.0, 1.0))
