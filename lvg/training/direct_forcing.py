"""Stage 2: Direct Forcing -- condition on the model's own one-step estimates, at no extra cost.

Section n+1 is conditioned on ``x0_hat = x_sigma - sigma * v`` of section n: the rectified-flow
one-step estimate from the prediction already made for section n's loss (no extra forward pass,
the paper's "no additional overhead"). It replaces the 1x/2x/4x history and the psi update input;
the start latent stays clean. Only the output layer trains by default.
"""

from typing import Any

from torch import Tensor

from lvg import flow
from lvg.training.base import StageModule


class DirectForcingModule(StageModule):
    """Stage 2; ``trainable`` defaults to ``output_layer`` (``norm_out`` + ``proj_out``)."""

    def __init__(self, *args: Any, trainable: str = "output_layer", **kwargs: Any):
        """
        Args:
            trainable: what stage 2 trains: ``output_layer`` (the paper), ``output_layer+semantic_pack``
                or ``all`` (see :class:`StageModule` for the syntax).
        """
        super().__init__(*args, trainable=trainable, **kwargs)

    def next_history(self, *, x0: Tensor, x_sigma: Tensor, v: Tensor, sigma: Tensor, state, gen) -> Tensor:
        return flow.one_step_estimate(x_sigma, v, sigma)
