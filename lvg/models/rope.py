"""3D rotary position embedding with per-sample frame indices.

Shape legend: B batch, T frames of a token grid, Y/X its post-patch height/width, S = T*Y*X tokens,
h heads, d head dim. Frequencies are returned as real ``(cos, sin)`` pairs of shape ``(B, S, d)``
with each frequency repeated for the two channels of its rotation pair (HunyuanVideo / diffusers
layout), so FramePack weights see exactly the positions they were trained with.

Unlike diffusers (frame indices shared by the batch), frame indices here are ``(B, T)``: samples of
one batch may sit at different places in their videos (RoPE consistency, ``absolute`` mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

Rope = tuple[Tensor, Tensor]
"""``(cos, sin)``, each ``(B, S, d)`` float32."""


def _axis_freqs(positions: Tensor, dim: int, theta: float) -> Rope:
    """positions ``(B, S)`` -> cos/sin ``(B, S, dim)`` for one axis."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim))
    angles = positions.float()[..., None] * inv_freq  # (B, S, dim/2)
    return angles.cos().repeat_interleave(2, dim=-1), angles.sin().repeat_interleave(2, dim=-1)


def rope_grid(frame_indices: Tensor, height: int, width: int, axes_dim: tuple[int, int, int], theta: float) -> Rope:
    """RoPE for a ``T x Y x X`` token grid whose frames sit at ``frame_indices`` ``(B, T)``.

    Tokens are ordered t-major then y then x (the order of ``Conv3d(...).flatten(2)``).
    """
    b, t = frame_indices.shape
    device = frame_indices.device
    grid_t = frame_indices.float()[:, :, None, None].expand(b, t, height, width)
    grid_y = torch.arange(height, device=device, dtype=torch.float32)[None, None, :, None].expand(b, t, height, width)
    grid_x = torch.arange(width, device=device, dtype=torch.float32)[None, None, None, :].expand(b, t, height, width)
    cos, sin = zip(
        *(_axis_freqs(g.reshape(b, -1), dim, theta) for g, dim in zip((grid_t, grid_y, grid_x), axes_dim))
    )
    return torch.cat(cos, dim=-1), torch.cat(sin, dim=-1)  # (B, S, d)


def pad_to_multiple(x: Tensor, kernel: tuple[int, int, int]) -> Tensor:
    """Replicate-pad ``(B, C, T, Y, X)`` at the end of t/y/x up to multiples of ``kernel``.

    This is how FramePack feeds partial 2x/4x history to its strided Conv3d embedders.
    """
    pads = [(k - n % k) % k for n, k in zip(x.shape[2:], kernel)]
    if not any(pads):
        return x
    return F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")


def pool_rope(rope: Rope, frames: int, height: int, width: int, kernel: tuple[int, int, int]) -> Rope:
    """Average-pool fine-grid RoPE ``(B, T*Y*X, d)`` by ``kernel`` to match a compressed embedder.

    The compressed history tokens of FramePack get the mean cos/sin of the fine tokens they cover
    (after the same replicate padding), exactly as FramePack and diffusers do.
    """

    def pool(f: Tensor) -> Tensor:
        b, _, d = f.shape
        f = f.transpose(1, 2).reshape(b, d, frames, height, width)
        f = F.avg_pool3d(pad_to_multiple(f, kernel), kernel, stride=kernel)
        return f.flatten(2).transpose(1, 2)

    return pool(rope[0]), pool(rope[1])


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate ``x`` ``(B, S, h, d)`` by ``rope`` ``(B, S, d)``; interleaved channel pairs, fp32 math."""
    cos, sin = rope[0][:, :, None, :], rope[1][:, :, None, :]
    real, imag = x.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack((-imag, real), dim=-1).flatten(-2)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)
