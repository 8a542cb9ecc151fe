"""ODE samplers for ``dx/dsigma = v(x, sigma)`` from sigma = 1 (noise) to 0 (data)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from lvg import flow

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""``v = f(x_sigma, sigma)`` with ``sigma`` a 0-d tensor."""


def euler_sample(velocity: VelocityFn, noise: Tensor, sigmas: Tensor) -> Tensor:
    """Integrate with explicit Euler along a decreasing schedule ``sigmas`` (``sigmas[0]`` = start level)."""
    x = noise
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x = flow.euler_step(x, velocity(x, sigma), sigma, sigma_next)
    return x
