"""Full-size FramePack-F1 encoders behind lvg's protocols (``hunyuan`` extra: diffusers + transformers).

* :class:`HunyuanVideoVAE` -- ``AutoencoderKLHunyuanVideo``: 16 latent channels, 8x spatial, 4x
  temporal (N latent frames <-> 4N - 3 pixel frames), latents scaled by the VAE's
  ``scaling_factor``; tiling and slicing on by default to bound memory.
* :class:`HunyuanTextEncoder` -- LLaMA ``hidden_states[-3]`` of the prompt wrapped in HunyuanVideo's
  prompt template (diffusers' ``DEFAULT_PROMPT_TEMPLATE``), the template's tokens cropped, padded
  or cut to ``max_tokens`` with a mask; plus the CLIP-L text pooler for the pooled feature.
* :class:`SiglipImageEncoder` -- SigLIP vision ``last_hidden_state`` of the start image (729 x 1152
  for ``lllyasviel/flux_redux_bfl``).

Each loads from a local directory or a hub id (``from_pretrained``); nothing is downloaded unless a
hub id is given. Encoders run without gradients. Shapes: B batch, T pixel frames, F latent frames.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lvg.models.encoders import Encoders, TextFeatures, check_video


def _require(package: str):
    try:
        return __import__(package)
    except ImportError as err:
        raise ImportError(f"the HunyuanVideo encoders need `{package}`: pip install 'lvg[hunyuan]'") from err


class HunyuanVideoVAE(nn.Module):
    """HunyuanVideo's causal 3D VAE as a :class:`~lvg.models.encoders.VideoCodec`."""

    def __init__(self, vae: nn.Module, tiling: bool = True, slicing: bool = True):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.latent_channels = vae.config.latent_channels
        self.spatial_factor = vae.config.spatial_compression_ratio
        self.temporal_factor = vae.config.temporal_compression_ratio
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        if tiling:
            vae.enable_tiling()
        if slicing:
            vae.enable_slicing()

    @classmethod
    def from_pretrained(cls, source: str, subfolder: str | None = "vae", dtype: torch.dtype = torch.float16,
                        **kwargs: Any) -> HunyuanVideoVAE:
        diffusers = _require("diffusers")
        vae = diffusers.AutoencoderKLHunyuanVideo.from_pretrained(source, subfolder=subfolder, torch_dtype=dtype)
        return cls(vae, **kwargs)

    def num_latent_frames(self, pixel_frames: int) -> int:
        return (pixel_frames - 1) // self.temporal_factor + 1

    def num_pixel_frames(self, latent_frames: int) -> int:
        return self.temporal_factor * (latent_frames - 1) + 1

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """``(B, T, 3, H, W)`` uint8 with ``T = 4N - 3`` -> ``(B, 16, N, H/8, W/8)`` scaled latents (posterior mode)."""
        check_video(video, self.spatial_factor)
        t = video.shape[1]
        if (t - 1) % self.temporal_factor:
            raise ValueError(
                f"HunyuanVideoVAE.encode: {t} frames; the causal VAE takes {self.temporal_factor}N - 3 frames "
                f"(e.g. {self.num_pixel_frames(self.num_latent_frames(t))})."
            )
        p = next(self.vae.parameters())
        x = video.to(p.device).permute(0, 2, 1, 3, 4).to(p.dtype) / 127.5 - 1.0  # (B, 3, T, H, W)
        return (self.vae.encode(x).latent_dist.mode().float() - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """``(B, 16, N, h, w)`` -> ``(B, 4N - 3, 3, 8h, 8w)`` uint8."""
        p = next(self.vae.parameters())
        x = self.vae.decode((latents / self.scaling_factor + self.shift_factor).to(p.device, p.dtype)).sample
        return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 1, 3, 4).cpu()


class HunyuanTextEncoder(nn.Module):
    """LLaMA (hidden_states[-3], prompt template) + CLIP-L pooler, as a :class:`~lvg.models.encoders.TextEncoder`."""

    def __init__(self, llama: nn.Module, llama_tokenizer: Any, clip: nn.Module, clip_tokenizer: Any,
                 max_tokens: int = 512, template: dict[str, Any] | None = None, hidden_layer: int = -3):
        super().__init__()
        if template is None:
            from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import DEFAULT_PROMPT_TEMPLATE

            template = DEFAULT_PROMPT_TEMPLATE
        self.llama, self.clip = llama.eval().requires_grad_(False), clip.eval().requires_grad_(False)
        self.llama_tokenizer, self.clip_tokenizer = llama_tokenizer, clip_tokenizer
        self.max_tokens, self.template, self.hidden_layer = max_tokens, template, hidden_layer
        self.dim = llama.config.hidden_size
        self.pooled_dim = clip.config.hidden_size

    @classmethod
    def from_pretrained(cls, source: str, dtype: torch.dtype = torch.float16, **kwargs: Any) -> HunyuanTextEncoder:
        """From a HunyuanVideo repository layout (``text_encoder``, ``tokenizer``, ``text_encoder_2``,
        ``tokenizer_2``)."""
        transformers = _require("transformers")
        return cls(
            transformers.LlamaModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype),
            transformers.AutoTokenizer.from_pretrained(source, subfolder="tokenizer"),
            transformers.CLIPTextModel.from_pretrained(source, subfolder="text_encoder_2", torch_dtype=dtype),
            transformers.CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2"),
            **kwargs,
        )

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextFeatures:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("HunyuanTextEncoder.encode expects a list of strings.")
        crop = self.template["crop_start"]
        tokens = self.llama_tokenizer(
            [self.template["template"].format(p) for p in prompts], max_length=self.max_tokens + crop,
            padding="max_length", truncation=True, return_tensors="pt",
        )
        device = next(self.llama.parameters()).device
        hidden = self.llama(input_ids=tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device),
                            output_hidden_states=True).hidden_states[self.hidden_layer]
        mask = tokens.attention_mask[:, crop:].bool().to(device)  # (B, max_tokens): the prompt's own tokens
        clip_tokens = self.clip_tokenizer(prompts, max_length=77, padding="max_length", truncation=True,
                                          return_tensors="pt")
        clip_device = next(self.clip.parameters()).device
        pooled = self.clip(input_ids=clip_tokens.input_ids.to(clip_device)).pooler_output
        return TextFeatures(tokens=hidden[:, crop:].float() * mask[..., None], mask=mask, pooled=pooled.float())


class SiglipImageEncoder(nn.Module):
    """SigLIP vision tower: ``last_hidden_state`` of the start image, as an
    :class:`~lvg.models.encoders.ImageEncoder`."""

    def __init__(self, model: nn.Module, processor: Any):
        super().__init__()
        self.model, self.processor = model.eval().requires_grad_(False), processor
        self.dim = model.config.hidden_size

    @classmethod
    def from_pretrained(cls, source: str = "lllyasviel/flux_redux_bfl", dtype: torch.dtype = torch.float16,
                        **kwargs: Any) -> SiglipImageEncoder:
        transformers = _require("transformers")
        return cls(
            transformers.SiglipVisionModel.from_pretrained(source, subfolder="image_encoder", torch_dtype=dtype),
            transformers.SiglipImageProcessor.from_pretrained(source, subfolder="feature_extractor"),
            **kwargs,
        )

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"SiglipImageEncoder expects uint8 images (B, 3, H, W), "
                             f"got {images.dtype} {tuple(images.shape)}.")
        p = next(self.model.parameters())
        pixels = self.processor(images=list(images.permute(0, 2, 3, 1).numpy()), return_tensors="pt").pixel_values
        return self.model(pixel_values=pixels.to(p.device, p.dtype)).last_hidden_state.float()


def framepack_f1_encoders(
    hunyuan: str = "hunyuanvideo-community/HunyuanVideo",
    siglip: str = "lllyasviel/flux_redux_bfl",
    frame_size: tuple[int, int] = (480, 832),
    dtype: torch.dtype = torch.float16,
) -> Encoders:
    """The encoders of a full-size FramePack-F1 run (local directories or hub ids)."""
    return Encoders(
        codec=HunyuanVideoVAE.from_pretrained(hunyuan, dtype=dtype),
        text=HunyuanTextEncoder.from_pretrained(hunyuan, dtype=dtype),
        image=SiglipImageEncoder.from_pretrained(siglip, dtype=dtype),
        frame_size=frame_size,
    )
