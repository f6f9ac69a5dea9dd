"""tools/ship_models.py: the CT card's measured section is rebuilt from bench_lopo results, verdict included."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ship_models", ROOT / "tools" / "ship_models.py")
assert spec and spec.loader
ship_models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ship_models)


def _result(patient: str, raw: tuple[float, float], anchored: tuple[float, float], prior: tuple[float, float]) -> dict:
    def m(v: tuple[float, float]) -> dict:
        return {"ssim": v[0], "mae": v[1], "psnr": 20.0, "histcc": 0.9}

    region = {"model": m(raw), "anchored_1": m(anchored), "prior": m(prior)}
    return {"model": f"/x/run_{patient}_trained/bundle", "patient": f"/x/all/{patient}", "phase": "native",
            "sampler": "dpmpp_2m, 10 steps, seed 0", "overlap_slices": [3, 9], "anchor_strengths": [1.0],
            "model_training": {"steps": 700, "train_minutes": 54.0, "stopped_by": "time"},
            "whole": region, "overlap": region,
            "organs_mean_hu": {"liver": {"real": 70.0, "model": 0.0, "anchored_1": 69.0, "prior": 70.0}},
            "organs_within_40_hu": {"model": [], "anchored_1": ["liver"], "prior": ["liver"]}}


CARD = "# seg2med-demo-ct\n\n## Training data (everything this model saw)\n\n- kept line\n\n## Measured: leave-one-patient-out\n\nold numbers 123.4\n"


def test_refresh_keeps_training_sections_and_states_which_variant_meets_the_target() -> None:
    lopo = [_result("a", (0.40, 120.0), (0.45, 80.0), (0.42, 90.0)), _result("b", (0.30, 110.0), (0.36, 85.0), (0.35, 95.0))]
    card = ship_models.refresh_ct_card(CARD, lopo)
    assert "- kept line" in card and "old numbers 123.4" not in card
    assert "| SSIM raw / anchor 1 / prior |" in card and "| 0.400 / 0.450 / 0.420 |" in card
    assert "is met by: anchor 1.**" in card and "700 steps in 54.0 min" in card
    assert "| a | liver | 70.0 | 0.0 | 69.0 | 70.0 |" in card


def test_refresh_says_not_met_when_one_direction_fails() -> None:
    lopo = [_result("a", (0.40, 120.0), (0.45, 80.0), (0.42, 90.0)), _result("b", (0.30, 110.0), (0.34, 85.0), (0.35, 95.0))]
    card = ship_models.refresh_ct_card(CARD, lopo)
    assert "is not met** by the raw model nor by any anchoring strength measured" in card
    assert "b, T11–L3 overlap, anchor 1: SSIM worse than the prior alone, MAE better" in card
