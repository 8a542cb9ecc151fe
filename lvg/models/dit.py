"""PackedDiT: the HunyuanVideo packed MM-DiT of FramePack / FramePack-F1.

Written top-down: helpers, embedders, attention, blocks, model. Parameter names equal FramePack's
and diffusers' (``HunyuanVideoFramepackTransformer3DModel``), so released safetensors load unchanged
(see :mod:`lvg.models.weights`). Beyond the references:

* frame indices are per sample ``(B, n)``;
* batch > 1 with different text lengths runs through masked SDPA (no varlen kernel); batch 1 and
  unpadded batches crop the padding and take the unmasked (flash) SDPA path;
* an extra conditioning slot for long-term memory tokens (SemanticPack's psi), placed after the
  image tokens and before the text;
* a gradient-checkpointing switch, and :attr:`PackedDiT.block_types` naming the repeated blocks
  for FSDP wrapping / activation-checkpointing policies (applied outside this file).

Shape legend: B batch, C channels, T/H/W latent frames/height/width, N video tokens (history +
noisy), M memory tokens, L conditioning tokens (image + memory + text), D model width,
h heads, d head dim.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lvg.config import DiTConfig
from lvg.models.rope import Rope, apply_rope, pad_to_multiple, pool_rope, rope_grid
from lvg.models.weights import WEIGHTS_HINT, check_state_dict, read_dit_checkpoint, summary

HISTORY_KERNELS: dict[str, tuple[int, int, int]] = {"1x": (1, 2, 2), "2x": (2, 4, 4), "4x": (4, 8, 8)}
"""Conv3d kernel (= stride) of each history embedder, in latent frames/pixels."""


# --- helpers -----------------------------------------------------------------------------------


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``(B,) -> (B, dim)``, cos half first (diffusers ``flip_sin_to_cos``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with per-sample ``(B, 1, D)`` modulation."""
    return x * (1 + scale) + shift


def layer_norm(x: Tensor) -> Tensor:
    """Affine-free LayerNorm (eps 1e-6) used before every adaLN modulation."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """SDPA over ``(B, S, h, d)`` tensors; ``mask`` is a boolean key mask ``(B, 1, 1, S)`` or None.

    With ``mask=None`` PyTorch picks flash / memory-efficient kernels on CUDA.
    """
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2).flatten(2)  # (B, S, h*d)


# --- embedders -----------------------------------------------------------------------------------


class MLPEmbedder(nn.Module):
    """``Linear -> SiLU -> Linear`` (diffusers' TimestepEmbedding / PixArtAlphaTextProjection)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ConditionEmbedding(nn.Module):
    """temb = embed(timestep) [+ embed(guidance)] + project(pooled text)   -> (B, D)."""

    def __init__(self, dim: int, pooled_dim: int, guidance: bool):
        super().__init__()
        self.timestep_embedder = MLPEmbedder(256, dim)
        self.text_embedder = MLPEmbedder(pooled_dim, dim)
        self.guidance_embedder = MLPEmbedder(256, dim) if guidance else None

    def forward(self, timestep: Tensor, pooled: Tensor, guidance: Tensor | None = None) -> Tensor:
        emb = self.timestep_embedder(timestep_embedding(timestep).to(pooled.dtype)) + self.text_embedder(pooled)
        if self.guidance_embedder is not None:
            emb = emb + self.guidance_embedder(timestep_embedding(guidance).to(pooled.dtype))
        return emb


class Modulation(nn.Module):
    """``Linear(SiLU(temb))`` split into ``n`` per-sample ``(B, 1, D)`` chunks (adaLN parameters)."""

    def __init__(self, dim: int, n: int):
        super().__init__()
        self.n = n
        self.linear = nn.Linear(dim, n * dim)

    def forward(self, temb: Tensor) -> tuple[Tensor, ...]:
        return self.linear(F.silu(temb)).unsqueeze(1).chunk(self.n, dim=-1)


class FeedForward(nn.Module):
    """``proj -> act -> Linear``; diffusers' ``net.0.proj`` / ``net.2`` names (``net.1`` is its dropout slot)."""

    def __init__(self, dim: int, hidden: int, activation: nn.Module):
        super().__init__()
        project = nn.Module()
        project.proj = nn.Linear(dim, hidden)
        self.net = nn.ModuleList([project, nn.Identity(), nn.Linear(hidden, dim)])
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.activation(self.net[0].proj(x)))


class HistoryEmbedder(nn.Module):
    """FramePack's clean-latent embedders: 1x ``proj``, 2x ``proj_2x``, 4x ``proj_4x``."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv3d(in_channels, dim, HISTORY_KERNELS["1x"], stride=HISTORY_KERNELS["1x"])
        self.proj_2x = nn.Conv3d(in_channels, dim, HISTORY_KERNELS["2x"], stride=HISTORY_KERNELS["2x"])
        self.proj_4x = nn.Conv3d(in_channels, dim, HISTORY_KERNELS["4x"], stride=HISTORY_KERNELS["4x"])

    def forward(self, x: Tensor, scale: str) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, N, D)``; 2x/4x inputs are replicate-padded to the kernel."""
        kernel = HISTORY_KERNELS[scale]
        conv = {"1x": self.proj, "2x": self.proj_2x, "4x": self.proj_4x}[scale]
        return conv(pad_to_multiple(x, kernel)).flatten(2).transpose(1, 2)


class ImageProjection(nn.Module):
    """Image-encoder features -> model width: ``up (3D) -> SiLU -> down``."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.up = nn.Linear(in_dim, 3 * dim)
        self.down = nn.Linear(3 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.up(x)))


class PatchEmbed(nn.Module):
    """Noisy latents ``(B, C, T, H, W)`` -> tokens ``(B, T'*H'*W', D)``."""

    def __init__(self, patch: tuple[int, int, int], in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv3d(in_channels, dim, patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


# --- attention ---------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention over ``[x, context]`` with RoPE on the first ``rope`` tokens of ``x``.

    ``joint=True`` gives the dual-stream form: context tokens have their own projections
    (``add_*_proj``, ``to_add_out``). Otherwise x already holds every token.
    """

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool, joint: bool = False, out_proj: bool = True):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else None
        self.norm_k = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else None
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)]) if out_proj else None
        if joint:
            self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(dim, dim) for _ in range(3))
            self.norm_added_q = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else None
            self.norm_added_k = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else None
            self.to_add_out = nn.Linear(dim, dim)
        self.joint = joint

    def _qkv(self, x: Tensor, proj: tuple[nn.Linear, ...], norms: tuple[nn.Module | None, ...]) -> list[Tensor]:
        out = [p(x).unflatten(-1, (self.num_heads, -1)) for p in proj]  # 3 x (B, S, h, d)
        for i, norm in enumerate(norms):
            if norm is not None:
                out[i] = norm(out[i])
        return out

    def forward(
        self, x: Tensor, context: Tensor | None = None, rope: Rope | None = None, mask: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        q, k, v = self._qkv(x, (self.to_q, self.to_k, self.to_v), (self.norm_q, self.norm_k))
        if rope is not None:
            n = rope[0].shape[1]  # video tokens lead the sequence; conditioning tokens get no RoPE
            q = torch.cat([apply_rope(q[:, :n], rope), q[:, n:]], dim=1)
            k = torch.cat([apply_rope(k[:, :n], rope), k[:, n:]], dim=1)
        if not self.joint:
            out = attention(q, k, v, mask)
            return self.to_out[0](out) if self.to_out is not None else out
        cq, ck, cv = self._qkv(
            context, (self.add_q_proj, self.add_k_proj, self.add_v_proj), (self.norm_added_q, self.norm_added_k)
        )
        out = attention(torch.cat([q, cq], 1), torch.cat([k, ck], 1), torch.cat([v, cv], 1), mask)
        return self.to_out[0](out[:, : x.shape[1]]), self.to_add_out(out[:, x.shape[1] :])


# --- blocks ------------------------------------------------------------------------------------


class TokenRefinerBlock(nn.Module):
    """Self-attention + SiLU-MLP over text tokens, gated by the timestep/pooled-text embedding."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm=False)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ff = FeedForward(dim, int(dim * mlp_ratio), nn.SiLU())
        self.norm_out = Modulation(dim, 2)

    def forward(self, x: Tensor, temb: Tensor, mask: Tensor | None) -> Tensor:
        gate_msa, gate_mlp = self.norm_out(temb)
        x = x + gate_msa * self.attn(self.norm1(x), mask=mask)
        return x + gate_mlp * self.ff(self.norm2(x))


class TokenRefiner(nn.Module):
    """``context_embedder``: text features ``(B, L_t, D_text)`` -> refined tokens ``(B, L_t, D)``."""

    def __init__(self, text_dim: int, dim: int, num_heads: int, num_layers: int, mlp_ratio: float):
        super().__init__()
        self.time_text_embed = ConditionEmbedding(dim, text_dim, guidance=False)
        self.proj_in = nn.Linear(text_dim, dim)
        self.token_refiner = nn.Module()
        self.token_refiner.refiner_blocks = nn.ModuleList(
            TokenRefinerBlock(dim, num_heads, mlp_ratio) for _ in range(num_layers)
        )

    def forward(self, text: Tensor, timestep: Tensor, text_mask: Tensor) -> Tensor:
        m = text_mask.to(text.dtype).unsqueeze(-1)  # (B, L_t, 1)
        pooled = (text * m).sum(1) / m.sum(1)  # mask-weighted mean of the raw features
        temb = self.time_text_embed(timestep, pooled)
        x = self.proj_in(text)
        key_mask = None if bool(text_mask.all()) else text_mask[:, None, None, :]
        for block in self.token_refiner.refiner_blocks:
            x = block(x, temb, key_mask)
        return x


class DualStreamBlock(nn.Module):
    """MM-DiT block: video and conditioning streams with their own weights, joint attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = Modulation(dim, 6)
        self.norm1_context = Modulation(dim, 6)
        self.attn = Attention(dim, num_heads, qk_norm=True, joint=True)
        hidden = int(dim * mlp_ratio)
        self.ff = FeedForward(dim, hidden, nn.GELU(approximate="tanh"))
        self.ff_context = FeedForward(dim, hidden, nn.GELU(approximate="tanh"))

    def forward(self, x: Tensor, c: Tensor, temb: Tensor, mask: Tensor | None, rope: Rope) -> tuple[Tensor, Tensor]:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(temb)
        c_shift_msa, c_scale_msa, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(temb)
        attn_x, attn_c = self.attn(
            modulate(layer_norm(x), shift_msa, scale_msa), modulate(layer_norm(c), c_shift_msa, c_scale_msa), rope, mask
        )
        x = x + gate_msa * attn_x  # (B, N, D)
        c = c + c_gate_msa * attn_c  # (B, L, D)
        x = x + gate_mlp * self.ff(modulate(layer_norm(x), shift_mlp, scale_mlp))
        c = c + c_gate_mlp * self.ff_context(modulate(layer_norm(c), c_shift_mlp, c_scale_mlp))
        return x, c


class SingleStreamBlock(nn.Module):
    """Shared-weight block over ``[video, conditioning]``: parallel attention and MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm = Modulation(dim, 3)
        self.attn = Attention(dim, num_heads, qk_norm=True, out_proj=False)
        self.proj_mlp = nn.Linear(dim, hidden)
        self.proj_out = nn.Linear(dim + hidden, dim)

    def forward(self, x: Tensor, c: Tensor, temb: Tensor, mask: Tensor | None, rope: Rope) -> tuple[Tensor, Tensor]:
        n = x.shape[1]
        h = torch.cat([x, c], dim=1)  # (B, N + L, D)
        shift, scale, gate = self.norm(temb)
        normed = modulate(layer_norm(h), shift, scale)
        mlp = F.gelu(self.proj_mlp(normed), approximate="tanh")
        h = h + gate * self.proj_out(torch.cat([self.attn(normed, rope=rope, mask=mask), mlp], dim=-1))
        return h[:, :n], h[:, n:]


class OutputNorm(nn.Module):
    """``norm_out``: affine-free LayerNorm modulated by temb (scale first, as AdaLayerNormContinuous)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        scale, shift = self.linear(F.silu(temb)).unsqueeze(1).chunk(2, dim=-1)
        return modulate(layer_norm(x), shift, scale)


# --- model -------------------------------------------------------------------------------------


class PackedDiT(nn.Module):
    """The packed HunyuanVideo DiT; predicts the flow velocity ``v = eps - x0`` of a noisy window."""

    block_types: ClassVar[tuple[type[nn.Module], ...]] = (DualStreamBlock, SingleStreamBlock)
    """The repeated blocks: the unit for FSDP auto-wrap and activation-checkpointing policies."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        dim, heads, cfg = config.inner_dim, config.num_attention_heads, config
        patch = (cfg.patch_size_t, cfg.patch_size, cfg.patch_size)

        self.x_embedder = PatchEmbed(patch, cfg.in_channels, dim)
        self.clean_x_embedder = HistoryEmbedder(cfg.in_channels, dim) if cfg.has_clean_x_embedder else None
        self.context_embedder = TokenRefiner(cfg.text_embed_dim, dim, heads, cfg.num_refiner_layers, cfg.mlp_ratio)
        self.image_projection = ImageProjection(cfg.image_proj_dim, dim) if cfg.has_image_proj else None
        self.time_text_embed = ConditionEmbedding(dim, cfg.pooled_projection_dim, cfg.guidance_embeds)
        self.transformer_blocks = nn.ModuleList(
            DualStreamBlock(dim, heads, cfg.mlp_ratio) for _ in range(cfg.num_layers)
        )
        self.single_transformer_blocks = nn.ModuleList(
            SingleStreamBlock(dim, heads, cfg.mlp_ratio) for _ in range(cfg.num_single_layers)
        )
        self.norm_out = OutputNorm(dim)
        self.proj_out = nn.Linear(dim, math.prod(patch) * cfg.out_channels)

        # Switch: recompute each block's activations in backward (less memory, one more forward).
        self.gradient_checkpointing = False
        # Inference hook: a callable ``(run_blocks, x, c, temb, mask, rope) -> (x, c)`` that may skip
        # the blocks, e.g. TeaCache (:mod:`lvg.sampling.teacache`); None runs them.
        self.block_cache = None
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT initialisation; the only place weights are set. Safe after ``to_empty()`` from meta.

        Linear/conv: xavier-uniform, zero bias; timestep/guidance MLPs: N(0, 0.02); norms: identity;
        every adaLN modulation and the output projection: zero (each block starts as the identity).
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv3d)):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                module.reset_parameters()
        for embed in (self.time_text_embed, self.context_embedder.time_text_embed):
            for mlp in (embed.timestep_embedder, embed.guidance_embedder):
                if mlp is not None:
                    nn.init.normal_(mlp.linear_1.weight, std=0.02)
                    nn.init.normal_(mlp.linear_2.weight, std=0.02)
        for module in self.modules():
            if isinstance(module, (Modulation, OutputNorm)):
                nn.init.zeros_(module.linear.weight)
                nn.init.zeros_(module.linear.bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        *,
        config: DiTConfig | str | None = None,
        subfolder: str | None = None,
        strict: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
    ) -> PackedDiT:
        """Build the model and load a FramePack(-F1) / diffusers checkpoint into it.

        Args:
            source: checkpoint directory, single ``.safetensors`` file, or hub id.
            config: a :class:`DiTConfig` or preset name; default: the checkpoint's ``config.json``.
            subfolder: folder inside ``source`` holding the transformer (e.g. ``transformer``).
            strict: every parameter must be in the checkpoint and nothing else may be.
            dtype: cast floating tensors (e.g. ``torch.bfloat16``); default keeps the checkpoint's.
            device: where the loaded model lives.
        """
        path, config, state = read_dit_checkpoint(source, config=config, subfolder=subfolder, dtype=dtype)
        if strict:
            with torch.device("meta"):
                model = cls(config)
            check_state_dict(model.state_dict(), state, str(path), f"PackedDiT({config})", hint=WEIGHTS_HINT)
            model.load_state_dict(state, strict=True, assign=True)
        else:
            model = cls(config)
            check_state_dict(model.state_dict(), state, str(path), f"PackedDiT({config})", strict=False,
                             hint=WEIGHTS_HINT)
            result = model.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                warnings.warn(
                    f"{path}: non-strict load; kept initial values for missing keys {summary(result.missing_keys)}, "
                    f"ignored unexpected keys {summary(result.unexpected_keys)}.",
                    stacklevel=2,
                )
            if dtype is not None:
                model.to(dtype)
        return model.to(device)

    # --- inputs --------------------------------------------------------------------------------

    def _indices(self, name: str, indices: Tensor | None, batch: int, frames: int, device: torch.device) -> Tensor:
        """Validate frame indices and broadcast 1-D ones to ``(B, frames)``."""
        if indices is None:
            raise ValueError(f"PackedDiT: {name} is required when its latents are given.")
        if indices.ndim == 1:
            indices = indices.unsqueeze(0).expand(batch, -1)
        if indices.ndim != 2 or indices.shape[0] != batch or indices.shape[1] != frames:
            raise ValueError(
                f"PackedDiT: {name} must have shape ({frames},) or ({batch}, {frames}) "
                f"(one index per latent frame), got {tuple(indices.shape)}."
            )
        return indices.to(device)

    def _check_latents(self, name: str, x: Tensor, batch: int | None, hw: tuple[int, int] | None) -> None:
        c = self.config.in_channels
        if x.ndim != 5 or x.shape[1] != c or (batch is not None and x.shape[0] != batch):
            want = f"({batch if batch is not None else 'B'}, {c}, T, H, W)"
            raise ValueError(f"PackedDiT: {name} must have shape {want}, got {tuple(x.shape)}.")
        if hw is not None and tuple(x.shape[-2:]) != hw:
            raise ValueError(
                f"PackedDiT: {name} must have the noisy window's spatial size {hw}, got {tuple(x.shape[-2:])}."
            )

    def _check_tokens(self, name: str, x: Tensor | None, batch: int, width: int, required: bool = True) -> None:
        if x is None:
            if required:
                raise ValueError(f"PackedDiT: {name} is required for this config.")
            return
        if x.ndim != 3 or x.shape[0] != batch or x.shape[2] != width:
            raise ValueError(f"PackedDiT: {name} must have shape ({batch}, L, {width}), got {tuple(x.shape)}.")

    # --- forward -------------------------------------------------------------------------------

    def run_blocks(self, x: Tensor, c: Tensor, temb: Tensor, mask: Tensor | None, rope: Rope) -> tuple[Tensor, Tensor]:
        """All dual- then single-stream blocks: video ``(B, N, D)`` and conditioning ``(B, L, D)`` streams."""
        for block in (*self.transformer_blocks, *self.single_transformer_blocks):
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x, c = checkpoint(block, x, c, temb, mask, rope, use_reentrant=False)
            else:
                x, c = block(x, c, temb, mask, rope)
        return x, c

    def video_tokens(
        self,
        hidden_states: Tensor,
        indices_latents: Tensor | None = None,
        latents_clean: Tensor | None = None,
        indices_latents_clean: Tensor | None = None,
        latents_history_2x: Tensor | None = None,
        indices_latents_history_2x: Tensor | None = None,
        latents_history_4x: Tensor | None = None,
        indices_latents_history_4x: Tensor | None = None,
    ) -> tuple[Tensor, Rope, tuple[int, int, int]]:
        """The video stream ``[4x, 2x, 1x history, noisy window]`` ``(B, N, D)``, its RoPE, and the noisy window's
        patch grid ``(T', H', W')``. Shape checks only (no tensor values read), so ``lvg plan`` runs it on fake
        tensors."""
        cfg = self.config
        self._check_latents("hidden_states", hidden_states, None, None)
        b, _, t, h, w = hidden_states.shape
        if h % cfg.patch_size or w % cfg.patch_size or t % cfg.patch_size_t:
            raise ValueError(
                f"PackedDiT: hidden_states frames/height/width {(t, h, w)} must be divisible by the patch size "
                f"{(cfg.patch_size_t, cfg.patch_size, cfg.patch_size)}."
            )
        device = hidden_states.device
        tp, hp, wp = t // cfg.patch_size_t, h // cfg.patch_size, w // cfg.patch_size

        # Video tokens: [4x, 2x, 1x, noisy]; RoPE on the fine (post-patch) grid, pooled for 2x/4x.
        if indices_latents is None:
            indices_latents = torch.arange(tp, device=device)
        idx = self._indices("indices_latents", indices_latents, b, tp, device)
        tokens = [self.x_embedder(hidden_states)]  # (B, T'H'W', D)
        ropes = [rope_grid(idx, hp, wp, cfg.rope_axes_dim, cfg.rope_theta)]
        for scale, latents, indices in (
            ("1x", latents_clean, indices_latents_clean),
            ("2x", latents_history_2x, indices_latents_history_2x),
            ("4x", latents_history_4x, indices_latents_history_4x),
        ):
            if latents is None:
                continue
            if self.clean_x_embedder is None:
                raise ValueError("PackedDiT: history latents given but the config has has_clean_x_embedder=False.")
            self._check_latents(f"history latents ({scale})", latents, b, (h, w))
            idx = self._indices(f"indices of the {scale} history", indices, b, latents.shape[2], device)
            rope = rope_grid(idx, hp, wp, cfg.rope_axes_dim, cfg.rope_theta)
            if scale != "1x":
                pool = tuple(k // p for k, p in zip(HISTORY_KERNELS[scale], HISTORY_KERNELS["1x"]))
                rope = pool_rope(rope, latents.shape[2], hp, wp, pool)
            tokens.insert(0, self.clean_x_embedder(latents, scale))
            ropes.insert(0, rope)
        x = torch.cat(tokens, dim=1)  # (B, N, D)
        rope = (torch.cat([r[0] for r in ropes], dim=1), torch.cat([r[1] for r in ropes], dim=1))
        return x, rope, (tp, hp, wp)

    def forward(
        self,
        hidden_states: Tensor,
        timestep: Tensor,
        encoder_hidden_states: Tensor,
        encoder_attention_mask: Tensor,
        pooled_projections: Tensor,
        image_embeds: Tensor | None = None,
        indices_latents: Tensor | None = None,
        guidance: Tensor | None = None,
        latents_clean: Tensor | None = None,
        indices_latents_clean: Tensor | None = None,
        latents_history_2x: Tensor | None = None,
        indices_latents_history_2x: Tensor | None = None,
        latents_history_4x: Tensor | None = None,
        indices_latents_history_4x: Tensor | None = None,
        memory_tokens: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """Predict the velocity of the noisy window.

        Argument names follow diffusers' ``HunyuanVideoFramepackTransformer3DModel`` so FramePack
        users can swap the model in; indices may be ``(n,)`` or per sample ``(B, n)``.

        Args:
            hidden_states: noisy window ``(B, C, T, H, W)``.
            timestep: ``(B,)``, ``1000 * sigma``.
            encoder_hidden_states: text features ``(B, L_t, text_embed_dim)``.
            encoder_attention_mask: ``(B, L_t)``, true for real tokens (at least one per sample).
            pooled_projections: pooled text feature ``(B, pooled_projection_dim)``.
            image_embeds: image features ``(B, L_i, image_proj_dim)`` (required with ``has_image_proj``).
            indices_latents: frame index of each noisy latent frame; default ``0..T-1``.
            guidance: ``(B,)`` distilled guidance, ``1000 * g`` (required with ``guidance_embeds``).
            latents_clean / latents_history_2x / latents_history_4x: clean history ``(B, C, T_k, H, W)``
                for the 1x/2x/4x embedders, each with its ``indices_*`` ``(T_k,)`` or ``(B, T_k)``.
            memory_tokens: long-term memory tokens at model width ``(B, M, D)`` (SemanticPack's psi).
            memory_mask: ``(B, M)``, true for real memory tokens; default all true.

        Returns:
            velocity ``(B, out_channels, T, H, W)``.
        """
        cfg = self.config
        x, rope, (tp, hp, wp) = self.video_tokens(
            hidden_states, indices_latents, latents_clean, indices_latents_clean, latents_history_2x,
            indices_latents_history_2x, latents_history_4x, indices_latents_history_4x,
        )
        b, _, t, h, w = hidden_states.shape
        device = hidden_states.device
        if timestep.shape != (b,):
            raise ValueError(f"PackedDiT: timestep must have shape ({b},), got {tuple(timestep.shape)}.")

        # Conditioning stream: [image, memory, text]. temb from timestep, guidance and pooled text.
        self._check_tokens("encoder_hidden_states", encoder_hidden_states, b, cfg.text_embed_dim)
        if encoder_attention_mask.shape != encoder_hidden_states.shape[:2]:
            raise ValueError(
                f"PackedDiT: encoder_attention_mask must have shape {tuple(encoder_hidden_states.shape[:2])}, "
                f"got {tuple(encoder_attention_mask.shape)}."
            )
        text_mask = encoder_attention_mask.bool()
        if not bool(text_mask.any(dim=1).all()):
            raise ValueError("PackedDiT: every sample needs at least one valid text token in encoder_attention_mask.")
        if pooled_projections.shape != (b, cfg.pooled_projection_dim):
            raise ValueError(
                f"PackedDiT: pooled_projections must have shape ({b}, {cfg.pooled_projection_dim}), "
                f"got {tuple(pooled_projections.shape)}."
            )
        if cfg.guidance_embeds and (guidance is None or guidance.shape != (b,)):
            got = None if guidance is None else tuple(guidance.shape)
            raise ValueError(f"PackedDiT: guidance of shape ({b},) is required (guidance_embeds=True), got {got}.")
        temb = self.time_text_embed(timestep, pooled_projections, guidance)  # (B, D)

        if b == 1:  # crop padding: the refiner and all blocks then run unmasked
            encoder_hidden_states, text_mask = encoder_hidden_states[:, text_mask[0]], text_mask[:, text_mask[0]]
        cond, cond_mask = [self.context_embedder(encoder_hidden_states, timestep, text_mask)], [text_mask]
        if memory_tokens is not None:
            self._check_tokens("memory_tokens", memory_tokens, b, cfg.inner_dim)
            if memory_mask is None:
                memory_mask = torch.ones(memory_tokens.shape[:2], dtype=torch.bool, device=device)
            elif memory_mask.shape != memory_tokens.shape[:2]:
                raise ValueError(
                    f"PackedDiT: memory_mask must have shape {tuple(memory_tokens.shape[:2])}, "
                    f"got {tuple(memory_mask.shape)}."
                )
            cond.insert(0, memory_tokens)
            cond_mask.insert(0, memory_mask.bool())
        if self.image_projection is not None:
            self._check_tokens("image_embeds", image_embeds, b, cfg.image_proj_dim)
            image = self.image_projection(image_embeds)
            cond.insert(0, image)
            cond_mask.insert(0, torch.ones(image.shape[:2], dtype=torch.bool, device=device))
        c, c_mask = torch.cat(cond, dim=1), torch.cat(cond_mask, dim=1)  # (B, L, D), (B, L)
        if b == 1 and not bool(c_mask.all()):
            c, c_mask = c[:, c_mask[0]], c_mask[:, c_mask[0]]
        mask = None
        if not bool(c_mask.all()):  # batch > 1 with padding: boolean key mask over [video, cond]
            video = torch.ones(b, x.shape[1], dtype=torch.bool, device=device)
            mask = torch.cat([video, c_mask], dim=1)[:, None, None, :]  # (B, 1, 1, N + L)

        if self.block_cache is None:
            x, c = self.run_blocks(x, c, temb, mask, rope)
        else:
            x, c = self.block_cache(self.run_blocks, x, c, temb, mask, rope)

        x = self.proj_out(self.norm_out(x[:, -tp * hp * wp :], temb))  # (B, T'H'W', C*pt*p*p)
        p, pt = cfg.patch_size, cfg.patch_size_t
        x = x.reshape(b, tp, hp, wp, -1, pt, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(b, -1, t, h, w)
