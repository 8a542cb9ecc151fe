"""Prompt suites: batches of generation jobs for ``lvg predict`` (and benchmark suites).

A suite is a JSONL file, one job per line: ``id`` (unique), ``image`` (start image or video,
relative to the suite file or absolute), ``prompt`` (a prompt or a ``[0s] ... [12s] ...``
schedule), and the length as ``seconds`` or ``sections``. Benchmark suites (``lvg test``) may add
``group`` (e.g. ``short`` / ``medium`` / ``long``: the report has a row per group) and ``truth``
(the toy-world ground truth of the video the start image comes from, for the truth metrics;
relative to the suite file or absolute).

A *continuation* job conditions on the start of a ground-truth video, then generates::

    {"id": "c1", "image": "gt.mp4", "prefix": "gt.mp4", "prefix_sections": 4, "sections": 10, "prompt": "..."}

``prefix`` is the ground-truth video (it must be the job's ``image``: the video starts from the prefix's
first frame), ``prefix_sections`` (whole sections) or ``prefix_seconds`` (turned into sections at the
model's section length, like ``seconds``) how much of it to condition on. The length (``seconds`` /
``sections``) and prompt timestamps count the whole video, prefix included, so the output's frame
indices are the ground truth's. The prefix must be at the generation frame rate. ``lvg test`` scores
only the generated frames.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from lvg.data.manifest import read_records
from lvg.data.reader import open_video, resize_to_bucket
from lvg.data.toy_world import ToyWorldConfig, generate_toy_world, sample_video_spec
from lvg.io import atomic_write_text
from lvg.media import VIDEO_SUFFIXES, load_image
from lvg.prompts import PromptSchedule

BENCHMARK_SECONDS: dict[str, float] = {"short": 10.0, "medium": 30.0, "long": 60.0}
"""The paper's 10 s / 30 s / 60 s split of benchmark lengths."""


def read_suite(path: str | Path) -> list[dict[str, Any]]:
    """Parse and validate a suite; errors name the file, line and field."""
    jobs = []
    for where, job in read_records(path, "Prompt suite", ("id", "image", "prompt"), media="image"):
        if ("seconds" in job) == ("sections" in job):
            raise ValueError(f"{where}: give exactly one of 'seconds' and 'sections'.")
        try:
            PromptSchedule.parse(job["prompt"])  # fail here, before any generation, not mid-suite
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        if "truth" in job:
            truth = Path(job["truth"])
            job["truth_path"] = str(truth if truth.is_absolute() else Path(path).parent / truth)
        _check_prefix(where, job, Path(path).parent)
        jobs.append(job)
    return jobs


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _check_prefix(where: str, job: dict[str, Any], root: Path) -> None:
    """Validate a continuation's fields (module docstring) and set ``prefix_path``; errors name the field."""
    lengths = [k for k in ("prefix_sections", "prefix_seconds") if k in job]
    if "prefix" not in job:
        if lengths:
            raise ValueError(f"{where}: field '{lengths[0]}' needs 'prefix' (the ground-truth video to continue).")
        return
    if not isinstance(job["prefix"], str) or not job["prefix"]:
        raise ValueError(f"{where}: field 'prefix' must be the path of a video, got {job['prefix']!r}.")
    prefix = Path(job["prefix"]) if Path(job["prefix"]).is_absolute() else root / job["prefix"]
    if prefix.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{where}: field 'prefix' must be a video ({', '.join(VIDEO_SUFFIXES)}), "
                         f"got {job['prefix']!r}.")
    if not prefix.is_file():
        raise ValueError(f"{where}: field 'prefix': {prefix} does not exist.")
    if prefix.resolve() != Path(job["image_path"]).resolve():
        raise ValueError(f"{where}: field 'image' must be the prefix video {job['prefix']!r} (a continuation starts "
                         f"from its prefix's first frame), got {job['image']!r}.")
    if len(lengths) != 1:
        raise ValueError(f"{where}: field 'prefix' needs exactly one of 'prefix_sections' and 'prefix_seconds' "
                         f"(got {len(lengths)}).")
    name, value = lengths[0], job[lengths[0]]
    if not (_is_count(value) if name == "prefix_sections" else _is_positive(value)):
        rule = "an integer >= 1" if name == "prefix_sections" else "a number > 0"
        raise ValueError(f"{where}: field '{name}' must be {rule}, got {value!r}.")
    total = "sections" if name == "prefix_sections" else "seconds"
    if total in job and isinstance(job[total], (int, float)) and value >= job[total]:
        raise ValueError(f"{where}: field '{name}' = {value} leaves nothing to generate: '{total}' = {job[total]} "
                         "counts the whole video, prefix included.")
    job["prefix_path"] = str(prefix)


def load_prefix(path: str | Path, num_frames: int, frame_size: tuple[int, int] | None, fps: float) -> torch.Tensor:
    """The first ``num_frames`` frames of a continuation's ground-truth video as ``(T, 3, H, W)`` uint8, resized and
    centre-cropped to ``frame_size`` (:func:`lvg.data.reader.resize_to_bucket`). The video must have them and be at
    ``fps``: the prefix's frame indices are the output's."""
    with open_video(path) as reader:
        have, rate = len(reader), reader.info.fps
        if abs(rate - fps) > 1e-3 * fps:
            raise ValueError(f"prefix {path} is {rate:g} fps but the model generates at {fps:g} fps; re-encode the "
                             f"prefix at {fps:g} fps (its frames are the output's first frames).")
        if have < num_frames:
            raise ValueError(f"prefix {path} has {have} frames; the continuation conditions on its first {num_frames}.")
        frames = reader.read(range(num_frames))  # (T, H, W, 3)
    if frame_size is not None:
        frames = resize_to_bucket(frames, tuple(frame_size))
    return frames.permute(0, 3, 1, 2).contiguous()


class PromptSuiteDataset(Dataset):
    """Jobs with their start images loaded at the model's frame size."""

    def __init__(self, jobs: list[dict[str, Any]], frame_size: tuple[int, int] | None):
        self.jobs, self.frame_size = jobs, frame_size

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        job = self.jobs[i]
        return {"id": job["id"], "index": i, "image": load_image(job["image_path"], self.frame_size)[0],
                "prompt": job["prompt"], "seconds": job.get("seconds"), "sections": job.get("sections"),
                "prefix": job.get("prefix_path"), "prefix_sections": job.get("prefix_sections"),
                "prefix_seconds": job.get("prefix_seconds"), "job": job}


def collate_jobs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of jobs; the continuation fields are None for jobs that start from their image
    (the prefix frames are read by the generating module, which knows how many it needs)."""
    return {
        "id": [it["id"] for it in items],
        "image": torch.stack([it["image"] for it in items]),
        "prompt": [it["prompt"] for it in items],
        "seconds": [it["seconds"] for it in items],
        "sections": [it["sections"] for it in items],
        **{key: [it.get(key) for it in items] for key in ("prefix", "prefix_sections", "prefix_seconds")},
        "index": [it["index"] for it in items],
        "jobs": [it["job"] for it in items],  # the suite's records, for reports
    }


def toy_world_suite(
    root: str | Path, toy: ToyWorldConfig, seconds: dict[str, float] = BENCHMARK_SECONDS, videos_per_group: int = 2
) -> Path:
    """The embedded benchmark suite: start frames of held-out toy-world videos, their captions and truth.

    The held-out world is ``toy`` with ``seed + 1000`` (never seen in training), written under
    ``root/world_<n>`` like any toy world (n videos: one world per suite size, so suites of different
    sizes coexist); each length group of ``seconds`` gets ``videos_per_group`` different start frames.
    The memory world's suite is made of continuations instead (:func:`memory_world_jobs`): ``videos_per_group``
    held-out videos, each continued once in group ``long_absence`` and once in ``short_absence``, at lengths
    set by each video's script (``seconds`` is not used).
    Returns the suite path (``root/suite.jsonl``, rewritten when the settings change; idempotent).
    """
    root = Path(root)
    memory = toy.world == "memory"
    groups = 1 if memory else len(seconds)
    held_out = dataclasses.replace(toy, num_videos=groups * videos_per_group, seed=toy.seed + 1000)
    world = root / f"world_{held_out.num_videos}"
    rows = [json.loads(line) for line in generate_toy_world(world, held_out).read_text().splitlines()]
    jobs = []
    if memory:
        for i, row in enumerate(rows):
            truth = json.loads((world / "truth" / f"{row['id']}.json").read_text())
            jobs += memory_world_jobs(truth, f"{world.name}/{row['video']}", f"{world.name}/truth/{row['id']}.json",
                                      memory_prompt(held_out, i))
        jobs.sort(key=lambda job: job["group"])  # long_absence rows first, then short_absence
    for g, (group, length) in enumerate(seconds.items() if not memory else ()):
        for row in rows[g * videos_per_group : (g + 1) * videos_per_group]:
            jobs.append({"id": f"{group}_{row['id']}", "image": f"{world.name}/{row['video']}",
                         "prompt": row["caption"], "seconds": length, "group": group,
                         "truth": f"{world.name}/truth/{row['id']}.json"})
    suite = root / "suite.jsonl"
    text = "".join(json.dumps(job) + "\n" for job in jobs)
    if not suite.is_file() or suite.read_text() != text:
        atomic_write_text(suite, text)
    return suite


def memory_prompt(toy: ToyWorldConfig, index: int) -> str:
    """The prompt of a memory-world benchmark job: video ``index``'s caption without its late sprite.

    The training captions name every sprite; the late sprite named in the prompt could be drawn from the text
    when the truth brings it back, and its return would then score without any memory. Left out, the prefix the
    model is conditioned on (history and psi) is the only source of its colour and shape.
    """
    return sample_video_spec(toy, index).describe(start_only=True)


def memory_world_jobs(truth: dict[str, Any], video: str, truth_file: str, prompt: str) -> list[dict[str, Any]]:
    """The two continuation jobs of one memory-world video (``video`` / ``truth_file`` as the suite names them).

    In sections of the truth's context (``section_frames`` F, ``history_frames`` H; the model generating them
    must use the same window), a prefix of K sections holds frames ``[0, P)``, ``P = 1 + K F``:

    * ``long_absence``: P is the first section start at least H frames after the late sprite is wholly gone for
      its long absence, so no frame of FramePack's context (start frame and history) shows any pixel of it when
      generation starts -- only psi, which saw it in the prefix, can -- and P comes before its return (the
      absence outlasts history + window). The video runs to the truth's end.
    * ``short_absence`` (the control): P is the last section start inside the short absence (the sprite hidden in
      the prefix's last frame, its visible frames still in the history); a video whose short absence holds no
      section start (not so in the embedded settings) has no control job.

    Both run to the truth's end (so identity, background and occluder read the end of the script, where the truth
    shows every sprite). The report scores only frames ``>= P``, and a return counts only if its absence begins in
    the prefix and the sprite comes back after it (:mod:`lvg.metrics.toy_world`): the long job scores the long
    return alone, the control the short one alone.
    """
    ctx = truth["context"]
    per, history = ctx["section_frames"], ctx["history_frames"]
    late = next(k for k, s in enumerate(truth["sprites"]) if s["role"] == "returns")
    absences = {a["kind"]: a for a in truth["absences"] if a["sprite"] == late}
    if not {"short", "long"} <= absences.keys():
        raise ValueError(f"memory-world truth {truth_file} lacks a short and a long absence of its late sprite "
                         f"(labels: {[a['kind'] for a in truth['absences']]}); regenerate the world.")
    fraction = truth["sprites"][late]["visible_fraction"]
    frames = truth["num_frames"]

    def start(k: int) -> int:  # first frame of section k = frames in a k-section prefix
        return 1 + k * per

    jobs = []
    hidden, back = absences["long"]["hidden"]  # hidden in [hidden, back), visible again from back
    gone = next((f for f in range(hidden, back) if fraction[f] == 0), back)  # wholly out of view from here
    k, n = max(1, -(-(gone + history - 1) // per)), (frames - 1) // per
    if not (start(k) <= back and k < n and not any(fraction[start(k) - history : start(k)])):
        raise ValueError(f"{truth_file}: no section start lies between the late sprite leaving the context "
                         f"(frame {gone + history}) and its return (frame {back}) in a {frames}-frame video.")
    jobs.append({"k": k, "n": n, "group": "long_absence"})
    hidden, back = absences["short"]["hidden"]
    inside = [k for k in range(1, n) if hidden < start(k) <= back]
    if inside:  # else no continuation can start while it is hidden (not so in the embedded settings): no control
        jobs.append({"k": inside[-1], "n": n, "group": "short_absence"})
    return [{"id": f"{job['group']}_{truth['id']}", "image": video, "prefix": video, "prefix_sections": job["k"],
             "sections": job["n"], "prompt": prompt, "group": job["group"], "truth": truth_file} for job in jobs]


def vbench_i2v_suite(
    info: str | Path, image_dir: str | Path, out: str | Path, seconds: dict[str, float] = BENCHMARK_SECONDS,
    dimension: str | None = "subject_consistency", limit: int | None = None,
) -> Path:
    """A VBench-I2V-style suite from VBench's ``vbench2_i2v_full_info.json`` and a folder of its images.

    The images are not redistributed: download them with VBench's ``vbench2_beta_i2v/download_data.sh``
    and pass the crop folder of your aspect ratio (e.g. ``.../data/crop/16-9``). Every selected image
    (those listed for ``dimension``; all with None) becomes one job per length group, prompted with
    its ``prompt_en``. Errors name the missing file.
    """
    info, image_dir = Path(info), Path(image_dir)
    if not info.is_file():
        raise ValueError(f"{info} does not exist; it is vbench2_beta_i2v/vbench2_i2v_full_info.json of VBench.")
    try:
        entries = json.loads(info.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{info} is not valid JSON ({err}).") from err
    selected = [e for e in entries if dimension is None or dimension in e.get("dimension", [])][:limit]
    jobs = []
    for k, entry in enumerate(selected):
        image = image_dir / entry["image_name"]
        if not image.is_file():
            raise ValueError(f"{image} (from {info}) is missing; download the VBench-I2V images into {image_dir}.")
        for group, length in seconds.items():
            jobs.append({"id": f"{group}_{k:04d}", "image": str(image.resolve()), "prompt": entry["prompt_en"],
                         "seconds": length, "group": group})
    if not jobs:
        raise ValueError(f"{info} lists no image for dimension {dimension!r}.")
    out = Path(out)
    atomic_write_text(out, "".join(json.dumps(job) + "\n" for job in jobs))
    return out
