"""VBench subject and background consistency (``/work/shared/specs/metrics.md``).

Both embed every frame, L2-normalise the features and score frame i = 1..T-1 by
``c_i = (max(0, cos(f_{i-1}, f_i)) + max(0, cos(f_0, f_i))) / 2``. Per video ``S = sum_i c_i / (T - 1)``;
``reduction="pairs"`` (VBench) weights videos by their T - 1 pairs, ``reduction="videos"`` averages the S.

* :class:`SubjectConsistency`: DINO ViT-B/16 (timm ``vit_base_patch16_224.dino``), frames resized so the shorter
  side is 224 (bilinear, no crop), ImageNet-normalised, patchified dropping the remainder; the position embedding is
  interpolated as DINO's own code does (bicubic with ``scale_factor=((gh + 0.1) / 14, (gw + 0.1) / 14)``), which
  differs from timm's dynamic-size interpolation by ~4e-3 in the scores.
* :class:`BackgroundConsistency`: OpenAI CLIP ViT-B/32 (open_clip ``ViT-B-32-quickgelu``), shorter side 224
  bicubic, center crop 224, CLIP-normalised.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvg.metrics.video import FrameLocalMetric, Weights, batched, center_crop, load_feature_net, resize_short_side

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Reduction = Literal["pairs", "videos"]


def normalize(frames: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """(N, 3, H, W) 0..255 -> (x / 255 - mean) / std."""
    mean_t = frames.new_tensor(mean).view(3, 1, 1)
    std_t = frames.new_tensor(std).view(3, 1, 1)
    return (frames / 255.0 - mean_t) / std_t


def clip_preprocess(frames: Tensor, size: int = 224) -> Tensor:
    """VBench ``clip_transform``: (N, 3, H, W) 0..255 -> shorter side ``size`` bicubic (no antialias, no clamp),
    center crop ``size``, CLIP-normalised (N, 3, size, size)."""
    return normalize(center_crop(resize_short_side(frames, size, "bicubic"), size), CLIP_MEAN, CLIP_STD)


def dino_preprocess(frames: Tensor, size: int = 224) -> Tensor:
    """VBench ``dino_transform``: (N, 3, H, W) 0..255 -> shorter side ``size`` bilinear (no crop, no antialias),
    ImageNet-normalised. The stride-16 patch conv later drops the bottom/right remainder (480x832 -> 224x388 ->
    a 14x24 grid); the pixel size still matters, see :func:`dino_forward`."""
    return normalize(resize_short_side(frames, size, "bilinear"), IMAGENET_MEAN, IMAGENET_STD)


def consistency_terms(features: Tensor) -> Tensor:
    """``c_i`` for i = 1..T-1 from (T, D) frame features (L2-normalised here) -> (T - 1,) float64."""
    f = F.normalize(features.double(), dim=-1)
    # Clamped at 0 as VBench does; at 1 too, which only removes rounding (cos <= 1), so identical frames give 1.0.
    previous = (f[1:] * f[:-1]).sum(-1).clamp(0, 1)
    first = (f[1:] * f[:1]).sum(-1).clamp(0, 1)
    return (previous + first) / 2


def build_dino() -> nn.Module:
    """timm ``vit_base_patch16_224.dino`` (num_classes=0) with random weights."""
    import timm

    return timm.create_model("vit_base_patch16_224.dino", pretrained=False, num_classes=0)


def dino_forward(vit: nn.Module, x: Tensor) -> Tensor:
    """CLS token after the final norm of a timm ViT on (N, 3, H, W) normalised images, with DINO's
    position-embedding interpolation (``vision_transformer.py::interpolate_pos_encoding``)."""
    tokens = vit.patch_embed.proj(x)  # (N, D, gh, gw): the conv drops the bottom/right remainder
    gh, gw = tokens.shape[-2:]
    tokens = vit.patch_embed.norm(tokens.flatten(2).transpose(1, 2))  # (N, gh*gw, D)
    pos = vit.pos_embed  # (1, 1 + g*g, D)
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    grid = math.isqrt(patch_pos.shape[1])
    # DINO keeps its table only for the native patch count *and* a square pixel input: 224x230 (a 14x14 grid)
    # is still interpolated, by the scale 14.1 / 14, which moves every position slightly.
    if gh * gw != grid * grid or x.shape[-2] != x.shape[-1]:
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, grid, grid, dim).permute(0, 3, 1, 2)
        # DINO adds 0.1 to avoid floating-point error in the interpolation; the scale (not the size) sets the grid.
        patch_pos = F.interpolate(patch_pos, scale_factor=((gh + 0.1) / grid, (gw + 0.1) / grid), mode="bicubic")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)
    cls = (vit.cls_token + cls_pos).expand(len(tokens), -1, -1)
    tokens = torch.cat([cls, tokens + patch_pos], dim=1)
    tokens = vit.blocks(vit.norm_pre(tokens))
    return vit.norm(tokens)[:, 0]


OPENAI_CLIP_FILES = {"ViT-B-32-quickgelu": "ViT-B-32.pt", "ViT-L-14-quickgelu": "ViT-L-14.pt"}
"""OpenAI's own releases (TorchScript archives, fp16): what VBench's ``clip.load`` reads from
``~/.cache/vbench/clip_model/``."""
CLIP_NEEDED = {
    arch: f"OpenAI CLIP {name}: OpenAI's {OPENAI_CLIP_FILES[arch]} (openaipublic.azureedge.net/clip/models/..., "
          f"what VBench downloads) or open_clip_model.safetensors from huggingface.co/timm/{repo}"
    for arch, name, repo in (("ViT-B-32-quickgelu", "ViT-B/32", "vit_base_patch32_clip_224.openai"),
                             ("ViT-L-14-quickgelu", "ViT-L/14", "vit_large_patch14_clip_224.openai"))
}
CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _open_clip_visual(arch: str, pretrained: str | None) -> nn.Module:
    import open_clip

    return open_clip.create_model(arch, pretrained=pretrained).visual


def _load_clip_file(arch: str, path: Path) -> nn.Module:
    """The image tower from an open_clip checkpoint, or from OpenAI's ``.pt`` (a TorchScript archive or a state
    dict; open_clip's OpenAI loader rebuilds it with OpenAI's fp16 rounding, as ``clip.load`` does)."""
    import open_clip

    if path.suffix != ".pt":
        return _open_clip_visual(arch, str(path))
    visual = open_clip.load_openai_model(str(path), precision="fp32", device="cpu").visual
    vision = open_clip.get_model_config(arch)["vision_cfg"]
    found = (visual.conv1.kernel_size[0], visual.conv1.out_channels)
    if found != (vision["patch_size"], vision["width"]):
        raise ValueError(f"{path} is a CLIP with patch size {found[0]} and width {found[1]}; {arch} needs "
                         f"{vision['patch_size']} and {vision['width']} ({OPENAI_CLIP_FILES[arch]})")
    return visual


def load_clip_visual(arch: str, weights: Weights, metric: str) -> nn.Module:
    """The image tower of open_clip ``arch`` (``ViT-B-32-quickgelu`` / ``ViT-L-14-quickgelu``: OpenAI CLIP uses
    QuickGELU; plain ``ViT-B-32`` builds GELU), mapping CLIP-normalised (N, 3, 224, 224) to (N, D) unnormalised
    features (= ``encode_image``), frozen.

    Args:
        arch: open_clip model name.
        weights: A module (used as is); a local file: OpenAI's ``ViT-B-32.pt`` / ``ViT-L-14.pt`` (VBench's cache)
            or an open_clip checkpoint; a directory holding one of those (``ViT-B-32.pt`` /
            ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``); ``"hub"`` (open_clip's
            ``openai`` download) or None (random weights).
        metric: Metric class name, for messages.
    """
    return load_feature_net(weights, metric=metric, needed=CLIP_NEEDED[arch],
                            names=(OPENAI_CLIP_FILES[arch], *CLIP_FILES),
                            build=lambda: _open_clip_visual(arch, None),
                            load=lambda path: _load_clip_file(arch, path),
                            hub=lambda: _open_clip_visual(arch, "openai"))


class _Consistency(FrameLocalMetric):
    """Consistency formula over per-frame features; subclasses implement :meth:`features`."""

    min_frames = 2
    higher_is_better = True

    def __init__(self, reduction: Reduction = "pairs", batch_size: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if reduction not in ("pairs", "videos"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'pairs' or 'videos', got {reduction!r}")
        self.reduction = reduction
        self.batch_size = batch_size

    @abstractmethod
    def features(self, frames: Tensor) -> Tensor:
        """(N, D) features of (N, 3, H, W) 0..255 frames."""

    @torch.no_grad()
    def frame_features(self, video: Tensor) -> Tensor:
        return batched(self.features, video, self.batch_size)

    def score_features(self, features: Tensor) -> tuple[float, float]:
        terms = consistency_terms(features)
        if self.reduction == "pairs":
            return float(terms.sum()), len(terms)
        return float(terms.mean()), 1


class SubjectConsistency(_Consistency):
    """VBench subject consistency: DINO ViT-B/16 CLS features (see the module docstring).

    Args:
        weights: DINO network: an ``nn.Module`` (a timm ViT, used with DINO's position interpolation), a local
            ``dino_vitbase16_pretrain.pth`` (github.com/facebookresearch/dino, the file VBench uses) or timm's
            ``model.safetensors`` (Hugging Face ``timm/vit_base_patch16_224.dino``), ``"hub"`` (timm download) or
            None (random weights, tests only).
        reduction: ``"pairs"`` (VBench, pair-weighted) or ``"videos"`` (mean of per-video scores).
        batch_size: Frames per forward.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    name = "subject_consistency"

    def __init__(self, weights: Weights, reduction: Reduction = "pairs", batch_size: int = 32,
                 **kwargs: Any) -> None:
        super().__init__(reduction, batch_size, **kwargs)
        self._nets["dino"] = load_feature_net(
            weights, metric="SubjectConsistency", load=_load_dino, build=build_dino, hub=_hub_dino,
            names=("dino_vitbase16_pretrain.pth", "model.safetensors"),
            needed="DINO ViT-B/16 weights: dino_vitbase16_pretrain.pth from github.com/facebookresearch/dino "
                   "(dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth) or "
                   "model.safetensors from huggingface.co/timm/vit_base_patch16_224.dino")

    def features(self, frames: Tensor) -> Tensor:
        return dino_forward(self.net("dino"), dino_preprocess(frames)).float()


def _load_dino(path: Path) -> nn.Module:
    import timm

    model = build_dino()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # The original DINO checkpoint uses the same ViT key names as timm (patch_embed.proj, blocks.N.attn.qkv, ...).
    model.load_state_dict(timm.models.vision_transformer.checkpoint_filter_fn(state, model))
    return model


def _hub_dino() -> nn.Module:
    import timm

    return timm.create_model("vit_base_patch16_224.dino", pretrained=True, num_classes=0)


class BackgroundConsistency(_Consistency):
    """VBench background consistency: OpenAI CLIP ViT-B/32 image features (see the module docstring).

    Args:
        weights: CLIP image tower (see :func:`load_clip_visual`): a module mapping CLIP-normalised images to
            features, a local open_clip ``ViT-B-32-quickgelu`` checkpoint (``open_clip_model.safetensors`` from
            Hugging Face ``timm/vit_base_patch32_clip_224.openai``), ``"hub"`` or None (random weights).
        reduction: ``"pairs"`` (VBench) or ``"videos"``.
        batch_size: Frames per forward.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    name = "background_consistency"

    def __init__(self, weights: Weights, reduction: Reduction = "pairs", batch_size: int = 32,
                 **kwargs: Any) -> None:
        super().__init__(reduction, batch_size, **kwargs)
        self._nets["clip"] = load_clip_visual("ViT-B-32-quickgelu", weights, "BackgroundConsistency")

    def features(self, frames: Tensor) -> Tensor:
        return self.net("clip")(clip_preprocess(frames)).float()


__all__ = ["BackgroundConsistency", "SubjectConsistency", "clip_preprocess", "consistency_terms", "dino_forward",
           "dino_preprocess", "load_clip_visual"]
