"""Reading and writing mp4 video with PyAV. Frames are ``(T, H, W, 3)`` uint8 RGB numpy arrays.

Lossless writing uses ``libx264rgb`` at ``qp 0`` (RGB, no chroma subsampling): decoded pixels equal
the written ones exactly, which the toy world's ground truth relies on. Files are written to a
temporary name and renamed, so a crash never leaves a half-written video under the final name.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: str | Path, frames: np.ndarray, fps: float, *, lossless: bool = True) -> None:
    """Write ``frames`` ``(T, H, W, 3)`` uint8 to an mp4 at ``fps`` (H and W even unless lossless)."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"write_video({path}): frames must be a uint8 array (T, H, W, 3), got {got}.")
    if len(frames) == 0 or fps <= 0:
        raise ValueError(f"write_video({path}): need at least one frame and fps > 0, got {len(frames)} frames at {fps}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    try:
        with av.open(tmp, "w", format="mp4") as container:
            stream = container.add_stream("libx264rgb" if lossless else "libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "rgb24" if lossless else "yuv420p"
            stream.options = {"qp": "0", "preset": "veryfast"} if lossless else {"crf": "18", "preset": "medium"}
            stream.thread_count = 1  # one thread: byte-identical files for identical frames
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames of a video as ``(T, H, W, 3)`` uint8 RGB, and its frame rate."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Video {path} does not exist.")
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
