"""MR signal equations: hand-computed values and physical limit cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seg2med_core import mrsignal
from seg2med_core.errors import Seg2MedError
from seg2med_core.mrsignal import SEQUENCES, custom_sequence, signal


def test_gre_hand_computed() -> None:
    seq = custom_sequence(tr=10.0, te=2.0, flip=30.0, field_t=1.5)
    e1 = math.exp(-10 / 500)
    a = math.radians(30)
    phase = 2 * math.pi * 3.3 * 42.577 * 1.5 * 2.0e-3
    cs = abs((1 - 0.2) + 0.2 * complex(math.cos(phase), math.sin(phase)))
    expected = 0.8 * math.sin(a) * (1 - e1) / (1 - math.cos(a) * e1) * math.exp(-2 / 20) * cs
    assert float(signal(seq, 500, 50, 20, 0.8, 0.2)) == pytest.approx(expected, rel=1e-12)


def test_spin_echo_hand_computed_and_tr_infinity_gives_pd_weighting() -> None:
    seq = custom_sequence(tr=2000.0, te=80.0, flip=90.0, kind="se")
    assert float(signal(seq, 1000, 100, 50, 0.7)) == pytest.approx(0.7 * (1 - math.exp(-2)) * math.exp(-0.8))
    # TR -> infinity and TE -> 0: pure proton density, independent of T1 and T2
    pd_seq = custom_sequence(tr=1e9, te=0.0, flip=90.0, kind="se")
    pds = np.array([0.2, 0.5, 0.9])
    got = signal(pd_seq, np.array([300.0, 1200.0, 4000.0]), np.array([40.0, 100.0, 2000.0]), 10.0, pds)
    np.testing.assert_allclose(got, pds, rtol=1e-9)


def test_inversion_recovery_nulls_at_t1_ln2() -> None:
    t1 = 800.0
    seq = custom_sequence(tr=1e7, te=0.0, flip=90.0, kind="se", ti=t1 * math.log(2))
    assert float(signal(seq, t1, 80, 40, 1.0)) == pytest.approx(0.0, abs=1e-9)


def test_ernst_angle_maximises_gre() -> None:
    tr, t1 = 7.0, 800.0
    ernst = mrsignal.ernst_angle_deg(tr, t1)
    assert ernst == pytest.approx(math.degrees(math.acos(math.exp(-tr / t1))))
    flips = np.linspace(1, 90, 500)
    values = [float(signal(custom_sequence(tr, 0.0, f), t1, 50, 30, 1.0)) for f in flips]
    best = float(signal(custom_sequence(tr, 0.0, ernst), t1, 50, 30, 1.0))
    assert best >= max(values) - 1e-12
    assert abs(flips[int(np.argmax(values))] - ernst) < 0.2


@settings(max_examples=40, deadline=None)
@given(t2star=st.floats(0.5, 200), t1=st.floats(50, 3000), flip=st.floats(1, 90))
def test_te_zero_removes_t2star_decay(t2star: float, t1: float, flip: float) -> None:
    seq = custom_sequence(10.0, 0.0, flip)
    ref = signal(seq, t1, 100.0, 200.0, 1.0)
    assert float(signal(seq, t1, 100.0, t2star, 1.0)) == pytest.approx(float(ref), rel=1e-12)


def test_opposed_phase_cancels_half_fat_and_in_phase_does_not() -> None:
    opp, inn, water = SEQUENCES["vibe_opp"], SEQUENCES["vibe_in"], SEQUENCES["dixon_water"]
    args = (300.0, 80.0, 40.0, 0.9)
    assert float(signal(opp, *args, fat_fraction=0.5)) == pytest.approx(0.0, abs=1e-12)
    pure_water = float(signal(inn, *args, fat_fraction=0.0))
    assert float(signal(inn, *args, fat_fraction=0.5)) == pytest.approx(pure_water, rel=1e-12)
    # opposed phase: |1 - 2f| of the in-phase signal (same TR/flip, differing TE only via T2* decay)
    f = 0.9
    ratio = float(signal(opp, *args, fat_fraction=f)) / float(signal(inn, *args, fat_fraction=f))
    decay = math.exp(-(opp.te_ms - inn.te_ms) / 40.0)
    assert ratio == pytest.approx(abs(1 - 2 * f) * decay, rel=1e-9)
    assert float(signal(water, *args, fat_fraction=0.9)) == pytest.approx(0.1 * pure_water, rel=1e-12)


def test_presets_realistic() -> None:
    assert SEQUENCES["vibe_in"].te_ms == pytest.approx(4.77, abs=0.05)  # vendor in-phase TE at 1.5 T
    assert SEQUENCES["vibe_opp"].te_ms == pytest.approx(2.38, abs=0.05)
    assert set(SEQUENCES) >= {"vibe_in", "vibe_opp", "t1_gre", "t2_space", "t2_fse", "dixon_water"}
    # T1-weighting: fat brighter than muscle on VIBE; fluid (long T2) brighter than muscle on T2 FSE
    fat = (275.0, 90.0, 50.0, 0.95)
    muscle = (1142.0, 45.0, 28.0, 0.8)
    fluid = (3000.0, 1000.0, 500.0, 1.0)
    assert float(signal("vibe_in", *fat, 0.9)) > 2 * float(signal("vibe_in", *muscle))
    assert float(signal("t2_fse", *fluid)) > 3 * float(signal("t2_fse", *muscle))


def test_bad_sequences() -> None:
    with pytest.raises(Seg2MedError, match="TE 12.0 ms must be >= 0 and < TR 10.0"):
        custom_sequence(10, 12, 20)
    with pytest.raises(Seg2MedError, match="flip angle 0.0"):
        custom_sequence(10, 2, 0)
    with pytest.raises(Seg2MedError, match="unknown MR sequence 'vibe'"):
        signal("vibe", 1, 1, 1, 1)
    with pytest.raises(Seg2MedError, match="T1 must be > 0"):
        signal("vibe_in", 0.0, 10, 10, 1)
