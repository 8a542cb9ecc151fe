"""Rectified-flow math in FramePack's convention. Every other module calls these; none re-derives them.

Convention (sigma = 1 is pure noise)::

    x_sigma  = (1 - sigma) * x0 + sigma * eps
    v        = eps - x0                      (what the model predicts)
    timestep = 1000 * sigma                  (what the model is fed)

The paper ("Pack and Force Your Memory") writes ``t = 1 - sigma``, ``x_t = t x + (1 - t) eps`` and
``u = x - eps = -v``; its Direct Forcing one-step estimate ``x~1 = x_t + (1 - t) v_theta`` (with its
own velocity ``v_theta = -v``) is exactly :func:`one_step_estimate` here: ``x0_hat = x_sigma - sigma v``.

``sigma`` arguments are tensors broadcastable against the latents once :func:`expand_like` has
added trailing singleton dimensions, or python floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

TIMESTEP_SCALE = 1000.0
"""FramePack/HunyuanVideo feed ``1000 * sigma`` as the timestep and ``1000 * g`` as the guidance."""


def expand_like(sigma: Tensor | float, x: Tensor) -> Tensor | float:
    """Per-sample ``sigma`` of shape ``(B,)`` -> ``(B, 1, ..., 1)`` broadcastable against ``x``."""
    if isinstance(sigma, Tensor) and sigma.ndim == 1 and x.ndim > 1:
        return sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return sigma


def add_noise(x0: Tensor, noise: Tensor, sigma: Tensor | float) -> Tensor:
    """``x_sigma = (1 - sigma) x0 + sigma eps``."""
    s = expand_like(sigma, x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """The flow-matching regression target ``v = eps - x0`` (independent of sigma)."""
    return noise - x0


def x0_from_v(x_sigma: Tensor, v: Tensor, sigma: Tensor | float) -> Tensor:
    """Clean-sample estimate ``x0 = x_sigma - sigma v``."""
    return x_sigma - expand_like(sigma, x_sigma) * v


def one_step_estimate(x_sigma: Tensor, v: Tensor, sigma: Tensor | float) -> Tensor:
    """Direct Forcing's single-step rectified-flow approximation of the clean section.

    Identical to :func:`x0_from_v`; named for what the paper calls it (``x~1 = x_t + (1 - t) v``).
    Straight flows make this exact, so it is the cheap stand-in for a full sampler rollout.
    """
    return x0_from_v(x_sigma, v, sigma)


def eps_from_v(x_sigma: Tensor, v: Tensor, sigma: Tensor | float) -> Tensor:
    """Noise estimate ``eps = x_sigma + (1 - sigma) v``."""
    return x_sigma + (1 - expand_like(sigma, x_sigma)) * v


def v_from_x0(x_sigma: Tensor, x0: Tensor, sigma: Tensor | float) -> Tensor:
    """``v = (x_sigma - x0) / sigma`` (undefined at sigma = 0)."""
    return (x_sigma - x0) / expand_like(sigma, x_sigma)


def v_from_eps(x_sigma: Tensor, eps: Tensor, sigma: Tensor | float) -> Tensor:
    """``v = (eps - x_sigma) / (1 - sigma)`` (undefined at sigma = 1)."""
    return (eps - x_sigma) / (1 - expand_like(sigma, x_sigma))


def euler_step(x: Tensor, v: Tensor, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
    """One explicit Euler step of ``dx/dsigma = v`` from ``sigma`` to ``sigma_next``."""
    return x + (expand_like(sigma_next, x) - expand_like(sigma, x)) * v


def timestep_from_sigma(sigma: Tensor) -> Tensor:
    """The model's timestep input for a noise level: ``1000 * sigma``."""
    return sigma * TIMESTEP_SCALE


# --- time shift ------------------------------------------------------------------------------


def time_shift(sigma: Tensor, shift: float) -> Tensor:
    """Shift noise levels towards noise: ``shift * s / (1 + (shift - 1) * s)``.

    Equals flux/FramePack's ``exp(mu) / (exp(mu) + (1/s - 1))`` with ``shift = exp(mu)``; maps
    0 -> 0 and 1 -> 1, and ``shift > 1`` spends more steps (or training samples) at high noise.
    """
    return shift * sigma / (1 + (shift - 1) * sigma)


def shift_for_seq_len(
    seq_len: int,
    *,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_mu: float = 0.5,
    max_mu: float = 1.15,
    max_shift: float = 7.0,
) -> float:
    """FramePack's resolution-dependent shift: ``exp(mu)`` with mu linear in the token count.

    ``seq_len`` is the number of noisy-window tokens after patchify (``T * H * W / 4`` for patch 2).
    mu is interpolated through (256, 0.5) and (4096, 1.15) and capped at ``ln(max_shift)``; at the
    usual F1 resolutions the cap is active, i.e. shift 7.
    """
    slope = (max_mu - base_mu) / (max_seq_len - base_seq_len)
    mu = base_mu + slope * (seq_len - base_seq_len)
    return math.exp(min(mu, math.log(max_shift)))


def sampling_sigmas(num_steps: int, shift: float = 1.0, device: torch.device | None = None) -> Tensor:
    """Inference schedule: ``linspace(1, 0, num_steps + 1)``, time-shifted. Shape ``(num_steps + 1,)``."""
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64, device=device)
    return time_shift(sigmas, shift).float()


# --- training-sigma sampling -------------------------------------------------------------------


@dataclass(frozen=True)
class SigmaSampling:
    """How training noise levels are drawn (also used for Direct Forcing's history estimate)."""

    distribution: Literal["uniform", "logit_normal"] = "uniform"
    """Base distribution of sigma on (0, 1): uniform, or SD3's logit-normal ``sigmoid(N(mean, std))``."""
    logit_mean: float = 0.0
    """Mean of the normal before the sigmoid (``logit_normal`` only)."""
    logit_std: float = 1.0
    """Std of the normal before the sigmoid (``logit_normal`` only)."""
    shift: float | Literal["auto"] = "auto"
    """Time shift applied to the draws: a number (1 = none), or ``auto`` for FramePack's
    resolution-dependent shift from the window's token count (matches the F1 inference schedule)."""

    def __post_init__(self) -> None:
        if self.distribution not in ("uniform", "logit_normal"):
            raise ValueError(
                f"SigmaSampling.distribution must be 'uniform' or 'logit_normal', got {self.distribution!r}."
            )
        if self.shift != "auto" and not (isinstance(self.shift, (int, float)) and self.shift > 0):
            raise ValueError(f"SigmaSampling.shift must be a positive number or 'auto', got {self.shift!r}.")
        if self.logit_std <= 0:
            raise ValueError(f"SigmaSampling.logit_std must be > 0, got {self.logit_std}.")

    def resolve_shift(self, seq_len: int | None) -> float:
        """The numeric shift for a window of ``seq_len`` tokens."""
        if self.shift != "auto":
            return float(self.shift)
        if seq_len is None:
            raise ValueError("SigmaSampling(shift='auto') needs the window's token count (seq_len).")
        return shift_for_seq_len(seq_len)

    def sample(
        self,
        batch_size: int,
        *,
        seq_len: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``(batch_size,)`` noise levels in (0, 1).

        Draws happen on the generator's device (CPU by default) and are then moved, so a seed
        gives the same sigmas on every accelerator.
        """
        gen_device = generator.device if generator is not None else torch.device("cpu")
        if self.distribution == "uniform":
            u = torch.rand(batch_size, generator=generator, device=gen_device)
        else:
            normal = torch.randn(batch_size, generator=generator, device=gen_device)
            u = torch.sigmoid(self.logit_mean + self.logit_std * normal)
        return time_shift(u, self.resolve_shift(seq_len)).to(device or gen_device)
