"""Toy-world truth metrics: long-term consistency measured against the generator's known scene.

A benchmark video starts from frame 0 of a held-out toy-world video whose ground truth
(:func:`lvg.data.toy_world.render_video`) names every sprite's shape, colour and size, the pillar's
box and the background. The generated video does not follow the scripted paths, but a world that
stays consistent keeps the same sprites, the same pillar and the same field. Because sprite colours,
the pillar grey and the muted background tones are far apart (>= 80 per channel), a pixel's colour
says what is drawn there, so no feature network is needed:

* ``identity_consistency``: fraction of the sprites visible at the start that are still identified
  (right colour, at least half their area, their own shape: IoU >= 0.5 with the true shape at the
  blob's centre) in at least one frame of the last 15 %.
* ``occlusion_recovery``: of the start sprites that disappear for at least ``min_gap_seconds``
  (behind the pillar, out of frame, or lost), the fraction that come back with the same identity.
  Undefined (not counted) for videos where no sprite disappears.
* ``background_stability``: intersection of the background-colour histograms (8 levels per channel)
  of the first and last 15 % (1 = same palette).
* ``occluder_persistence``: fraction of the pillar's pixels still pillar-grey in the last 15 %.
* ``colour_drift`` / ``contrast_drift``: change of the mean colour (mean absolute change of the
  per-channel means) and of the contrast (luma standard deviation) between the first and last
  15 %, in 0..255 units -- the "pixel-statistic drift" lower is better.

Segments follow the drift rule of the VBench metrics (``max(1, floor(0.15 T))`` frames). The real
toy-world videos score 1.0 on identity, recovery and occluder persistence (tested), so the numbers
read as "how close to the truth". Per-section curves (:meth:`ToyWorldTruth.section_values`) score
every generated section the same way.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from lvg.data.toy_world import PILLAR_RGB, shape_mask

SCORES = ("identity_consistency", "occlusion_recovery", "background_stability", "occluder_persistence",
          "colour_drift", "contrast_drift")
"""Per-video scores, in report order."""
HIGHER_IS_BETTER = {name: not name.endswith("drift") for name in SCORES}
LUMA = torch.tensor([0.299, 0.587, 0.114])


@lru_cache(maxsize=64)
def _shape_geometry(shape: str, radius: int) -> tuple[float, float, float]:
    """Continuous area of a shape and the offset of its centroid from its nominal centre, on a fine grid."""
    step = 0.05
    axis = np.arange(-radius - 1, radius + 1 + step, step)
    dy, dx = np.meshgrid(axis, axis, indexing="ij")
    inside = shape_mask(shape, dx, dy, radius)
    return float(inside.sum() * step * step), float(dx[inside].mean()), float(dy[inside].mean())


def _hwc(video: Tensor) -> Tensor:
    """``(T, 3, H, W)`` 0..255 (the metrics' layout) or ``(T, H, W, 3)`` uint8 -> ``(T, H, W, 3)`` float."""
    if video.ndim != 4 or 3 not in (video.shape[1], video.shape[-1]):
        raise ValueError(f"a video must be (T, 3, H, W) or (T, H, W, 3), got {tuple(video.shape)}.")
    video = video.permute(0, 2, 3, 1) if video.shape[1] == 3 and video.shape[-1] != 3 else video
    return video.float()


def _near(frames: Tensor, rgb: list[int] | tuple[int, ...], tolerance: float) -> Tensor:
    """``(T, H, W)`` bool: pixels within ``tolerance`` (per channel) of a colour."""
    return (frames - torch.tensor(rgb, dtype=frames.dtype)).abs().amax(-1) <= tolerance


def segment_length(num_frames: int, fraction: float = 0.15) -> int:
    return max(1, math.floor(fraction * num_frames))


class SpriteTracks:
    """Where each sprite of a video's truth is identified, frame by frame.

    Attributes (K sprites, T frames): ``presence`` ``(K, T)`` = matching pixels / the sprite's area,
    ``iou`` ``(K, T)`` with the true shape placed at the blob, ``identified`` ``(K, T)`` bool.
    """

    def __init__(self, frames: Tensor, truth: dict[str, Any], tolerance: float, min_presence: float, min_iou: float):
        t, h, w, _ = frames.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        presence, iou = [], []
        for sprite in truth["sprites"]:
            mask = _near(frames, sprite["rgb"], tolerance).numpy()  # (T, H, W)
            area, off_x, off_y = _shape_geometry(sprite["shape"], sprite["radius"])
            count = mask.sum(axis=(1, 2))  # (T,)
            safe = np.maximum(count, 1)
            cx = (mask * xx).sum(axis=(1, 2)) / safe - off_x  # the shape's nominal centre from the blob's centroid
            cy = (mask * yy).sum(axis=(1, 2)) / safe - off_y
            template = shape_mask(sprite["shape"], xx[None] - cx[:, None, None], yy[None] - cy[:, None, None],
                                  sprite["radius"])  # (T, H, W)
            union = (mask | template).sum(axis=(1, 2))
            iou.append(np.where(count > 0, (mask & template).sum(axis=(1, 2)) / np.maximum(union, 1), 0.0))
            presence.append(count / area)
        self.presence = torch.tensor(np.array(presence)).reshape(-1, t)
        self.iou = torch.tensor(np.array(iou)).reshape(-1, t)
        self.identified = (self.presence >= min_presence) & (self.iou >= min_iou)


class ToyWorldTruth(Metric):
    """Toy-world truth scores of generated videos (see the module docstring), reduced over videos.

    ``update(videos, truths, fps)`` takes videos as ``(T, 3, H, W)`` 0..255 (or ``(T, H, W, 3)``
    uint8) and the toy-world truth dict of the video each one started from; ``compute()`` returns
    the mean of every score over the videos where it is defined (NaN where it never is). States are
    sums and counts, so DDP reduction with uneven shards is exact.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None  # mixed: see HIGHER_IS_BETTER
    min_frames = 2
    name = "toy_world"

    def __init__(
        self,
        colour_tolerance: float = 40.0,
        min_presence: float = 0.5,
        min_shape_iou: float = 0.5,
        min_gap_seconds: float = 0.5,
        segment: float = 0.15,
        **kwargs: Any,
    ):
        """
        Args:
            colour_tolerance: largest per-channel distance of a pixel from a colour that still matches it
                (half the smallest distance between toy-world sprite, pillar and background colours).
            min_presence: fraction of a sprite's area that must show for it to count as present.
            min_shape_iou: IoU with the true shape for the blob to keep its identity.
            min_gap_seconds: an absence at least this long is a disappearance (occlusion recovery).
            segment: fraction of frames in the start and end segments.
        """
        super().__init__(**kwargs)
        self.colour_tolerance, self.min_presence, self.min_shape_iou = colour_tolerance, min_presence, min_shape_iou
        self.min_gap_seconds, self.segment = min_gap_seconds, segment
        for score in SCORES:
            self.add_state(f"{score}_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{score}_count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    # --- per video --------------------------------------------------------------------------------

    def tracks(self, frames: Tensor, truth: dict[str, Any]) -> SpriteTracks:
        return SpriteTracks(frames, truth, self.colour_tolerance, self.min_presence, self.min_shape_iou)

    def _background(self, frames: Tensor, truth: dict[str, Any]) -> Tensor:
        """``(T, H, W)`` bool: pixels showing no sprite colour and no pillar grey."""
        other = torch.zeros(frames.shape[:3], dtype=torch.bool)
        for rgb in [s["rgb"] for s in truth["sprites"]] + [truth.get("pillar_rgb", PILLAR_RGB)]:
            other |= _near(frames, rgb, self.colour_tolerance)
        return ~other

    @staticmethod
    def _histogram(frames: Tensor, mask: Tensor) -> Tensor:
        """Normalised 512-bin colour histogram (8 levels per channel) of the masked pixels."""
        levels = (frames[mask].clamp(0, 255) / 32).long().clamp(max=7)  # (N, 3)
        hist = torch.bincount(levels[:, 0] * 64 + levels[:, 1] * 8 + levels[:, 2], minlength=512).double()
        return hist / hist.sum().clamp(min=1)

    def video_values(self, video: Tensor, truth: dict[str, Any], fps: float) -> dict[str, float | None]:
        """Every score of one video (None where undefined)."""
        frames = _hwc(video)
        t = frames.shape[0]
        if t < self.min_frames:
            raise ValueError(f"toy-world truth metrics need >= {self.min_frames} frames, got {t}.")
        n = segment_length(t, self.segment)
        first, last = slice(0, n), slice(t - n, t)
        tracks = self.tracks(frames, truth)
        start = [k for k, s in enumerate(truth["sprites"]) if s["visible"][0]]
        values: dict[str, float | None] = dict.fromkeys(SCORES)
        if start:
            values["identity_consistency"] = float(tracks.identified[start, last].any(dim=1).double().mean())
            values["occlusion_recovery"] = self._recovery(tracks.identified[start], max(1, math.ceil(self.min_gap_seconds * fps)))
        background = self._background(frames, truth)
        h0, h1 = self._histogram(frames[first], background[first]), self._histogram(frames[last], background[last])
        values["background_stability"] = float(torch.minimum(h0, h1).sum())
        if truth.get("occluder"):
            x0, y0, x1, y1 = truth["occluder"]
            grey = _near(frames[last, y0:y1, x0:x1], truth.get("pillar_rgb", PILLAR_RGB), self.colour_tolerance)
            values["occluder_persistence"] = float(grey.double().mean())
        mean0, mean1 = frames[first].mean(dim=(0, 1, 2)), frames[last].mean(dim=(0, 1, 2))
        values["colour_drift"] = float((mean0 - mean1).abs().mean())
        luma = frames @ LUMA  # (T, H, W)
        contrast = luma.flatten(1).std(dim=1)  # (T,)
        values["contrast_drift"] = float((contrast[first].mean() - contrast[last].mean()).abs())
        return values

    @staticmethod
    def _recovery(identified: Tensor, gap: int) -> float | None:
        """Fraction of disappearances (``gap`` frames or more unidentified, after being seen) that end
        with the same sprite identified again; None if nothing disappears."""
        events = recovered = 0
        for seen in identified.tolist():
            if True not in seen:
                continue
            t, first_seen = len(seen), seen.index(True)
            run = 0
            for i in range(first_seen, t):
                run = 0 if seen[i] else run + 1
                if run == gap:  # a disappearance: does the sprite come back later?
                    events += 1
                    recovered += any(seen[i + 1:])
                    break
        return recovered / events if events else None

    def section_values(
        self, video: Tensor, truth: dict[str, Any], frames_per_section: int
    ) -> dict[str, list[float | None]]:
        """Per-section curves: frame 0 is the start image, section s covers frames
        ``[1 + s F, 1 + (s + 1) F)``. Identity = fraction of start sprites identified in the section;
        background = histogram intersection with the first 15 %; mean luma and contrast per section."""
        frames = _hwc(video)
        t = frames.shape[0]
        tracks = self.tracks(frames, truth)
        start = [k for k, s in enumerate(truth["sprites"]) if s["visible"][0]]
        background = self._background(frames, truth)
        first = slice(0, segment_length(t, self.segment))
        reference = self._histogram(frames[first], background[first])
        luma = frames @ LUMA
        curves: dict[str, list[float | None]] = {k: [] for k in ("identity", "background", "occluder", "mean_luma", "contrast")}
        for s in range((t - 1) // frames_per_section):
            part = slice(1 + s * frames_per_section, 1 + (s + 1) * frames_per_section)
            curves["identity"].append(float(tracks.identified[start, part].any(dim=1).double().mean()) if start else None)
            curves["background"].append(float(torch.minimum(reference, self._histogram(frames[part], background[part])).sum()))
            if truth.get("occluder"):
                x0, y0, x1, y1 = truth["occluder"]
                grey = _near(frames[part, y0:y1, x0:x1], truth.get("pillar_rgb", PILLAR_RGB), self.colour_tolerance)
                curves["occluder"].append(float(grey.double().mean()))
            else:
                curves["occluder"].append(None)
            curves["mean_luma"].append(float(luma[part].mean()))
            curves["contrast"].append(float(luma[part].flatten(1).std(dim=1).mean()))
        return curves

    # --- torchmetrics -----------------------------------------------------------------------------

    def update(self, videos: Tensor | list[Tensor], truths: list[dict[str, Any]], fps: float) -> None:
        if len(videos) != len(truths):
            raise ValueError(f"{len(videos)} videos but {len(truths)} truths; pass one truth per video.")
        for video, truth in zip(videos, truths):
            for score, value in self.video_values(video, truth, fps).items():
                if value is not None:
                    getattr(self, f"{score}_sum").add_(value)
                    getattr(self, f"{score}_count").add_(1)

    def compute(self) -> dict[str, Tensor]:
        return {
            score: getattr(self, f"{score}_sum") / getattr(self, f"{score}_count")
            if getattr(self, f"{score}_count") > 0 else torch.tensor(float("nan"), dtype=torch.float64)
            for score in SCORES
        }


__all__ = ["HIGHER_IS_BETTER", "SCORES", "SpriteTracks", "ToyWorldTruth", "segment_length"]
