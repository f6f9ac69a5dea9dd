"""Sampling loop: reproducibility, batching, progress/cancel, scaling and sampler correctness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg2med_core.errors import Cancelled, Seg2MedError
from seg2med_core.network import build_network, build_scheduler
from seg2med_core.sampler import SamplerConfig, initial_noise, predict_regression, sample_slices
from tiny_models import TINY_ATTENTION

TINY = TINY_ATTENTION
ALPHAS_CUMPROD = build_scheduler(None, "ddpm").alphas_cumprod


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(TINY)


@pytest.fixture(scope="module")
def priors() -> np.ndarray:
    return np.random.default_rng(0).random((5, 16, 16), dtype=np.float32)


class GaussianOracle(torch.nn.Module):
    """Exact noise predictor for data x0 ~ N(mu, sd²) per pixel: E[eps | x_t] in closed form.

    A correct sampler driven by it must return samples with mean ``mu`` and std ``sd``.
    """

    def __init__(self, mu: float, sd: float) -> None:
        super().__init__()
        self.mu, self.sd = mu, sd
        self.conv = torch.nn.Conv2d(2, 1, 1)  # declares the 2-channel input

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = ALPHAS_CUMPROD.to(x.device)[timesteps].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * (x[:, :1] - a.sqrt() * self.mu) / (a * self.sd**2 + 1 - a)


@pytest.mark.parametrize(
    ("kind", "steps", "eta"),
    [("ddpm", 1000, 0.0), ("ddim", 250, 0.0), ("ddim", 250, 1.0), ("dpmpp_2m", 20, 0.0)],
)
def test_samplers_reproduce_the_data_distribution(kind: str, steps: int, eta: float) -> None:
    mu, sd = 0.2, 0.1  # in [-1, 1] model space
    oracle = GaussianOracle(mu, sd)
    config = SamplerConfig(kind=kind, steps=steps, seed=1, batch_size=4, eta=eta)
    out = sample_slices(oracle, None, np.zeros((4, 32, 32), np.float32), config, "cpu") * 2 - 1
    assert abs(out.mean() - mu) < 0.01
    assert abs(out.std() - sd) < 0.012, out.std()


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpmpp_2m"])
def test_result_does_not_depend_on_batch_size(tiny: torch.nn.Module, priors: np.ndarray, kind: str) -> None:
    eta = 0.5 if kind == "ddim" else 0.0  # ddim with eta > 0 draws per-step noise too
    full = sample_slices(tiny, None, priors, SamplerConfig(kind=kind, steps=4, seed=7, batch_size=2, eta=eta), "cpu")
    one = sample_slices(tiny, None, priors, SamplerConfig(kind=kind, steps=4, seed=7, batch_size=1, eta=eta), "cpu")
    part = sample_slices(
        tiny, None, priors[[1, 3]], SamplerConfig(kind=kind, steps=4, seed=7, batch_size=5, eta=eta), "cpu",
        slice_indices=[1, 3],
    )
    assert full.shape == priors.shape and full.dtype == np.float32
    np.testing.assert_allclose(full, one, atol=1e-5)
    np.testing.assert_allclose(full[[1, 3]], part, atol=1e-5)


def test_seed_controls_the_result(tiny: torch.nn.Module, priors: np.ndarray) -> None:
    cfg = dict(kind="ddpm", steps=3, batch_size=5)
    a = sample_slices(tiny, None, priors, SamplerConfig(seed=1, **cfg), "cpu")
    b = sample_slices(tiny, None, priors, SamplerConfig(seed=1, **cfg), "cpu")
    c = sample_slices(tiny, None, priors, SamplerConfig(seed=2, **cfg), "cpu")
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3
    assert 0.0 <= a.min() and a.max() <= 1.0
    # slices get different noise from one another
    noise = initial_noise(1, [0, 1], (16, 16))
    assert not torch.allclose(noise[0], noise[1])


class Recorder(torch.nn.Module):
    """Records what the denoiser sees; predicts zero noise."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 1, 1)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.clone(), timesteps.clone()))
        return torch.zeros_like(x[:, :1])


def test_network_sees_prior_in_minus_one_one_and_all_timesteps(priors: np.ndarray) -> None:
    rec = Recorder()
    sample_slices(rec, None, priors[:2], SamplerConfig(kind="ddim", steps=5, seed=0, batch_size=2), "cpu")
    assert len(rec.seen) == 5
    x0, t0 = rec.seen[0]
    np.testing.assert_allclose(x0[:, 1].numpy(), priors[:2] * 2 - 1, atol=1e-6)
    np.testing.assert_allclose(x0[:, 0].numpy(), initial_noise(0, [0, 1], (16, 16))[:, 0].numpy())
    assert [int(t[0]) for _, t in rec.seen] == [999, 749, 500, 250, 0]


def test_progress_and_cancel(tiny: torch.nn.Module, priors: np.ndarray) -> None:
    events: list[tuple[int, int, str]] = []
    sample_slices(
        tiny, None, priors, SamplerConfig(kind="ddim", steps=3, seed=0, batch_size=2), "cpu",
        progress=lambda d, t, m: events.append((d, t, m)),
    )
    assert events[0] == (0, 9, "sampling") and events[-1] == (9, 9, "sampling")
    assert [d for d, _, _ in events] == list(range(10))

    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 4

    with pytest.raises(Cancelled):
        sample_slices(tiny, None, priors, SamplerConfig(kind="ddim", steps=3, seed=0, batch_size=2), "cpu", cancel=cancel)
    assert calls["n"] == 5


def test_input_and_config_errors(tiny: torch.nn.Module, priors: np.ndarray) -> None:
    cfg = SamplerConfig(kind="ddim", steps=2, seed=0)
    with pytest.raises(Seg2MedError, match="shape \\(16, 16\\)"):
        sample_slices(tiny, None, priors[0], cfg, "cpu")
    with pytest.raises(Seg2MedError, match="got values in .*, 1.99"):
        sample_slices(tiny, None, priors * 2, cfg, "cpu")
    bad = priors.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(Seg2MedError, match="NaN"):
        sample_slices(tiny, None, bad, cfg, "cpu")
    with pytest.raises(Seg2MedError, match="1001 steps"):
        sample_slices(tiny, None, priors, SamplerConfig(kind="ddpm", steps=1001), "cpu")
    with pytest.raises(Seg2MedError, match="sampler 'euler'"):
        SamplerConfig(kind="euler")
    with pytest.raises(Seg2MedError, match="got 0"):
        SamplerConfig(steps=0)
    with pytest.raises(Seg2MedError, match="eta must be in"):
        SamplerConfig(eta=2.0)
    with pytest.raises(Seg2MedError, match="use predict_regression"):
        sample_slices(torch.nn.Conv2d(1, 1, 1), None, priors, cfg, "cpu")
    assert sample_slices(tiny, None, np.zeros((0, 16, 16), np.float32), cfg, "cpu").shape == (0, 16, 16)


def test_predict_regression_scaling_and_progress(priors: np.ndarray) -> None:
    identity = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        identity.weight.fill_(1.0)
        identity.bias.zero_()
    events: list[int] = []
    out = predict_regression(
        identity, priors, SamplerConfig(batch_size=2), "cpu", progress=lambda d, t, m: events.append(d)
    )
    np.testing.assert_allclose(out, priors, atol=1e-6)
    assert events == [0, 1, 2, 3]
    with pytest.raises(Seg2MedError, match="1 input channel"):
        predict_regression(torch.nn.Conv2d(2, 1, 1), priors, SamplerConfig(), "cpu")
    with pytest.raises(Cancelled):
        predict_regression(identity, priors, SamplerConfig(batch_size=2), "cpu", cancel=lambda: True)


@pytest.mark.parametrize("spacing", ["linspace", "logsnr"])
def test_dpm_solver_spacings_reproduce_the_data_distribution(spacing: str) -> None:
    oracle = GaussianOracle(0.2, 0.1)
    config = SamplerConfig(kind="dpmpp_2m", steps=20, seed=1, batch_size=4, spacing=spacing)
    out = sample_slices(oracle, None, np.zeros((4, 32, 32), np.float32), config, "cpu") * 2 - 1
    assert abs(out.mean() - 0.2) < 0.01 and abs(out.std() - 0.1) < 0.012, (out.mean(), out.std())


def test_dpm_solver_timesteps_per_spacing() -> None:
    from seg2med_core.dpm_solver import DPMSolverPP2M

    def timesteps(spacing: str, n: int) -> list[int]:
        solver = DPMSolverPP2M(ALPHAS_CUMPROD, spacing=spacing)
        solver.set_timesteps(n)
        return solver.timesteps.tolist()

    assert timesteps("linspace", 5) == [999, 749, 500, 250, 0]
    logsnr = timesteps("logsnr", 5)
    assert logsnr[0] == 999 and logsnr == sorted(logsnr, reverse=True) and len(set(logsnr)) == 5 and logsnr[-1] > 0
    for bad in ("cosine", "trailing"):
        with pytest.raises(Seg2MedError, match=f"'{bad}'"):
            SamplerConfig(spacing=bad)
