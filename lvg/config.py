"""Typed model configs and named presets.

No ``torch.nn`` here: configs are plain dataclasses so the CLI (jsonargparse) documents them from
their attribute docstrings and a config can be built, printed and diffed without a model.

Field names of :class:`DiTConfig` equal the keys of diffusers' / FramePack's ``config.json`` for
the packed HunyuanVideo transformer, so a checkpoint directory's config maps onto it one to one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
"""The floating-point dtypes lvg accepts by name in configs and on the command line."""


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of the packed HunyuanVideo MM-DiT (:class:`lvg.models.dit.PackedDiT`)."""

    in_channels: int = 16
    """Latent channels of the noisy window and of every history input."""
    out_channels: int = 16
    """Channels of the predicted velocity."""
    num_attention_heads: int = 24
    """Attention heads; the model width is ``num_attention_heads * attention_head_dim``."""
    attention_head_dim: int = 128
    """Channels per head; must equal ``sum(rope_axes_dim)``."""
    num_layers: int = 20
    """Dual-stream blocks (``transformer_blocks``)."""
    num_single_layers: int = 40
    """Single-stream blocks (``single_transformer_blocks``)."""
    num_refiner_layers: int = 2
    """Token-refiner blocks of the text embedder (``context_embedder.token_refiner``)."""
    mlp_ratio: float = 4.0
    """Hidden width of every MLP relative to the model width."""
    patch_size: int = 2
    """Spatial patch size of the noisy-window and 1x-history embedders."""
    patch_size_t: int = 1
    """Temporal patch size of the noisy-window embedder."""
    guidance_embeds: bool = True
    """Embed a distilled-guidance scale (FramePack passes ``1000 * g``)."""
    text_embed_dim: int = 4096
    """Width of the per-token text features (LLaMA ``hidden_states[-3]`` for HunyuanVideo)."""
    pooled_projection_dim: int = 768
    """Width of the pooled text feature (CLIP-L pooler for HunyuanVideo)."""
    rope_theta: float = 256.0
    """RoPE base frequency."""
    rope_axes_dim: tuple[int, int, int] = (16, 56, 56)
    """Head channels given to the (t, y, x) RoPE axes."""
    has_image_proj: bool = True
    """Project image-encoder features (SigLIP) into the conditioning stream."""
    image_proj_dim: int = 1152
    """Width of the image-encoder features."""
    has_clean_x_embedder: bool = True
    """Build the 1x/2x/4x history embedders (FramePack context packing)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rope_axes_dim", tuple(self.rope_axes_dim))
        if sum(self.rope_axes_dim) != self.attention_head_dim:
            raise ValueError(
                f"DiTConfig: rope_axes_dim {self.rope_axes_dim} must sum to attention_head_dim "
                f"({self.attention_head_dim}), got {sum(self.rope_axes_dim)}."
            )
        if any(d % 2 for d in self.rope_axes_dim):
            raise ValueError(f"DiTConfig: every entry of rope_axes_dim must be even, got {self.rope_axes_dim}.")

    @property
    def inner_dim(self) -> int:
        """Model width D."""
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> DiTConfig:
        """A preset from :data:`DIT_PRESETS`, with fields overridden by keyword."""
        if name not in DIT_PRESETS:
            raise ValueError(f"Unknown DiT preset {name!r}; choose one of {sorted(DIT_PRESETS)}.")
        return dataclasses.replace(DIT_PRESETS[name], **overrides)

    @classmethod
    def from_dict(cls, config: dict[str, Any], source: str = "config") -> DiTConfig:
        """Build from a diffusers/FramePack ``config.json`` dict.

        Bookkeeping keys (``_class_name``, ``_diffusers_version``, ...) are ignored; settings this
        implementation does not have are rejected so a different model is never loaded silently.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unsupported = {
            "qk_norm": ("rms_norm",),
            "image_condition_type": (None,),
        }
        kwargs = {}
        for key, value in config.items():
            if key.startswith("_"):
                continue
            if key in unsupported:
                if value not in unsupported[key]:
                    raise ValueError(
                        f"{source}: {key}={value!r} is not supported by PackedDiT "
                        f"(expected one of {unsupported[key]}); this is not a FramePack-style checkpoint."
                    )
                continue
            if key not in known:
                raise ValueError(f"{source}: unknown DiT config key {key!r}; known keys: {sorted(known)}.")
            kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The config as a diffusers-style dict (round-trips through :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["rope_axes_dim"] = list(self.rope_axes_dim)
        return d


DIT_PRESETS: dict[str, DiTConfig] = {
    # diffusers' own test config for HunyuanVideoFramepackTransformer3DModel: parity tests.
    "debug": DiTConfig(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=2,
        patch_size_t=1,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
        image_proj_dim=16,
    ),
    # Trainable on a laptop CPU in minutes on the embedded toy world: 12 channels = RGB
    # space-to-depth by 2 (PixelCodec), text 64 (ToyTextEncoder), image 48 (ToyImageEncoder).
    # The width (128) must exceed a patch's values (12 x 2 x 2 = 48) or noise cannot be predicted.
    "toy": DiTConfig(
        in_channels=12,
        out_channels=12,
        num_attention_heads=4,
        attention_head_dim=32,
        num_layers=2,
        num_single_layers=2,
        num_refiner_layers=1,
        text_embed_dim=64,
        pooled_projection_dim=64,
        rope_axes_dim=(8, 12, 12),
        image_proj_dim=48,
    ),
    # The released FramePack-F1 model (lllyasviel/FramePack_F1_I2V_HY_20250503), ~13B parameters.
    "framepack-f1": DiTConfig(),
}

