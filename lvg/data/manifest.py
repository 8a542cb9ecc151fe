"""The canonical video manifest: one JSON object per line (JSONL), what ``lvg prepare`` reads.

==========================  ==========  ========  =====================================================
field                       type        required  meaning
==========================  ==========  ========  =====================================================
``id``                      string      yes       unique; names the shards (``<id>.safetensors``), so no
                                                  ``/``, ``\\`` or leading ``.``
``video``                   string      yes       file path, relative to the manifest's directory or
                                                  absolute (no URLs: download first)
``caption``                 string      yes       non-empty; what the text encoder sees
``structured_caption``      object      no        e.g. ``main_object``, ``background``, ``camera``,
                                                  ``style`` (Mira) or ``location``, ``scene`` (Sekai)
``start`` / ``end``         number      no        seconds; only this part of the video is used
``fps``                     number      no        > 0; informational (the rate is measured from the file)
``num_frames``              integer     no        >= 1; a declared count above ``max_frames`` is refused
``width`` / ``height``      integer     no        >= 1
==========================  ==========  ========  =====================================================

Unknown fields are kept as they are: importers put dataset-specific columns there. :func:`validate_manifest`
reports every bad row with its ``file:line`` and field; :func:`read_manifest` is the strict form that raises at
the first one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvg.io import atomic_write_text

REQUIRED = ("id", "video", "caption")
# Derived keys added while reading; never written back to a manifest.
DERIVED = ("video_path", "where")


class ManifestError(ValueError):
    """A manifest (or record file) that cannot be used as it is."""


@dataclass(frozen=True)
class Issue:
    """One problem of one row."""

    where: str
    """``file:line`` (or the file alone for whole-file problems)."""
    field: str | None
    """The offending field, None for whole-row problems."""
    message: str
    id: str | None = None
    """The row's id when it has a usable one."""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class ManifestReport:
    """Result of :func:`validate_manifest`: the usable rows and every problem found."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    """Valid rows, each with ``video_path`` (resolved) and ``where`` (``file:line``) added."""
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    def __str__(self) -> str:
        head = f"{self.path}: {len(self.rows)} valid rows, {len(self.issues)} problems"
        return "\n".join([head, *(f"  {issue}" for issue in self.issues)])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _lines(path: Path, kind: str) -> Iterator[tuple[str, Any, Issue | None]]:
    """``(file:line, parsed JSON object or None, issue or None)`` per non-blank line."""
    if not path.is_file():
        raise ManifestError(f"{kind} {path} does not exist.")
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield where, None, Issue(where, None, f"not valid JSON ({err}).")
            continue
        if not isinstance(record, dict):
            yield where, None, Issue(where, None, f"each line must be a JSON object, got {type(record).__name__}.")
            continue
        yield where, record, None


def _common_issues(where: str, record: dict, required: tuple[str, ...], seen: set[str]) -> list[Issue]:
    """Required fields present, and a unique non-empty string ``id``."""
    rid = record.get("id") if isinstance(record.get("id"), str) and record.get("id") else None
    issues = [
        Issue(where, name, f"missing required field '{name}' (required: {', '.join(required)}).", rid)
        for name in required if name not in record
    ]
    if "id" in record and rid is None:
        issues.append(Issue(where, "id", "'id' must be a non-empty string.", None))
    elif rid is not None and rid in seen:
        issues.append(Issue(where, "id", f"duplicate id {rid!r}.", rid))
    return issues


def read_records(path: str | Path, kind: str, required: tuple[str, ...], media: str) -> Iterator[tuple[str, dict]]:
    """Validated ``(file:line, record)`` pairs of a JSONL file: one JSON object per non-blank line, the
    ``required`` fields present, a unique non-empty string ``id``, and ``<media>_path`` set to the
    ``media`` field resolved against the file's directory. Errors name the file, line and field."""
    path = Path(path)
    seen: set[str] = set()
    for where, record, issue in _lines(path, kind):
        issues = [issue] if issue else _common_issues(where, record, required, seen)
        if issues:
            raise ManifestError(str(issues[0]))
        seen.add(record["id"])
        file = Path(record[media])
        record[f"{media}_path"] = str(file if file.is_absolute() else path.parent / file)
        yield where, record
    if not seen:
        raise ManifestError(f"{kind} {path} has no rows.")


def check_row(where: str, row: dict[str, Any]) -> list[Issue]:
    """Type and value problems of a manifest row's known fields (presence is checked elsewhere)."""
    rid = row.get("id") if isinstance(row.get("id"), str) else None
    issues = []

    def bad(name: str, message: str) -> None:
        issues.append(Issue(where, name, f"'{name}' {message}", rid))

    if rid and ("/" in rid or "\\" in rid or rid.startswith(".") or "\x00" in rid):
        bad("id", f"= {rid!r} must be usable as a file name (no '/', '\\\\', leading '.').")
    video = row.get("video")
    if "video" in row and (not isinstance(video, str) or not video.strip()):
        bad("video", f"must be a non-empty path string, got {video!r}.")
    elif isinstance(video, str) and "://" in video:
        bad("video", f"= {video!r} is a URL; download the videos and give local paths.")
    caption = row.get("caption")
    if "caption" in row and (not isinstance(caption, str) or not caption.strip()):
        bad("caption", "must be a non-empty string; every training video needs a caption.")
    if "structured_caption" in row and not isinstance(row["structured_caption"], dict):
        bad("structured_caption", f"must be a JSON object, got {type(row['structured_caption']).__name__}.")
    for name in ("start", "end"):
        if name in row and not (_is_number(row[name]) and row[name] >= 0):
            bad(name, f"must be a number of seconds >= 0, got {row[name]!r}.")
    if _is_number(row.get("start")) and _is_number(row.get("end")) and row["end"] <= row["start"]:
        bad("end", f"= {row['end']} must be greater than 'start' = {row['start']}.")
    if "fps" in row and not (_is_number(row["fps"]) and row["fps"] > 0):
        bad("fps", f"must be a number > 0, got {row['fps']!r}.")
    for name in ("num_frames", "width", "height"):
        if name in row and not _is_count(row[name]):
            bad(name, f"must be an integer >= 1, got {row[name]!r}.")
    return issues


def validate_manifest(path: str | Path, check_files: bool = False) -> ManifestReport:
    """Check every row of a manifest; return the valid rows and *all* problems (``file:line``, field).

    Args:
        path: the JSONL manifest.
        check_files: also report rows whose video file is missing or empty (one ``stat`` per row).

    Raises:
        ManifestError: only when the manifest itself is missing.
    """
    path = Path(path)
    report = ManifestReport(path)
    seen: set[str] = set()
    for where, record, issue in _lines(path, "Manifest"):
        if issue:
            report.issues.append(issue)
            continue
        issues = _common_issues(where, record, REQUIRED, seen) + check_row(where, record)
        if isinstance(record.get("id"), str):
            seen.add(record["id"])
        if issues:
            report.issues.extend(issues)
            continue
        file = Path(record["video"])
        file = file if file.is_absolute() else path.parent / file
        if check_files and not (file.is_file() and file.stat().st_size > 0):
            state = "is empty (0 bytes)" if file.is_file() else "does not exist"
            report.issues.append(Issue(where, "video", f"'video' file {file} {state}.", record["id"]))
            continue
        record["video_path"], record["where"] = str(file), where
        report.rows.append(record)
    if not report.rows and not report.issues:
        report.issues.append(Issue(str(path), None, "has no rows."))
    return report


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Parse and validate a JSONL manifest; the first problem raises :class:`ManifestError` naming
    the file, line and field (use :func:`validate_manifest` to list them all)."""
    report = validate_manifest(path)
    if report.issues:
        more = f" ({len(report.issues) - 1} more: `lvg prepare --validate_only`)" if len(report.issues) > 1 else ""
        raise ManifestError(f"{report.issues[0]}{more}")
    return report.rows


def write_manifest(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as a JSONL manifest (atomically), without the keys added while reading."""
    path = Path(path)
    lines = [json.dumps({k: v for k, v in row.items() if k not in DERIVED}, ensure_ascii=False) for row in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path
