"""MR signal equations used to turn tissue T1/T2/T2*/PD into a simulated MR prior.

Models (magnitude signal, arbitrary units; ``pd`` scales everything):

* ``gre`` — spoiled gradient echo (FLASH/VIBE) steady state
  ``PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2*)`` with ``E1 = exp(-TR/T1)``, times the water/fat
  chemical-shift factor ``|(1 - f) + f exp(i 2 pi df TE)|`` (f = fat fraction, df = fat-water frequency
  offset ``FAT_SHIFT_PPM * gamma * B0``). In-phase echoes give 1, opposed-phase ``|1 - 2 f|``.
* ``se`` — spin echo / fast spin echo ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``; the refocusing pulse
  rephases fat, so no chemical-shift factor. With ``ti_ms`` set: magnitude inversion recovery
  ``PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``.
* ``dixon_water`` — the GRE steady state with only the water part ``(1 - f)`` (ideal two-point Dixon).

Water and fat share the tissue's relaxation times (the tables give whole-tissue values). Presets are for
1.5 T (the field where the authors' VIBE in-phase TE of about 4.77 ms applies); the in/opposed-phase TEs
are the exact values of this model (4.75 / 2.37 ms; vendors quote 4.77 / 2.38 ms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .errors import Seg2MedError

GAMMA_BAR_MHZ_PER_T = 42.577
FAT_SHIFT_PPM = 3.3  # main (methylene) fat peak relative to water; vendors use 3.3-3.5 ppm
KINDS: tuple[str, ...] = ("gre", "se", "dixon_water")


def fat_shift_hz(field_t: float) -> float:
    """Fat-water frequency difference in Hz at ``field_t`` tesla."""
    return FAT_SHIFT_PPM * GAMMA_BAR_MHZ_PER_T * field_t


def opposed_phase_te_ms(field_t: float = 1.5) -> float:
    """First echo time (ms) where fat and water are opposed (phase pi)."""
    return 1000.0 / (2.0 * fat_shift_hz(field_t))


def in_phase_te_ms(field_t: float = 1.5) -> float:
    """First echo time (ms) after 0 where fat and water are back in phase (phase 2 pi)."""
    return 1000.0 / fat_shift_hz(field_t)


def ernst_angle_deg(tr_ms: float, t1_ms: float) -> float:
    """Flip angle (degrees) that maximises the spoiled-GRE signal of a tissue with ``t1_ms`` at ``tr_ms``."""
    return math.degrees(math.acos(math.exp(-tr_ms / t1_ms)))


@dataclass(frozen=True)
class Sequence:
    """An MR sequence: ``kind`` is one of KINDS; times in ms, flip angle in degrees, field in tesla."""

    name: str
    kind: str
    tr_ms: float
    te_ms: float
    flip_deg: float
    ti_ms: float | None = None
    field_t: float = 1.5
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise Seg2MedError(f"sequence '{self.name}': unknown kind '{self.kind}' (choose {', '.join(KINDS)})")
        if not (self.tr_ms > 0 and math.isfinite(self.tr_ms)):
            raise Seg2MedError(f"sequence '{self.name}': TR {self.tr_ms} ms must be a positive number")
        if not (0 <= self.te_ms < self.tr_ms):
            raise Seg2MedError(f"sequence '{self.name}': TE {self.te_ms} ms must be >= 0 and < TR {self.tr_ms} ms")
        if not 0 < self.flip_deg <= 180:
            raise Seg2MedError(f"sequence '{self.name}': flip angle {self.flip_deg} deg must be in (0, 180]")
        if self.ti_ms is not None and (self.kind != "se" or not 0 < self.ti_ms < self.tr_ms):
            raise Seg2MedError(f"sequence '{self.name}': TI {self.ti_ms} ms needs kind 'se' and 0 < TI < TR")
        if self.field_t <= 0:
            raise Seg2MedError(f"sequence '{self.name}': field strength {self.field_t} T must be > 0")


_TE_IN = round(in_phase_te_ms(1.5), 3)
_TE_OPP = round(opposed_phase_te_ms(1.5), 3)
_TE_IN_EXACT = in_phase_te_ms(1.5)
_TE_OPP_EXACT = opposed_phase_te_ms(1.5)

SEQUENCES: dict[str, Sequence] = {
    "vibe_in": Sequence("vibe_in", "gre", 7.0, _TE_IN_EXACT, 10.0,
                        description=f"3D VIBE (spoiled GRE) in-phase, 1.5 T, TR 7 ms, TE {_TE_IN} ms, flip 10 deg"),
    "vibe_opp": Sequence("vibe_opp", "gre", 7.0, _TE_OPP_EXACT, 10.0,
                         description=f"3D VIBE (spoiled GRE) opposed-phase, 1.5 T, TR 7 ms, TE {_TE_OPP} ms, flip 10 deg"),
    "t1_gre": Sequence("t1_gre", "gre", 20.0, _TE_IN_EXACT, 25.0,
                       description=f"T1-weighted spoiled GRE (FLASH), 1.5 T, TR 20 ms, TE {_TE_IN} ms (in-phase), flip 25 deg"),
    "t2_space": Sequence("t2_space", "se", 3200.0, 110.0, 90.0,
                         description="T2 SPACE (3D TSE), 1.5 T, TR 3200 ms, effective TE 110 ms"),
    "t2_fse": Sequence("t2_fse", "se", 4000.0, 100.0, 90.0,
                       description="T2 turbo/fast spin echo, 1.5 T, TR 4000 ms, effective TE 100 ms"),
    "dixon_water": Sequence("dixon_water", "dixon_water", 7.0, _TE_IN_EXACT, 10.0,
                            description="two-point Dixon water image from the VIBE echoes, 1.5 T, TR 7 ms, flip 10 deg"),
}


def custom_sequence(tr: float, te: float, flip: float, kind: str = "gre", field_t: float = 1.5,
                    ti: float | None = None, name: str = "custom") -> Sequence:
    """A user-defined sequence (TR, TE in ms; flip in degrees); validated like the presets."""
    return Sequence(name, kind, float(tr), float(te), float(flip), None if ti is None else float(ti), float(field_t),
                    description=f"custom {kind}: TR {tr} ms, TE {te} ms, flip {flip} deg, {field_t} T")


def get_sequence(sequence: Sequence | str) -> Sequence:
    """Return a Sequence from a preset name (or pass one through); unknown names raise Seg2MedError."""
    if isinstance(sequence, Sequence):
        return sequence
    try:
        return SEQUENCES[sequence]
    except KeyError:
        raise Seg2MedError(f"unknown MR sequence '{sequence}' (choose one of: {', '.join(SEQUENCES)})") from None


def _gre_steady_state(seq: Sequence, t1: np.ndarray) -> np.ndarray:
    a = math.radians(seq.flip_deg)
    e1 = np.exp(-seq.tr_ms / t1)
    return math.sin(a) * (1.0 - e1) / (1.0 - math.cos(a) * e1)


def chemical_shift_factor(seq: Sequence, fat_fraction: ArrayLike) -> np.ndarray:
    """Magnitude factor of the water/fat mixture at the sequence's echo (1 = all signal in phase)."""
    f = np.asarray(fat_fraction, dtype=np.float64)
    if seq.kind == "se":
        return np.ones_like(f)
    if seq.kind == "dixon_water":
        return 1.0 - f
    phase = 2.0 * math.pi * fat_shift_hz(seq.field_t) * seq.te_ms / 1000.0
    return np.sqrt(np.maximum((1.0 - f) ** 2 + f**2 + 2.0 * f * (1.0 - f) * math.cos(phase), 0.0))


def signal(seq: Sequence | str, t1: ArrayLike, t2: ArrayLike, t2star: ArrayLike, pd: ArrayLike,
           fat_fraction: ArrayLike = 0.0) -> np.ndarray:
    """Signal of tissues with the given properties (arrays broadcast; times in ms) under ``seq``."""
    seq = get_sequence(seq)
    t1a, t2a, t2sa = (np.asarray(x, dtype=np.float64) for x in (t1, t2, t2star))
    pda = np.asarray(pd, dtype=np.float64)
    for label, arr in (("T1", t1a), ("T2", t2a), ("T2*", t2sa)):
        if np.any(arr <= 0):
            raise Seg2MedError(f"{label} must be > 0 ms (got {float(arr.min()):g})")
    if seq.kind == "se":
        if seq.ti_ms is None:
            long = 1.0 - np.exp(-seq.tr_ms / t1a)
        else:
            long = np.abs(1.0 - 2.0 * np.exp(-seq.ti_ms / t1a) + np.exp(-seq.tr_ms / t1a))
        out = pda * long * np.exp(-seq.te_ms / t2a)
    else:
        out = pda * _gre_steady_state(seq, t1a) * np.exp(-seq.te_ms / t2sa)
    return out * chemical_shift_factor(seq, fat_fraction)
