"""Drift (exposure bias) of a VBench metric: how much a video's score changes from its start to its end.

``Delta^M(V) = |M(V_start) - M(V_end)|`` with V_start the first and V_end the last ``n`` frames,
``n = max(M.min_frames, floor(0.15 T))`` (``/work/shared/specs/metrics.md``, "Drift"). Each segment is scored as
a standalone clip (``M.clip_scores``: a frame-local M embeds the frames once); the overall is the mean over videos,
on M's scale, lower is better.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from lvg.metrics.video import VideoMetric

DRIFT_FRACTION = 0.15


def segment_length(num_frames: int, min_frames: int, fraction: float = DRIFT_FRACTION) -> int:
    """Frames per drift segment: ``max(min_frames, floor(fraction * T))``."""
    return max(min_frames, math.floor(fraction * num_frames))


class Drift(VideoMetric):
    """Drift of ``metric``: mean over videos of ``|M(first n frames) - M(last n frames)|``.

    The wrapped metric is held in a tuple, not registered as a child metric: only its stateless
    :meth:`~lvg.metrics.video.VideoMetric.clip_scores` is used, so its own ``total``/``count`` are never touched,
    synced or reset by the drift metric (it can keep accumulating its own score independently). Its feature
    networks move to the drift metric's device on use.

    Args:
        metric: The VBench metric whose drift is measured (e.g. ``SubjectConsistency(...)``).
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better = False

    def __init__(self, metric: VideoMetric, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metric = (metric,)
        self.name = metric.name
        self.min_frames = metric.min_frames

    @property
    def metric(self) -> VideoMetric:
        """The wrapped metric."""
        return self._metric[0]

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Drift:
        out = super()._apply(fn, *args, **kwargs)
        self.metric.to(self.device)
        return out

    def segment_length(self, num_frames: int) -> int:
        """Frames per segment of a ``num_frames``-frame video."""
        return segment_length(num_frames, self.metric.min_frames)

    def segments(self, num_frames: int) -> list[slice]:
        """The first and the last :meth:`segment_length` frames of a ``num_frames``-frame video."""
        n = self.segment_length(num_frames)
        return [slice(0, n), slice(num_frames - n, num_frames)]

    def video_score(self, video: Tensor, fps: float | None) -> tuple[float, float]:
        return self.score_segments(self.metric.clip_scores(video, fps, self.segments(len(video))))

    @staticmethod
    def score_segments(scores: list[tuple[float, float]]) -> tuple[float, float]:
        """``(|S_start - S_end|, 1)`` from the wrapped metric's ``(numerator, denominator)`` of the two segments."""
        (start, start_count), (end, end_count) = scores
        return abs(start / start_count - end / end_count), 1


__all__ = ["DRIFT_FRACTION", "Drift", "segment_length"]
