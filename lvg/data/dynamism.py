"""The dynamism filter: drop shots that barely move (slideshows, static shots) or that change chaotically.

The score is frame-difference based and frame-rate independent: frames are sampled at
``sample_fps`` (every ``round(fps / sample_fps)``-th frame), turned to grayscale (BT.601 luma),
shrunk to ``size x size`` (bilinear, antialiased), and the score is the mean absolute grey-level
change (0-255 units) between consecutive samples, averaged over the shot: "how many grey levels
the average pixel changes per 1/sample_fps seconds" at a fixed resolution. Measured on synthetic
video (tests/test_cuts.py):

* 0: a still image;
* 0.7-2.2: the toy world (small sprites moving over a slowly panning smooth texture);
* 53-57: every sample an unrelated picture (random 16 px blocks; white noise at 64 px).

Shrinking before differencing makes the score about content, not pixel noise: independent
per-pixel noise is averaged away (white noise scores ~57 at 64 px but ~18 when it was 128 px),
while whole-frame changes are not. The defaults are first guesses for real footage, to be
calibrated on a labelled sample: ``lower`` sits above what compression noise of a static shot
leaves after the shrink, ``upper`` below the ~50+ of content that is replaced every sample.

Pass ``flow`` to score by optical flow instead (mean flow magnitude in pixels of the shrunk
frames); its thresholds are in those units and must be set for the flow model used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lvg.data.reader import VideoReader

# ITU-R BT.601 luma weights, what FFmpeg and PIL use for RGB -> grey.
_LUMA = torch.tensor([0.299, 0.587, 0.114])

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``flow(a, b)``: ``a``, ``b`` ``(N, 3, s, s)`` float RGB in [0, 1] -> ``(N, 2, s, s)`` flow from a to b in pixels."""


@dataclass(frozen=True)
class DynamismConfig:
    """Settings of the dynamism filter (frame-difference score; see the module docstring for the scale)."""

    lower: float = 0.5
    """Shots scoring below are static: above the compression noise of a still shot, below the slow
    motion of the toy world (0.7-2.2)."""
    upper: float = 40.0
    """Shots scoring above are chaotic: most of the frame is replaced every 1/sample_fps s (content
    replaced every sample scores 50+)."""
    sample_fps: float = 4.0
    """Frames per second compared; makes the score independent of the video's frame rate."""
    size: int = 64
    """Side of the square the frames are shrunk to."""
    chunk: int = 64
    """Sampled frames processed at a time (bounds memory when streaming a reader)."""

    def __post_init__(self) -> None:
        checks = [
            ("lower", 0 <= self.lower < self.upper, "must be >= 0 and < upper"),
            ("sample_fps", self.sample_fps > 0, "must be > 0"),
            ("size", self.size >= 8, "must be >= 8"),
            ("chunk", self.chunk >= 1, "must be >= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"DynamismConfig.{name} = {getattr(self, name)} {rule}.")


def _stride(fps: float, sample_fps: float) -> int:
    return max(1, round(fps / sample_fps))


def _sampled_chunks(
    frames_or_reader: torch.Tensor | VideoReader, fps: float | None, config: DynamismConfig
) -> Iterator[torch.Tensor]:
    """``(t, H, W, 3)`` uint8 chunks of the frames sampled at ``config.sample_fps``."""
    if isinstance(frames_or_reader, VideoReader):
        stride = _stride(fps or frames_or_reader.info.fps, config.sample_fps)
        size = (config.size, config.size)  # the decoder scales: no full-size RGB frames are made
        return (frames for _, frames in frames_or_reader.iter_chunks(config.chunk, stride, size=size))
    if not isinstance(frames_or_reader, torch.Tensor):
        got = type(frames_or_reader).__name__
        raise ValueError(f"motion_score: expected a (T, H, W, 3) uint8 tensor or a VideoReader, got {got}.")
    frames = frames_or_reader
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"motion_score: frames must be uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}.")
    if fps is None:
        raise ValueError("motion_score: pass fps= with a frame tensor (the score samples frames at a fixed rate).")
    return iter(frames[:: _stride(fps, config.sample_fps)].split(config.chunk))


def _shrink(frames: torch.Tensor, size: int) -> torch.Tensor:
    """``(t, H, W, 3)`` uint8 -> ``(t, 3, size, size)`` float in [0, 1]."""
    x = frames.permute(0, 3, 1, 2)  # channels-last uint8: torch's fast resize path
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.float().div_(255)


def motion_score(
    frames_or_reader: torch.Tensor | VideoReader,
    config: DynamismConfig = DynamismConfig(),
    *,
    fps: float | None = None,
    flow: FlowFn | None = None,
) -> float:
    """How much a shot moves: mean grey-level change per sample (or mean flow magnitude with ``flow``).

    Args:
        frames_or_reader: ``(T, H, W, 3)`` uint8 RGB frames, or a reader (streamed).
        config: sampling rate and size.
        fps: frame rate of a frame tensor (required then); overrides a reader's own.
        flow: optional optical-flow model, see :data:`FlowFn`.

    Returns:
        The score; 0.0 when fewer than two frames are sampled (a single frame does not move).
    """
    total, pairs, last = 0.0, 0, None
    for chunk in _sampled_chunks(frames_or_reader, fps, config):
        x = _shrink(chunk, config.size)  # (t, 3, s, s)
        if last is not None:
            x = torch.cat([last, x])
        last = x[-1:]
        if len(x) < 2:
            continue
        if flow is None:
            grey = torch.einsum("tchw,c->thw", x, _LUMA) * 255  # (t, s, s)
            total += (grey[1:] - grey[:-1]).abs().mean(dim=(1, 2)).sum().item()
        else:
            with torch.no_grad():
                uv = flow(x[:-1], x[1:])  # (t - 1, 2, s, s)
            total += uv.norm(dim=1).mean(dim=(1, 2)).sum().item()
        pairs += len(x) - 1
    return total / pairs if pairs else 0.0


def dynamism_verdict(score: float, config: DynamismConfig = DynamismConfig()) -> str | None:
    """None to keep a shot, else why it is dropped (``"static: ..."`` or ``"chaotic: ..."``)."""
    if score < config.lower:
        return f"static: score {score:.2f} < lower {config.lower:g}"
    if score > config.upper:
        return f"chaotic: score {score:.2f} > upper {config.upper:g}"
    return None
