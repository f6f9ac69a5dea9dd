"""Training-free coupling across slices while sampling: x0 blending with the adjacent slices and
correlated starting noise (``SamplerConfig.slice_coupling`` / ``noise_correlation``), on tiny networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg2med_core.errors import Seg2MedError
from seg2med_core.fast import FastOptions, prepared
from seg2med_core.sampler import (
    SamplerConfig,
    couple_predictions,
    denoise,
    initial_noise,
    make_stepper,
    noise_kernel,
    sample_slices,
    slice_neighbours,
    slice_seed,
    step_generators,
    to_model_space,
)
from tiny_models import tiny_attention_network

KINDS = ["dpmpp_2m", "ddim", "ddpm"]


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return tiny_attention_network()


@pytest.fixture(scope="module")
def priors() -> np.ndarray:
    return np.random.default_rng(2).random((6, 16, 16), dtype=np.float32)


def test_off_is_the_uncoupled_sampler_bit_for_bit(tiny: torch.nn.Module, priors: np.ndarray) -> None:
    """Coupling 0: every slice is sampled alone from its own (seed, index) noise, as before the option."""
    config = SamplerConfig(kind="dpmpp_2m", steps=3, seed=4, batch_size=1, fast=False)
    out = sample_slices(tiny, None, priors, config, "cpu")
    options = FastOptions.for_device("cpu", fast=False)
    with prepared(tiny, torch.device("cpu"), options) as predict, torch.inference_mode():
        for k in range(len(priors)):
            gen = torch.Generator().manual_seed(slice_seed(4, k))
            x = torch.randn((16, 16), generator=gen)[None, None]
            cond = to_model_space(torch.from_numpy(priors[k : k + 1])).unsqueeze(1)
            stepper = make_stepper(None, config)
            alone = denoise(predict, x, cond, stepper, step_generators(stepper, torch.device("cpu"), 4, [k]))
            np.testing.assert_array_equal(out[k], ((alone[0, 0] + 1) / 2).clamp(0, 1).numpy())


@pytest.mark.parametrize("kind", KINDS)
def test_coupling_makes_a_slice_depend_on_its_neighbours(tiny: torch.nn.Module, priors: np.ndarray, kind: str) -> None:
    changed = priors.copy()
    changed[2] = 1.0 - changed[2]
    for coupling, expect_change in ((0.0, False), (1.0, True)):
        config = SamplerConfig(kind=kind, steps=4, seed=1, batch_size=2, slice_coupling=coupling)
        a = sample_slices(tiny, None, priors, config, "cpu")
        b = sample_slices(tiny, None, changed, config, "cpu")
        assert not np.array_equal(a[2], b[2])
        assert (not np.array_equal(a[3], b[3])) == expect_change  # the neighbour feels the change only when coupled
        assert (not np.array_equal(a[1], b[1])) == expect_change
    # slices that are not adjacent (index gap) are not coupled
    config = SamplerConfig(kind=kind, steps=4, seed=1, batch_size=2, slice_coupling=1.0)
    apart = [0, 1, 2, 10, 11, 12]
    a = sample_slices(tiny, None, priors, config, "cpu", slice_indices=apart)
    b = sample_slices(tiny, None, changed, config, "cpu", slice_indices=apart)
    np.testing.assert_array_equal(a[3:], b[3:])


class NoisyEcho(torch.nn.Module):
    """A sample-predicting "denoiser" whose x0 guess keeps half of its noisy input: slices with the same prior
    end up as different as their noise, which is what coupling is there to reduce."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 1, 1)  # tells the sampler it takes two channels

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return 0.5 * x[:, :1] + 0.5 * x[:, 1:2]


SAMPLE_SCHEDULER = {"num_train_timesteps": 1000, "schedule": "linear_beta", "beta_start": 0.0001, "beta_end": 0.02,
                    "prediction_type": "sample", "clip_sample": True}


@pytest.mark.parametrize("kind", KINDS)
def test_coupled_neighbours_are_closer(kind: str) -> None:
    same = np.repeat(np.random.default_rng(3).random((1, 16, 16), dtype=np.float32), 8, axis=0)

    def neighbour_gap(**coupling: float) -> float:
        config = SamplerConfig(kind=kind, steps=5, seed=2, batch_size=8, fast=False, **coupling)
        out = sample_slices(NoisyEcho(), SAMPLE_SCHEDULER, same, config, "cpu")
        return float(np.abs(np.diff(out, axis=0)).mean())

    free = neighbour_gap()
    assert free > 0.01
    # DDPM adds fresh per-slice noise at every step after the blend, so x0 blending only helps a little there
    assert neighbour_gap(slice_coupling=1.0) < (0.99 if kind == "ddpm" else 0.8) * free
    assert neighbour_gap(noise_correlation=0.9) < 0.8 * free


@pytest.mark.parametrize("kind", KINDS)
def test_coupled_result_is_seeded_and_independent_of_batches_and_devices(tiny: torch.nn.Module, priors: np.ndarray, kind: str) -> None:
    config = SamplerConfig(kind=kind, steps=3, seed=9, batch_size=2, slice_coupling=0.7, noise_correlation=0.8)
    one = sample_slices(tiny, None, priors, config, "cpu", slice_indices=range(20, 26))
    again = sample_slices(tiny, None, priors, SamplerConfig(**{**config.__dict__, "batch_size": 5}), "cpu", slice_indices=range(20, 26))
    two = sample_slices(tiny, None, priors, config, ["cpu", "cpu"], slice_indices=range(20, 26))
    np.testing.assert_allclose(again, one, atol=1e-5)  # other batches: float rounding of the network only
    np.testing.assert_array_equal(two, one)
    other = sample_slices(tiny, None, priors, SamplerConfig(**{**config.__dict__, "seed": 10}), "cpu", slice_indices=range(20, 26))
    assert not np.array_equal(other, one)


def test_lockstep_progress_and_cancel(tiny: torch.nn.Module, priors: np.ndarray) -> None:
    events: list[tuple[int, int]] = []
    config = SamplerConfig(steps=3, seed=0, batch_size=4, slice_coupling=0.5)
    sample_slices(tiny, None, priors, config, "cpu", progress=lambda d, t, _m: events.append((d, t)))
    assert events[0] == (0, 6) and events[-1] == (6, 6)  # 2 batches x 3 steps
    from seg2med_core.errors import Cancelled

    with pytest.raises(Cancelled):
        sample_slices(tiny, None, priors, config, "cpu", cancel=lambda: True)


def test_correlated_noise_has_the_asked_correlation_and_unit_variance() -> None:
    for rho in (0.3, 0.8, 0.95):
        kernel = noise_kernel(rho)
        assert np.sum(kernel**2) == pytest.approx(1.0) and np.sum(kernel[:-1] * kernel[1:]) == pytest.approx(rho, abs=1e-6)
    noise = initial_noise(5, range(40), (64, 64), correlation=0.8)[:, 0].numpy().reshape(40, -1)
    assert noise.std() == pytest.approx(1.0, abs=0.03)
    lag1 = np.mean([np.corrcoef(noise[k], noise[k + 1])[0, 1] for k in range(39)])
    assert lag1 == pytest.approx(0.8, abs=0.03)
    # a slice's noise does not depend on which other slices are drawn with it, also at index 0 (negative neighbours)
    np.testing.assert_array_equal(initial_noise(5, [0, 7], (8, 8), 0.8)[1], initial_noise(5, [7], (8, 8), 0.8)[0])
    np.testing.assert_array_equal(initial_noise(5, [0], (8, 8), 0.8)[0], initial_noise(5, [0, 1, 2], (8, 8), 0.8)[0])
    np.testing.assert_array_equal(initial_noise(5, [3], (8, 8), 0.0), initial_noise(5, [3], (8, 8)))


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_couple_predictions_blends_x0_for_every_prediction_type(kind: str) -> None:
    class Stepper:
        alphas_cumprod = torch.linspace(0.9999, 0.01, 1000)
        prediction_type = kind

    t, w = 600, 0.8
    acp = float(Stepper.alphas_cumprod[t])
    alpha, sigma = acp**0.5, (1 - acp) ** 0.5
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    x0 = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    to_output = {"sample": lambda z: z, "epsilon": lambda z: (x - alpha * z) / sigma, "v_prediction": lambda z: (alpha * x - z) / sigma}
    to_x0 = {"sample": lambda o: o, "epsilon": lambda o: (x - sigma * o) / alpha, "v_prediction": lambda o: alpha * x - sigma * o}
    neighbours = slice_neighbours([4, 5, 9])  # rows 0 and 1 are adjacent, row 2 is alone
    out = couple_predictions(to_output[kind](x0), x, t, Stepper(), neighbours, w)
    got = to_x0[kind](out)
    ws = w * sigma
    torch.testing.assert_close(got[0], x0[0] + ws * (x0[1] - x0[0]))
    torch.testing.assert_close(got[1], x0[1] + ws * (x0[0] - x0[1]))
    torch.testing.assert_close(got[2], x0[2])


def test_slice_neighbours_follow_the_slice_indices() -> None:
    before, after = slice_neighbours([3, 4, 5, 8])
    assert before.tolist() == [-1, 0, 1, -1] and after.tolist() == [1, 2, -1, -1]


def test_bad_coupling_values_are_errors() -> None:
    with pytest.raises(Seg2MedError, match="slice coupling must be in"):
        SamplerConfig(slice_coupling=1.5)
    with pytest.raises(Seg2MedError, match="noise correlation"):
        SamplerConfig(noise_correlation=1.0)
