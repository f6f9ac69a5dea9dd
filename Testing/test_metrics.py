"""SSIM/PSNR/MAE/HistCC inside the body, the SSIM map, the optional FSIM and per-label Dice."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest

from seg2med_core.errors import Seg2MedError
from seg2med_core.metrics import dice_per_label, histogram_correlation, image_metrics, ssim_map


def _ct_volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish CT-like volume in HU with texture, and its elliptic body mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(np.arange(4), np.arange(48), np.arange(56), indexing="ij")
    body = ((x - 28) / 24.0) ** 2 + ((y - 24) / 18.0) ** 2 <= 1.0
    hu = np.where(body, 40.0 + 300.0 * np.sin(x / 5.0) * np.cos(y / 7.0), -1000.0)
    hu = hu + np.where(body, rng.normal(0.0, 20.0, hu.shape), 0.0)
    return hu.astype(np.float32), body


def test_identical_images_are_perfect() -> None:
    hu, body = _ct_volume()
    m = image_metrics(hu, hu, body, "ct", 2000.0)
    assert m["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert m["mae"] == 0.0
    assert m["psnr"] == math.inf
    assert m["histcc"] == pytest.approx(1.0)


def test_constant_offset_gives_exact_mae_and_expected_psnr() -> None:
    hu, body = _ct_volume()
    m = image_metrics(hu + 10.0, hu, body, "ct", 2000.0)
    assert m["mae"] == pytest.approx(10.0, abs=1e-4)
    assert m["psnr"] == pytest.approx(10 * math.log10(2000.0**2 / 100.0), abs=1e-3)
    assert m["ssim"] < 1.0


def test_metrics_ignore_everything_outside_the_body() -> None:
    hu, body = _ct_volume()
    pred = hu.copy()
    pred[~body] = 500.0  # wildly wrong air
    m = image_metrics(pred, hu, body, "ct", 2000.0)
    assert m["mae"] == 0.0 and m["psnr"] == math.inf and m["histcc"] == pytest.approx(1.0)
    # SSIM windows straddle the contour, so its map near the edge sees the air: lower but still averaged
    # only over body voxels.
    smap = ssim_map(pred, hu, 2000.0)
    assert m["ssim"] == pytest.approx(float(smap[body].mean()))
    assert smap.shape == hu.shape and smap[body].mean() > smap[~body].mean()


def test_ct_values_are_clipped_to_the_model_window() -> None:
    hu, body = _ct_volume()
    hot = hu.copy()
    hot[body] = 1500.0
    m = image_metrics(hot, np.where(body, 1200.0, hu), body, "ct")
    assert m["mae"] == 0.0  # both clip to +1000 HU


def test_worse_prediction_scores_worse() -> None:
    hu, body = _ct_volume()
    rng = np.random.default_rng(5)
    small = image_metrics(hu + rng.normal(0, 10, hu.shape), hu, body, "ct")
    large = image_metrics(hu + rng.normal(0, 100, hu.shape), hu, body, "ct")
    assert small["ssim"] > large["ssim"] and small["psnr"] > large["psnr"] and small["mae"] < large["mae"]
    assert small["histcc"] > large["histcc"]


def test_mr_default_data_range_is_the_real_range_inside_the_body() -> None:
    hu, body = _ct_volume()
    mr = (hu + 1000.0) / 2000.0
    m_default = image_metrics(mr * 0.9, mr, body, "mr")
    real_range = float(mr[body].max() - mr[body].min())
    m_explicit = image_metrics(mr * 0.9, mr, body, "mr", real_range)
    assert m_default == m_explicit


def test_histcc_detects_a_different_distribution() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 1.0, 5000)
    assert histogram_correlation(a, a + 0.01, (-5, 5)) > 0.95
    assert histogram_correlation(a, rng.uniform(-5, 5, 5000), (-5, 5)) < 0.3


def test_fsim_is_skipped_with_a_reason_when_piq_cannot_be_imported(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "piq", None)  # import piq → ImportError
    hu, body = _ct_volume()
    m = image_metrics(hu, hu, body, "ct")
    assert "fsim" not in m and "piq" in m["fsim_skipped"]


def test_fsim_uses_piq_on_body_slices_in_unit_range(monkeypatch) -> None:
    calls = []

    def fake_fsim(x, y, data_range, reduction, chromatic):
        calls.append(dict(shape=tuple(x.shape), lo=float(x.min()), hi=float(x.max()), data_range=data_range))
        return 1.0 - (x - y).abs().mean(dim=(1, 2, 3))

    monkeypatch.setitem(sys.modules, "piq", types.SimpleNamespace(fsim=fake_fsim))
    monkeypatch.setattr("seg2med_core.metrics.FSIM_BATCH", 2)
    hu, body = _ct_volume()
    body[0] = False  # slice without body is left out
    m = image_metrics(hu, hu, body, "ct")
    assert m["fsim"] == pytest.approx(1.0) and "fsim_skipped" not in m
    assert [c["shape"] for c in calls] == [(2, 1, 48, 56), (1, 1, 48, 56)]
    assert all(c["data_range"] == 1.0 and 0.0 <= c["lo"] and c["hi"] <= 1.0 for c in calls)
    shifted = image_metrics(hu + 200.0, hu, body, "ct")
    assert shifted["fsim"] < 1.0


def test_bad_inputs_are_user_errors() -> None:
    hu, body = _ct_volume()
    with pytest.raises(Seg2MedError, match="different shapes"):
        image_metrics(hu[:2], hu, body, "ct")
    with pytest.raises(Seg2MedError, match="empty"):
        image_metrics(hu, hu, np.zeros_like(body), "ct")
    with pytest.raises(Seg2MedError, match="'pet'"):
        image_metrics(hu, hu, body, "pet")
    with pytest.raises(Seg2MedError, match="NaN"):
        image_metrics(np.full_like(hu, np.nan), hu, body, "ct")


def test_dice_of_known_overlaps() -> None:
    a = np.zeros((2, 10, 10), np.uint16)
    b = np.zeros_like(a)
    a[:, :, :4] = 1  # 80 voxels
    b[:, :, 2:6] = 1  # 80 voxels, 40 shared
    a[0, 8:, 8:] = 7  # 4 voxels, identical in b
    b[0, 8:, 8:] = 7
    a[1, 9, 9] = 3  # only in a
    d = dice_per_label(a, b, {1: "liver", 3: "spleen", 7: "kidney", 9: "absent"})
    assert d == {"liver": pytest.approx(0.5), "spleen": 0.0, "kidney": 1.0}


def test_dice_rejects_non_label_maps() -> None:
    with pytest.raises(Seg2MedError, match="float"):
        dice_per_label(np.zeros((2, 2, 2)), np.zeros((2, 2, 2), np.uint8), {1: "x"})
    with pytest.raises(Seg2MedError, match="shapes"):
        dice_per_label(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8), {1: "x"})
