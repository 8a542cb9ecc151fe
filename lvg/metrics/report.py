"""Benchmark reports: the JSON of ``lvg test``, its Markdown tables and drift-curve plots, and ``lvg compare``.

``report.json`` (written by :class:`lvg.callbacks.BenchmarkReport`)::

    {"name", "checkpoint", "suite", "fps", "num_videos",
     "metrics": {metric: overall},      # VBench dimensions with the spec's reduction, toy-world truth scores
     "drift": {metric: Delta^M},        # first vs last 15 %, lower is better
     "higher_is_better": {key: bool},
     "groups": {group: {"num_videos", "metrics", "drift"}},   # means over the group's videos
     "videos": [{"id", "group", "seconds", "frames", "metrics", "drift", "sections": {curve: [...]}}],
     "curves": {curve: {"higher_is_better", "section_seconds"}},
     "timing": {"generation_s", "metrics_s", "metrics_share"},
     "elo": [...] (optional), "notes": [...]}

The Markdown puts the numbers the way the paper's Table 1 does: global VBench metrics x 100, then the
error-accumulation deltas x 100, then ELO; toy-world truth scores get a table of their own. ``lvg
compare`` lays several reports (runs, checkpoints, ablations) out as rows of one table (Table 2).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lvg.io import atomic_path, atomic_write_text

VBENCH_ORDER = ("subject_consistency", "background_consistency", "motion_smoothness", "dynamic_degree",
                "aesthetic_quality", "imaging_quality")
"""Column order of the paper's Table 1."""
TITLES = {
    "subject_consistency": "Subject", "background_consistency": "Background", "motion_smoothness": "Smoothness",
    "dynamic_degree": "Dynamic", "aesthetic_quality": "Aesthetic", "imaging_quality": "Imaging",
    "toy_world/identity_consistency": "Identity", "toy_world/occlusion_recovery": "Recovery",
    "toy_world/long_recovery": "Long recovery", "toy_world/short_recovery": "Short recovery",
    "toy_world/background_stability": "Background", "toy_world/occluder_persistence": "Occluder",
    "toy_world/colour_drift": "Colour drift", "toy_world/contrast_drift": "Contrast drift",
}
TRUTH_PREFIX = "toy_world/"


def _title(key: str) -> str:
    return TITLES.get(key, key.removeprefix(TRUTH_PREFIX).replace("_", " ").title())


def _cell(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * scale:.2f}"


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def group_means(videos: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-group means over videos (every metric as the mean of its per-video values)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for video in videos:
        groups.setdefault(video.get("group") or "all", []).append(video)
    return {
        group: {
            "num_videos": len(items),
            **{part: {key: _mean([v[part].get(key) for v in items]) for key in items[0][part]}
               for part in ("metrics", "drift")},
        }
        for group, items in groups.items()
    }


def _columns(reports: list[dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """VBench metric keys, drift keys (Table 1 order, then any others) and truth keys present in any report."""
    def ordered(keys: set[str]) -> list[str]:
        return [k for k in VBENCH_ORDER if k in keys] + sorted(k for k in keys if k not in VBENCH_ORDER)

    metrics = {k for r in reports for k in r["metrics"]}
    vbench = ordered({k for k in metrics if not k.startswith(TRUTH_PREFIX)})
    truth = [k for k in TITLES if k in metrics and k.startswith(TRUTH_PREFIX)]
    drift = ordered({k for r in reports for k in r["drift"]})
    return vbench, drift, truth


def markdown_tables(
    rows: list[tuple[str, dict[str, Any]]], higher: dict[str, bool], elo: dict[str, float] | None = None
) -> str:
    """Table 1 layout for ``(row name, {"metrics": ..., "drift": ...})`` rows; x 100 like the paper,
    except the toy-world drifts (0..255 pixel units)."""
    reports = [r for _, r in rows]
    vbench, drift, truth = _columns(reports)

    def arrow(key: str) -> str:
        return "↑" if higher.get(key, True) else "↓"

    out = []
    if vbench or drift or elo:
        head = ([f"{_title(k)} {arrow(k)}" for k in vbench] + [f"Δ{_title(k)} ↓" for k in drift]
                + (["ELO ↑"] if elo else []))
        out += ["| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        for name, r in rows:
            cells = ([_cell(r["metrics"].get(k), 100) for k in vbench] + [_cell(r["drift"].get(k), 100) for k in drift]
                     + ([_cell(elo.get(name))] if elo else []))
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    if truth:
        head = [f"{_title(k)} {arrow(k)}" for k in truth]
        out += ["Toy-world truth (fractions x 100; drifts in 0..255 pixel units):", "",
                "| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        for name, r in rows:
            out.append(f"| {name} | " + " | ".join(
                _cell(r["metrics"].get(k), 1 if k.endswith("drift") else 100) for k in truth) + " |")
        out.append("")
    return "\n".join(out)


def report_markdown(report: dict[str, Any]) -> str:
    rows = [("all", report)] + [(g, v) for g, v in report["groups"].items() if len(report["groups"]) > 1]
    timing = report["timing"]
    lines = [
        f"# Benchmark: {report['name']}", "",
        (f"Checkpoint `{report['checkpoint']}`, suite `{report['suite']}`, {report['num_videos']} videos at "
         f"{report['fps']:g} fps. Rows: all videos (VBench dimensions reduced as VBench does), then each length "
         "group (means over its videos)."), "",
        markdown_tables(rows, report["higher_is_better"],
                        {e["model"]: e["rating"] for e in report["elo"]} if report.get("elo") else None),
        (f"Generation {timing['generation_s']:.1f} s, metrics {timing['metrics_s']:.1f} s "
         f"({100 * timing['metrics_share']:.0f} % of the time)."), "",
    ]
    lines += [f"* {note}" for note in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def plot_curves(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per per-section curve: the mean over each group's videos against time."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    paths = []
    for curve, info in report["curves"].items():
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        groups: dict[str, list[list[float | None]]] = {}
        for video in report["videos"]:
            if video["sections"].get(curve):
                groups.setdefault(video.get("group") or "all", []).append(video["sections"][curve])
        for group, series in groups.items():
            length = max(map(len, series))
            mean = [_mean([s[i] for s in series if i < len(s)]) for i in range(length)]
            xs = [(i + 1) * info["section_seconds"] for i in range(length)]
            ax.plot(xs, [float("nan") if m is None else m for m in mean], marker=".", label=f"{group} ({len(series)})")
        ax.set_xlabel("time (s, end of section)")
        better = {True: " (higher is better)", False: " (lower is better)"}.get(info["higher_is_better"], "")
        ax.set_ylabel(curve + better)
        ax.set_title(f"{report['name']}: {curve} per section")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{curve.replace('/', '_')}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """``report.json``, ``report.md`` and ``plots/*.png`` under ``out_dir``; every file written atomically."""
    out = Path(out_dir)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    atomic_write_text(out / "report.md", report_markdown(report))
    return [out / "report.json", out / "report.md", *plot_curves(report, out / "plots")]


def read_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise ValueError(f"{path} does not exist; pass a report.json written by `lvg test` (or its directory).")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}).") from err
    if not {"metrics", "drift", "higher_is_better"} <= report.keys():
        raise ValueError(f"{path} is not an `lvg test` report (no metrics / drift / higher_is_better).")
    return report


def compare(reports: list[str | Path], names: list[str] | None = None, preferences: str | None = None,
            group: str | None = None) -> str:
    """Markdown table with one row per report (Table 2 style); ``group`` picks a length group's row,
    ``preferences`` adds ELO ratings computed from a pairwise-preference file whose model names are the row names."""
    loaded = [read_report(r) for r in reports]
    names = names or [r.get("name") or Path(p).stem for r, p in zip(loaded, reports)]
    if len(names) != len(loaded):
        raise ValueError(f"{len(names)} names for {len(loaded)} reports.")
    rows = []
    for name, report in zip(names, loaded):
        if group is not None and group not in report["groups"]:
            raise ValueError(f"report {name} has no group {group!r}; it has {sorted(report['groups'])}.")
        rows.append((name, report["groups"][group] if group else report))
    higher = {k: v for r in loaded for k, v in r["higher_is_better"].items()}
    elo = None
    if preferences:
        from lvg.metrics.elo import elo_ratings, read_preferences

        elo = {e["model"]: e["rating"] for e in elo_ratings(read_preferences(preferences))}
    return markdown_tables(rows, higher, elo)
