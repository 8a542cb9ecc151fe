"""Media IO below every stage: reading and writing mp4 video with PyAV, loading images.

Frames are ``(T, H, W, 3)`` uint8 RGB numpy arrays. Lossless writing uses ``libx264rgb`` at ``qp 0`` (RGB, no
chroma subsampling): decoded pixels equal the written ones exactly, which the toy world's ground truth relies
on. Lossy writing uses ``libx264`` yuv420p at ``crf 18``. Encoding is single-threaded and the mp4 carries no
creation time, so identical frames give byte-identical files. Files are written to a temporary name and
renamed, so a crash never leaves a half-written video under the final name.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lvg.io import publish


class VideoWriter:
    """Stream frames into an mp4 as they are produced; the file appears under ``path`` only on close.

    ``with VideoWriter(path, fps) as w: w.write(frames)`` -- memory stays flat however long the
    video. If the block raises, the partial file is removed and ``path`` is left untouched.
    """

    def __init__(self, path: str | Path, fps: float, *, lossless: bool = True):
        if not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"VideoWriter({path}): fps must be a finite number > 0, got {fps!r}.")
        self.path, self.fps, self.lossless = Path(path), fps, lossless
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".mp4")
        os.close(fd)
        self._container = av.open(self._tmp, "w", format="mp4")
        self._stream = None
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        """Append ``(T, H, W, 3)`` uint8 frames."""
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
            raise ValueError(f"VideoWriter({self.path}): frames must be a uint8 array (T, H, W, 3), got {got}.")
        if self._stream is None:
            if not self.lossless and (frames.shape[1] % 2 or frames.shape[2] % 2):
                raise ValueError(
                    f"VideoWriter({self.path}): lossy yuv420p needs even height and width, got {frames.shape[1:3]}; "
                    "crop or pad the frames, or write with lossless=True."
                )
            rate = Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream("libx264rgb" if self.lossless else "libx264", rate=rate)
            self._stream.width, self._stream.height = frames.shape[2], frames.shape[1]
            self._stream.pix_fmt = "rgb24" if self.lossless else "yuv420p"
            lossless, lossy = {"qp": "0", "preset": "veryfast"}, {"crf": "18", "preset": "medium"}
            self._stream.options = lossless if self.lossless else lossy
            self._stream.thread_count = 1  # one thread: byte-identical files for identical frames
        elif (frames.shape[2], frames.shape[1]) != (self._stream.width, self._stream.height):
            raise ValueError(f"VideoWriter({self.path}): frame size changed to {frames.shape[1:3]}.")
        for frame in frames:
            self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        self.frames_written += len(frames)

    def close(self) -> None:
        """Flush and move the finished file into place."""
        if self._stream is None:
            self.abort()
            raise ValueError(f"VideoWriter({self.path}): no frames were written.")
        self._container.mux(self._stream.encode())
        self._container.close()
        publish(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial file."""
        self._container.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | Path, frames: np.ndarray, fps: float, *, lossless: bool = True) -> None:
    """Write ``frames`` ``(T, H, W, 3)`` uint8 to an mp4 at ``fps`` (H and W even unless lossless)."""
    with VideoWriter(path, fps, lossless=lossless) as writer:
        writer.write(frames)


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames of a video as ``(T, H, W, 3)`` uint8 RGB, and its frame rate."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Video {path} {'is a directory' if path.is_dir() else 'does not exist'}.")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"Video {path} has no video stream.")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except av.error.FFmpegError as err:
        raise ValueError(f"Video {path} is unreadable ({err}).") from err
    if not frames:
        raise ValueError(f"Video {path} decodes to no frames.")
    return np.stack(frames), fps


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")


def frame_strip(videos: list[np.ndarray], frames: int = 8, scale: int = 4, gap: int = 2) -> np.ndarray:
    """One row per video of ``frames`` frames evenly spaced from first to last, ``(H', W', 3)`` uint8.

    Rows of videos shorter than the longest are spread over their own length (a ground-truth clip
    next to a longer generation shows its own first and last frame). ``scale`` enlarges every pixel
    (nearest neighbour: toy frames stay crisp); ``gap`` white pixels separate frames and rows.
    """
    if not videos:
        raise ValueError("frame_strip needs at least one video.")
    if frames < 1 or scale < 1 or gap < 0:
        raise ValueError(f"frame_strip: frames and scale must be >= 1 and gap >= 0, got {frames}, {scale}, {gap}.")
    h, w = videos[0].shape[1:3]
    if any(v.ndim != 4 or v.shape[1:] != videos[0].shape[1:] or v.dtype != np.uint8 for v in videos):
        raise ValueError(f"frame_strip: every video must be uint8 (T, {h}, {w}, 3), got "
                         f"{[(v.dtype.name, v.shape) for v in videos]}.")
    hs, ws = h * scale, w * scale
    strip = np.full((len(videos) * (hs + gap) - gap, frames * (ws + gap) - gap, 3), 255, dtype=np.uint8)
    for row, video in enumerate(videos):
        picks = np.linspace(0, len(video) - 1, frames).round().astype(int)
        for col, t in enumerate(picks):
            y, x = row * (hs + gap), col * (ws + gap)
            strip[y : y + hs, x : x + ws] = video[t].repeat(scale, 0).repeat(scale, 1)
    return strip


def load_image(path: str, size: tuple[int, int] | None) -> torch.Tensor:
    """An image file (or a video's first frame) as ``(1, 3, H, W)`` uint8, resized and centre-cropped to ``size``."""
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        image = Image.fromarray(read_video(path)[0][0])
    else:
        try:
            image = Image.open(path).convert("RGB")
        except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
            raise ValueError(f"Start image {path} cannot be read ({err}); pass a PNG or JPEG file.") from err
    if size is not None and image.size != (size[1], size[0]):
        h, w = size
        scale = max(w / image.width, h / image.height)
        image = image.resize((max(w, round(image.width * scale)), max(h, round(image.height * scale))), Image.LANCZOS)
        left, top = (image.width - w) // 2, (image.height - h) // 2
        image = image.crop((left, top, left + w, top + h))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)
