"""Flow math against the paper's t-convention and closed forms."""

import math
from itertools import pairwise

import pytest
import torch

from lvg import flow


@pytest.fixture
def sample():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 2, 5, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, 2, 5, 5, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    return x0, eps, sigma


def test_noising_matches_paper_convention(sample):
    x0, eps, sigma = sample
    t = (1 - sigma).view(-1, 1, 1, 1, 1)  # paper: t = 1 - sigma, x_t = t x + (1 - t) eps
    torch.testing.assert_close(flow.add_noise(x0, eps, sigma), t * x0 + (1 - t) * eps)
    assert torch.equal(flow.add_noise(x0, eps, 0.0), x0)
    assert torch.equal(flow.add_noise(x0, eps, 1.0), eps)


def test_velocity_is_derivative_of_the_path(sample):
    x0, eps, sigma = sample
    h = 1e-6
    numeric = (flow.add_noise(x0, eps, sigma + h) - flow.add_noise(x0, eps, sigma - h)) / (2 * h)
    torch.testing.assert_close(numeric, flow.velocity_target(x0, eps))


def test_one_step_estimate_is_papers_x_tilde(sample):
    x0, eps, sigma = sample
    x_sigma = flow.add_noise(x0, eps, sigma)
    v = flow.velocity_target(x0, eps)
    t = (1 - sigma).view(-1, 1, 1, 1, 1)
    v_paper = -v  # the paper's model velocity points from noise to data: u = x - eps
    x_tilde = x_sigma + (1 - t) * v_paper  # x~1 = x_t + (1 - t) v_theta
    torch.testing.assert_close(flow.one_step_estimate(x_sigma, v, sigma), x_tilde)
    # With the exact velocity the estimate recovers the data exactly (straight paths).
    torch.testing.assert_close(flow.one_step_estimate(x_sigma, v, sigma), x0)


def test_conversions_round_trip(sample):
    x0, eps, sigma = sample
    x_sigma = flow.add_noise(x0, eps, sigma)
    v = flow.velocity_target(x0, eps)
    torch.testing.assert_close(flow.x0_from_v(x_sigma, v, sigma), x0)
    torch.testing.assert_close(flow.eps_from_v(x_sigma, v, sigma), eps)
    torch.testing.assert_close(flow.v_from_x0(x_sigma, x0, sigma), v)
    torch.testing.assert_close(flow.v_from_eps(x_sigma, eps, sigma), v)


def test_euler_integrates_straight_path_exactly(sample):
    x0, eps, _ = sample
    v = flow.velocity_target(x0, eps)
    sigmas = flow.sampling_sigmas(7, shift=3.0).double()
    x = eps.clone()
    for s, s_next in pairwise(sigmas):
        x = flow.euler_step(x, v, s, s_next)
    torch.testing.assert_close(x, x0)


def test_time_shift_closed_form():
    s = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    # flux/FramePack form exp(mu) / (exp(mu) + (1/s - 1)) with shift = exp(mu)
    mu = math.log(3.0)
    inner = torch.tensor([0.25, 0.5])
    torch.testing.assert_close(
        flow.time_shift(inner.double(), 3.0), math.exp(mu) / (math.exp(mu) + (1 / inner.double() - 1))
    )
    out = flow.time_shift(s, 3.0)
    assert out[0] == 0 and out[-1] == 1
    torch.testing.assert_close(out[2], torch.tensor(0.75, dtype=torch.float64))
    assert torch.equal(flow.time_shift(s, 1.0), s)


def test_shift_for_seq_len_matches_framepack():
    assert flow.shift_for_seq_len(256) == pytest.approx(math.exp(0.5))
    assert flow.shift_for_seq_len(4096) == pytest.approx(math.exp(1.15))
    assert flow.shift_for_seq_len(2176) == pytest.approx(math.exp(0.825))  # linear in between
    # F1 at 640x640 (80x80 latents, window 9): 9 * 40 * 40 = 14400 tokens -> capped at shift 7.
    assert flow.shift_for_seq_len(14400) == pytest.approx(7.0)


def test_sampling_sigmas_schedule():
    s = flow.sampling_sigmas(4)
    torch.testing.assert_close(s, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    shifted = flow.sampling_sigmas(25, shift=7.0)
    assert shifted.shape == (26,) and shifted[0] == 1 and shifted[-1] == 0
    assert bool((shifted[:-1] > shifted[1:]).all())


@pytest.mark.parametrize("distribution", ["uniform", "logit_normal"])
def test_sigma_sampling_distributions(distribution):
    g = torch.Generator().manual_seed(0)
    unshifted = flow.SigmaSampling(distribution=distribution, shift=1.0).sample(200_000, generator=g)
    assert unshifted.min() > 0 and unshifted.max() < 1
    if distribution == "uniform":
        assert unshifted.mean().item() == pytest.approx(0.5, abs=5e-3)
        assert unshifted.var().item() == pytest.approx(1 / 12, abs=2e-3)
    else:  # logit(sigma) ~ N(0, 1)
        logit = torch.logit(unshifted.double())
        assert logit.mean().item() == pytest.approx(0.0, abs=1e-2)
        assert logit.std().item() == pytest.approx(1.0, abs=1e-2)
    # A shift maps the same draws through time_shift.
    g = torch.Generator().manual_seed(0)
    shifted = flow.SigmaSampling(distribution=distribution, shift=3.0).sample(200_000, generator=g)
    torch.testing.assert_close(shifted, flow.time_shift(unshifted, 3.0))


def test_sigma_sampling_auto_shift_and_seed():
    sampler = flow.SigmaSampling()
    a = sampler.sample(8, seq_len=14400, generator=torch.Generator().manual_seed(3))
    b = sampler.sample(8, seq_len=14400, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    u = torch.rand(8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, flow.time_shift(u, 7.0))
    with pytest.raises(ValueError, match="seq_len"):
        sampler.sample(2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"distribution": "beta"}, "distribution"),
        ({"shift": -1.0}, "shift"),
        ({"shift": "big"}, "shift"),
        ({"logit_std": 0.0}, "logit_std"),
    ],
)
def test_sigma_sampling_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        flow.SigmaSampling(**kwargs)


def test_timestep_scale():
    assert torch.equal(flow.timestep_from_sigma(torch.tensor([0.25])), torch.tensor([250.0]))
