"""Student Forcing (the paper's ablation baseline): history from a k-step sampler rollout.

Section n+1 is conditioned on a sample of section n drawn with ``rollout_steps`` Euler steps from
fresh noise, under the same context section n was trained with and without gradients -- drawn by
the same :class:`~lvg.sampling.pipeline.LongVideoPipeline` that generates videos. It costs
``rollout_steps`` extra forward passes per section -- the overhead Direct Forcing avoids.
"""

from typing import Any

import torch
from torch import Tensor

from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig
from lvg.training.base import StageModule


class StudentForcingModule(StageModule):
    """Stage-2 baseline with sampled history."""

    def __init__(self, *args: Any, trainable: str = "output_layer", rollout_steps: int = 5, **kwargs: Any):
        """
        Args:
            trainable: what trains, as for Direct Forcing (default: the output layer).
            rollout_steps: Euler steps of the history rollout (the paper's baseline: 5).
        """
        if rollout_steps < 1:
            raise ValueError(f"rollout_steps must be >= 1, got {rollout_steps}.")
        super().__init__(*args, trainable=trainable, **kwargs)
        self.rollout_steps = rollout_steps
        self.rollout = LongVideoPipeline(
            self.dit, self.memory_pack_config, encoders=None, semantic_pack=self.semantic_pack,
            sampling=SamplingConfig(steps=rollout_steps, sampler="euler", guidance=self.hparams.guidance),
        )

    def next_history(self, *, x0: Tensor, x_sigma: Tensor, v: Tensor, sigma: Tensor, state, gen) -> Tensor:
        noise = torch.randn(x0.shape, generator=gen).to(x0.device, x0.dtype)
        return self.rollout.denoise_section(state, noise)
