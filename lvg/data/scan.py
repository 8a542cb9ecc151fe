"""The scan of one video -- what clips it gives and why the rest are dropped -- with its worker pool and its log.

One clip path serves ``lvg prepare`` (:mod:`lvg.data.prepare`) and the raw-clip datamodule
(:class:`~lvg.data.streaming.RawClipDataModule`):

* :func:`scan_video` decides a video from a :class:`Task`: file checks, decode (range, bucket resize),
  shot cuts, length and dynamism filters. Every drop has a code and a reason: ``missing_file``,
  ``empty_file``, ``unreadable``, ``too_long``, ``too_short`` for the whole video, ``short_shot``,
  ``static``, ``chaotic`` for one shot.
* :func:`scan_all` runs scans in a pool of worker processes where one crashing video is reported as
  ``worker_crash``, not a dead run.
* :class:`ScanLog` is the record of what a file gave: one JSON line per scanned video (``id``,
  ``path``, ``stat`` = size and mtime, ``settings`` = a digest of the task's filter settings, ``fps``,
  ``frames``, ``code``, ``reason``, bucket ``size`` and ``shots``). ``lvg prepare`` appends its encode
  results (``clips``, ``dropped``) to the same line, in ``prepare_log.jsonl``; the datamodule keeps the
  same log in its ``cache_dir``, so each reads what the other wrote.
* :func:`read_clip` decodes a kept clip again from its record (the datamodule, every epoch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any, NamedTuple

import torch

from lvg.data.cuts import CutDetectorConfig, detect_cuts, split_shots
from lvg.data.dynamism import DynamismConfig, analysis_frames, dynamism_verdict, measure_motion, sample_stride
from lvg.data.reader import VideoReadError, bucket_size, open_video, resize_to_bucket

log = logging.getLogger(__name__)

LOG = "prepare_log.jsonl"  # the scan log's name, in a shard directory and in a raw-clip cache_dir alike
CHUNK = 64  # frames decoded (and resized) at a time
WORKER_CRASH = "the worker process died (crash or out of memory) while on this video"


class ScanError(ValueError):
    """The worker processes cannot scan at all (they die before any video is done)."""


@dataclass(frozen=True)
class Task:
    """What a worker needs to scan one video (picklable). All fields but ``id`` and ``path`` are the
    settings the decision depends on (:meth:`settings`)."""

    id: str
    path: str
    start: float | None
    """Seconds; None: from the first frame."""
    end: float | None
    """Seconds; None: to the last frame."""
    min_frames: int
    """Pixel frames of the shortest clip kept (one training section)."""
    max_frames: int
    buckets: list[tuple[int, int]] | None
    multiple: int
    """Without buckets, frame sides are rounded down to a multiple of this (codec factor x DiT patch)."""
    cuts: CutDetectorConfig | None
    """None: no shot splitting."""
    dynamism: DynamismConfig | None
    """None: no dynamism filter (scores are still measured for the report)."""
    num_frames: int | None = None
    """The manifest's claim of the frame count (checked against ``max_frames`` before decoding), if any."""

    def settings(self) -> str:
        """A digest of everything but the file that decides the scan: a record with another digest is stale."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("id", "path")}
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Clip:
    """One shot of a video: kept (``code`` None) or dropped (``code`` and ``reason`` set)."""

    shot: int
    start: int
    """First frame in the source file."""
    end: int
    """One past the last frame in the source file."""
    frames: torch.Tensor | None = None
    """``(T, h, w, 3)`` uint8 resized to the bucket, for a kept shot of a scan asked to keep frames."""
    motion: float | None = None
    code: str | None = None
    reason: str | None = None


@dataclass
class Scan:
    """A worker's answer for one video."""

    id: str
    path: str = ""
    stat: list[int] | None = None
    """``[size, mtime_ns]`` of the file when the scan began; None: nothing to record (missing file, crash)."""
    settings: str = ""
    """:meth:`Task.settings` of the scan."""
    fps: float = 0.0
    frames: int = 0
    """Frames decoded (inside ``start``/``end``)."""
    size: tuple[int, int] | None = None
    """The bucket (h, w) kept clips are resized to."""
    clips: list[Clip] = field(default_factory=list)
    code: str | None = None
    """Why the whole video was refused, or None."""
    reason: str | None = None

    def kept(self) -> list[Clip]:
        """The shots that pass every filter."""
        return [c for c in self.clips if c.code is None]

    def clip_id(self, clip: Clip) -> str:
        """``<id>-s<k>`` for a video split at cuts (``k`` counts dropped shots too), else the video's ``id``."""
        return f"{self.id}-s{clip.shot}" if len(self.clips) > 1 else self.id

    def record(self) -> dict[str, Any]:
        """The log line of this scan (no frames)."""
        return {"id": self.id, "path": self.path, "stat": self.stat, "settings": self.settings, "fps": self.fps,
                "frames": self.frames, "code": self.code, "reason": self.reason,
                "size": None if self.size is None else list(self.size),
                "shots": [{"shot": c.shot, "start": c.start, "end": c.end, "motion": c.motion, "code": c.code,
                           "reason": c.reason} for c in self.clips]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Scan:
        """The scan a log line records (its clips without frames)."""
        clips = [Clip(s["shot"], s["start"], s["end"], motion=s["motion"], code=s["code"], reason=s["reason"])
                 for s in record["shots"]]
        size = None if record["size"] is None else tuple(record["size"])
        return cls(record["id"], record["path"], record["stat"], record["settings"], record["fps"], record["frames"],
                   size, clips, record["code"], record["reason"])


def file_stat(path: str | Path) -> list[int] | None:
    """``[size, mtime_ns]`` of a file; None when there is no file (missing, a directory): nothing to record."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns] if S_ISREG(st.st_mode) else None


def precheck(task: Task) -> tuple[str, str] | None:
    """Problems found without decoding, as ``(code, reason)``, or None."""
    path = Path(task.path)
    if not path.is_file():
        return "missing_file", f"{path} {'is a directory' if path.is_dir() else 'does not exist'}"
    if path.stat().st_size == 0:
        return "empty_file", f"{path} is empty (0 bytes)"
    if (task.num_frames or 0) > task.max_frames:
        return "too_long", f"the manifest declares {task.num_frames} frames > max_frames={task.max_frames}"
    return None


class _Refused(Exception):
    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class _Decoded(NamedTuple):
    frames: torch.Tensor
    """``(T, h, w, 3)`` uint8: the task's time range resized to its bucket."""
    samples: torch.Tensor
    """Every ``sample_stride``-th frame of the range at the dynamism filter's analysis size, uncropped:
    the filter judges the picture, not the bucket's centre (a thin frame's motion may lie outside it)."""
    fps: float
    first: int
    """The range's first frame index."""
    source_size: tuple[int, int]
    size: tuple[int, int]


def _decode(task: Task) -> _Decoded:
    """Decode ``task``'s time range chunk by chunk (memory holds bucket-size frames and small samples only)."""
    dynamism = task.dynamism or DynamismConfig()
    with open_video(task.path) as reader:
        info = reader.info  # frame count and rate checked against the stream, not the header's word
        stride = sample_stride(info.fps, dynamism)
        if info.num_frames > task.max_frames:
            raise _Refused("too_long", f"{info.num_frames} frames > max_frames={task.max_frames}")
        first, last = reader.range_indices(task.start or 0.0, task.end) if task.start or task.end else (0, None)
        if task.buckets:
            size = bucket_size(info.height, info.width, task.buckets)
        else:
            size = (info.height - info.height % task.multiple, info.width - info.width % task.multiple)
        if min(size) < task.multiple:
            raise _Refused("unreadable", f"frame size {info.height}x{info.width} is too small to encode")
        stop_at = info.num_frames if last is None else min(last, info.num_frames)
        chunks, samples, index = [], [], first
        while index < min(stop_at, reader.info.num_frames):
            stop = min(index + CHUNK, stop_at, reader.info.num_frames)
            try:
                frames = reader.read(range(index, stop))
            except VideoReadError:
                if reader.info.num_frames >= stop:
                    raise
                continue  # the decoder ended before the index (a corrupt tail); the reader now knows the real count
            chunks.append(resize_to_bucket(frames, size))
            samples.append(analysis_frames(frames[(first - index) % stride :: stride], dynamism))
            index = stop
    if not chunks:
        raise _Refused("unreadable", f"no frame decodes in frames [{first}, {last})")
    return _Decoded(torch.cat(chunks), torch.cat(samples), float(info.fps), first, (info.height, info.width), size)


def scan_video(task: Task, keep_frames: bool = True) -> Scan:
    """Check, decode, split at cuts and decide every shot of one video (runs in a worker process).

    Args:
        task: the video and the filter settings.
        keep_frames: hand back the kept clips' frames (``lvg prepare`` encodes them); False: the
            decisions only, so a worker does not send whole videos back to be thrown away.
    """
    scan = Scan(task.id, os.path.abspath(task.path), file_stat(task.path), task.settings())
    try:
        problem = precheck(task)
        if problem is not None:
            raise _Refused(*problem)
        video, samples, scan.fps, first, source_size, scan.size = _decode(task)
        scan.frames = total = len(video)
        dynamism = task.dynamism or DynamismConfig()
        stride = sample_stride(scan.fps, dynamism)
        if total < task.min_frames:
            raise _Refused("too_short", f"{total} frame{'s' * (total != 1)} < {task.min_frames} (one training section)")
        shots = split_shots(total, detect_cuts(video, task.cuts), 1) if task.cuts is not None else [(0, total)]
        for k, (s, e) in enumerate(shots):
            clip = Clip(k, first + s, first + e)
            scan.clips.append(clip)
            if e - s < task.min_frames:
                clip.code = "short_shot"
                clip.reason = f"shot of {e - s} frames < {task.min_frames} (one training section)"
                continue
            # the samples inside the shot; they are one sample apart already (fps = the sampling rate)
            shot_samples = samples[-(-s // stride) : -(-e // stride)]
            motion = measure_motion(shot_samples, dynamism, fps=dynamism.sample_fps, source_size=source_size)
            clip.motion = motion.score
            verdict = dynamism_verdict(motion, task.dynamism) if task.dynamism is not None else None
            if verdict is not None:  # "static: ..." or "chaotic: ..."
                clip.code, clip.reason = verdict.split(":", 1)[0], verdict
            elif keep_frames:
                clip.frames = video[s:e]
    except _Refused as refused:
        scan.code, scan.reason, scan.clips = refused.code, refused.reason, []
    except VideoReadError as err:  # names the file and the reason: not a video, truncated, no video stream ...
        scan.code, scan.reason, scan.clips = "unreadable", str(err), []
    except Exception as err:  # decoders raise many types on damaged media; one bad file must not stop the run
        scan.code, scan.reason, scan.clips = "unreadable", f"{type(err).__name__}: {err}", []
    return scan


def _init_worker() -> None:
    torch.set_num_threads(1)  # N workers share the CPU; decoding threads are the codec's own


def scan_all(tasks: list[Task], workers: int, keep_frames: bool = True) -> Iterator[Scan]:
    """Scans of ``tasks`` (in the order they finish): in this process (``workers=0``) or in ``workers``
    spawn processes with two tasks in flight per worker (memory stays bounded).

    Why a process pool and not DataLoader workers: a video that kills its decoder (segfault, out of
    memory) breaks only the pool, whose loss is seen here (``BrokenProcessPool``) -- a DataLoader
    would end the whole run. The tasks in flight are then run again one at a time in a fresh pool,
    so only the video that crashes a worker alone is reported, as ``worker_crash`` (never
    recorded: a rerun retries it). ``spawn``: no forked copy of a parent holding CUDA or threads.
    If two workers die alone before any video is done, the workers cannot work at all:
    :class:`ScanError`.
    """
    if workers <= 0:
        yield from (scan_video(task, keep_frames) for task in tasks)
        return
    queue, suspects = deque(tasks), deque()
    finished = lone_crashes = 0
    while queue or suspects:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
        pending: dict[Future, Task] = {}
        try:
            while queue or suspects or pending:
                if suspects:  # after a crash: alone, so a crash names its video
                    if not pending:
                        task = suspects.popleft()
                        pending[pool.submit(scan_video, task, keep_frames)] = task
                else:
                    while queue and len(pending) < 2 * workers:
                        task = queue.popleft()
                        pending[pool.submit(scan_video, task, keep_frames)] = task
                wait(pending, return_when=FIRST_COMPLETED)
                lost = []
                for future in [f for f in pending if f.done()]:
                    task = pending.pop(future)
                    try:
                        scan = future.result()
                    except BrokenProcessPool:
                        lost.append(task)
                        continue
                    finished += 1
                    yield scan
                if not lost:
                    continue
                lost += pending.values()  # the pool is gone: what is still in flight is lost too
                if len(lost) == 1:
                    lone_crashes += 1
                    if finished == 0 and lone_crashes == 2:
                        raise ScanError("decoding worker processes die before finishing any video; scan with 0 "
                                        "workers (lvg prepare --workers 0, a datamodule's num_workers: 0) to see "
                                        "the error in this process.")
                    yield Scan(lost[0].id, code="worker_crash", reason=WORKER_CRASH)
                else:
                    suspects.extend(lost)
                break
        finally:  # also when the caller stops early (--strict, Ctrl-C) or after a crash: drop the queued tasks
            pool.shutdown(wait=True, cancel_futures=True)


class ScanLog:
    """The records of scanned videos in one append-only JSONL file (``prepare_log.jsonl``).

    Each record is written with one ``write`` and fsync'ed, so a kill loses at most the line being
    written; lines that do not parse (a torn last line, a damaged file) are skipped with a warning
    and their videos are scanned again. A later line for the same video wins.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._scans: dict[tuple[str, str], Scan] = {}  # by (absolute path, settings)
        self._encoded: dict[str, dict[str, Any]] = {}  # records with lvg prepare's encode results, by video id
        if not self.path.is_file():
            return
        text, damaged = self.path.read_text(), 0
        for line in text.splitlines():
            try:
                damaged += not self._index(json.loads(line))
            except (json.JSONDecodeError, TypeError, KeyError):  # not JSON, not a mapping, a field missing
                damaged += 1
        if damaged:
            log.warning("%s: %d damaged line%s skipped; those videos are scanned again.", self.path, damaged,
                        "s" * (damaged != 1))
        if text and not text.endswith("\n"):  # a torn last line: the next record starts on a line of its own
            with self.path.open("a") as f:
                f.write("\n")

    def scan(self, task: Task) -> Scan | None:
        """The recorded scan of ``task``'s file with ``task``'s settings, if the file is unchanged since."""
        scan = self._scans.get((os.path.abspath(task.path), task.settings()))
        return scan if scan is not None and scan.stat == file_stat(task.path) else None

    def entry(self, task: Task) -> dict[str, Any] | None:
        """``lvg prepare``'s record of ``task`` (with encode results), if its file and settings are unchanged
        since. Records of older versions carry no settings: their directory's stamp vouches for them."""
        record = self._encoded.get(task.id)
        if record is None or record["stat"] != file_stat(task.path):
            return None
        return record if record.get("settings", task.settings()) == task.settings() else None

    def append(self, record: dict[str, Any]) -> None:
        """Add one record (a :meth:`Scan.record`, with ``lvg prepare``'s encode results or without) at the end."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, data)  # one write in append mode: concurrent writers (ranks) do not interleave lines
            os.fsync(fd)
        finally:
            os.close(fd)
        self._index(record)

    def _index(self, record: dict[str, Any]) -> bool:
        """File ``record`` under its keys (KeyError for a field missing); False when it is no record at all."""
        if "shots" in record:  # lvg prepare's records from before the shared log have no shots: not a scan
            scan = Scan.from_record(record)
            self._scans[scan.path, scan.settings] = scan
        encoded = "clips" in record and "stat" in record  # resume compares the stat: a record without one is damaged
        if encoded:
            self._encoded[record["id"]] = record
        return "shots" in record or encoded


def read_clip(path: str, start: int, end: int, size: tuple[int, int], chunk: int = CHUNK) -> torch.Tensor:
    """Frames ``[start, end)`` of a video resized + centre-cropped to ``size``: ``(T, h, w, 3)`` uint8.

    Decoded ``chunk`` frames at a time, so memory holds one chunk at source size (what the scan does
    for the same clip; the frames are identical).
    """
    with open_video(path) as reader:
        parts = [resize_to_bucket(reader.read(range(i, min(i + chunk, end))), size) for i in range(start, end, chunk)]
    return torch.cat(parts)
