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

Where the work happens: ``--workers N`` processes (``spawn``; :func:`lvg.data.scan.scan_all`, the
scan the raw-clip datamodule uses too) open, decode, cut, filter and resize videos on the CPU; the
main process encodes the kept clips with the encoders where they live (the VAE on its GPU) and writes
the shards. ``--workers 0`` does everything in the main process.

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
``prepare_log.jsonl`` (:class:`lvg.data.scan.ScanLog`: the video's scan record -- the file's size and
mtime, the settings, its shots -- plus its clips and drops). A rerun skips the videos logged with an
unchanged file and settings and existing shards -- also those that gave no clip, so they are not
decoded again -- and redoes the rest (a torn or damaged log line is skipped with a warning;
``worker_crash`` and ``encode_error`` are not logged, so they are retried). Logs written before the
scan record existed still resume. A raw-clip datamodule whose ``cache_dir`` is this directory
takes its scans from the same log. ``index.json`` is rebuilt
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
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from lvg.config import DTYPES
from lvg.data.cuts import CutDetectorConfig
from lvg.data.dynamism import DynamismConfig
from lvg.data.manifest import validate_manifest
from lvg.data.scan import LOG, Scan, ScanLog, Task, precheck, scan_all
from lvg.data.shards import FORMAT, INDEX, describe, write_shard
from lvg.io import atomic_write_text
from lvg.models.encoders import Encoders

log = logging.getLogger(__name__)

STAMP = "prepare.json"
REPORT = "prepare_report"
# Problems of the input itself (what --strict stops at); the other reasons are filter decisions.
INPUT_ERRORS = ("bad_row", "missing_file", "empty_file", "unreadable", "too_long", "too_short")


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


def scan_tasks(rows: list[dict[str, Any]], config: PrepareConfig, codec) -> list[Task]:
    """The scan task of every valid manifest row under resolved ``config`` (:func:`resolve_config`) and ``codec``."""
    min_frames = max(config.min_frames, codec.num_pixel_frames(config.min_latent_frames))
    return [Task(row["id"], row["video_path"], row.get("start"), row.get("end"), min_frames, config.max_frames,
                 config.buckets, 2 * codec.spatial_factor, config.cuts if config.split_shots else None,
                 config.dynamism if config.filter_dynamism else None, row.get("num_frames")) for row in rows]


# --- the run (main process: encode, write, log, report) -------------------------------------------


def usable_frames(codec, frames: int) -> int:
    """The leading frames of a ``frames``-long clip the codec encodes whole (e.g. ``4N - 3`` for a causal VAE)."""
    return codec.num_pixel_frames(codec.num_latent_frames(frames))


def encode_text(caption: str, encoders: Encoders, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``text (L, D)`` (valid tokens only), ``text_mask (L,)`` bool and ``pooled (D_pool,)`` of one caption."""
    text = encoders.text.encode([caption])
    valid = text.mask[0].cpu()
    return {"text": text.tokens[0].cpu()[valid].to(dtype), "text_mask": torch.ones(int(valid.sum()), dtype=torch.bool),
            "pooled": text.pooled[0].cpu().to(dtype)}


def encode_frames(
    frames: torch.Tensor, encoders: Encoders, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
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
    """Encode and write the kept clips of one scanned video; return its log entry: the scan's record and
    the encode results (``clips`` written, ``dropped`` shots)."""
    entry: dict[str, Any] = {**scan.record(), "clips": [], "dropped": []}
    text = encode_text(row["caption"], encoders, dtype) if scan.kept() else {}  # once per video, shared by its shots
    for clip in scan.clips:
        clip_id = scan.clip_id(clip)
        record = {"id": clip_id, "frames": clip.end - clip.start, "motion": clip.motion}
        if clip.code is not None:
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


def _finished(entry: dict[str, Any] | None, out: Path) -> bool:
    """A logged video (its file and settings unchanged: :meth:`ScanLog.entry`) is done if its shards are all there."""
    return entry is not None and all((out / clip["file"]).is_file() for clip in entry["clips"])


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
    stamp = {"encoders": {"codec": describe(codec), "text_encoder": describe(encoders.text),
                          "image_encoder": None if encoders.image is None else describe(encoders.image)},
             "settings": {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(config))).items()
                          if k != "index_every"}}  # what decides the shards' content
    _check_stamp(out, stamp)

    problems = [{"id": issue.id or issue.where, "code": "bad_row", "reason": str(issue), "where": issue.where}
                for issue in report.issues]
    scan_log, entries, tasks = ScanLog(out / LOG), {}, []
    rows = {row["id"]: row for row in report.rows}
    for task in scan_tasks(report.rows, config, codec):
        # the scan checks the file first; --strict also checks every file up front, to stop before any decoding
        if strict and (problem := precheck(task)) is not None:
            raise PrepareError(f"{task.id} ({task.path}): {problem[0]}: {problem[1]}")
        if _finished(entry := scan_log.entry(task), out):
            entries[task.id] = entry
        else:
            tasks.append(task)
    dtype = DTYPES[config.dtype]
    bar = tqdm(total=len(tasks), desc="lvg prepare", unit="video", disable=not progress, dynamic_ncols=True)
    try:
        for n, scan in enumerate(scan_all(tasks, workers), start=1):
            row = rows[scan.id]
            bar.update()
            if strict and scan.code in INPUT_ERRORS:
                raise PrepareError(f"{row['id']} ({row['video_path']}): {scan.code}: {scan.reason}")
            if scan.stat is None:  # a missing file or a worker crash: not logged, the next run tries the video again
                problems.append({"id": scan.id, "code": scan.code, "reason": scan.reason, "where": row["where"]})
                continue
            entry = _encode(scan, row, encoders, out, dtype)
            if not any(d["code"] == "encode_error" for d in entry["dropped"]):  # an encoder failure may pass: retried
                scan_log.append(entry)
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
