"""The dynamism filter: drop shots that barely move (slideshows, static shots) or that change chaotically.

Frames are sampled at ``sample_fps`` (every ``round(fps / sample_fps)``-th frame, so the measure does
not depend on the frame rate), turned to grey (BT.601 luma) and shrunk by averaging square blocks of
source pixels to about ``size x size`` pixels at the frame's own aspect ratio: a 32x512 strip is seen
at 16x256, not squeezed into 64x64, so thin and tall frames keep their motion. The grey-level change
``d`` between consecutive samples is split in two parts:

* ``score``, the structured change: regions larger than an analysis pixel that change (motion, cuts,
  fades). Averaging ``d`` over 2x2 analysis pixels leaves it as it is.
* ``flicker``, the spatially white change (pixel noise). Averaging 2x2 independent values halves their
  mean magnitude, so ``2 * (1 - mean|pool(d)| / mean|d|)`` is the white share of ``mean|d|``. A block
  average of ``n`` source pixels divides white noise by ``sqrt(n)``; multiplying by it gives the flicker
  of one source pixel, the same for a noise video at 64 px as at 1080p (whose block averages barely
  change: the averaged change alone cannot tell such noise from slow motion).

``score`` reads "grey levels the average analysis pixel changes per 1/sample_fps s, through content
that moves", ``flicker`` "grey levels a source pixel flickers at random per sample". A shot is static
below ``lower``, chaotic above ``upper`` (most of the picture replaced every sample) or with a flicker
above ``max_flicker`` (noise). Measured on labelled synthetic clips of 4 s at 8 fps
(tests/test_dynamism.py; the README's dynamism section lists every clip):

* static shots: score 0.00 (a still texture with +-3 sensor noise: flicker 1.5, at 64 and at 256 px);
* the toy world (small sprites over a slowly panning texture): 1.6; a slow pan (1 px/frame at 64 px): 4.8;
* thin 32x512 and tall 512x32 frames with a 16-px square moving 3 px/frame: 1.8 (the same for both);
* fast motion (a 16-px square and the camera both moving 6 px/frame at 64 px): 29;
* content replaced every frame (random 16-px blocks): 58; pure noise: score ~0, flicker 56 at any size.

The defaults are first guesses for real footage, to be calibrated on a labelled sample of it.

Pass ``flow`` to score by optical flow instead (mean flow magnitude in pixels of the shrunk frames;
its thresholds are in those units and must be set for the flow model used); the flicker is measured
the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lvg.data.reader import VideoReader

# ITU-R BT.601 luma weights, what FFmpeg and PIL use for RGB -> grey.
_LUMA = torch.tensor([0.299, 0.587, 0.114])
# Frames block-averaged at a time: the float copy of full-size frames stays small (4 x 1080p: 100 MB).
_BATCH = 4

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``flow(a, b)``: ``a``, ``b`` ``(N, 3, h, w)`` float RGB in [0, 1] -> ``(N, 2, h, w)`` flow from a to b in pixels."""


@dataclass(frozen=True)
class DynamismConfig:
    """Settings of the dynamism filter (see the module docstring for the scales)."""

    lower: float = 0.5
    """Shots scoring below are static: above what sensor and compression noise leave in the score
    (~0), below the slow motion of the toy world (1-3)."""
    upper: float = 40.0
    """Shots scoring above are chaotic: most of the frame is replaced every 1/sample_fps s (content
    replaced every sample scores 50+)."""
    max_flicker: float = 30.0
    """Shots whose source pixels flicker more (grey levels per sample) are chaotic: pure noise flickers
    ~56, sensor noise and film grain a few grey levels."""
    sample_fps: float = 4.0
    """Frames per second compared; makes the measure independent of the video's frame rate."""
    size: int = 64
    """Frames are shrunk to about ``size x size`` pixels, keeping their aspect ratio."""
    chunk: int = 64
    """Sampled frames processed at a time (bounds memory when streaming a reader)."""

    def __post_init__(self) -> None:
        checks = [
            ("lower", 0 <= self.lower < self.upper, "must be >= 0 and < upper"),
            ("max_flicker", self.max_flicker > 0, "must be > 0"),
            ("sample_fps", self.sample_fps > 0, "must be > 0"),
            ("size", self.size >= 8, "must be >= 8"),
            ("chunk", self.chunk >= 1, "must be >= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"DynamismConfig.{name} = {getattr(self, name)} {rule}.")


@dataclass(frozen=True)
class Motion:
    """How a shot changes between samples; :func:`dynamism_verdict` decides from it."""

    score: float
    """Structured change: grey levels per sample at the analysis size (mean flow magnitude with ``flow``)."""
    flicker: float
    """Spatially white change of one source pixel: grey levels per sample."""


def sample_stride(fps: float, config: DynamismConfig) -> int:
    """Every how many frames a sample is taken at ``fps``."""
    return max(1, round(fps / config.sample_fps))


def _block(height: int, width: int, size: int) -> int:
    """Side of the square of source pixels averaged into one analysis pixel (about ``size**2`` of them)."""
    return max(1, min(math.ceil(math.sqrt(height * width) / size), height, width))


def analysis_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(h, w)`` frames of ``height x width`` are analysed at; a frame of that size is not shrunk again."""
    block = _block(height, width, size)
    return height // block, width // block


def _block_mean(frames: torch.Tensor, size: int) -> torch.Tensor:
    """``(t, H, W, 3)`` uint8 (or float in [0, 255]) -> ``(t, 3, h, w)`` float in [0, 255]: means of square
    blocks of the centre ``h * block x w * block`` pixels, an exact box filter like the decoders' area scaling."""
    height, width = frames.shape[1:3]
    block = _block(height, width, size)
    x = frames.permute(0, 3, 1, 2)  # (t, 3, H, W)
    if block == 1:
        return x.float()
    h, w = height // block, width // block
    top, left = (height - h * block) // 2, (width - w * block) // 2
    x = x[:, :, top : top + h * block, left : left + w * block]
    return torch.cat([F.avg_pool2d(part.float(), block) for part in x.split(_BATCH)])


def analysis_frames(frames: torch.Tensor, config: DynamismConfig = DynamismConfig()) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, h, w, 3)`` float in [0, 255] at :func:`analysis_size`: what the filter
    looks at, small enough to keep for a whole video (``lvg prepare`` keeps them for the full, uncropped
    frames while it resizes those for training). Measure them with ``source_size=(H, W)``. Not rounded
    to uint8: at 1080p rounding the block means would add a flicker of ~8 to a static shot."""
    return _block_mean(frames, config.size).permute(0, 2, 3, 1).contiguous()


def _sampled_chunks(
    frames_or_reader: torch.Tensor | VideoReader, fps: float | None, config: DynamismConfig
) -> tuple[Iterator[torch.Tensor], tuple[int, int]]:
    """``(t, H, W, 3)`` chunks of the frames sampled at ``config.sample_fps``, and the frame size."""
    if isinstance(frames_or_reader, VideoReader):
        info = frames_or_reader.info
        stride = sample_stride(fps or info.fps, config)
        size = analysis_size(info.height, info.width, config.size)  # the decoder scales (area): no full-size frames
        chunks = (frames for _, frames in frames_or_reader.iter_chunks(config.chunk, stride, size=size))
        return chunks, (info.height, info.width)
    if not isinstance(frames_or_reader, torch.Tensor):
        got = type(frames_or_reader).__name__
        raise ValueError(f"measure_motion: expected a (T, H, W, 3) uint8 tensor or a VideoReader, got {got}.")
    frames = frames_or_reader
    if frames.dtype not in (torch.uint8, torch.float32) or frames.ndim != 4 or frames.shape[-1] != 3:
        got = f"{frames.dtype} {tuple(frames.shape)}"
        raise ValueError(f"measure_motion: frames must be uint8 (T, H, W, 3) (or analysis_frames' float32), got {got}.")
    if fps is None:
        raise ValueError("measure_motion: pass fps= with a frame tensor (frames are sampled at a fixed rate).")
    return iter(frames[:: sample_stride(fps, config)].split(config.chunk)), tuple(frames.shape[1:3])


def measure_motion(
    frames_or_reader: torch.Tensor | VideoReader,
    config: DynamismConfig = DynamismConfig(),
    *,
    fps: float | None = None,
    flow: FlowFn | None = None,
    source_size: tuple[int, int] | None = None,
) -> Motion:
    """How much a shot moves (structured change, or mean flow magnitude with ``flow``) and flickers.

    Args:
        frames_or_reader: ``(T, H, W, 3)`` uint8 RGB frames (or :func:`analysis_frames`), or a reader (streamed).
        config: sampling rate and size.
        fps: frame rate of a frame tensor (required then); overrides a reader's own.
        flow: optional optical-flow model, see :data:`FlowFn`.
        source_size: ``(H, W)`` of the video ``frames`` were shrunk from by :func:`analysis_frames`
            (the flicker is scaled to its pixels); None: the frames are the video's.

    Returns:
        The measure; zeros when fewer than two frames are sampled (a single frame does not move).
    """
    chunks, frame_size = _sampled_chunks(frames_or_reader, fps, config)
    fine = coarse = flow_total = 0.0
    pairs, last, shape, kernel = 0, None, (1, 1), (1, 1)
    for chunk in chunks:
        x = _block_mean(chunk, config.size).div_(255)  # (t, 3, h, w)
        shape = x.shape[-2:]
        kernel = (min(2, shape[0]), min(2, shape[1]))  # 2x2 pixels; fewer along a side of one pixel
        if last is not None:
            x = torch.cat([last, x])
        last = x[-1:]
        if len(x) < 2:
            continue
        grey = torch.einsum("tchw,c->thw", x, _LUMA) * 255  # (t, h, w)
        change = (grey[1:] - grey[:-1])[:, None]  # (t - 1, 1, h, w)
        fine += change.abs().mean(dim=(1, 2, 3)).sum().item()
        coarse += F.avg_pool2d(change, kernel).abs().mean(dim=(1, 2, 3)).sum().item()
        if flow is not None:
            with torch.no_grad():
                uv = flow(x[:-1], x[1:])  # (t - 1, 2, h, w)
            flow_total += uv.norm(dim=1).mean(dim=(1, 2)).sum().item()
        pairs += len(x) - 1
    if not pairs:
        return Motion(0.0, 0.0)
    fine, coarse = fine / pairs, coarse / pairs
    # White change keeps 1/sqrt(k) of its mean magnitude under a k-pixel average, structured change all of it.
    white_loss = 1 - 1 / math.sqrt(kernel[0] * kernel[1])
    white = min(1.0, max(0.0, (1 - coarse / fine) / white_loss)) if fine > 0 and white_loss > 0 else 0.0
    height, width = source_size or frame_size
    source_pixels = height * width / (shape[0] * shape[1])
    score = flow_total / pairs if flow is not None else fine * (1 - white)
    return Motion(score, fine * white * math.sqrt(source_pixels))


def dynamism_verdict(motion: Motion, config: DynamismConfig = DynamismConfig()) -> str | None:
    """None to keep a shot, else why it is dropped (``"static: ..."`` or ``"chaotic: ..."``)."""
    if motion.flicker > config.max_flicker:  # first: pure noise has no structured change and would read as static
        return f"chaotic: pixel flicker {motion.flicker:.1f} > max_flicker {config.max_flicker:g} (noise, not motion)"
    if motion.score < config.lower:
        return f"static: score {motion.score:.2f} < lower {config.lower:g}"
    if motion.score > config.upper:
        return f"chaotic: score {motion.score:.2f} > upper {config.upper:g}"
    return None
