"""The canonical video manifest: one JSON object per line.

Required fields: ``id`` (unique string), ``video`` (path, relative to the manifest's directory or
absolute), ``caption`` (non-empty string). Optional: ``fps``, ``num_frames``, ``width``,
``height``, ``structured_caption`` (object), ``start`` / ``end`` (seconds). Unknown fields are kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REQUIRED = ("id", "video", "caption")


def read_jsonl(path: str | Path, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file:line, object)`` for every non-blank line of a JSONL file; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{kind} {path} does not exist.")
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err}).") from err
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: each line must be a JSON object, got {type(obj).__name__}.")
        yield where, obj


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Parse and validate a JSONL manifest; errors name the file, line and field."""
    path = Path(path)
    rows, seen = [], set()
    for where, row in read_jsonl(path, "Manifest"):
        for field in REQUIRED:
            if field not in row:
                raise ValueError(f"{where}: missing required field '{field}' (required: {', '.join(REQUIRED)}).")
        if not isinstance(row["caption"], str) or not row["caption"].strip():
            raise ValueError(f"{where}: 'caption' must be a non-empty string; every training video needs a caption.")
        if not isinstance(row["id"], str) or not row["id"]:
            raise ValueError(f"{where}: 'id' must be a non-empty string.")
        if row["id"] in seen:
            raise ValueError(f"{where}: duplicate id {row['id']!r}.")
        seen.add(row["id"])
        video = Path(row["video"])
        row["video_path"] = str(video if video.is_absolute() else path.parent / video)
        rows.append(row)
    if not rows:
        raise ValueError(f"Manifest {path} has no rows.")
    return rows
