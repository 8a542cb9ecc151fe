"""Prompt suites: batches of generation jobs for ``lvg predict`` (and benchmark suites).

A suite is a JSONL file, one job per line: ``id`` (unique), ``image`` (start image or video,
relative to the suite file or absolute), ``prompt`` (a prompt or a ``[0s] ... [12s] ...``
schedule), and the length as ``seconds`` or ``sections``. Benchmark suites (``lvg test``) may add
``group`` (e.g. ``short`` / ``medium`` / ``long``: the report has a row per group) and ``truth``
(the toy-world ground truth of the video the start image comes from, for the truth metrics;
relative to the suite file or absolute).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from lvg.data.manifest import read_records
from lvg.data.toy_world import ToyWorldConfig, generate_toy_world
from lvg.media import load_image
from lvg.io import atomic_write_text
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
        jobs.append(job)
    return jobs


class PromptSuiteDataset(Dataset):
    """Jobs with their start images loaded at the model's frame size."""

    def __init__(self, jobs: list[dict[str, Any]], frame_size: tuple[int, int] | None):
        self.jobs, self.frame_size = jobs, frame_size

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        job = self.jobs[i]
        return {"id": job["id"], "index": i, "image": load_image(job["image_path"], self.frame_size)[0],
                "prompt": job["prompt"], "seconds": job.get("seconds"), "sections": job.get("sections"), "job": job}


def collate_jobs(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": [it["id"] for it in items],
        "image": torch.stack([it["image"] for it in items]),
        "prompt": [it["prompt"] for it in items],
        "seconds": [it["seconds"] for it in items],
        "sections": [it["sections"] for it in items],
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
    Returns the suite path (``root/suite.jsonl``, rewritten when the settings change; idempotent).
    """
    root = Path(root)
    held_out = dataclasses.replace(toy, num_videos=len(seconds) * videos_per_group, seed=toy.seed + 1000)
    world = root / f"world_{held_out.num_videos}"
    rows = [json.loads(line) for line in generate_toy_world(world, held_out).read_text().splitlines()]
    jobs = []
    for g, (group, length) in enumerate(seconds.items()):
        for row in rows[g * videos_per_group : (g + 1) * videos_per_group]:
            jobs.append({"id": f"{group}_{row['id']}", "image": f"{world.name}/{row['video']}", "prompt": row["caption"],
                         "seconds": length, "group": group, "truth": f"{world.name}/truth/{row['id']}.json"})
    suite = root / "suite.jsonl"
    text = "".join(json.dumps(job) + "\n" for job in jobs)
    if not suite.is_file() or suite.read_text() != text:
        atomic_write_text(suite, text)
    return suite


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
