"""Tiny random instances of FramePack-F1's encoder classes (diffusers / transformers), shared by the tests.

Widths: VAE 4 latent channels (8x spatial, 4x temporal), LLaMA 16, CLIP 8, SigLIP 8 -- they pair
with ``DiTConfig.from_name("debug", text_embed_dim=16, pooled_projection_dim=8, image_proj_dim=8)``.
Callers import diffusers / transformers through ``pytest.importorskip`` before importing this.
"""

from dataclasses import dataclass
from typing import Any

import diffusers
import tokenizers
import torch
import transformers

TEMPLATE = {"template": "system describe the video {} end", "crop_start": 4}
"""A HunyuanVideo-style prompt template: 4 leading template tokens are cropped from the LLaMA features."""
WORDS = ["system", "describe", "the", "video", "end", "a", "red", "circle", "moves", "blue", "square", "slowly"]


def word_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over :data:`WORDS` (no download)."""
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS])}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=model, pad_token="[PAD]", unk_token="[UNK]")


@dataclass
class TinyModules:
    """The raw modules, for lvg's adapters (:mod:`lvg.models.hunyuan`) and diffusers' pipeline alike."""

    vae: Any
    llama: Any
    llama_tokenizer: Any
    clip: Any
    clip_tokenizer: Any
    siglip: Any
    processor: Any


def tiny_modules(seed: int = 0) -> TinyModules:
    """Random VAE, LLaMA, CLIP text and SigLIP vision models, reproducible from ``seed``."""
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4, up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True,
    )
    vocab = len(WORDS) + 2
    llama = transformers.LlamaModel(transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2))
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=vocab, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77))
    siglip = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
        image_size=32, patch_size=8, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2))
    processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    return TinyModules(vae, llama, word_tokenizer(), clip, word_tokenizer(), siglip, processor)
