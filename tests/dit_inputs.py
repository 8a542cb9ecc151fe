"""Inputs shared by the backbone tests: diffusers' own test shapes for the `debug` preset."""

import torch

F1_INDICES = {  # [start | 4x | 2x | 1x | window] for a 3-frame window
    "indices_latents": torch.arange(20, 23),
    "indices_latents_clean": torch.tensor([0, 19]),
    "indices_latents_history_2x": torch.tensor([17, 18]),
    "indices_latents_history_4x": torch.arange(1, 17),
}


def make_inputs(batch=1, text_len=7, valid=(7,), seed=0, history=True, f1_indices=True):
    """Inputs of diffusers' own test (latents 3x4x4, clean 2, 2x 2, 4x 16 frames)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    mask = torch.zeros(batch, text_len)
    for i, n in enumerate(valid):
        mask[i, :n] = 1
    inputs = {
        "hidden_states": r(batch, 4, 3, 4, 4),
        "timestep": torch.rand(batch, generator=g) * 1000,
        "encoder_hidden_states": r(batch, text_len, 16),
        "encoder_attention_mask": mask,
        "pooled_projections": r(batch, 8),
        "image_embeds": r(batch, 12, 16),
        "guidance": torch.full((batch,), 6000.0),
        "indices_latents": torch.arange(3),
    }
    if history:
        inputs.update(
            latents_clean=r(batch, 4, 2, 4, 4),
            latents_history_2x=r(batch, 4, 2, 4, 4),
            latents_history_4x=r(batch, 4, 16, 4, 4),
            indices_latents_clean=torch.arange(2),
            indices_latents_history_2x=torch.arange(2),
            indices_latents_history_4x=torch.arange(16),
        )
        if f1_indices:
            inputs.update(F1_INDICES)
    return inputs


def select(inputs, i):
    """Sample i of a batch as a batch of one (1-D indices stay shared)."""
    return {k: v if k.startswith("indices") and v.ndim == 1 else v[i : i + 1] for k, v in inputs.items()}
