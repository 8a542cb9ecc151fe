"""Shot-cut detection: where a new shot starts, from frame content, vectorised torch on the CPU.

Every frame is shrunk to ``size x size`` (bilinear, antialiased, on uint8; when streaming a reader
its decoder scales while decoding, with FFmpeg's filter, so scores from a reader and from its decoded
frames differ slightly). Between consecutive frames ``t - 1`` and ``t`` two distances are measured,
both in [0, 1]:

* ``pixel``: mean absolute difference of the shrunk RGB frames -- high at a cut, but also high
  when a camera pans over fine texture;
* ``hist``: total-variation distance between joint RGB colour histograms (``bins`` per channel)
  -- blind to motion (a pan keeps the colours), high at a cut, but it jumps around during fades
  as colours slide across bin edges.

The frame's score is their geometric mean ``sqrt(pixel * hist)``, a soft "both": a pan moves
pixels but keeps the histogram, a fade changes the histogram but moves every pixel only a little,
so neither scores high, while a cut changes both. Frame ``t`` starts a new shot when

1. ``score[t] >= min_score`` (absolute floor), and
2. ``score[t] >= ratio * median(score of the window frames on each side of t)`` (adaptive: the
   score must stand out from its own neighbourhood, so steady motion of any speed never cuts),
3. candidates closer than ``min_shot_frames`` are one transition and only the highest-scoring one
   is kept (non-maximum suppression) -- unless every frame between them scores ``ratio`` times
   lower than both, i.e. they bound a short steady shot of its own: then both are kept, so a
   montage's 10-frame shot is not merged into its neighbour (:func:`split_shots` drops it).

Gradual transitions: the steps of a fade or dissolve score like their neighbours, so test 2 fails
and a fade normally gives no cut; when steps do stand out, the steps between them score like
them, so test 3 keeps one -- a fade or dissolve up to ``min_shot_frames`` long gives no cut or
exactly one. The shot around a transition is not split (to a video model a dissolve is
continuous change, a hard cut is not). A flash (one bright frame) gives one cut. Shots at the
video's ends are never suppressed here: :func:`split_shots` drops shots shorter than ``min_frames``.

Memory: a reader is streamed chunk by chunk; only one float per frame is kept.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch
import torch.nn.functional as F

from lvg.data.reader import VideoReader


@dataclass(frozen=True)
class CutDetectorConfig:
    """Settings of :func:`detect_cuts` (defaults tuned on synthetic cuts, fades and pans; see tests)."""

    size: int = 64
    """Frames are shrunk to ``size x size`` before comparing: cheap, and blind to fine texture and noise."""
    bins: int = 8
    """Histogram bins per RGB channel (``bins ** 3`` joint bins)."""
    min_score: float = 0.03
    """Absolute floor of ``sqrt(pixel * hist)``. Cuts between toy-world scenes of the same palette score
    0.045-0.1, between different scenes 0.25-0.5; consecutive frames of one toy shot score < 0.02, steps
    of a cross-fade ~0.05 and of a fast pan over noise ~0.04 (those are left to the ratio test)."""
    ratio: float = 3.0
    """A cut's score must be ``ratio`` times the median score of its neighbours (like the ratio to the
    neighbours' mean of PySceneDetect's ``AdaptiveDetector``, whose default is also 3)."""
    window: int = 2
    """Neighbours on each side of a frame for the adaptive test (the frame itself excluded)."""
    min_shot_frames: int = 15
    """Cuts closer than this are one transition (the strongest kept) unless a steady shot lies between
    them: at most one cut per fade, flash or dissolve up to this long. 15 frames is PySceneDetect's
    default ``min_scene_len``."""
    chunk: int = 256
    """Frames decoded and compared at a time. Bounds memory when streaming a reader, whose decoder
    scales to ``size`` (256 frames of 64 px: 3 MB); large enough that torch's per-call overhead
    (waking its thread pool) stays small next to decoding."""

    def __post_init__(self) -> None:
        checks = [
            ("size", self.size >= 8, "must be >= 8"),
            ("bins", 2 <= self.bins <= 32, "must be in [2, 32]"),
            ("min_score", 0 <= self.min_score < 1, "must be in [0, 1)"),
            ("ratio", self.ratio >= 1, "must be >= 1"),
            ("window", self.window >= 1, "must be >= 1"),
            ("min_shot_frames", self.min_shot_frames >= 1, "must be >= 1"),
            ("chunk", self.chunk >= 1, "must be >= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"CutDetectorConfig.{name} = {getattr(self, name)} {rule}.")


def _features(frames: torch.Tensor, config: CutDetectorConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrunk frames ``(T, 3, s, s)`` float in [0, 1] and normalised joint colour histograms ``(T, bins**3)``."""
    x = frames.permute(0, 3, 1, 2)  # (T, 3, H, W), channels-last in memory: torch's fast uint8 resize path
    if x.shape[-2:] != (config.size, config.size):
        x = F.interpolate(x, size=(config.size, config.size), mode="bilinear", antialias=True, align_corners=False)
    t, b = len(x), config.bins
    q = (x.to(torch.int32) * b) >> 8  # (T, 3, s, s) bin per channel
    code = (q[:, 0] * b + q[:, 1]) * b + q[:, 2]  # (T, s, s) joint bin
    code = code.reshape(t, -1) + torch.arange(t, dtype=torch.int32)[:, None] * b**3  # one bin range per frame
    hist = torch.bincount(code.reshape(-1), minlength=t * b**3).reshape(t, b**3).float()
    return x.float().div_(255), hist.div_(config.size * config.size)


def _scores(frames: torch.Tensor, config: CutDetectorConfig, previous: tuple | None) -> tuple[torch.Tensor, tuple]:
    """Scores ``(T,)`` of each frame against the one before (the first against ``previous``'s last, else 0)."""
    x, hist = _features(frames, config)
    if previous is not None:
        x, hist = torch.cat([previous[0], x]), torch.cat([previous[1], hist])
    pixel = (x[1:] - x[:-1]).abs().mean(dim=(1, 2, 3))
    change = 0.5 * (hist[1:] - hist[:-1]).abs().sum(dim=1)
    score = (pixel * change).sqrt()
    if previous is None:
        score = torch.cat([score.new_zeros(1), score])
    return score, (x[-1:], hist[-1:])


def frame_scores(
    frames_or_reader: torch.Tensor | VideoReader, config: CutDetectorConfig = CutDetectorConfig()
) -> torch.Tensor:
    """Cut scores ``(T,)`` float: ``sqrt(pixel * hist)`` between each frame and the one before (0 for frame 0)."""
    if isinstance(frames_or_reader, VideoReader):
        size = (config.size, config.size)  # the decoder scales: no full-size RGB frames are made
        chunks = (frames for _, frames in frames_or_reader.iter_chunks(config.chunk, size=size))
    elif isinstance(frames_or_reader, torch.Tensor):
        frames = frames_or_reader
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            got = f"{frames.dtype} {tuple(frames.shape)}"
            raise ValueError(f"detect_cuts: frames must be uint8 (T, H, W, 3), got {got}.")
        chunks = frames.split(config.chunk)
    else:
        got = type(frames_or_reader).__name__
        raise ValueError(f"detect_cuts: expected a (T, H, W, 3) uint8 tensor or a VideoReader, got {got}.")
    scores, previous = [], None
    for chunk in chunks:
        score, previous = _scores(chunk, config, previous)
        scores.append(score)
    return torch.cat(scores) if scores else torch.zeros(0)


def cuts_from_scores(scores: torch.Tensor, config: CutDetectorConfig = CutDetectorConfig()) -> list[int]:
    """Apply the floor, the adaptive ratio test and non-maximum suppression to per-frame ``scores`` ``(T,)``."""
    t, w = len(scores), config.window
    if t < 2:
        return []
    padded = torch.cat([scores.new_full((w,), float("nan")), scores, scores.new_full((w,), float("nan"))])
    windows = padded.unfold(0, 2 * w + 1, 1)  # (T, 2w + 1), frame t at column w
    neighbours = torch.cat([windows[:, :w], windows[:, w + 1 :]], dim=1)  # (T, 2w)
    neighbours[:1] = float("nan")  # frame 0's score is a placeholder, not a neighbour's evidence
    # nanquantile, not nanmedian: with an even count the median must average the middle two, not take the lower.
    baseline = neighbours.nanquantile(0.5, dim=1).nan_to_num(0.0)  # (T,)
    candidate = (scores >= config.min_score) & (scores >= config.ratio * baseline)
    candidate[0] = False
    values = scores.tolist()

    def separate_shots(a: int, b: int) -> bool:
        """Cuts ``a < b`` close together bound a steady short shot (keep both), not one transition."""
        inner = values[a + 1 : b]
        return bool(inner) and max(inner) * config.ratio <= min(values[a], values[b])

    kept: list[int] = []
    for i in sorted(candidate.nonzero().flatten().tolist(), key=lambda i: -values[i]):
        if all(abs(i - k) >= config.min_shot_frames or separate_shots(min(i, k), max(i, k)) for k in kept):
            kept.append(i)
    return sorted(kept)


def detect_cuts(
    frames_or_reader: torch.Tensor | VideoReader, config: CutDetectorConfig = CutDetectorConfig()
) -> list[int]:
    """Indices of the frames that start a new shot (never 0), sorted.

    Args:
        frames_or_reader: ``(T, H, W, 3)`` uint8 RGB frames, or a :class:`~lvg.data.reader.VideoReader`
            (streamed in ``config.chunk`` frames: memory stays bounded for any length).
        config: thresholds; see the module docstring for the rule.
    """
    return cuts_from_scores(frame_scores(frames_or_reader, config), config)


def split_shots(num_frames: int, cuts: Sequence[int], min_frames: int) -> list[tuple[int, int]]:
    """Shots ``[start, end)`` between ``cuts`` (frames that start a shot), those shorter than ``min_frames`` dropped.

    ``cuts`` may be unsorted, repeated, or include 0 and ``num_frames``.
    """
    if num_frames < 0 or min_frames < 1:
        raise ValueError(f"split_shots: need num_frames >= 0 and min_frames >= 1, got {num_frames}, {min_frames}.")
    bad = [c for c in cuts if not 0 <= c <= num_frames]
    if bad:
        raise ValueError(f"split_shots: cuts {bad} lie outside [0, {num_frames}].")
    bounds = sorted({0, num_frames, *cuts})
    return [(a, b) for a, b in pairwise(bounds) if b - a >= min_frames]


def detect_cuts_pyscenedetect(path: str | Path, threshold: float = 27.0, min_scene_len: int = 15) -> list[int]:
    """Cuts found by PySceneDetect's ``ContentDetector`` (for comparison), same convention as :func:`detect_cuts`.

    Needs ``pip install scenedetect`` (the ``scenes`` extra; it brings OpenCV).
    """
    if importlib.util.find_spec("scenedetect") is None:
        raise ImportError("detect_cuts_pyscenedetect needs PySceneDetect: pip install 'lvg[scenes]' (or scenedetect).")
    import scenedetect

    detector = scenedetect.ContentDetector(threshold=threshold, min_scene_len=min_scene_len)
    scenes = scenedetect.detect(str(path), detector, backend="pyav")
    return [start.frame_num for start, _ in scenes[1:]]
