"""Encoders around the DiT: video codec, text encoder, image encoder -- interfaces and the embedded defaults.

The full-size adapters (HunyuanVideo VAE, LLaMA + CLIP-L text, SigLIP image; ``hunyuan`` extra)
implement the same protocols, so data preparation, training and sampling never ask which is in use.

Embedded defaults (no weights, nothing downloaded):

* :class:`PixelCodec` -- exactly invertible space-to-depth: ``(3, H, W)`` uint8 frames ->
  ``(3 f^2, H/f, W/f)`` latents, normalised to about zero mean and unit std on the toy world; no
  temporal compression (latent frame = pixel frame).
* :class:`ToyTextEncoder` -- a word-level tokenizer (stable hash into a fixed vocabulary) with a
  seeded, frozen embedding table and sinusoidal positions. Like LLaMA in FramePack it is frozen
  and its features are precomputed; the DiT's token refiner is what learns.
* :class:`ToyImageEncoder` -- the start frame as a grid of thumbnail patches (a stand-in for SigLIP
  tokens of the start image).

Latent normalisation: every codec declares ``scaling_factor`` and ``shift_factor`` (diffusers' VAE
convention) and its ``encode`` returns ``(raw - shift_factor) * scaling_factor``; ``decode`` inverts
it. The flow's noise has unit std, so latents far from unit std waste most noise levels: at the
toy world's raw std of 0.26, half the sigma range leaves almost no signal to learn from.

Shapes: B batch, T pixel frames, F latent frames, C latent channels, L tokens, D feature width.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@runtime_checkable
class VideoCodec(Protocol):
    """Pixels <-> latents. ``encode``: ``(B, T, 3, H, W)`` uint8 -> ``(B, C, F, H/s, W/s)`` float.

    Latents are normalised: ``(raw - shift_factor) * scaling_factor`` (the module docstring).
    """

    latent_channels: int
    spatial_factor: int
    temporal_factor: int
    scaling_factor: float
    shift_factor: float

    def encode(self, video: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...

    def num_latent_frames(self, pixel_frames: int) -> int: ...

    def num_pixel_frames(self, latent_frames: int) -> int: ...


@dataclass
class TextFeatures:
    """Per-token features, their validity mask (valid tokens first) and a pooled feature."""

    tokens: Tensor  # (B, L, D)
    mask: Tensor  # (B, L) bool
    pooled: Tensor  # (B, D_pool)


@runtime_checkable
class TextEncoder(Protocol):
    """Prompts -> :class:`TextFeatures` (``dim`` per token, ``pooled_dim`` pooled)."""

    dim: int
    pooled_dim: int

    def encode(self, prompts: list[str]) -> TextFeatures: ...


@runtime_checkable
class ImageEncoder(Protocol):
    """Start images ``(B, 3, H, W)`` uint8 -> tokens ``(B, L, dim)``."""

    dim: int

    def encode(self, images: Tensor) -> Tensor: ...


@dataclass
class Encoders:
    """The encoders a dataset was prepared with; generation must use the same ones."""

    codec: VideoCodec
    text: TextEncoder
    image: ImageEncoder | None = None
    frame_size: tuple[int, int] | None = None
    """(height, width) of the frames the model was trained on; start images are resized to it."""


def check_video(video: Tensor, factor: int) -> None:
    if video.dtype != torch.uint8 or video.ndim != 5 or video.shape[2] != 3:
        raise ValueError(f"expected a uint8 video (B, T, 3, H, W), got {video.dtype} {tuple(video.shape)}.")
    if video.shape[-1] % factor or video.shape[-2] % factor:
        raise ValueError(f"frame size {tuple(video.shape[-2:])} must be divisible by the codec factor {factor}.")


TOY_SHIFT_FACTOR = -0.2
TOY_SCALING_FACTOR = 3.8
"""PixelCodec's normalisation, measured on the default toy world (16 videos, 1,047 frames): pixels in
[-1, 1] have mean -0.206 and std 0.263 there, so ``(x + 0.2) * 3.8`` has mean ~0 and std ~1."""


class PixelCodec(nn.Module):
    """Weight-free, exactly invertible space-to-depth codec (the embedded default VAE)."""

    temporal_factor = 1

    def __init__(self, factor: int = 4, scaling_factor: float = TOY_SCALING_FACTOR,
                 shift_factor: float = TOY_SHIFT_FACTOR):
        super().__init__()
        if factor < 1:
            raise ValueError(f"PixelCodec factor must be >= 1, got {factor}.")
        if not scaling_factor > 0:
            raise ValueError(f"PixelCodec scaling_factor must be > 0, got {scaling_factor}.")
        self.spatial_factor = factor
        self.latent_channels = 3 * factor * factor
        self.scaling_factor, self.shift_factor = float(scaling_factor), float(shift_factor)

    def encode(self, video: Tensor) -> Tensor:
        check_video(video, self.spatial_factor)
        b, t = video.shape[:2]
        x = video.flatten(0, 1).float() / 127.5 - 1.0  # (B*T, 3, H, W) in [-1, 1]
        x = (F.pixel_unshuffle(x, self.spatial_factor) - self.shift_factor) * self.scaling_factor  # (B*T, C, h, w)
        return x.unflatten(0, (b, t)).transpose(1, 2)  # (B, C, F, h, w)

    def decode(self, latents: Tensor) -> Tensor:
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"PixelCodec.decode expects (B, {self.latent_channels}, F, h, w) latents, got {tuple(latents.shape)}."
            )
        b, _, f = latents.shape[:3]
        raw = latents.float() / self.scaling_factor + self.shift_factor
        x = F.pixel_shuffle(raw.transpose(1, 2).flatten(0, 1), self.spatial_factor)
        return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).unflatten(0, (b, f))

    def num_latent_frames(self, pixel_frames: int) -> int:
        return pixel_frames

    def num_pixel_frames(self, latent_frames: int) -> int:
        return latent_frames


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """Transformer sin/cos position table ``(length, dim)``."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(length, dim)
    table[:, 0::2], table[:, 1::2] = torch.sin(pos * freqs), torch.cos(pos * freqs)
    return table


class ToyTextEncoder(nn.Module):
    """Frozen word-embedding text encoder; deterministic on every machine, no weights file.

    Token 0 is a begin token, so every prompt (even an empty one) has a valid token. Words are
    lower-cased alphanumeric runs mapped into ``vocab_size`` buckets with CRC32 (stable across
    processes, unlike ``hash``). Prompts longer than ``max_tokens`` are cut.
    """

    def __init__(self, dim: int = 64, max_tokens: int = 32, vocab_size: int = 4096, seed: int = 0):
        super().__init__()
        self.dim = self.pooled_dim = dim
        self.max_tokens, self.vocab_size = max_tokens, vocab_size
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(vocab_size + 1, dim, generator=gen), persistent=False)
        self.register_buffer("positions", 0.5 * sinusoidal_positions(max_tokens, dim), persistent=False)

    def token_ids(self, prompt: str) -> list[int]:
        words = re.findall(r"[a-z0-9]+", prompt.lower())
        return [0] + [1 + zlib.crc32(w.encode()) % self.vocab_size for w in words][: self.max_tokens - 1]

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextFeatures:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("ToyTextEncoder.encode expects a list of strings.")
        ids = [self.token_ids(p) for p in prompts]
        length = max(len(i) for i in ids)
        index = torch.zeros(len(ids), length, dtype=torch.long, device=self.table.device)
        mask = torch.zeros(len(ids), length, dtype=torch.bool, device=self.table.device)
        for row, seq in enumerate(ids):
            index[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = True
        words = self.table[index]  # (B, L, D)
        tokens = (words + self.positions[:length]) * mask[..., None]
        pooled = (words * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return TextFeatures(tokens=tokens, mask=mask, pooled=pooled)


class ToyImageEncoder(nn.Module):
    """Start frame -> ``grid x grid`` tokens, each a ``patch x patch`` RGB thumbnail (``dim = 3 patch^2``)."""

    def __init__(self, grid: int = 4, patch: int = 4):
        super().__init__()
        self.grid, self.patch = grid, patch
        self.dim = 3 * patch * patch

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"ToyImageEncoder expects uint8 images (B, 3, H, W), "
                             f"got {images.dtype} {tuple(images.shape)}.")
        size = self.grid * self.patch
        x = F.interpolate(images.float() / 127.5 - 1.0, size=(size, size), mode="area")
        return F.pixel_unshuffle(x, self.patch).flatten(2).transpose(1, 2)  # (B, grid^2, 3 patch^2)


def encoders_of(provider: Any) -> Encoders | None:
    """The encoders ``provider`` (a datamodule) names: the one way lvg asks for them. lvg's datamodules build them
    from their ``encoders`` spec; any other object may define ``encoders()``; None when it names none."""
    method = getattr(provider, "encoders", None)
    return method() if callable(method) else None
