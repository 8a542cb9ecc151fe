"""VBench per-frame quality dimensions: aesthetic quality (LAION predictor) and imaging quality (MUSIQ).

* :class:`AestheticQuality` (``vbench/aesthetic_quality.py``): OpenAI CLIP ViT-L/14 (open_clip
  ``ViT-L-14-quickgelu``) image embeddings of frames preprocessed like background consistency (shorter side 224
  bicubic, CenterCrop 224, /255, CLIP mean/std), cast to fp32 and L2-normalised, scored by the LAION aesthetic
  head ``sa_0_4_vit_l_14_linear.pth`` (``Linear(768, 1)``, MIT, github.com/LAION-AI/aesthetic-predictor) and
  divided by 10. Per video: mean over frames; overall: mean over videos.
* :class:`ImagingQuality` (``vbench/imaging_quality.py``, mode ``longer``): MUSIQ trained on SPAQ (pyiqa
  ``musiq-spaq``). Frames whose longer side exceeds 512 are resized (bilinear, no antialias) to
  ``int(512 / max(h, w) * h) x int(512 / max(h, w) * w)`` (480x832 -> 295x512), then /255. Per video: mean of
  the per-frame scores (0..100) / 100 — VBench's per-video records are in 0..100 and only its overall is divided
  by 100; lvg divides both so per-video values, section curves, drift and the overall share one 0..1 scale.
  pyiqa (and MUSIQ's weights) are PolyForm Noncommercial, hence an optional extra: ``pip install "lvg[iqa]"``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvg.metrics.consistency import clip_preprocess, load_clip_visual
from lvg.metrics.video import (
    HUB,
    FrameLocalMetric,
    Weights,
    batched,
    frozen,
    is_random,
    resize_longer_side,
    resolve_weights,
    warn_random,
)

AESTHETIC_HEAD_URL = "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_l_14_linear.pth"
MUSIQ_MAX_SIDE = 512
Scorer = Callable[[Tensor], Tensor]
"""``images -> scores``: images float (N, 3, H, W) in [0, 1], scores (N,) or (N, 1) in 0..100 (MUSIQ's range)."""


def load_aesthetic_head(weights: str | Path | nn.Module | None) -> nn.Module:
    """LAION aesthetic head ``Linear(768, 1)``, frozen.

    Args:
        weights: A module; a local ``sa_0_4_vit_l_14_linear.pth``; ``"hub"`` to download it from LAION's GitHub
            (torch.hub cache); ``None`` for random weights (tests; warns).
    """
    if isinstance(weights, nn.Module):
        return frozen(weights)
    head = nn.Linear(768, 1)
    if is_random(weights):
        warn_random("AestheticQuality (head)")
    elif weights == HUB:
        head.load_state_dict(torch.hub.load_state_dict_from_url(AESTHETIC_HEAD_URL, map_location="cpu"))
    else:
        path = resolve_weights(weights, "AestheticQuality", f"LAION aesthetic head 'sa_0_4_vit_l_14_linear.pth' "
                               f"(4 KB, MIT: {AESTHETIC_HEAD_URL})", ("sa_0_4_vit_l_14_linear.pth",))
        head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return frozen(head)


class FrameQualityMetric(FrameLocalMetric):
    """A per-frame score averaged over each video's frames, then over videos.

    Args:
        batch_size: Frames per network call.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    min_frames = 1

    def __init__(self, batch_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.batch_size = batch_size

    @abstractmethod
    def frame_features(self, video: Tensor) -> Tensor:
        """(T,) per-frame scores of a float (T, 3, H, W) 0..255 video, on the scale of the per-video value."""

    def score_features(self, features: Tensor) -> tuple[float, float]:
        return float(features.double().mean()), 1.0


class AestheticQuality(FrameQualityMetric):
    """VBench aesthetic quality: LAION aesthetic head on CLIP ViT-L/14 embeddings, / 10 (module docstring).

    Args:
        weights: CLIP ViT-L/14 (see :func:`lvg.metrics.consistency.load_clip_visual`): a local path (OpenAI's
            ``ViT-L-14.pt`` or open_clip's file), ``"hub"``, a module, or ``None`` (random).
        head_weights: The LAION head (see :func:`load_aesthetic_head`).
        batch_size: Frames per CLIP call.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    name = "aesthetic_quality"

    def __init__(self, weights: Weights, head_weights: str | Path | nn.Module | None, batch_size: int = 32,
                 **kwargs) -> None:
        super().__init__(batch_size, **kwargs)
        self._nets["clip"] = load_clip_visual("ViT-L-14-quickgelu", weights, "AestheticQuality")
        self._nets["head"] = load_aesthetic_head(head_weights)

    @torch.no_grad()
    def frame_features(self, video: Tensor) -> Tensor:
        clip, head = self.net("clip"), self.net("head")

        def score(frames: Tensor) -> Tensor:
            features = F.normalize(clip(clip_preprocess(frames)).float(), dim=-1)
            return head(features).squeeze(-1) / 10.0

        return batched(score, video, self.batch_size)


def musiq_resize(frames: Tensor, max_side: int = MUSIQ_MAX_SIDE) -> Tensor:
    """VBench imaging-quality mode ``longer``: (N, 3, H, W) 0..255 -> (N, 3, h, w) in [0, 1], longer side at most
    ``max_side`` (bilinear, no antialias; sizes truncated as VBench computes them)."""
    return resize_longer_side(frames, max_side) / 255.0


MUSIQ_NEEDED = ("MUSIQ-SPAQ weights 'musiq_spaq_ckpt-358bb6af.pth' (pyiqa, PolyForm Noncommercial: "
                "github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/musiq_spaq_ckpt-358bb6af.pth)")


def load_musiq(weights: str | Path | nn.Module | Scorer | None) -> Scorer:
    """MUSIQ trained on SPAQ (pyiqa's ``MUSIQ`` architecture, as VBench builds it), frozen.

    Args:
        weights: A module or callable scorer (see :data:`Scorer`), used as is; a local
            ``musiq_spaq_ckpt-358bb6af.pth``; ``"hub"`` for pyiqa's own download; ``None`` for random weights.

    Raises:
        ImportError: pyiqa is needed (for anything but an injected scorer) and not installed.
    """
    if isinstance(weights, nn.Module):
        return frozen(weights)
    if callable(weights):
        return weights
    path = None
    if not is_random(weights) and weights != HUB:
        path = resolve_weights(weights, "ImagingQuality", MUSIQ_NEEDED, ("musiq_spaq_ckpt-358bb6af.pth",))
    try:
        from pyiqa.archs.musiq_arch import MUSIQ
    except ImportError as e:
        raise ImportError('ImagingQuality needs pyiqa for MUSIQ (PolyForm Noncommercial): pip install "lvg[iqa]", '
                          'or pass weights=<a scorer module mapping (N, 3, H, W) in [0, 1] to (N,) scores>') from e
    if is_random(weights):
        warn_random("ImagingQuality")
        return frozen(MUSIQ(pretrained=False))
    if path is None:
        return frozen(MUSIQ(pretrained="spaq"))
    return frozen(MUSIQ(pretrained_model_path=str(path)))


class ImagingQuality(FrameQualityMetric):
    """VBench imaging quality: MUSIQ-SPAQ per-frame score / 100 (module docstring). Needs ``lvg[iqa]``.

    Args:
        weights: MUSIQ-SPAQ (see :func:`load_musiq`): a local path, ``"hub"``, ``None`` (random), or any scorer
            module/callable mapping float (N, 3, H, W) in [0, 1] to (N,) scores in 0..100.
        batch_size: Frames per scorer call (frames of one video share a size).
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    name = "imaging_quality"

    def __init__(self, weights: str | Path | nn.Module | Scorer | None, batch_size: int = 8, **kwargs) -> None:
        super().__init__(batch_size, **kwargs)
        self._scorer = (load_musiq(weights),)  # a tuple keeps a frozen net out of state_dict()

    @torch.no_grad()
    def frame_features(self, video: Tensor) -> Tensor:
        scorer = self._scorer[0]
        if isinstance(scorer, nn.Module):
            scorer = scorer.to(video.device)
        return batched(lambda x: scorer(musiq_resize(x)).reshape(len(x)).float(), video, self.batch_size) / 100.0


__all__ = ["AestheticQuality", "FrameQualityMetric", "ImagingQuality", "load_aesthetic_head", "load_musiq",
           "musiq_resize"]
