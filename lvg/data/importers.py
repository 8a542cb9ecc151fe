"""Importers: dataset metadata -> the canonical manifest (:mod:`lvg.data.manifest`).

Metadata files may be CSV (header row), JSON (a list of objects, or an object whose values are
rows) or JSONL. A row the importer cannot map is skipped and reported with its ``file:line``
(``strict=True`` raises instead); every other column is kept in the manifest row unchanged.

**MiraData** (Ju et al. 2024, ``mira-space/MiraData`` meta CSVs; videos cut into clips by its
``download_data.py``):

=======================  ===========================================================
Mira column              manifest field
=======================  ===========================================================
``clip_id``              ``id`` (``{download_id}.{clip_id}``)
``file_path``            ``video`` (relative to ``root``, the clip directory)
``dense_caption``        ``caption`` (``short_caption`` when dense is empty; or pick one)
``main_object_caption``  ``structured_caption.main_object``
``background_caption``   ``structured_caption.background``
``camera_caption``       ``structured_caption.camera``
``style_caption``        ``structured_caption.style``
``short_caption``        ``structured_caption.short``
``fps``                  ``fps``
``frame_number``         ``num_frames``
``width`` / ``height``   ``width`` / ``height``
=======================  ===========================================================

kept as they are: ``source``, ``video_url``, ``video_id``, ``seconds``, ``timestamp`` and
``framestamp`` (where the clip lies in its source video; the clip file is already cut, so they
do not become ``start``/``end``).

**Sekai** (Li et al. 2025, ``Lixsp11/Sekai-Project`` annotation CSVs ``sekai-real-walking-hq.csv``,
``sekai-game-*.csv``; clips extracted by ``sekai-codebase/clip_extracting``):

=======================  ===========================================================
Sekai column             manifest field
=======================  ===========================================================
``videoFile``            ``video`` (relative to ``root``); its stem is ``id``; the stem
                         ``<youtube id>_<first frame>_<last frame>`` also gives
                         ``source_video`` and ``source_frames``
``caption``              ``caption``
``location``             ``structured_caption.location``
``scene``                ``structured_caption.scene``
``weather``              ``structured_caption.weather``
``crowdDensity``         ``structured_caption.crowd_density``
``timeOfDay``            ``structured_caption.time_of_day``
``cameraFile``           ``camera_file`` (the per-frame camera trajectory, path as given)
=======================  ===========================================================

Other columns (``youtubeURL``, ``startTime``, ``endTime`` of the mapping CSV, ...) are kept.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvg.data.manifest import REQUIRED, Issue, ManifestError, check_row, write_manifest

MIRA_STRUCTURED = {
    "main_object_caption": "main_object", "background_caption": "background", "camera_caption": "camera",
    "style_caption": "style", "short_caption": "short",
}
MIRA_NUMBERS = {"fps": float, "frame_number": int, "width": int, "height": int, "seconds": float}
SEKAI_STRUCTURED = {
    "location": "location", "scene": "scene", "weather": "weather", "crowdDensity": "crowd_density",
    "timeOfDay": "time_of_day",
}


@dataclass
class ImportReport:
    """What an importer wrote and what it skipped."""

    out: Path
    written: int = 0
    skipped: list[Issue] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.out}: {self.written} rows written, {len(self.skipped)} skipped"]
        return "\n".join(lines + [f"  {issue}" for issue in self.skipped])


def read_table(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``(file:line, row)`` of a CSV (header row), JSON (list, or object of rows) or JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"Metadata file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            # line_num is the reader's physical line after the row: right even for quoted newlines
            return [(f"{path}:{reader.line_num}", dict(row)) for row in reader]
    if suffix == ".jsonl":
        lines = enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        rows = []
        for n, line in lines:
            if line.strip():
                try:
                    rows.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as err:
                    rows.append((f"{path}:{n}", {"__error__": f"not valid JSON ({err})"}))
        return rows
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ManifestError(f"Metadata file {path} is not valid JSON ({err}).") from err
        items = data if isinstance(data, list) else list(data.values()) if isinstance(data, dict) else None
        if items is None:
            raise ManifestError(f"Metadata file {path}: expected a JSON list or object of rows.")
        return [(f"{path}[{i}]", row) for i, row in enumerate(items)]
    raise ManifestError(f"Metadata file {path}: unsupported type {suffix!r}; use .csv, .tsv, .json or .jsonl.")


def _text(value: Any) -> str | None:
    """A non-empty stripped string, or None (CSV gives '' for missing cells, JSON may give null)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):  # NaN from pandas-written JSON
        return None
    text = str(value).strip()
    return text or None


def _video_field(file: str, root: Path, out: Path) -> str:
    """``file`` under ``root``, written relative to the manifest's directory when both are relative-friendly."""
    full = Path(file) if Path(file).is_absolute() else root / file
    try:
        return os.path.relpath(full.resolve(), out.parent.resolve())
    except ValueError:  # another drive on Windows
        return str(full.resolve())


def _import(
    meta: str | Path, out: str | Path, root: str | Path | None, strict: bool,
    convert: Callable[[dict[str, Any]], dict[str, Any]],
) -> ImportReport:
    out = Path(out)
    root = Path(root) if root is not None else Path(meta).parent
    report = ImportReport(out)
    rows, seen = [], set()
    for where, raw in read_table(meta):
        try:
            if not isinstance(raw, dict) or "__error__" in raw:
                raise ValueError(raw["__error__"] if isinstance(raw, dict) else f"not an object: {raw!r}")
            row = convert(raw)
            row["video"] = _video_field(row["video"], root, out)
            missing = [name for name in REQUIRED if name not in row]
            if missing:
                raise ValueError(f"no value for {missing}")
            issues = check_row(where, row)
            if issues:
                raise ValueError(issues[0].message)
            if row["id"] in seen:
                raise ValueError(f"duplicate id {row['id']!r}")
        except ValueError as err:
            issue = Issue(where, None, f"skipped: {err}.")
            if strict:
                raise ManifestError(str(issue)) from err
            report.skipped.append(issue)
            continue
        seen.add(row["id"])
        rows.append(row)
    if not rows:
        raise ManifestError(f"No usable row in {meta}:\n{report}")
    write_manifest(out, rows)
    report.written = len(rows)
    return report


def mira_row(raw: dict[str, Any], caption: str = "dense_caption") -> dict[str, Any]:
    """One MiraData meta row as a manifest row (see the module docstring for the mapping)."""
    clip_id, file = _text(raw.get("clip_id")), _text(raw.get("file_path"))
    if clip_id is None or file is None:
        raise ValueError("'clip_id' and 'file_path' are required")
    text = _text(raw.get(caption)) or _text(raw.get("short_caption"))
    if text is None:
        raise ValueError(f"no caption ('{caption}' and 'short_caption' are empty)")
    structured = {name: _text(raw[col]) for col, name in MIRA_STRUCTURED.items() if _text(raw.get(col))}
    row: dict[str, Any] = {"id": clip_id, "video": file, "caption": text}
    if structured:
        row["structured_caption"] = structured
    for col, kind in MIRA_NUMBERS.items():
        value = _text(raw.get(col))
        if value is not None:
            try:
                number = kind(float(value))
            except ValueError as err:
                raise ValueError(f"'{col}' = {value!r} is not a number") from err
            row["num_frames" if col == "frame_number" else col] = number
    mapped = {"clip_id", "file_path", caption, *MIRA_STRUCTURED, *MIRA_NUMBERS}
    row.update({k: v for k, v in raw.items() if k not in mapped and k not in row and _text(v) is not None})
    return row


def sekai_row(raw: dict[str, Any]) -> dict[str, Any]:
    """One Sekai annotation row as a manifest row (see the module docstring for the mapping)."""
    file, text = _text(raw.get("videoFile")), _text(raw.get("caption"))
    if file is None or text is None:
        raise ValueError("'videoFile' and 'caption' are required")
    stem = Path(file).stem
    row: dict[str, Any] = {"id": stem, "video": file, "caption": text}
    structured = {name: _text(raw[col]) for col, name in SEKAI_STRUCTURED.items() if _text(raw.get(col))}
    if structured:
        row["structured_caption"] = structured
    if _text(raw.get("cameraFile")):
        row["camera_file"] = _text(raw["cameraFile"])
    parts = stem.rsplit("_", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        row["source_video"], row["source_frames"] = parts[0], [int(parts[1]), int(parts[2])]
    mapped = {"videoFile", "caption", "cameraFile", *SEKAI_STRUCTURED}
    row.update({k: v for k, v in raw.items() if k not in mapped and k not in row and _text(v) is not None})
    return row


def import_mira(
    meta: str | Path, out: str | Path, *, root: str | Path | None = None, caption: str = "dense_caption",
    strict: bool = False,
) -> ImportReport:
    """Convert MiraData metadata into a manifest at ``out``.

    Args:
        meta: Mira meta file (CSV as released, or JSON/JSONL with the same columns).
        out: manifest to write (JSONL).
        root: directory the ``file_path`` column is relative to (default: the meta file's directory).
        caption: column used as ``caption`` (``dense_caption``, ``short_caption``, ...); an empty
            cell falls back to ``short_caption``.
        strict: raise at the first row that cannot be imported instead of skipping it.
    """
    return _import(meta, out, root, strict, lambda raw: mira_row(raw, caption))


def import_sekai(
    meta: str | Path, out: str | Path, *, root: str | Path | None = None, strict: bool = False,
) -> ImportReport:
    """Convert Sekai annotations into a manifest at ``out``.

    Args:
        meta: Sekai annotation file (CSV as released, or JSON/JSONL with the same columns).
        out: manifest to write (JSONL).
        root: directory of the extracted clips ``videoFile`` names (default: the meta file's directory).
        strict: raise at the first row that cannot be imported instead of skipping it.
    """
    return _import(meta, out, root, strict, sekai_row)


IMPORTERS = {"mira": import_mira, "sekai": import_sekai}
