"""Samplers against an exact flow with a known ODE solution."""

import math

import pytest
import torch

from lvg import flow
from lvg.sampling.samplers import cfg_velocity, euler_sample, sample, unipc_sample

MU, S = 0.7, 0.5  # data ~ N(MU, S^2): the probability-flow ODE is known in closed form


def exact_velocity(x, sigma):
    """E[eps - x0 | x_sigma] for Gaussian data N(MU, S^2) and N(0, 1) noise."""
    var = (1 - sigma) ** 2 * S**2 + sigma**2
    centred = x - (1 - sigma) * MU
    e_eps = sigma / var * centred
    e_x0 = MU + (1 - sigma) * S**2 / var * centred
    return e_eps - e_x0


def exact_data_prediction(noise, sigma):
    """E[x0 | x] on the exact ODE path at ``sigma`` (what UniPC returns at its last level)."""
    state = (1 - sigma) * MU + ((1 - sigma) ** 2 * S**2 + sigma**2) ** 0.5 * noise
    return flow.x0_from_v(state, exact_velocity(state, sigma), sigma)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_exact_solution_is_reached_and_unipc_beats_euler(shift):
    noise = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target = MU + S * noise  # the flow maps z at sigma = 1 to MU + S z at sigma = 0
    errors = {}
    for steps in (8, 32):
        sigmas = flow.sampling_sigmas(steps, shift=shift).double()
        unipc = unipc_sample(exact_velocity, noise, sigmas)
        errors[steps] = {
            "euler": (euler_sample(exact_velocity, noise, sigmas) - target).abs().mean().item(),
            "unipc_path": (unipc - exact_data_prediction(noise, sigmas[-2])).abs().mean().item(),
            "unipc_answer": (unipc - target).abs().mean().item(),
        }
        assert errors[steps]["unipc_path"] < errors[steps]["euler"] / 3  # more accurate at equal model calls
    for kind in ("euler", "unipc_answer"):  # both converge to the known answer
        assert errors[32][kind] < errors[8][kind] / 2.5, errors
    assert errors[32]["unipc_answer"] < 0.02


def test_unipc_calls_the_model_once_per_step_and_returns_the_data_prediction():
    calls = []

    def velocity(x, sigma):
        calls.append(float(sigma))
        return exact_velocity(x, sigma)

    sigmas = flow.sampling_sigmas(5, shift=1.0).double()
    out = unipc_sample(velocity, torch.zeros(3, dtype=torch.float64), sigmas)
    assert calls == pytest.approx(sigmas[:-1].tolist())  # 5 calls, never at sigma = 0
    assert out.shape == (3,)


def test_schedule_reproduces_framepack_sigmas():
    # FramePack: sigmas = linspace(1, 0, n + 1); flux_time_shift(t, mu) = e^mu / (e^mu + (1/t - 1))
    seq_len = 9 * (80 // 2) * (80 // 2)  # F1 window at 640x640
    mu = min(0.5 + (1.15 - 0.5) / (4096 - 256) * (seq_len - 256), math.log(7.0))
    t = torch.linspace(1, 0, 26, dtype=torch.float64)
    expected = math.exp(mu) / (math.exp(mu) + (1 / t - 1))
    torch.testing.assert_close(flow.sampling_sigmas(25, flow.shift_for_seq_len(seq_len)), expected.float())


def test_cfg_and_rescale():
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 4, 8, generator=g), torch.randn(2, 4, 8, generator=g)
    assert torch.equal(cfg_velocity(cond, uncond, 1.0), cond)
    torch.testing.assert_close(cfg_velocity(cond, uncond, 3.0), uncond + 3 * (cond - uncond))
    full = cfg_velocity(cond, uncond, 5.0, rescale=1.0)
    torch.testing.assert_close(full.std(dim=(1, 2)), cond.std(dim=(1, 2)))


def test_sample_rejects_unknown_sampler():
    with pytest.raises(ValueError, match="'unipc' or 'euler'"):
        sample(exact_velocity, torch.zeros(2), 4, shift=1.0, sampler="ddim")
