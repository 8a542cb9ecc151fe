"""Shared rules of the VBench metrics (``/work/shared/specs/metrics.md``, "Shared rules").

* Frames are float 0..255 in layout (T, 3, H, W). :meth:`VideoMetric.update` also takes a uint8/float batch
  (B, T, 3, H, W), one (T, 3, H, W) video or a list of variable-length (T, 3, H, W) videos.
* Every resize is a tensor resize of 0..255 floats with ``antialias=False`` (torchvision's ``Resize`` on the
  tensors VBench's ``load_video`` returns); an int size sets the shorter side and truncates the longer one
  (480x832 -> 224x388). Bicubic results are not clamped. Open_clip/CLIP PIL preprocessing antialiases and differs.
* Every metric reduces through two scalar states, ``total`` (float64) and ``count`` (long), both
  ``dist_reduce_fx="sum"``, so DDP with uneven shards gives the single-process value and ``compute()`` runs on
  every rank.
* Feature networks are frozen, in eval mode and held in a plain dict (``self._nets``) outside the module tree, so
  they are neither in ``state_dict()`` nor in any training checkpoint the metric is attached to; ``metric.to()``
  still moves them (see :meth:`VideoMetric._apply`).
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

HUB = "hub"
"""The ``weights`` keyword that lets the owning library download its pretrained weights (never the default)."""

RANDOM = "random"
"""The ``weights`` keyword for the real architecture with random weights (tests, benchmarks; warned), the
spelling of None that a YAML config can pass to a required argument."""

Weights = str | Path | nn.Module | None
"""A feature net: a ready module, a local weights path, :data:`HUB`, or :data:`RANDOM` / None (real
architecture, random weights)."""


def is_random(weights: object) -> bool:
    """Whether ``weights`` asks for random weights (None or :data:`RANDOM`)."""
    return weights is None or (isinstance(weights, str) and weights == RANDOM)


class MissingWeightsError(ValueError):
    """A local weights path does not exist (the message names the file needed and where it comes from)."""


def frozen(module: nn.Module) -> nn.Module:
    """The module in eval mode with gradients off."""
    return module.eval().requires_grad_(False)


def warn_random(metric: str) -> None:
    """Warn that ``weights=None`` built a network with random weights."""
    warnings.warn(f"{metric}: weights=None builds the network with RANDOM weights; its scores are meaningless "
                  f"(tests and benchmarks only).", stacklevel=3)


def resolve_weights(weights: str | Path, metric: str, needed: str, names: Sequence[str] = ()) -> Path:
    """A local weights file: ``weights`` itself, or the first of ``names`` inside ``weights`` when it is a directory.

    Args:
        weights: File or directory path given by the user.
        metric: Metric class name, for the message.
        needed: What the file is and where it comes from, for the message.
        names: File names accepted inside a directory (e.g. a Hugging Face snapshot).

    Raises:
        MissingWeightsError: Nothing usable at ``weights``.
    """
    path = Path(weights).expanduser()
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
    elif path.is_file():
        return path
    inside = f" (a directory must contain one of {list(names)})" if names and path.is_dir() else ""
    raise MissingWeightsError(f"{metric}: weights {str(path)!r} not found{inside}. Needed: {needed}. Pass its local "
                              f"path, or weights='{HUB}' to let the library download it.")


def load_feature_net(weights: Weights, *, metric: str, needed: str, build: Callable[[], nn.Module],
                     load: Callable[[Path], nn.Module], hub: Callable[[], nn.Module],
                     names: Sequence[str] = ()) -> nn.Module:
    """Resolve a ``weights`` argument to a frozen, eval-mode network.

    Args:
        weights: An ``nn.Module`` (used as is), a local file path (or a directory holding one of ``names``),
            :data:`HUB` (the library's own pretrained download, only on request) or :data:`RANDOM` / None
            (``build()``: the real architecture with random weights, warned).
        metric: Metric class name, for messages.
        needed: What the file is and where it comes from, for the missing-file message.
        build: Builds the architecture with random weights.
        load: Builds the network from an existing local file.
        hub: Builds the network with the library's pretrained download.
        names: File names accepted inside a directory.

    Raises:
        MissingWeightsError: ``weights`` is a path with no usable file.
    """
    if isinstance(weights, nn.Module):
        return frozen(weights)
    if is_random(weights):
        warn_random(metric)
        return frozen(build())
    if weights == HUB:
        return frozen(hub())
    return frozen(load(resolve_weights(weights, metric, needed, names)))


def as_video(video: Tensor, what: str = "video") -> Tensor:
    """One video as float32 (T, 3, H, W) in 0..255 (uint8 is converted; float is taken as 0..255)."""
    if not isinstance(video, Tensor) or video.ndim != 4 or video.shape[1] != 3:
        shape = tuple(video.shape) if isinstance(video, Tensor) else type(video).__name__
        raise ValueError(f"{what}: expected a (T, 3, H, W) tensor (channels first, RGB), got {shape}")
    if video.is_floating_point() and video.numel() and video.min() < 0:
        raise ValueError(f"{what}: float frames must be in 0..255 (got negative values; convert [-1, 1] frames with "
                         f"(x + 1) * 127.5)")
    return video.float()


def as_videos(videos: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """A (B, T, 3, H, W) batch, one (T, 3, H, W) video or a list of (T, 3, H, W) videos -> list of float32
    (T, 3, H, W) videos in 0..255."""
    if isinstance(videos, Tensor):
        if videos.ndim == 4:
            return [as_video(videos)]
        if videos.ndim != 5:
            raise ValueError(f"videos: expected a (B, T, 3, H, W) batch, a (T, 3, H, W) video or a list of videos, "
                             f"got a tensor of shape {tuple(videos.shape)}")
    return [as_video(v, f"videos[{i}]") for i, v in enumerate(videos)]


def _mode(mode: str | InterpolationMode) -> InterpolationMode:
    return mode if isinstance(mode, InterpolationMode) else InterpolationMode(mode)


def resize_short_side(frames: Tensor, size: int, mode: str | InterpolationMode) -> Tensor:
    """Resize (N, 3, H, W) 0..255 floats so the shorter side is ``size``, the longer side truncated
    (``int(size * long / short)``: 480x832 -> 224x388), no antialias, no clamping.

    Args:
        frames: (N, 3, H, W) float.
        size: Shorter side after the resize.
        mode: ``"bilinear"``, ``"bicubic"`` or an ``InterpolationMode``.
    """
    return TF.resize(frames, [size], interpolation=_mode(mode), antialias=False)


def center_crop(frames: Tensor, size: int) -> Tensor:
    """torchvision ``CenterCrop(size)`` of (N, 3, H, W) (offset ``int(round((W - size) / 2))``)."""
    return TF.center_crop(frames, [size, size])


def resize_longer_side(frames: Tensor, size: int = 512) -> Tensor:
    """VBench imaging-quality mode ``longer``: if ``max(H, W) > size``, scale (N, 3, H, W) so the longer side is
    ``size`` (each side ``int(scale * side)``, bilinear, no antialias: 480x832 -> 295x512); else unchanged."""
    h, w = frames.shape[-2:]
    if max(h, w) <= size:
        return frames
    scale = size / max(h, w)
    return TF.resize(frames, [int(scale * h), int(scale * w)], interpolation=InterpolationMode.BILINEAR,
                     antialias=False)


def batched(fn: Callable[[Tensor], Tensor], frames: Tensor, batch_size: int) -> Tensor:
    """``fn`` applied to consecutive chunks of ``batch_size`` frames, outputs concatenated along dim 0."""
    return torch.cat([fn(frames[i:i + batch_size]) for i in range(0, len(frames), batch_size)])


class VideoMetric(Metric):
    """Base of the VBench metrics: per-video ``(numerator, denominator)`` pairs reduced as ``total / count``.

    Subclasses set ``name`` and ``min_frames`` and implement :meth:`video_score`, which returns one video's
    contribution: ``(S, 1)`` for a mean over videos, ``(sum_i c_i, T - 1)`` for pair-weighted consistency. The
    per-video value (:meth:`video_value`) is numerator / denominator. Calling the metric (``metric([video])``,
    torchmetrics ``forward``) returns the value of that batch alone.

    :meth:`clip_scores` scores several clips of one video (the whole video, its sections, its drift segments);
    :class:`FrameLocalMetric` does it embedding each frame once.

    Feature networks go in ``self._nets`` (a plain dict: not submodules, so not in ``state_dict()``); use
    :meth:`net` to get one on the metric's device.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    name: str = ""
    min_frames: int = 1

    total: Tensor
    count: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._nets: dict[str, nn.Module] = {}
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def net(self, key: str) -> nn.Module:
        """The feature network ``key`` on the metric's device."""
        return self._nets[key].to(self.device)

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> VideoMetric:
        # Metric._apply moves the states; the nets follow the device only (they stay fp32 under .half()/.double()).
        out = super()._apply(fn, *args, **kwargs)
        for key, module in self._nets.items():
            self._nets[key] = module.to(self.device)
        return out

    @abstractmethod
    def video_score(self, video: Tensor, fps: float | None) -> tuple[float, float]:
        """``(numerator, denominator)`` of one float (T, 3, H, W) 0..255 video with ``T >= min_frames``."""

    def clip_scores(self, video: Tensor, fps: float | None, clips: Sequence[slice]) -> list[tuple[float, float]]:
        """``(numerator, denominator)`` of each ``video[clip]``, as :meth:`video_score` of that clip alone gives.
        Accumulate any of them with ``update(scores=...)``.

        Args:
            video: One (T, 3, H, W) video (float 0..255 or uint8).
            fps: Its frame rate (None for image folders).
            clips: Frame ranges, each at least ``min_frames`` long.
        """
        video = self._check_clips(video, clips)
        return [self._score(video[clip], fps) for clip in clips]

    def _check_clips(self, video: Tensor, clips: Sequence[slice]) -> Tensor:
        video = as_video(video)
        for clip in clips:
            if len(range(*clip.indices(len(video)))) < self.min_frames:
                raise ValueError(f"{type(self).__name__} needs at least {self.min_frames} frames per clip, "
                                 f"got {clip} of a {len(video)}-frame video")
        return video

    def _score(self, video: Tensor, fps: float | None) -> tuple[float, float]:
        if len(video) < self.min_frames:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_frames} frames per video, "
                             f"got {len(video)}")
        return self.video_score(video.to(self.device), fps)

    def video_value(self, video: Tensor, fps: float | None = None) -> float:
        """The per-video value S of one (T, 3, H, W) video (float 0..255 or uint8), computed standalone.

        Args:
            video: The frames.
            fps: Frame rate (only dynamic degree uses it: mp4 subsampling); None for image folders.
        """
        numerator, denominator = self._score(as_video(video), fps)
        return numerator / denominator

    def update(self, videos: Tensor | Sequence[Tensor] | None = None, fps: float | None = None, *,
               scores: Sequence[tuple[float, float]] | None = None) -> None:
        """Accumulate videos: a (B, T, 3, H, W) batch (uint8, or float 0..255), one (T, 3, H, W) video or a list of
        variable-length (T, 3, H, W) videos; ``fps`` is their frame rate (None for image folders). Or accumulate
        precomputed ``scores``: ``(numerator, denominator)`` pairs, e.g. from :meth:`clip_scores`."""
        if (videos is None) == (scores is None):
            raise ValueError(f"{type(self).__name__}.update takes videos or scores, not both or neither")
        if scores is None:
            scores = [self._score(video, fps) for video in as_videos(videos)]
        for numerator, denominator in scores:
            self.total += numerator
            self.count += int(denominator)

    def compute(self) -> Tensor:
        return self.total / self.count


class FrameLocalMetric(VideoMetric):
    """A metric whose clip score depends only on per-frame features (consistency, aesthetic, imaging): subclasses
    implement :meth:`frame_features` and :meth:`score_features`, and :meth:`clip_scores` embeds each frame of the
    video once for all its clips."""

    @abstractmethod
    def frame_features(self, video: Tensor) -> Tensor:
        """(T, ...) per-frame features of a float (T, 3, H, W) 0..255 video."""

    @abstractmethod
    def score_features(self, features: Tensor) -> tuple[float, float]:
        """``(numerator, denominator)`` of a clip from its frames' :meth:`frame_features`."""

    def video_score(self, video: Tensor, fps: float | None) -> tuple[float, float]:
        return self.score_features(self.frame_features(video))

    def clip_scores(self, video: Tensor, fps: float | None, clips: Sequence[slice]) -> list[tuple[float, float]]:
        features = self.frame_features(self._check_clips(video, clips).to(self.device))
        return [self.score_features(features[clip]) for clip in clips]


__all__ = ["HUB", "FrameLocalMetric", "MissingWeightsError", "VideoMetric", "Weights", "as_video", "as_videos",
           "batched", "center_crop", "frozen", "load_feature_net", "resize_longer_side", "resize_short_side",
           "resolve_weights", "warn_random"]
