"""ODE samplers for ``dx/dsigma = v(x, sigma)`` from sigma = 1 (noise) to 0 (data), and guidance.

* :func:`euler_sample` -- explicit Euler (diffusers' FramePack pipeline uses it).
* :func:`unipc_sample` -- the flow-matching UniPC that FramePack uses (``bh1`` by default, order
  <= 3, multistep predictor-corrector on data predictions with ``lambda = -log(sigma)``); it spends
  one model evaluation per step and returns the **last data prediction**, as FramePack does.
* :func:`cfg_velocity` -- real classifier-free guidance with CFG rescale (FramePack's
  ``rescale_noise_cfg`` applied to velocities).

Schedules come from :func:`lvg.flow.sampling_sigmas` (``linspace(1, 0, n + 1)`` time-shifted).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch
from torch import Tensor

from lvg import flow

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""``v = f(x_sigma, sigma)`` with ``sigma`` a 0-d tensor."""


def euler_sample(velocity: VelocityFn, noise: Tensor, sigmas: Tensor) -> Tensor:
    """Integrate with explicit Euler along a decreasing schedule ``sigmas`` (``sigmas[0]`` = start level)."""
    x = noise
    for sigma, sigma_next in pairwise(sigmas):
        x = flow.euler_step(x, velocity(x, sigma), sigma, sigma_next)
    return x


def unipc_sample(
    velocity: VelocityFn, noise: Tensor, sigmas: Tensor, variant: str = "bh1", max_order: int = 3
) -> Tensor:
    """Flow-matching UniPC (Zhao et al. 2023, FramePack's ``sample_unipc``); returns the last x0 prediction.

    Evaluates the model at ``sigmas[:-1]``; the final level (0) is reached through the returned data
    prediction, so ``len(sigmas) - 1`` model calls in total.
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"UniPC variant must be 'bh1' or 'bh2', got {variant!r}.")
    if not 1 <= max_order <= 3:
        raise ValueError(f"UniPC max_order must be 1, 2 or 3, got {max_order}.")
    sigmas = sigmas.double()
    order = max(1, min(max_order, len(sigmas) - 2))
    x = noise

    def data(x: Tensor, sigma: Tensor) -> Tensor:
        return flow.x0_from_v(x, velocity(x, sigma.to(x.dtype)), sigma.to(x.dtype))

    models, lambdas = [data(x, sigmas[0])], [-torch.log(sigmas[0])]
    for i in range(1, len(sigmas) - 1):
        step_order = min(i, order)
        x, model = _unipc_update(x, models, lambdas, sigmas[i - 1], sigmas[i], step_order, variant, data)
        models, lambdas = (models + [model])[-order:], (lambdas + [-torch.log(sigmas[i])])[-order:]
    return models[-1]


def _unipc_update(
    x: Tensor, models: list[Tensor], lambdas: list[Tensor], sigma_prev: Tensor, sigma: Tensor, order: int,
    variant: str, data: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """One UniPC step of ``order`` from ``sigma_prev`` to ``sigma``: predictor, model call, corrector."""
    lambda_t = -torch.log(sigma)
    h = lambda_t - lambdas[-1]
    model_prev = models[-1]
    rks, d1s = [], []
    for i in range(1, order):
        rk = (lambdas[-(i + 1)] - lambdas[-1]) / h
        rks.append(rk)
        d1s.append((models[-(i + 1)] - model_prev) / rk.to(x.dtype))
    rks.append(torch.ones((), dtype=torch.float64))
    rks = torch.stack(rks)
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rows, b, factorial = [], [], 1
    for i in range(1, order + 1):
        rows.append(rks ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r, b = torch.stack(rows), torch.stack(b)

    x_lin = (sigma / sigma_prev).to(x.dtype) * x - h_phi_1.to(x.dtype) * model_prev  # first-order part
    pred = 0
    if d1s:
        rhos_p = torch.tensor([0.5], dtype=torch.float64) if order == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1])
        pred = sum(rho.to(x.dtype) * d for rho, d in zip(rhos_p, d1s))
    x_pred = x_lin - b_h.to(x.dtype) * pred
    model = data(x_pred, sigma)
    rhos_c = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(r, b)
    corr = sum(rho.to(x.dtype) * d for rho, d in zip(rhos_c[:-1], d1s)) if d1s else 0
    x_corr = x_lin - b_h.to(x.dtype) * (corr + rhos_c[-1].to(x.dtype) * (model - model_prev))
    return x_corr, model


def cfg_velocity(v_cond: Tensor, v_uncond: Tensor, scale: float, rescale: float = 0.0) -> Tensor:
    """Real CFG ``v_u + s (v_c - v_u)``, optionally rescaled towards the conditional's std (``rescale``)."""
    if scale == 1.0:
        return v_cond
    v = v_uncond + scale * (v_cond - v_uncond)
    if rescale > 0:
        dims = list(range(1, v.ndim))
        v_rescaled = v * (v_cond.std(dim=dims, keepdim=True) / v.std(dim=dims, keepdim=True))
        v = rescale * v_rescaled + (1 - rescale) * v
    return v


def sample(
    velocity: VelocityFn, noise: Tensor, num_steps: int, *, shift: float, sampler: str = "unipc"
) -> Tensor:
    """Denoise ``noise`` with ``num_steps`` model calls of ``sampler`` (``unipc`` or ``euler``)."""
    sigmas = flow.sampling_sigmas(num_steps, shift, device=noise.device)
    if sampler == "unipc":
        return unipc_sample(velocity, noise, sigmas)
    if sampler == "euler":
        return euler_sample(velocity, noise, sigmas)
    raise ValueError(f"sampler must be 'unipc' or 'euler', got {sampler!r}.")
