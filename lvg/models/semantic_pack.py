"""SemanticPack: the long-term memory psi of MemoryPack.

    psi_0     = concat(proj(text tokens), proj(image tokens))          (text padding masked)
    psi_{n+1} = Squeeze(psi_n, Memorize(x^n))                          (one update per section)

* **Memorize** patchifies one section ``x^n`` with its own Conv3d, runs self-attention inside local
  windows of ``window_frames`` latent frames (RoPE over the window), and average-pools the token
  grid to ``memory_grid`` -- a fixed number of memory tokens at any resolution and window length.
* **Squeeze** is one cross-attention block (+ MLP, residuals). Fusion structures (paper's ablation):

  - ``A`` (default): Q = Memorize(x^n), K = V = psi_n.  psi has ``prod(memory_grid)`` tokens after
    the first update.
  - ``B``: Q = psi_n (starting from text + image), K = V = Memorize(x^n).  psi keeps psi_0's size.
  - ``C``: B, with the reference window's visual tokens (Memorize of the start latent) added to the
    queries: psi = [text, image, visual slots]; the visual slots start masked and Q_n = psi_n +
    [0, Memorize(start)].

* ``psi0 = "zero"`` is the zero-MemoryPack ablation (psi_0 = 0, same shape and mask).
* psi is projected to the DiT width by ``proj_out`` and enters the backbone as memory tokens.

Every choice here is our reconstruction of what the paper leaves open (README). Shapes: B batch,
C latent channels, T/H/W latent frames/height/width, K memory tokens, L psi tokens, d SemanticPack
width, D DiT width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvg.config import DiTConfig
from lvg.models.dit import Attention, FeedForward, attention
from lvg.models.rope import pad_to_multiple, rope_grid


@dataclass(frozen=True)
class SemanticPackConfig:
    """SemanticPack (long-term memory) settings; defaults are our reconstruction (README)."""

    enabled: bool = True
    """Use SemanticPack; off = FramePack context only (the FramePack-F1 baseline)."""
    dim: int = 1024
    """Width d of the memory tokens inside SemanticPack."""
    num_heads: int = 16
    """Attention heads of Memorize and Squeeze."""
    depth: int = 2
    """Self-attention blocks in Memorize."""
    patch_size: int = 2
    """Spatial patch of Memorize's Conv3d patchify (latent pixels)."""
    window_frames: int = 1
    """Latent frames per local self-attention window in Memorize."""
    memory_grid: tuple[int, int] = (8, 8)
    """Memorize pools each section to this (height, width) token grid: 64 memory tokens."""
    mlp_ratio: float = 4.0
    """MLP width of Memorize and Squeeze blocks relative to ``dim``."""
    fusion: Literal["A", "B", "C"] = "A"
    """Squeeze structure: A (Q = visual, K/V = psi), B (Q = psi, K/V = visual), C (B + reference window in Q)."""
    psi0: Literal["semantic", "zero"] = "semantic"
    """Initial memory: projected text + image tokens, or zeros (zero-MemoryPack ablation)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory_grid", tuple(self.memory_grid))
        if self.fusion not in ("A", "B", "C"):
            raise ValueError(f"SemanticPackConfig.fusion must be 'A', 'B' or 'C', got {self.fusion!r}.")
        if self.psi0 not in ("semantic", "zero"):
            raise ValueError(f"SemanticPackConfig.psi0 must be 'semantic' or 'zero', got {self.psi0!r}.")
        if self.dim % self.num_heads:
            raise ValueError(f"SemanticPackConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads}).")
        if (self.dim // self.num_heads) % 2:
            raise ValueError("SemanticPackConfig: dim / num_heads must be even (RoPE rotates channel pairs).")

    @property
    def memory_tokens(self) -> int:
        """K, the number of tokens Memorize produces per section."""
        return math.prod(self.memory_grid)


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Split an even head dim into even (t, y, x) RoPE axes, about 1/4 for time."""
    t = 2 * max(1, round(head_dim / 8))
    y = 2 * ((head_dim - t) // 4)
    return t, y, head_dim - t - y


class TransformerBlock(nn.Module):
    """Pre-LN self-attention (with RoPE) + MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio), nn.GELU(approximate="tanh"))

    def forward(self, x: Tensor, rope) -> Tensor:
        x = x + self.attn(self.norm1(x), rope=rope)
        return x + self.mlp(self.norm2(x))


class Memorize(nn.Module):
    """One section ``(B, C, T, H, W)`` -> a fixed number of memory tokens ``(B, K, d)``."""

    def __init__(self, in_channels: int, cfg: SemanticPackConfig):
        super().__init__()
        self.cfg = cfg
        p = cfg.patch_size
        self.patch_embed = nn.Conv3d(in_channels, cfg.dim, (1, p, p), stride=(1, p, p))
        self.blocks = nn.ModuleList(TransformerBlock(cfg.dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.cfg
        x = pad_to_multiple(x, (cfg.window_frames, cfg.patch_size, cfg.patch_size))
        x = self.patch_embed(x)  # (B, d, T, Y, X)
        b, d, t, y, w = x.shape
        nw = t // cfg.window_frames
        tokens = x.reshape(b, d, nw, cfg.window_frames, y, w).permute(0, 2, 3, 4, 5, 1)
        tokens = tokens.reshape(b * nw, cfg.window_frames * y * w, d)  # local windows as a batch
        frames = torch.arange(cfg.window_frames, device=x.device).expand(b * nw, -1)
        rope = rope_grid(frames, y, w, rope_axes(d // cfg.num_heads), theta=256.0)
        for block in self.blocks:
            tokens = block(tokens, rope)
        grid = self.norm(tokens).reshape(b, nw, cfg.window_frames, y, w, d).permute(0, 5, 1, 2, 3, 4)
        grid = grid.reshape(b, d, t, y, w)
        pooled = F.adaptive_avg_pool3d(grid, (1, *cfg.memory_grid))  # (B, d, 1, gh, gw)
        return pooled.flatten(2).transpose(1, 2)  # (B, K, d)


class CrossAttention(nn.Module):
    """Queries attend to a separate key/value set (with an optional key mask)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim // num_heads, eps=1e-6)
        self.norm_k = nn.RMSNorm(dim // num_heads, eps=1e-6)

    def forward(self, q: Tensor, kv: Tensor, kv_mask: Tensor | None) -> Tensor:
        heads = self.num_heads
        q = self.norm_q(self.to_q(q).unflatten(-1, (heads, -1)))  # (B, Lq, h, dh)
        k = self.norm_k(self.to_k(kv).unflatten(-1, (heads, -1)))  # (B, Lk, h, dh)
        v = self.to_v(kv).unflatten(-1, (heads, -1))
        mask = None if kv_mask is None or bool(kv_mask.all()) else kv_mask[:, None, None, :]
        return self.to_out(attention(q, k, v, mask))


class Squeeze(nn.Module):
    """``q + CrossAttn(LN q, LN kv)`` then ``+ MLP``: folds new visual memory into psi."""

    def __init__(self, cfg: SemanticPackConfig):
        super().__init__()
        self.norm_q = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.attn = CrossAttention(cfg.dim, cfg.num_heads)
        self.norm_mlp = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.mlp = FeedForward(cfg.dim, int(cfg.dim * cfg.mlp_ratio), nn.GELU(approximate="tanh"))

    def forward(self, q: Tensor, kv: Tensor, kv_mask: Tensor | None = None) -> Tensor:
        h = q + self.attn(self.norm_q(q), self.norm_kv(kv), kv_mask)
        return h + self.mlp(self.norm_mlp(h))


class SemanticPack(nn.Module):
    """Learned parts of the long-term memory: psi_0 projections, Memorize, Squeeze, output projection."""

    def __init__(self, cfg: SemanticPackConfig, dit: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.text_proj = nn.Linear(dit.text_embed_dim, cfg.dim)
        self.image_proj = nn.Linear(dit.image_proj_dim, cfg.dim) if dit.has_image_proj else None
        self.memorize = Memorize(dit.in_channels, cfg)
        self.squeeze = Squeeze(cfg)
        self.proj_out = nn.Linear(cfg.dim, dit.inner_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier-uniform linear/conv weights, zero biases, identity norms; safe after ``to_empty()``."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv3d)):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                module.reset_parameters()

    def initial_psi(self, text: Tensor, text_mask: Tensor, image: Tensor | None) -> tuple[Tensor, Tensor]:
        """psi_0 ``(B, L, d)`` and its mask ``(B, L)`` from text ``(B, L_t, D_text)`` with its mask
        and image features ``(B, L_i, D_img)``."""
        parts, masks = [self.text_proj(text)], [text_mask.bool()]
        if self.image_proj is not None:
            if image is None:
                raise ValueError("SemanticPack: image features are required (the DiT config has an image projection).")
            parts.append(self.image_proj(image))
            masks.append(torch.ones(image.shape[:2], dtype=torch.bool, device=image.device))
        if self.cfg.fusion == "C":  # visual slots, filled by the first update
            k = self.cfg.memory_tokens
            parts.append(parts[0].new_zeros(text.shape[0], k, self.cfg.dim))
            masks.append(torch.zeros(text.shape[0], k, dtype=torch.bool, device=text.device))
        psi, mask = torch.cat(parts, dim=1), torch.cat(masks, dim=1)
        if self.cfg.psi0 == "zero":
            psi = torch.zeros_like(psi)
        return psi, mask

    def reference_memory(self, start: Tensor) -> Tensor | None:
        """Memorize(start latent) for fusion C's queries; None for the other structures."""
        return self.memorize(start) if self.cfg.fusion == "C" else None

    def update(
        self, psi: Tensor, psi_mask: Tensor, section: Tensor, reference: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """psi_{n+1} = Squeeze(psi_n, Memorize(x^n)) for a finished section ``(B, C, T, H, W)``."""
        visual = self.memorize(section)  # (B, K, d)
        fusion = self.cfg.fusion
        if fusion == "A":
            return (self.squeeze(visual, psi, psi_mask),
                    torch.ones(visual.shape[:2], dtype=torch.bool, device=psi.device))
        if fusion == "B":
            return self.squeeze(psi, visual), psi_mask
        k = self.cfg.memory_tokens  # C: the visual slots become valid after the first update
        query = torch.cat([psi[:, :-k], psi[:, -k:] + reference], dim=1)
        mask = torch.cat([psi_mask[:, :-k], torch.ones_like(psi_mask[:, -k:])], dim=1)
        return self.squeeze(query, visual), mask

    def tokens(self, psi: Tensor) -> Tensor:
        """psi ``(B, L, d)`` -> the backbone's memory tokens ``(B, L, D)``."""
        return self.proj_out(psi)
