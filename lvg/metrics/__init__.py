"""Benchmark metrics: the VBench dimensions, drift, human ELO and the toy-world truth scores."""

from __future__ import annotations

from lvg.metrics.consistency import BackgroundConsistency, SubjectConsistency
from lvg.metrics.drift import Drift
from lvg.metrics.elo import elo_ratings, read_preferences
from lvg.metrics.motion import DynamicDegree, MotionSmoothness
from lvg.metrics.quality import AestheticQuality, ImagingQuality
from lvg.metrics.video import FrameLocalMetric, VideoMetric

__all__ = ["AestheticQuality", "BackgroundConsistency", "Drift", "DynamicDegree", "FrameLocalMetric", "ImagingQuality",
           "MotionSmoothness", "SubjectConsistency", "VideoMetric", "elo_ratings", "read_preferences"]
