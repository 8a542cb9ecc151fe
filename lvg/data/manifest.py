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


def read_records(path: str | Path, kind: str, required: tuple[str, ...], media: str) -> Iterator[tuple[str, dict]]:
    """Validated ``(file:line, record)`` pairs of a JSONL file: one JSON object per non-blank line, the
    ``required`` fields present, a unique non-empty string ``id``, and ``<media>_path`` set to the
    ``media`` field resolved against the file's directory. Errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{kind} {path} does not exist.")
    seen: set[str] = set()
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err}).") from err
        if not isinstance(record, dict):
            raise ValueError(f"{where}: each line must be a JSON object, got {type(record).__name__}.")
        for field in required:
            if field not in record:
                raise ValueError(f"{where}: missing required field '{field}' (required: {', '.join(required)}).")
        if not isinstance(record["id"], str) or not record["id"]:
            raise ValueError(f"{where}: 'id' must be a non-empty string.")
        if record["id"] in seen:
            raise ValueError(f"{where}: duplicate id {record['id']!r}.")
        seen.add(record["id"])
        file = Path(record[media])
        record[f"{media}_path"] = str(file if file.is_absolute() else path.parent / file)
        yield where, record
    if not seen:
        raise ValueError(f"{kind} {path} has no rows.")


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Parse and validate a JSONL manifest; errors name the file, line and field."""
    rows = []
    for where, row in read_records(path, "Manifest", REQUIRED, media="video"):
        if not isinstance(row["caption"], str) or not row["caption"].strip():
            raise ValueError(f"{where}: 'caption' must be a non-empty string; every training video needs a caption.")
        rows.append(row)
    return rows
