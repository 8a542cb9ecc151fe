"""``lvg prepare``: manifest -> decode -> shot cuts -> length and dynamism filters -> bucket resize
-> latents + text/image features -> shards (:mod:`lvg.data.shards`) and a report.

Usage::

    lvg prepare --config configs/teacher_forcing.yaml --manifest data/x.jsonl --workers 4
    lvg prepare --manifest data/x.jsonl --validate_only          # list every bad row, nothing else
    lvg prepare import-mira META.csv data/mira.jsonl --root VIDEO_DIR
    lvg prepare import-sekai META.csv data/sekai.jsonl --root CLIP_DIR

The ``data:`` section of a training config names the datamodule; its ``encoders()`` encode and its
``shard_dir`` receives the shards (``--out`` overrides), so a dataset is prepared with the same
YAML it is trained with. Other top-level keys of that YAML (``model``, ``trainer``, ...) are ignored.

Where the work happens: ``--workers N`` processes (``spawn``) open, decode, cut, filter and resize
videos on the CPU; the main process encodes the kept clips with the encoders where they live (the
VAE on its GPU) and writes the shards. ``--workers 0`` does everything in the main process.

Clips: a video without cuts keeps its ``id``; a video split at cuts gives ``<id>-s<k>`` (``k`` = shot
number in the video, counting dropped shots too, so ids do not move when filters change). Shard
metadata keeps ``source`` (the manifest's ``video``), ``source_id``, ``start_frame`` / ``end_frame``
(frame range in the source file) and the motion score.

Bad input never stops a run (unless ``--strict``): each problem is counted and reported with its
reason -- ``bad_row`` (manifest), ``missing_file``, ``empty_file``, ``unreadable`` (not a video,
truncated, corrupt), ``too_long`` (more than ``max_frames`` in the manifest's ``num_frames`` or in the
stream's packet count -- a container header's claim is never trusted), ``too_short``
(shorter than one training section, 1-frame videos included), ``short_shot`` (a shot between cuts
too short to train on), ``static`` / ``chaotic`` (the dynamism filter), ``worker_crash``, ``encode_error``.
``--strict`` raises at the first input error (the first six) naming the item.

Resume: shards are written atomically; after a video's shards, one line is appended to
``prepare_log.jsonl`` (its clips, drops and the file's size and mtime). A rerun skips the videos
logged with an unchanged file and existing shards -- also those that gave no clip, so they are not
decoded again -- and redoes the rest (a torn last log line is ignored; ``worker_crash`` and
``encode_error`` are not logged, so they are retried). ``index.json`` is rebuilt
from the log every ``index_every`` videos and at the end, so training sees only finished shards.
A finished directory reprepared does nothing but rewrite ``index.json`` and the report
(``prepare_report.json`` + ``prepare_report.md``). Settings and encoders are stamped in
``prepare.json``; preparing into a directory made with others is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from lvg.config import DTYPES
from lvg.data.cuts import CutDetectorConfig, detect_cuts, split_shots
from lvg.data.dynamism import DynamismConfig, analysis_frames, dynamism_verdict, measure_motion, sample_stride
from lvg.data.manifest import validate_manifest
from lvg.data.reader import VideoReadError, bucket_size, open_video, resize_to_bucket
from lvg.data.shards import FORMAT, INDEX, describe, write_shard
from lvg.io import atomic_write_text
from lvg.models.encoders import Encoders, encoders_of

log = logging.getLogger(__name__)

LOG = "prepare_log.jsonl"
STAMP = "prepare.json"
REPORT = "prepare_report"
# Problems of the input itself (what --strict stops at); the other reasons are filter decisions.
INPUT_ERRORS = ("bad_row", "missing_file", "empty_file", "unreadable", "too_long", "too_short")
CHUNK = 64  # frames decoded (and resized) at a time


class PrepareError(ValueError):
    """A bad input item under ``--strict`` (or a prepare setting that cannot work)."""


@dataclass
class PrepareConfig:
    """Settings of ``lvg prepare`` (the filters and what is stored)."""

    min_latent_frames: int | None = None
    """Shots shorter than this many latent frames (one training section: ``1 + window``) are dropped;
    None: the datamodule's ``min_latent_frames`` (2 when it has none)."""
    min_frames: int = 2
    """Shots shorter than this many pixel frames are dropped whatever the codec."""
    max_frames: int = 100_000
    """Videos with more frames (the manifest's ``num_frames`` or the stream's packet count; a header's
    claim is never trusted) are refused: a clip is held in memory at bucket size while it is encoded."""
    buckets: list[tuple[int, int]] | None = None
    """(height, width) sizes clips are resized + centre-cropped to (the nearest aspect ratio wins);
    None: the encoders' ``frame_size``, or the source size rounded down to the codec's multiple."""
    split_shots: bool = True
    """Split videos at shot cuts (otherwise a video is one clip)."""
    cuts: CutDetectorConfig = field(default_factory=CutDetectorConfig)
    """Shot-cut detector settings."""
    filter_dynamism: bool = True
    """Drop clips whose motion score is outside ``dynamism``'s bounds."""
    dynamism: DynamismConfig = field(default_factory=DynamismConfig)
    """Dynamism filter settings."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Stored dtype of latents and features."""
    index_every: int = 16
    """Rewrite ``index.json`` after this many finished videos (it is always written at the end)."""


# The toy world through the real pipeline. Its videos are single shots by construction, and in
# short ones (2-3 s) a sprite crossing the frame in a few steps looks like a cut to the detector,
# so they are not split. They score 1-3 on the dynamism scale (lower bound 0.5): all are kept, at
# every length (training drops what is shorter than its own min_latent_frames at load time).
TOY_PREPARE = PrepareConfig(min_latent_frames=2, split_shots=False)


# --- per video: decode, cut, filter, resize (worker side) ----------------------------------------


@dataclass(frozen=True)
class Task:
    """What a worker needs to scan one video (picklable)."""

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


@dataclass
class Clip:
    """One shot of a video: kept (``frames`` set) or dropped (``code`` and ``reason`` set)."""

    shot: int
    start: int
    """First frame in the source file."""
    end: int
    """One past the last frame in the source file."""
    frames: torch.Tensor | None = None  # (T, h, w, 3) uint8, resized to the bucket
    motion: float | None = None
    code: str | None = None
    reason: str | None = None


@dataclass
class Scan:
    """A worker's answer for one video."""

    id: str
    fps: float = 0.0
    frames: int = 0
    """Frames decoded (inside ``start``/``end``)."""
    clips: list[Clip] = field(default_factory=list)
    code: str | None = None
    """Why the whole video was refused, or None."""
    reason: str | None = None


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
    return _Decoded(torch.cat(chunks), torch.cat(samples), float(info.fps), first, (info.height, info.width))


def scan_video(task: Task) -> Scan:
    """Decode one video, split it at cuts and decide for every shot (runs in a worker process)."""
    scan = Scan(task.id)
    try:
        video, samples, scan.fps, first, source_size = _decode(task)
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
                clip.code, clip.reason = "short_shot", f"shot of {e - s} frames < {task.min_frames} (one training section)"
                continue
            # the samples inside the shot; they are one sample apart already (fps = the sampling rate)
            shot_samples = samples[-(-s // stride) : -(-e // stride)]
            motion = measure_motion(shot_samples, dynamism, fps=dynamism.sample_fps, source_size=source_size)
            clip.motion = motion.score
            verdict = dynamism_verdict(motion, task.dynamism) if task.dynamism is not None else None
            if verdict is not None:  # "static: ..." or "chaotic: ..."
                clip.code, clip.reason = verdict.split(":", 1)[0], verdict
            else:
                clip.frames = video[s:e]
    except _Refused as refused:
        scan.code, scan.reason, scan.clips = refused.code, refused.reason, []
    except VideoReadError as err:  # names the file and the reason: not a video, truncated, no video stream ...
        scan.code, scan.reason, scan.clips = "unreadable", str(err), []
    except Exception as err:  # noqa: BLE001 -- decoders raise many types on damaged media; one bad file must not stop the run
        scan.code, scan.reason, scan.clips = "unreadable", f"{type(err).__name__}: {err}", []
    return scan


def _init_worker() -> None:
    torch.set_num_threads(1)  # N workers share the CPU; decoding threads are the codec's own


def scan_all(tasks: list[Task], workers: int) -> Iterator[Scan]:
    """Scans of ``tasks``: in this process (``workers=0``) or a spawn pool with a few tasks in flight
    per worker (memory stays bounded). A crashed worker (segfault, out of memory) fails the tasks in
    flight, not the run; a fresh pool takes the rest. Two pools in a row that finish nothing stop the run."""
    if workers <= 0:
        yield from map(scan_video, tasks)
        return
    queue, idle_pools = list(reversed(tasks)), 0
    while queue:
        if idle_pools == 2:
            raise PrepareError("decoding worker processes die before finishing any video; run with --workers 0 "
                               "to see the error in this process.")
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
        pending: dict[Future, Task] = {}
        broken = False
        idle_pools += 1
        try:
            while queue or pending:
                while queue and len(pending) < 2 * workers and not broken:
                    task = queue.pop()
                    pending[pool.submit(scan_video, task)] = task
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    task = pending.pop(future)
                    try:
                        scan = future.result()
                        idle_pools = 0
                    except BrokenProcessPool:  # the tasks in flight are lost with the pool, not logged: a rerun retries
                        broken = True
                        scan = Scan(task.id, code="worker_crash",
                                    reason="the worker process died (crash or out of memory) while on this video")
                    yield scan
        finally:  # also when the caller stops early (--strict, Ctrl-C): drop the queued tasks
            pool.shutdown(wait=True, cancel_futures=True)


# --- the run (main process: encode, write, log, report) -------------------------------------------


def _stat(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _read_log(path: Path) -> dict[str, dict[str, Any]]:
    """Finished videos by id. A torn last line (killed mid-write) is ignored and terminated, so the
    next entry appended starts on a line of its own."""
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    text = path.read_text()
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[entry["id"]] = entry
    if text and not text.endswith("\n"):
        with path.open("a") as f:
            f.write("\n")
    return done


def _append_log(path: Path, entry: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def usable_frames(codec, frames: int) -> int:
    """The leading frames of a ``frames``-long clip the codec encodes whole (e.g. ``4N - 3`` for a causal VAE)."""
    return codec.num_pixel_frames(codec.num_latent_frames(frames))


def encode_text(caption: str, encoders: Encoders, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``text (L, D)`` (valid tokens only), ``text_mask (L,)`` bool and ``pooled (D_pool,)`` of one caption."""
    text = encoders.text.encode([caption])
    valid = text.mask[0].cpu()
    return {"text": text.tokens[0].cpu()[valid].to(dtype), "text_mask": torch.ones(int(valid.sum()), dtype=torch.bool),
            "pooled": text.pooled[0].cpu().to(dtype)}


def encode_frames(frames: torch.Tensor, encoders: Encoders, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``latents (C, F, h', w')`` of ``frames (T, h, w, 3)`` uint8 (cut to :func:`usable_frames`), and ``image
    (L_i, D_img)`` of its first frame when there is an image encoder."""
    video = frames[: usable_frames(encoders.codec, len(frames))].permute(0, 3, 1, 2).unsqueeze(0)  # (1, T, 3, h, w)
    tensors = {"latents": encoders.codec.encode(video)[0].cpu().to(dtype)}
    if encoders.image is not None:
        tensors["image"] = encoders.image.encode(video[:, 0])[0].cpu().to(dtype)
    return tensors


def encode_clip(frames: torch.Tensor, caption: str, encoders: Encoders,
                dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The training tensors of one clip: :func:`encode_frames` and :func:`encode_text`. ``lvg prepare`` stores
    exactly these in a shard (the text mask as uint8) and the raw-clip datamodule yields them."""
    return {**encode_frames(frames, encoders, dtype), **encode_text(caption, encoders, dtype)}


def _encode(scan: Scan, row: dict[str, Any], encoders: Encoders, out: Path, dtype: torch.dtype) -> dict[str, Any]:
    """Encode and write the kept clips of one scanned video; return its log entry."""
    split = len(scan.clips) > 1
    entry: dict[str, Any] = {"id": row["id"], "stat": _stat(row["video_path"]), "fps": scan.fps,
                             "frames": scan.frames, "code": scan.code, "reason": scan.reason, "clips": [], "dropped": []}
    kept = [c for c in scan.clips if c.frames is not None]
    text = encode_text(row["caption"], encoders, dtype) if kept else {}  # once per video, shared by its shots
    for clip in scan.clips:
        clip_id = f"{row['id']}-s{clip.shot}" if split else row["id"]
        record = {"id": clip_id, "frames": clip.end - clip.start, "motion": clip.motion}
        if clip.frames is None:
            entry["dropped"].append({**record, "code": clip.code, "reason": clip.reason})
            continue
        usable = usable_frames(encoders.codec, len(clip.frames))
        try:
            tensors = {**encode_frames(clip.frames, encoders, dtype), **text}
        except (ValueError, RuntimeError) as err:  # e.g. a frame size the codec refuses, CUDA out of memory
            entry["dropped"].append({**record, "code": "encode_error", "reason": f"{type(err).__name__}: {err}"})
            continue
        tensors["text_mask"] = tensors["text_mask"].to(torch.uint8)  # the shard format's mask dtype
        meta = {"id": clip_id, "caption": row["caption"], "fps": scan.fps, "latent_frames": tensors["latents"].shape[1],
                "source": row["video"], "source_id": row["id"], "start_frame": clip.start,
                "end_frame": clip.start + usable, "motion": clip.motion}
        if "structured_caption" in row:
            meta["structured_caption"] = row["structured_caption"]
        write_shard(out / f"{clip_id}.safetensors", tensors, meta)
        entry["clips"].append({**record, "frames": usable, "file": f"{clip_id}.safetensors",
                               "latent_frames": meta["latent_frames"], "caption": row["caption"]})
    return entry


def _finished(entry: dict[str, Any] | None, row: dict[str, Any], out: Path) -> bool:
    """A logged video counts as done if its file is unchanged and its shards are all there."""
    if entry is None or not os.path.isfile(row["video_path"]) or entry["stat"] != _stat(row["video_path"]):
        return False
    return all((out / clip["file"]).is_file() for clip in entry["clips"])


def _precheck(row: dict[str, Any], max_frames: int) -> tuple[str, str] | None:
    """Problems found without decoding: (code, reason) or None."""
    path = Path(row["video_path"])
    if not path.is_file():
        return "missing_file", f"{path} {'is a directory' if path.is_dir() else 'does not exist'}"
    if path.stat().st_size == 0:
        return "empty_file", f"{path} is empty (0 bytes)"
    if row.get("num_frames", 0) > max_frames:
        return "too_long", f"the manifest declares {row['num_frames']} frames > max_frames={max_frames}"
    return None


def _index(out: Path, stamp: dict[str, Any], entries: Iterable[dict[str, Any]], problems: list[dict]) -> dict:
    entries = list(entries)
    videos = sorted(
        ({"id": c["id"], "file": c["file"], "latent_frames": c["latent_frames"], "caption": c["caption"],
          "source_id": e["id"]} for e in entries for c in e["clips"]),
        key=lambda v: v["id"],
    )
    skipped = [{"id": p["id"], "reason": f"{p['code']}: {p['reason']}"} for p in problems]
    skipped += [{"id": e["id"], "reason": f"{e['code']}: {e['reason']}"} for e in entries if e["code"]]
    skipped += [{"id": d["id"], "reason": f"{d['code']}: {d['reason']}"} for e in entries for d in e["dropped"]]
    index = {"format": FORMAT, "encoders": stamp["encoders"], "prepare": stamp["settings"], "videos": videos,
             "skipped": sorted(skipped, key=lambda s: s["id"])}
    atomic_write_text(out / INDEX, json.dumps(index, indent=1))
    return index


def _check_stamp(out: Path, stamp: dict[str, Any]) -> None:
    path = out / STAMP
    if path.is_file():
        old = json.loads(path.read_text())
        if old != stamp:
            changed = sorted(k for k in {**old["settings"], **stamp["settings"]}
                             if old["settings"].get(k) != stamp["settings"].get(k))
            what = f"settings {changed}" if changed else f"encoders ({old['encoders']} vs {stamp['encoders']})"
            raise PrepareError(f"{out} was prepared with other {what}; prepare into another directory (--out) "
                               f"or delete {out} to start over.")
    else:
        atomic_write_text(path, json.dumps(stamp, indent=1))


def resolve_config(config: PrepareConfig, encoders: Encoders, min_latent_frames: int | None = None) -> PrepareConfig:
    """``config`` with ``min_latent_frames`` and ``buckets`` filled in."""
    resolved = dataclasses.replace(config)
    if resolved.min_latent_frames is None:
        resolved.min_latent_frames = min_latent_frames or 2
    if resolved.buckets is None and encoders.frame_size is not None:
        resolved.buckets = [tuple(encoders.frame_size)]
    if resolved.buckets is not None:
        resolved.buckets = [tuple(int(x) for x in b) for b in resolved.buckets]
    if resolved.min_latent_frames < 1 or resolved.min_frames < 1 or resolved.max_frames < 1:
        raise PrepareError("min_latent_frames, min_frames and max_frames must be >= 1.")
    return resolved


def prepare_shards(
    manifest: str | Path,
    out_dir: str | Path,
    encoders: Encoders,
    config: PrepareConfig | None = None,
    *,
    workers: int = 0,
    strict: bool = False,
    progress: bool = False,
    output_format: Literal["safetensors", "litdata"] = "safetensors",
) -> dict[str, Any]:
    """Prepare every manifest video into shards under ``out_dir``; return the index (``index.json``).

    Args:
        manifest: canonical JSONL manifest (:mod:`lvg.data.manifest`).
        out_dir: shard directory (``index.json``, ``<id>.safetensors``, log, stamp and report).
        encoders: codec, text and image encoders (the datamodule's ``encoders()``).
        config: filters and storage settings (default: :class:`PrepareConfig`); resolve
            ``min_latent_frames`` first with :func:`resolve_config` to use a datamodule's value.
        workers: decoding processes (0: this process).
        strict: raise :class:`PrepareError` at the first input error instead of skipping it.
        progress: show a tqdm bar.
        output_format: ``litdata`` also converts the shards to litdata chunks in ``out_dir/litdata``.
    """
    config = resolve_config(config or PrepareConfig(), encoders)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = validate_manifest(manifest)
    if strict and report.issues:
        raise PrepareError(f"bad manifest row: {report.issues[0]}")
    codec = encoders.codec
    min_frames = max(config.min_frames, codec.num_pixel_frames(config.min_latent_frames))
    stamp = {"encoders": {"codec": describe(codec), "text_encoder": describe(encoders.text),
                          "image_encoder": None if encoders.image is None else describe(encoders.image)},
             "settings": {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(config))).items()
                          if k != "index_every"}}  # what decides the shards' content
    _check_stamp(out, stamp)

    problems = [{"id": issue.id or issue.where, "code": "bad_row", "reason": str(issue), "where": issue.where}
                for issue in report.issues]
    logged, entries, todo = _read_log(out / LOG), {}, []
    for row in report.rows:
        problem = _precheck(row, config.max_frames)
        if problem is not None:
            if strict:
                raise PrepareError(f"{row['id']} ({row['video_path']}): {problem[0]}: {problem[1]}")
            problems.append({"id": row["id"], "code": problem[0], "reason": problem[1], "where": row["where"]})
        elif _finished(logged.get(row["id"]), row, out):
            entries[row["id"]] = logged[row["id"]]
        else:
            todo.append(row)
    rows = {row["id"]: row for row in todo}
    tasks = [Task(row["id"], row["video_path"], row.get("start"), row.get("end"), min_frames,
                  config.max_frames, config.buckets, 2 * codec.spatial_factor,
                  config.cuts if config.split_shots else None,
                  config.dynamism if config.filter_dynamism else None) for row in todo]
    dtype = DTYPES[config.dtype]
    bar = tqdm(total=len(tasks), desc="lvg prepare", unit="video", disable=not progress, dynamic_ncols=True)
    try:
        for n, scan in enumerate(scan_all(tasks, workers), start=1):
            row = rows[scan.id]
            bar.update()
            if strict and scan.code in INPUT_ERRORS:
                raise PrepareError(f"{row['id']} ({row['video_path']}): {scan.code}: {scan.reason}")
            if scan.code == "worker_crash":  # not logged: the next run tries the video again
                problems.append({"id": scan.id, "code": scan.code, "reason": scan.reason, "where": row["where"]})
                continue
            entry = _encode(scan, row, encoders, out, dtype)
            if not any(d["code"] == "encode_error" for d in entry["dropped"]):  # an encoder failure may pass: retried
                _append_log(out / LOG, entry)
            entries[row["id"]] = entry
            bar.set_postfix(clips=sum(len(e["clips"]) for e in entries.values()), refresh=False)
            if n % config.index_every == 0:
                _index(out, stamp, entries.values(), problems)
    finally:
        bar.close()
    order = {row["id"]: i for i, row in enumerate(report.rows)}
    entries = dict(sorted(entries.items(), key=lambda kv: order[kv[0]]))
    index = _index(out, stamp, entries.values(), problems)
    write_report(out, manifest, config, entries, problems)
    if not index["videos"]:
        log.warning("lvg prepare: no clip of %s was kept; see %s", manifest, out / f"{REPORT}.md")
    export(output_format, out)
    return index


def export(output_format: str, out: Path) -> None:
    """The output-format step after the shards: ``litdata`` converts them to chunks in ``out/litdata``."""
    if output_format == "litdata":
        from lvg.data.litdata_chunks import write_litdata

        write_litdata(out, str(out / "litdata"), overwrite=True)
    elif output_format != "safetensors":
        raise PrepareError(f"unknown output format {output_format!r}; use 'safetensors' or 'litdata'.")


# --- report ----------------------------------------------------------------------------------------

CLIP_SECONDS_EDGES = (0, 2, 5, 10, 20, 30, 60, 120, math.inf)


def _histogram(values: list[float], edges: Iterable[float]) -> list[dict[str, Any]]:
    edges = list(edges)
    counts = np.histogram(np.clip(values, edges[0], np.nextafter(edges[-1], 0)) if values else [], bins=edges)[0]
    return [{"from": lo, "to": hi, "count": int(c)} for lo, hi, c in zip(edges[:-1], edges[1:], counts)]


def build_report(manifest: str | Path, config: PrepareConfig, entries: dict[str, dict], problems: list[dict]) -> dict:
    """Counts, durations, histograms and per-item outcomes of a prepare run (JSON-serialisable)."""
    items = [{"id": p["id"], "source_id": p["id"], "status": "dropped", "code": p["code"], "reason": p["reason"]}
             for p in problems]
    input_seconds = kept_seconds = 0.0
    lengths, motions = [], []
    for e in entries.values():
        fps = e["fps"] or 1.0
        input_seconds += e["frames"] / fps
        if e["code"]:
            items.append({"id": e["id"], "source_id": e["id"], "status": "dropped", "code": e["code"],
                          "reason": e["reason"]})
        for clip in e["clips"]:
            kept_seconds += clip["frames"] / fps
            lengths.append(clip["frames"] / fps)
            motions.append(clip["motion"])
            items.append({"id": clip["id"], "source_id": e["id"], "status": "kept", "seconds": clip["frames"] / fps,
                          "motion": clip["motion"]})
        for d in e["dropped"]:
            items.append({"id": d["id"], "source_id": e["id"], "status": "dropped", "code": d["code"],
                          "reason": d["reason"], "seconds": d["frames"] / fps, "motion": d["motion"]})
    scored = [m for m in motions if m is not None]
    motion_edges = np.linspace(min(scored), max(scored) + 1e-9, 6).tolist() if scored else [0.0, 1.0]
    videos_with_clips = sum(1 for e in entries.values() if e["clips"])
    return {
        "manifest": str(manifest),
        "settings": json.loads(json.dumps(dataclasses.asdict(config))),
        "videos": {"input": len(entries) + len(problems), "with_clips": videos_with_clips,
                   "without_clips": len(entries) + len(problems) - videos_with_clips},
        "clips": {"kept": len(lengths), "dropped": sum(len(e["dropped"]) for e in entries.values())},
        "dropped_by_reason": dict(Counter(i["code"] for i in items if i["status"] == "dropped").most_common()),
        "hours": {"input": input_seconds / 3600, "kept": kept_seconds / 3600},
        "histograms": {"clip_seconds": _histogram(lengths, CLIP_SECONDS_EDGES),
                       "motion_score": _histogram(scored, motion_edges)},
        "items": items,
    }


def _markdown(report: dict[str, Any]) -> str:
    def table(header: list[str], rows: list[list[Any]]) -> list[str]:
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                *("| " + " | ".join(str(c) for c in r) + " |" for r in rows), ""]

    def bins(hist: list[dict], fmt: str) -> list[list[Any]]:
        return [[f"{format(h['from'], fmt)} - {format(h['to'], fmt)}", h["count"]] for h in hist]

    v, c, h = report["videos"], report["clips"], report["hours"]
    lines = [f"# lvg prepare report: {report['manifest']}", ""]
    lines += table(["", "count"], [["input videos", v["input"]], ["videos with kept clips", v["with_clips"]],
                                   ["videos without clips", v["without_clips"]], ["kept clips", c["kept"]],
                                   ["dropped clips", c["dropped"]], ["input hours", f"{h['input']:.3f}"],
                                   ["kept hours", f"{h['kept']:.3f}"]])
    lines += ["## Dropped by reason", ""] + table(["reason", "items"], [[k, n] for k, n in
                                                                         report["dropped_by_reason"].items()])
    lines += ["## Clip length (seconds)", ""] + table(["seconds", "clips"],
                                                      bins(report["histograms"]["clip_seconds"], "g"))
    lines += ["## Motion score", ""] + table(["score", "clips"], bins(report["histograms"]["motion_score"], ".4g"))
    dropped = [i for i in report["items"] if i["status"] == "dropped"]
    lines += ["## Dropped items", ""] + table(["id", "reason", "why"], [[i["id"], i["code"], i["reason"]]
                                                                      for i in dropped])
    return "\n".join(lines)


def write_report(out: Path, manifest: str | Path, config: PrepareConfig, entries: dict[str, dict],
                 problems: list[dict]) -> dict[str, Any]:
    """Write ``prepare_report.json`` and ``prepare_report.md`` into ``out``; return the report."""
    report = build_report(manifest, config, entries, problems)
    atomic_write_text(out / f"{REPORT}.json", json.dumps(report, indent=1))
    atomic_write_text(out / f"{REPORT}.md", _markdown(report))
    return report


# --- command line ----------------------------------------------------------------------------------


def _parser():
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser, set_parsing_settings
    from lightning.pytorch import LightningDataModule

    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # PrepareConfig's field docs in --help
    parser = ArgumentParser(
        prog="lvg prepare",
        description="Prepare training shards from a video manifest: decode, split at shot cuts, drop clips shorter "
                    "than a training section or outside the dynamism bounds, resize to a bucket, encode with the "
                    "datamodule's encoders, write shards + index.json + prepare_report.{json,md}. Resumable. "
                    "Importers: `lvg prepare import-mira META OUT --root DIR`, `lvg prepare import-sekai ...`.",
    )
    parser.add_argument("--config", action=ActionConfigFile,
                        help="A training YAML (its data: section is used; model, trainer, ... are ignored) or a "
                             "prepare YAML (configs/prepare/).")
    parser.add_subclass_arguments(LightningDataModule, "data", required=False,
                                  help="The datamodule whose encoders() and shard_dir are used.")
    parser.add_argument("--manifest", type=str | None, default=None, help="The JSONL manifest to prepare.")
    parser.add_argument("--out", type=str | None, default=None, help="Shard directory (default: data.shard_dir).")
    parser.add_argument("--workers", type=int, default=0, help="Decoding processes (0: the main process).")
    parser.add_argument("--strict", action=ActionYesNo, default=False,
                        help="Stop at the first bad item (non-zero exit).")
    parser.add_argument("--validate_only", "--validate-only", action=ActionYesNo, default=False,
                        help="Only check the manifest: list every bad row (file:line, field; missing or empty "
                             "video files too).")
    parser.add_argument("--progress", action=ActionYesNo, default=True, help="Show a progress bar.")
    parser.add_argument("--format", type=Literal["safetensors", "litdata"], default="safetensors",
                        help="litdata: also convert the shards to litdata chunks in OUT/litdata.")
    parser.add_class_arguments(PrepareConfig, "prepare", help="Filters and storage settings.")
    return parser


def _known_config(argv: list[str], known: set[str]) -> list[str]:
    """``argv`` with each ``--config FILE`` narrowed to the keys lvg prepare knows, so a training YAML
    (with ``model``, ``trainer``, ``seed_everything`` ...) can be passed as it is."""
    out, i = [], 0
    while i < len(argv):
        word = argv[i]
        if word == "--config" and i + 1 < len(argv) or word.startswith("--config="):
            value = argv[i + 1] if word == "--config" else word.split("=", 1)[1]
            i += 2 if word == "--config" else 1
            if Path(value).is_file():
                try:
                    loaded = yaml.safe_load(Path(value).read_text()) or {}
                except yaml.YAMLError as err:
                    raise PrepareError(f"--config {value} is not valid YAML ({err}).") from err
                if not isinstance(loaded, dict):
                    raise PrepareError(f"--config {value}: expected a mapping of options.")
                value = yaml.safe_dump({k: v for k, v in loaded.items() if k in known}, sort_keys=False)
            out += ["--config", value]
            continue
        out.append(word)
        i += 1
    return out


def _import_main(kind: str, argv: list[str]) -> None:
    from jsonargparse import ActionYesNo, ArgumentParser

    from lvg.data import importers

    parser = ArgumentParser(prog=f"lvg prepare import-{kind}",
                            description=f"Convert {kind.capitalize()} metadata into an lvg manifest (JSONL); see "
                                        "lvg.data.importers for the column mapping.")
    parser.add_argument("meta", type=str, help="Metadata file (.csv, .tsv, .json or .jsonl).")
    parser.add_argument("out", type=str, help="Manifest to write.")
    parser.add_argument("--root", type=str | None, default=None,
                        help="Directory the metadata's video paths are relative to (default: META's directory).")
    if kind == "mira":
        parser.add_argument("--caption", type=str, default="dense_caption",
                            help="Mira column used as the caption (dense_caption, short_caption, ...).")
    parser.add_argument("--strict", action=ActionYesNo, default=False, help="Stop at the first row that cannot be imported.")
    cfg = parser.parse_args(argv)
    extra = {"caption": cfg.caption} if kind == "mira" else {}
    print(importers.IMPORTERS[kind](cfg.meta, cfg.out, root=cfg.root, strict=cfg.strict, **extra))


def prepare_main(argv: list[str]) -> None:
    """``lvg prepare ...``: see the module docstring. User mistakes raise ValueError."""
    if argv[:1] in (["import-mira"], ["import-sekai"]):
        _import_main(argv[0].removeprefix("import-"), argv[1:])
        return
    parser = _parser()
    known = {action.dest.split(".")[0] for action in parser._actions} - {"help", "config"}
    cfg = parser.parse_args(_known_config(argv, known))
    if cfg.manifest is None:
        raise PrepareError("pass --manifest (a JSONL manifest; see `lvg prepare --help`).")
    if cfg.validate_only:
        report = validate_manifest(cfg.manifest, check_files=True)
        print(report)
        if report.issues:
            raise PrepareError(f"{cfg.manifest}: {len(report.issues)} problems (listed above).")
        return
    if cfg.get("data") is None:
        raise PrepareError("pass --config <training.yaml> (its data: section names the encoders) "
                           "or --data.class_path ...")
    # `instantiate` replaced `instantiate_classes` in jsonargparse 4.49; both exist until 5.0
    init = getattr(parser, "instantiate", parser.instantiate_classes)(cfg)
    datamodule = init.data
    encoders = encoders_of(datamodule)
    if encoders is None:
        raise PrepareError(f"{type(datamodule).__name__} does not name its encoders (encoders() returned None); "
                           "use a datamodule that does (ToyWorldDataModule, FramePackF1DataModule, ...).")
    out = cfg.out or getattr(datamodule, "shard_dir", None)
    if out is None:
        raise PrepareError("pass --out (the datamodule has no shard_dir).")
    config = resolve_config(init.prepare, encoders, getattr(datamodule, "min_latent_frames", None))
    index = prepare_shards(cfg.manifest, out, encoders, config, workers=cfg.workers, strict=cfg.strict,
                           progress=cfg.progress, output_format=cfg.format)
    print(f"lvg prepare: {len(index['videos'])} clips in {out}, {len(index['skipped'])} items skipped; "
          f"report: {Path(out) / (REPORT + '.md')}", file=sys.stderr)
