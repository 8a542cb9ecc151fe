"""Prompt suites: batches of generation jobs for ``lvg predict`` (and benchmark suites).

A suite is a JSONL file, one job per line: ``id`` (unique), ``image`` (start image or video,
relative to the suite file or absolute), ``prompt`` (a prompt or a ``[0s] ... [12s] ...``
schedule), and the length as ``seconds`` or ``sections``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from lvg.data.manifest import read_records
from lvg.data.video_io import load_image
from lvg.sampling.prompts import PromptSchedule


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
        return {"id": job["id"], "image": load_image(job["image_path"], self.frame_size)[0],
                "prompt": job["prompt"], "seconds": job.get("seconds"), "sections": job.get("sections")}


def collate_jobs(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": [it["id"] for it in items],
        "image": torch.stack([it["image"] for it in items]),
        "prompt": [it["prompt"] for it in items],
        "seconds": [it["seconds"] for it in items],
        "sections": [it["sections"] for it in items],
    }
