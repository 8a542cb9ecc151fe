"""Toy-world truth metrics: long-term consistency measured against the generator's known scene.

A benchmark video starts from frame 0 of a held-out toy-world video whose ground truth
(:func:`lvg.data.toy_world.render_video`) names every sprite's shape, colour and size, the pillar's
box and the background. The generated video does not follow the scripted paths, but a world that
stays consistent keeps the same sprites, the same pillar and the same field. Sprite colours are far
from the pillar grey and from the muted background tones, so a pixel's colour says which sprite is
drawn there; the pillar grey and the background ramp are *not* far apart (the bright sand and slate
tones lie within the colour tolerance of the grey), and a single colour says nothing about a
textured field, so the pillar and the field are scored by their structure as well as their colour.
No feature network is needed. Every score requires the structure the renderer draws, so reference
videos that carry none score ~0 (tested in ``tests/test_toy_metrics.py``: uniform noise, the start
frame's mean colour repeated):

* ``identity_consistency``: fraction of the sprites visible at the start that are still identified
  (right colour, at least half their area, their own shape: IoU >= 0.5 with the true shape at the
  blob's centre, and no other shape fits the blob better -- :class:`SpriteTracks`) in at least one
  frame of the last 15 %. Noise's sprite-coloured pixels are scattered over the frame (IoU ~0 with
  the shape) and a flat muted colour matches no sprite colour, so both score 0.
* ``occlusion_recovery``: of the start sprites that disappear for at least ``min_gap_seconds``
  (behind the pillar, out of frame, or lost), the fraction that come back with the same identity.
  Undefined (not counted) for videos where no sprite disappears (or none is ever identified).
* ``long_recovery`` / ``short_recovery``: for truths with absence labels (the memory world of
  :mod:`lvg.data.toy_world`: a sprite that enters after the start frame and hides), the fraction of
  the labelled ``long`` absences (longer than the model's whole context) / ``short`` ones (inside its
  history: the control) after which the sprite is recognised -- colour and shape, in the open
  (:class:`SpriteTracks`) -- in some frame of the truth's return run (``back``: the frames in which the truth
  shows it again; it always rests in the open there). It asks whether the sprite comes back as itself, wherever it is
  drawn. Every labelled return inside the video counts:
  a video that never draws the sprite scores 0, so the start frame frozen scores 0 too (the sprite
  is not in it). Undefined for truths without labels (the default world) or without such an absence.
  The score measures memory where the model has seen the sprite: generate memory-world videos as
  continuations whose prefix shows it (from the start frame alone the model has never seen it; the embedded
  memory suite, :func:`lvg.data.prompt_suite.memory_world_jobs`, does).
* ``background_stability``: is the start's textured field still there in the last 15 %? The renderer
  draws the field as ``base * (0.6 + 0.4 n)``, ``n`` smooth value noise in [0, 1] on a grid of
  ``max(4, size // 8)`` pixels, ``base`` the truth's background colour. Per frame, over the pixels
  outside the pillar box that show no sprite colour, the score is the product of three factors in
  [0, 1], each exactly 1 on every rendered frame (tested for sizes 32-96):

  - *palette*: the share of those pixels on the background's ramp (within half the colour tolerance
    of ``base * s`` for some ``s`` in [0.6, 1]; half, so that the pillar grey -- 33 from the sand
    ramp, 38 from the slate one -- is never field); these are the *field* pixels, ``n`` their
    position on the ramp;
  - *contrast*: ``std(n)`` over the field pixels / 0.1, clipped to 1 (a rendered frame has
    ``std(n)`` >= 0.17; a flat image has 0);
  - *smoothness*: the roughness ``R`` = mean ``|n|`` step between neighbouring field pixels /
    ``std(n)`` is ~1.1-1.2 for white noise of any amplitude (``2 / sqrt(pi)`` if Gaussian) and
    <= 1.65 / grid for the rendered field (measured); the factor is ``(1 - R) / (1 - 1.75 / grid)``
    clipped to [0, 1] (1 = as smooth as the field, 0 = as rough as white noise).

  Uniform noise fails the palette (~1.5 % of its pixels lie near the ramp) and the smoothness; a
  flat colour -- the frame's mean, the base colour or grey -- fails the contrast; noise along the
  ramp fails the smoothness. A frozen start frame scores 1: it is the start's field. Pixel noise
  costs: Gaussian noise of std 5 on a real video scores ~0.92, of std 15 ~0.3.
* ``occluder_persistence``: is the pillar still there, sharp, in the last 15 %? Per frame, the
  product of the *interior* -- the share of the pillar box's pixels that are pillar-grey (colour
  tolerance) and flat (per-channel std over the pixel's 3 x 3 neighbourhood inside the box <=
  ``flat_tolerance``; the rendered pillar is one exact colour) -- and the *edge* -- the share of the
  pixel pairs across the box's sides (inside the frame) whose per-channel step exceeds twice
  ``flat_tolerance`` (the smallest rendered step is ~27, against the sand tone nearest the grey).
  Noise is neither grey nor flat; a flat colour (grey or not) has no edge; a pillar that blurred,
  spread, moved or faded into the field fails the edge. Gaussian pixel noise of std 5 scores ~0.98.
* ``colour_drift`` / ``contrast_drift``: change of the mean colour (mean absolute change of the
  per-channel means) and of the contrast (luma standard deviation) between the first and last
  15 %, in 0..255 units -- the "pixel-statistic drift", lower is better. They compare a video with
  itself, so they are relative: a frozen or a flat video has 0, stationary noise drifts about as
  little as the real video. Read them next to the structure scores, never alone.

**Continuations** (``first`` > 0: frames ``[0, first)`` are a ground-truth prefix, the rest was generated): every
score reads the generated frames only, with truth frame indices (the video's own), so the prefix never counts. The
start sprites are still those of the truth's frame 0 (the conditioning start frame) and the start / end segments
those of the generated frames. A long or short return counts only if its absence begins in the prefix and the
sprite comes back in the generated frames (it is hidden when generation starts): a sprite already back in the
prefix was not recovered by the model, and an absence that begins after the prefix is the script's, which the
generated video no longer follows. A video with no generated frame is an error.

Segments follow the drift rule of the VBench metrics (``max(1, floor(0.15 T))`` frames). The real
toy-world videos score 1.0 on identity, recovery, background and occluder, and the memory world's on
long and short recovery (tested), so the numbers read as "how close to the truth". Per-section curves
(:meth:`ToyWorldTruth.section_values`) score every generated section with the same per-frame definitions.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import Metric

from lvg.metrics.drift import segment_length
from lvg.toy_scene import BACKGROUNDS, PILLAR_RGB, SHAPES, TEXTURE_RANGE, shape_mask, texture_grid

SCORES = ("identity_consistency", "occlusion_recovery", "long_recovery", "short_recovery", "background_stability",
          "occluder_persistence", "colour_drift", "contrast_drift")
"""Per-video scores, in report order."""
LABELLED = ("long_recovery", "short_recovery")
"""Scores that need a truth with absence labels (the memory world): missing from the values of a video whose
truth has none and from :meth:`ToyWorldTruth.compute` while no video defined them, so reports on the default
world carry no empty columns."""
HIGHER_IS_BETTER = {name: not name.endswith("drift") for name in SCORES}
LUMA = torch.tensor([0.299, 0.587, 0.114])
FIELD_CONTRAST = 0.1
"""``std`` of the field's noise over a frame that counts as fully textured (rendered frames: >= 0.17)."""
FIELD_ROUGHNESS = 1.75
"""Roughness x texture grid of the roughest field that still counts as fully smooth (rendered: <= 1.65)."""


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
    return (frames - torch.tensor(rgb, dtype=frames.dtype, device=frames.device)).abs().amax(-1) <= tolerance


def _steps(values: Tensor, dim: int) -> Tensor:
    """Differences between neighbours along ``dim`` (one shorter there)."""
    size = values.shape[dim]
    return values.narrow(dim, 1, size - 1) - values.narrow(dim, 0, size - 1)


def _box(truth: dict[str, Any], h: int, w: int) -> tuple[int, int, int, int] | None:
    """The pillar box ``x0, y0, x1, y1`` clipped to an ``h x w`` frame, None without a pillar."""
    if not truth.get("occluder"):
        return None
    x0, y0, x1, y1 = truth["occluder"]
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def _scored(frames: Tensor, first: int) -> Tensor:
    """The frames a score reads: from ``first`` (a continuation's first generated frame) on."""
    if not 0 <= first < len(frames):
        raise ValueError(f"a video of {len(frames)} frames has no generated frame from frame {first} on; a "
                         "continuation is scored on its generated frames only.")
    return frames[first:]


def _fit(mask: np.ndarray, cx: np.ndarray, cy: np.ndarray, shape: str, radius: int) -> np.ndarray:
    """``(T,)`` IoU of blobs ``mask`` ``(T, H, W)`` with ``shape`` placed so that its centroid is the blob's
    ``(cx, cy)``; 0 for an empty blob."""
    h, w = mask.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    _, off_x, off_y = _shape_geometry(shape, radius)
    template = shape_mask(shape, xx[None] - (cx - off_x)[:, None, None], yy[None] - (cy - off_y)[:, None, None],
                          radius)  # (T, H, W)
    union = (mask | template).sum(axis=(1, 2))
    return np.where(mask.any(axis=(1, 2)), (mask & template).sum(axis=(1, 2)) / np.maximum(union, 1), 0.0)


def _touches(mask: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """``(T,)`` bool: blobs ``mask`` ``(T, H, W)`` touching ``cover`` ``(T, H, W)`` (8-neighbours) or the border."""
    grown = mask.copy()
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    wide = grown.copy()
    wide[:, :, 1:] |= grown[:, :, :-1]
    wide[:, :, :-1] |= grown[:, :, 1:]
    border = mask[:, [0, -1]].any(axis=(1, 2)) | mask[:, :, [0, -1]].any(axis=(1, 2))
    return (wide & cover).any(axis=(1, 2)) | border


class SpriteTracks:
    """Where each sprite of a video's truth is identified, frame by frame.

    A blob of a sprite's colour *matches* it where it covers at least ``min_presence`` of the sprite's
    area and the true shape placed at its centroid overlaps it with IoU >= ``min_iou``. The IoU bar
    does not tell shapes apart: at the toy's radii a square differs from a circle by a few pixels (IoU
    up to 0.96) and most pairs of shapes overlap with IoU 0.5-0.8. The best fit does: the true shape
    overlaps the blob at least as well as every other shape of the vocabulary (measured at sizes
    32-96: it does on every wholly visible rendered sprite and on none redrawn with another shape).
    A blob that touches the frame's border, the pillar box or another sprite's colour may be cut by
    it, and a cut shape can look like another (the renderer's half-hidden sprites often do), so:

    * ``identified``: matches, and fits its shape best unless it may be cut -- what identity and
      occlusion recovery use (a truth may end with a sprite half behind the pillar);
    * ``recognised``: matches and fits its shape best, touching neither the border nor the pillar --
      what long and short recovery use (the truth's return run always shows the sprite resting in the
      open, above every other sprite, so it never needs the allowance). A blob cut by a sprite drawn
      over it can still pass for another shape (6 partly covered frames did, over every shape swap of
      the default scenes in ``tests/test_toy_metrics.py``).

    Attributes (K sprites, T frames): ``presence`` ``(K, T)`` = matching pixels / the sprite's area,
    ``iou`` ``(K, T)`` with the true shape placed at the blob, ``identified`` and ``recognised`` ``(K, T)``
    bool.
    """

    def __init__(self, frames: Tensor, truth: dict[str, Any], tolerance: float, min_presence: float, min_iou: float):
        t, h, w, _ = frames.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        masks = [_near(frames, sprite["rgb"], tolerance).numpy() for sprite in truth["sprites"]]  # (T, H, W) each
        pillar = np.zeros((t, h, w), dtype=bool)
        box = _box(truth, h, w)
        if box is not None:
            pillar[:, box[1]:box[3], box[0]:box[2]] = True
        presence, iou, best_fit, in_open, uncut = [], [], [], [], []
        for k, (sprite, mask) in enumerate(zip(truth["sprites"], masks)):
            shape, radius = sprite["shape"], sprite["radius"]
            count = mask.sum(axis=(1, 2))  # (T,)
            safe = np.maximum(count, 1)
            cx, cy = (mask * xx).sum(axis=(1, 2)) / safe, (mask * yy).sum(axis=(1, 2)) / safe  # the blob's centroid
            own = _fit(mask, cx, cy, shape, radius)
            rivals = [_fit(mask, cx, cy, other, radius) for other in SHAPES if other != shape]
            best_fit.append(own >= np.max(rivals, axis=0) if rivals else np.ones(t, dtype=bool))
            iou.append(own)
            presence.append(count / _shape_geometry(shape, radius)[0])
            cover = pillar.copy()  # what may hide a part of the sprite
            for j, other in enumerate(masks):
                if j != k:
                    cover |= other
            in_open.append(~_touches(mask, pillar))
            uncut.append(~_touches(mask, cover))
        self.presence, self.iou = (torch.tensor(np.array(v)).reshape(-1, t) for v in (presence, iou))
        best, open_, whole = (torch.tensor(np.array(v)).reshape(-1, t) for v in (best_fit, in_open, uncut))
        matches = (self.presence >= min_presence) & (self.iou >= min_iou)
        self.identified = matches & (best | ~whole)
        self.recognised = matches & best & open_


class ToyWorldTruth(Metric):
    """Toy-world truth scores of generated videos (see the module docstring), reduced over videos.

    ``update(videos, truths, fps)`` takes videos as ``(T, 3, H, W)`` 0..255 (or ``(T, H, W, 3)``
    uint8) and the toy-world truth dict of the video each one started from; ``compute()`` returns
    the mean of every score over the videos where it is defined (NaN where it never is; the
    :data:`LABELLED` scores are left out instead). States are sums and counts, so DDP reduction with
    uneven shards is exact.
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
        flat_tolerance: float = 8.0,
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
            flat_tolerance: largest per-channel standard deviation over a 3 x 3 neighbourhood of a
                flat surface (the rendered pillar is one exact colour: 0; uniform noise: ~74). A sharp
                edge steps by more than twice as much (the pillar's smallest rendered edge step is ~27).
        """
        super().__init__(**kwargs)
        self.colour_tolerance, self.min_presence, self.min_shape_iou = colour_tolerance, min_presence, min_shape_iou
        self.min_gap_seconds, self.segment, self.flat_tolerance = min_gap_seconds, segment, flat_tolerance
        for score in SCORES:
            self.add_state(f"{score}_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{score}_count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    # --- per video --------------------------------------------------------------------------------

    def tracks(self, frames: Tensor, truth: dict[str, Any]) -> SpriteTracks:
        return SpriteTracks(frames, truth, self.colour_tolerance, self.min_presence, self.min_shape_iou)

    def _sprite_colours(self, frames: Tensor, truth: dict[str, Any]) -> Tensor:
        """``(T, H, W)`` bool: pixels showing one of the truth's sprite colours."""
        hit = torch.zeros(frames.shape[:3], dtype=torch.bool, device=frames.device)
        for sprite in truth["sprites"]:
            hit |= _near(frames, sprite["rgb"], self.colour_tolerance)
        return hit

    def field_scores(self, frames: Tensor, truth: dict[str, Any]) -> Tensor:
        """``(T,)`` background score of every frame of ``(T, H, W, 3)`` float frames: palette x
        contrast x smoothness of the textured field (see the module docstring)."""
        t, h, w, _ = frames.shape
        base = torch.tensor(BACKGROUNDS[truth["background"]], dtype=frames.dtype, device=frames.device)
        lo, hi = TEXTURE_RANGE
        ramp = ((frames @ base) / (base @ base)).clamp(lo, hi)  # (T, H, W) nearest ramp position
        region = ~self._sprite_colours(frames, truth)
        box = _box(truth, h, w)
        if box is not None:
            x0, y0, x1, y1 = box
            region[:, y0:y1, x0:x1] = False
        field = region & ((frames - ramp[..., None] * base).abs().amax(-1) <= self.colour_tolerance / 2)
        palette = field.sum(dim=(1, 2)) / region.sum(dim=(1, 2)).clamp(min=1)
        noise = (ramp - lo) / (hi - lo)  # the texture's noise value, 0..1
        count = field.sum(dim=(1, 2))
        mean = (noise * field).sum(dim=(1, 2)) / count.clamp(min=1)
        std = ((((noise - mean[:, None, None]) ** 2) * field).sum(dim=(1, 2)) / (count - 1).clamp(min=1)).sqrt()
        contrast = (std / FIELD_CONTRAST).clamp(max=1)
        step_sum = torch.zeros(t, dtype=frames.dtype, device=frames.device)
        pairs = torch.zeros(t, dtype=torch.long, device=frames.device)
        for dim in (1, 2):
            both = field.narrow(dim, 1, field.shape[dim] - 1) & field.narrow(dim, 0, field.shape[dim] - 1)
            step_sum += (_steps(noise, dim).abs() * both).sum(dim=(1, 2))
            pairs += both.sum(dim=(1, 2))
        roughness = step_sum / pairs.clamp(min=1) / std.clamp(min=1e-6)
        grid = texture_grid(int(truth.get("size", w)))
        smooth = ((1 - roughness) / (1 - FIELD_ROUGHNESS / grid)).clamp(0, 1)
        smooth = torch.where((pairs > 0) & (std > 0), smooth, torch.zeros_like(smooth))
        return (palette * contrast * smooth).double()

    def pillar_scores(self, frames: Tensor, truth: dict[str, Any]) -> Tensor | None:
        """``(T,)`` occluder score of every frame (interior x edge, see the module docstring); None
        for a truth without a pillar."""
        h, w = frames.shape[1:3]
        box = _box(truth, h, w)
        if box is None or box[0] >= box[2] or box[1] >= box[3]:
            return None
        x0, y0, x1, y1 = box
        inside = frames[:, y0:y1, x0:x1]
        grey = _near(inside, truth.get("pillar_rgb", PILLAR_RGB), self.colour_tolerance)
        # Flat: the per-channel std over the pixel's 3 x 3 neighbourhood (clipped to the box) is small.
        chw = inside.permute(0, 3, 1, 2)
        mean = F.avg_pool2d(chw, 3, stride=1, padding=1, count_include_pad=False)
        square = F.avg_pool2d(chw * chw, 3, stride=1, padding=1, count_include_pad=False)
        local_std = (square - mean * mean).clamp(min=0).sqrt().amax(dim=1)  # (T, h, w)
        interior = (grey & (local_std <= self.flat_tolerance)).flatten(1).double().mean(dim=1)
        sides = []  # (pixels just inside the box, their neighbours just outside it)
        if x0 > 0:
            sides.append((frames[:, y0:y1, x0], frames[:, y0:y1, x0 - 1]))
        if x1 < w:
            sides.append((frames[:, y0:y1, x1 - 1], frames[:, y0:y1, x1]))
        if y0 > 0:
            sides.append((frames[:, y0, x0:x1], frames[:, y0 - 1, x0:x1]))
        if y1 < h:
            sides.append((frames[:, y1 - 1, x0:x1], frames[:, y1, x0:x1]))
        if not sides:  # the box is the whole frame: no edge to check
            return interior
        edge = torch.cat([(a - b).abs().amax(-1) > 2 * self.flat_tolerance for a, b in sides], dim=1)
        return interior * edge.double().mean(dim=1)

    def video_values(self, video: Tensor, truth: dict[str, Any], fps: float, first: int = 0) -> dict[str, float | None]:
        """Every score of one video (None where undefined), on its frames from ``first`` on (a continuation's
        generated frames; the module docstring)."""
        frames = _scored(_hwc(video), first)
        t = frames.shape[0]
        if t < self.min_frames:
            raise ValueError(f"toy-world truth metrics need >= {self.min_frames} frames, got {t}"
                             + (f" after the {first}-frame prefix." if first else "."))
        n = segment_length(t, 1, self.segment)  # the drift segments' rule, down to one frame
        head, tail = slice(0, n), slice(t - n, t)  # the start and end segments
        tracks = self.tracks(frames, truth)
        start = [k for k, s in enumerate(truth["sprites"]) if s["visible"][0]]
        values: dict[str, float | None] = {k: None for k in SCORES if k not in LABELLED or "absences" in truth}
        if start:
            values["identity_consistency"] = float(tracks.identified[start, tail].any(dim=1).double().mean())
            min_gap = max(1, math.ceil(self.min_gap_seconds * fps))
            values["occlusion_recovery"] = self._recovery(tracks.identified[start], min_gap)
        for kind in ("long", "short") if "absences" in truth else ():
            # Returns after a shorter video's end never came. After a prefix, only absences it shows beginning are the
            # model's to end: a return inside the prefix is the truth's, and an absence that begins later is the
            # script's, which the generated video no longer follows.
            returns = [(a["sprite"], a["back"][0] - first, a["back"][1] - first) for a in truth["absences"]
                       if a["kind"] == kind and a["back"][0] < first + t
                       and (first == 0 or a["hidden"][0] < first <= a["back"][0])]
            values[f"{kind}_recovery"] = self._returns(tracks.recognised, returns)
        values["background_stability"] = float(self.field_scores(frames[tail], truth).mean())
        pillar = self.pillar_scores(frames[tail], truth)
        if pillar is not None:
            values["occluder_persistence"] = float(pillar.mean())
        mean0, mean1 = frames[head].mean(dim=(0, 1, 2)), frames[tail].mean(dim=(0, 1, 2))
        values["colour_drift"] = float((mean0 - mean1).abs().mean())
        luma = frames @ LUMA.to(frames.device)  # (T, H, W)
        contrast = luma.flatten(1).std(dim=1)  # (T,)
        values["contrast_drift"] = float((contrast[head].mean() - contrast[tail].mean()).abs())
        return values

    @staticmethod
    def _returns(identified: Tensor, returns: list[tuple[int, int, int]]) -> float | None:
        """Fraction of returns ``(sprite row k, a, b)`` after which sprite k is identified again in some
        frame of ``[a, b)``; None without returns. Every recovery score is this, with its own returns."""
        back = [bool(identified[k, a:b].any()) for k, a, b in returns]
        return sum(back) / len(back) if back else None

    @staticmethod
    def _recovery(identified: Tensor, gap: int) -> float | None:
        """Fraction of disappearances (``gap`` frames or more unidentified, after being seen) that end
        with the same sprite identified again later; None if nothing disappears."""
        returns = []
        for k, seen in enumerate(identified.tolist()):
            if True not in seen:
                continue
            run = 0
            for i in range(seen.index(True), len(seen)):
                run = 0 if seen[i] else run + 1
                if run == gap:  # the first disappearance: does the sprite come back later?
                    returns.append((k, i + 1, len(seen)))
                    break
        return ToyWorldTruth._returns(identified, returns)

    def section_values(
        self, video: Tensor, truth: dict[str, Any], frames_per_section: int, first: int = 0
    ) -> dict[str, list[float | None]]:
        """Per-section curves: frame 0 is the start image, section s covers frames
        ``[1 + s F, 1 + (s + 1) F)``. Identity = fraction of start sprites identified in the section;
        background and occluder = the mean over the section's frames of the per-frame scores that
        ``background_stability`` and ``occluder_persistence`` average over the last 15 %; mean luma
        and contrast per section. Sections that begin before ``first`` (a continuation's prefix) are None,
        so the curves keep their time axis."""
        frames = _scored(_hwc(video), first)
        t = first + frames.shape[0]
        tracks = self.tracks(frames, truth)
        start = [k for k, s in enumerate(truth["sprites"]) if s["visible"][0]]
        background, pillar = self.field_scores(frames, truth), self.pillar_scores(frames, truth)
        luma = frames @ LUMA.to(frames.device)
        names = ("identity", "background", "occluder", "mean_luma", "contrast")
        curves: dict[str, list[float | None]] = {k: [] for k in names}
        for s in range((t - 1) // frames_per_section):
            if 1 + s * frames_per_section < first:
                for curve in curves.values():
                    curve.append(None)
                continue
            part = slice(1 + s * frames_per_section - first, 1 + (s + 1) * frames_per_section - first)
            identity = tracks.identified[start, part].any(dim=1).double().mean() if start else None
            curves["identity"].append(float(identity) if identity is not None else None)
            curves["background"].append(float(background[part].mean()))
            curves["occluder"].append(float(pillar[part].mean()) if pillar is not None else None)
            curves["mean_luma"].append(float(luma[part].mean()))
            curves["contrast"].append(float(luma[part].flatten(1).std(dim=1).mean()))
        return curves

    # --- torchmetrics -----------------------------------------------------------------------------

    def update(self, videos: Tensor | list[Tensor], truths: list[dict[str, Any]], fps: float,
               first: list[int] | None = None) -> None:
        """``first``: per video, the first generated frame of a continuation (None: every video is scored whole)."""
        if len(videos) != len(truths):
            raise ValueError(f"{len(videos)} videos but {len(truths)} truths; pass one truth per video.")
        first = [0] * len(videos) if first is None else list(first)
        if len(first) != len(videos):
            raise ValueError(f"{len(videos)} videos but {len(first)} first frames; pass one per video.")
        for video, truth, start in zip(videos, truths, first):
            for score, value in self.video_values(video, truth, fps, start).items():
                if value is not None:
                    getattr(self, f"{score}_sum").add_(value)
                    getattr(self, f"{score}_count").add_(1)

    def compute(self) -> dict[str, Tensor]:
        return {
            score: getattr(self, f"{score}_sum") / getattr(self, f"{score}_count")
            if getattr(self, f"{score}_count") > 0 else torch.tensor(float("nan"), dtype=torch.float64)
            for score in SCORES if score not in LABELLED or getattr(self, f"{score}_count") > 0
        }


__all__ = ["HIGHER_IS_BETTER", "LABELLED", "SCORES", "SpriteTracks", "ToyWorldTruth", "texture_grid"]
