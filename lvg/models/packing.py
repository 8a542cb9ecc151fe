"""FramePack short-term context: history latents -> 1x/2x/4x clean latents + frame indices (F1 layout).

FramePack-F1 keeps a history buffer that starts as ``sum(history_sizes)`` zero latents followed by
the start latent, appends every generated section, and conditions each new section on the buffer's
last 19 latents split ``[16, 2, 1]`` into 4x / 2x / 1x, plus the start latent as a second 1x frame.
The context is a fixed number of tokens however long the video gets.

Frame indices (``rope_time_mode``):

* ``relative`` -- FramePack-F1's layout, identical for every section (checkpoint parity)::

      [start=0 | 4x=1..16 | 2x=17,18 | 1x=19 | window=20..19+W]

* ``absolute`` -- the paper's RoPE consistency: the start latent is frame 0 of the video and every
  history / noisy latent keeps its true frame number. Section ``n`` (0-based) generates frames
  ``s .. s+W-1`` with ``s = 1 + n W``; the 1x latent is frame ``s-1``, the 2x pair ``s-3, s-2``,
  the 4x block ``s-19 .. s-4``. Zero-filled slots before the video starts get the positions they
  would have had (negative numbers), so the layout is one formula for every section.

Compressed (2x/4x) tokens get the average of their frames' RoPE (done by the backbone).
Shapes: B batch, C channels, T frames, H/W latent height/width, W window (latent frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

RopeTimeMode = Literal["relative", "absolute"]
F1_HISTORY_SIZES = (16, 2, 1)
"""Latent frames in the 4x, 2x and 1x history slots of FramePack-F1."""


@dataclass
class PackedContext:
    """Everything the backbone needs about position and short-term history for one section."""

    indices_latents: Tensor  # (B, W)
    latents_clean: Tensor  # (B, C, 1 + h1, H, W): [start, most recent h1 latents]
    indices_latents_clean: Tensor  # (B, 1 + h1)
    latents_history_2x: Tensor  # (B, C, h2, H, W)
    indices_latents_history_2x: Tensor  # (B, h2)
    latents_history_4x: Tensor  # (B, C, h4, H, W)
    indices_latents_history_4x: Tensor  # (B, h4)

    def as_kwargs(self) -> dict[str, Tensor]:
        """Keyword arguments of :meth:`lvg.models.dit.PackedDiT.forward`."""
        return dict(self.__dict__)


def context_indices(
    window: int,
    section: int,
    mode: RopeTimeMode = "relative",
    history_sizes: tuple[int, int, int] = F1_HISTORY_SIZES,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """1-D frame indices of every slot for section ``section`` (0-based) of a video.

    Returns ``indices_latents`` (W,), ``indices_latents_clean`` (1 + h1,),
    ``indices_latents_history_2x`` (h2,), ``indices_latents_history_4x`` (h4,).
    """
    h4, h2, h1 = history_sizes
    if mode == "relative":
        first = 1 + h4 + h2 + h1  # window starts right after [start | 4x | 2x | 1x]
    elif mode == "absolute":
        if section < 0:
            raise ValueError(f"section must be >= 0, got {section}.")
        first = 1 + section * window  # frame 0 is the start latent
    else:
        raise ValueError(f"rope_time_mode must be 'relative' or 'absolute', got {mode!r}.")
    hist = torch.arange(first - h4 - h2 - h1, first, device=device)  # the frames just before the window
    return {
        "indices_latents": torch.arange(first, first + window, device=device),
        "indices_latents_clean": torch.cat([torch.zeros(1, dtype=torch.long, device=device), hist[h4 + h2 :]]),
        "indices_latents_history_2x": hist[h4 : h4 + h2],
        "indices_latents_history_4x": hist[:h4],
    }


def pack_history(
    history: Tensor,
    start: Tensor,
    window: int,
    section: int,
    mode: RopeTimeMode = "relative",
    history_sizes: tuple[int, int, int] = F1_HISTORY_SIZES,
) -> PackedContext:
    """Pack a video's clean latent history for the next section.

    Args:
        history: ``(B, C, T, H, W)`` every clean latent so far, oldest first, starting with the
            start latent (FramePack-F1 keeps it in the buffer: at section 0 the 1x slot holds it).
            Only the last ``sum(history_sizes)`` frames are read, so the cost is independent of T.
        start: ``(B, C, 1, H, W)`` the start (reference) latent.
        window: latent frames of the section being generated.
        section: 0-based index of that section (positions in ``absolute`` mode).
    """
    if history.ndim != 5 or start.ndim != 5 or start.shape[2] != 1:
        raise ValueError(
            f"pack_history: history must be (B, C, T, H, W) and start (B, C, 1, H, W), "
            f"got {tuple(history.shape)} and {tuple(start.shape)}."
        )
    if history.shape[:2] != start.shape[:2] or history.shape[3:] != start.shape[3:]:
        raise ValueError(
            f"pack_history: history {tuple(history.shape)} and start {tuple(start.shape)} differ in batch, "
            "channels or spatial size."
        )
    h4, h2, h1 = history_sizes
    need = h4 + h2 + h1
    recent = history[:, :, -need:]
    if recent.shape[2] < need:  # zero-fill the slots before the video starts, as FramePack-F1 does
        pad = recent.new_zeros(*recent.shape[:2], need - recent.shape[2], *recent.shape[3:])
        recent = torch.cat([pad, recent], dim=2)
    latents_4x, latents_2x, latents_1x = recent.split([h4, h2, h1], dim=2)
    b = history.shape[0]
    idx = {
        k: v.unsqueeze(0).expand(b, -1)
        for k, v in context_indices(window, section, mode, history_sizes, history.device).items()
    }
    return PackedContext(
        latents_clean=torch.cat([start.to(recent.dtype), latents_1x], dim=2),
        latents_history_2x=latents_2x,
        latents_history_4x=latents_4x,
        **idx,
    )
