"""``lvg test``: score every generated benchmark video and write the report.

The stage module's ``test_step`` generates the suite's videos (``LongVideoPipeline``, one seed per
job); this callback scores each one as it arrives and, at the end, writes the report directory
(:mod:`lvg.metrics.report`): ``report.json`` (per-video and overall values), ``report.md`` (the
paper's Table 1 layout), ``plots/*.png`` (every metric per section over time) and, with
``save_videos``, the videos. Overall values and curves also go to the run's loggers (TensorBoard:
``test/<metric>`` and ``test_curve/<metric>/<group>`` with the section as step).

Metrics: :class:`~lvg.metrics.VideoMetric` subclasses (the VBench dimensions of :mod:`lvg.metrics`,
configured with their weights in YAML), each also as a drift ``Delta^M``, and the toy-world truth
scores for jobs that carry a ``truth`` file. A continuation job (a ground-truth prefix, see
:mod:`lvg.data.prompt_suite`) is scored on its generated frames only: every metric, its drift and its
clips read the frames after the prefix, the truth scores get the prefix length as their frame offset,
and the prefix's sections are None in the per-section curves. Evaluator networks live here, in a callback, never in
the LightningModule, so they never reach a training checkpoint. Under DDP the
suite is split without duplicates, metric states are reduced by torchmetrics and the per-video
records gathered to rank 0, which writes the report.

Usage (the stage YAMLs already list it)::

    trainer:
      callbacks:
        - class_path: lvg.callbacks.BenchmarkReport
          init_args:
            metrics:
              - class_path: lvg.metrics.SubjectConsistency
                init_args: {weights: /models/dino_vitb16.pth}
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torchmetrics import Metric

from lvg import __version__
from lvg.media import write_video
from lvg.metrics.report import write_report
from lvg.metrics.toy_world import HIGHER_IS_BETTER as TRUTH_HIGHER
from lvg.metrics.toy_world import LABELLED as TRUTH_LABELLED
from lvg.metrics.toy_world import ToyWorldTruth
from lvg.metrics.video import VideoMetric
from lvg.models.encoders import encoders_of

log = logging.getLogger(__name__)
TRUTH_CURVES = {"identity": True, "background": True, "occluder": True, "mean_luma": None, "contrast": None}


def vbench_long_clips(num_frames: int, fps: float, seconds: float = 2.0) -> list[slice]:
    """VBench-Long's split of a ``num_frames`` video: consecutive ``seconds`` clips at the native fps; a
    remainder becomes one more clip made of the last ``seconds``; a video shorter than one clip stays whole."""
    n, t = max(1, round(seconds * fps)), num_frames
    if t <= n:
        return [slice(0, t)]
    clips = [slice(i, i + n) for i in range(0, t - n + 1, n)]
    if t % n:
        clips.append(slice(t - n, t))
    return clips


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


class BenchmarkReport(L.Callback):
    """Scores ``lvg test`` videos with the configured metrics and writes the benchmark report."""

    def __init__(
        self,
        metrics: list[Metric] | None = None,
        drift: bool = True,
        truth: bool = True,
        curves: bool = True,
        output_dir: str | None = None,
        name: str | None = None,
        save_videos: bool = True,
        preferences: str | None = None,
        vbench_long: bool = False,
    ):
        """
        Args:
            metrics: VBench dimensions (``lvg.metrics.*``) with their feature-network weights.
            drift: also report each metric's drift Delta^M (first vs last 15 % of the frames).
            truth: toy-world truth scores for jobs with a ``truth`` file (the embedded suite).
            curves: score every section on its own for the per-section plots (free for the frame-local
                metrics, which embed each frame once for the video, its sections and its drift segments;
                about one more pass over the frames for dynamic degree and motion smoothness).
            output_dir: report directory (default ``<trainer.default_root_dir>/benchmark/<checkpoint name>``).
            name: the run's name in tables (default ``<root dir name>:<checkpoint name>``).
            save_videos: keep the generated videos (``videos/<job id>.mp4``) next to the report.
            preferences: pairwise A/B preferences (JSONL/CSV, see :mod:`lvg.metrics.elo`) for an ELO table.
            vbench_long: VBench-Long protocol for the VBench dimensions: score consecutive 2 s clips and
                average over all clips (VBench re-encodes each clip to H.264 first; we score the frames
                themselves, so bit parity with VBench-Long is impossible). Drift always uses whole videos.
        """
        super().__init__()
        self.metrics = list(metrics or [])
        for metric in self.metrics:
            if not isinstance(metric, VideoMetric):
                raise ValueError(f"{type(metric).__name__} is not an lvg video metric (subclass "
                                 "lvg.metrics.VideoMetric).")
        self.drifts = []
        if drift and self.metrics:
            from lvg.metrics.drift import Drift

            self.drifts = [Drift(metric) for metric in self.metrics]
        self.truth = ToyWorldTruth() if truth else None
        self.curves, self.output_dir, self.name = curves, output_dir, name
        self.save_videos, self.preferences, self.vbench_long = save_videos, preferences, vbench_long
        self._records: list[dict[str, Any]] = []
        self._timing = {"generation_s": 0.0, "metrics_s": 0.0}

    # --- helpers ----------------------------------------------------------------------------------

    def _all_metrics(self) -> list[Metric]:
        return [*self.metrics, *self.drifts, *([self.truth] if self.truth is not None else [])]

    def _run_name(self, trainer: L.Trainer) -> tuple[str, Path]:
        checkpoint = Path(trainer.ckpt_path).stem if trainer.ckpt_path else "model"
        root = Path(trainer.default_root_dir)
        out = Path(self.output_dir) if self.output_dir else root / "benchmark" / checkpoint
        return self.name or f"{root.resolve().name}:{checkpoint}", out

    # --- hooks ------------------------------------------------------------------------------------

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for metric in self._all_metrics():
            metric.reset()
            metric.to(pl_module.device)
        self._records, self._timing = [], {"generation_s": 0.0, "metrics_s": 0.0}
        self._out = self._run_name(trainer)[1]

    @torch.no_grad()
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        started = time.perf_counter()
        fps, per_section = outputs["fps"], outputs["frames_per_section"]
        firsts = outputs.get("prefix_frames") or [0] * len(outputs["id"])
        for job_id, index, video, job, first in zip(outputs["id"], outputs["index"], outputs["videos"], outputs["jobs"],
                                                    firsts, strict=True):
            record = self._score(job_id, video, job, fps, per_section, pl_module.device, first)
            self._records.append({"index": int(index), **record})
            if self.save_videos:
                write_video(self._out / "videos" / f"{job_id}.mp4", video.numpy(), fps)
        self._timing["generation_s"] += outputs["generation_s"]
        self._timing["metrics_s"] += time.perf_counter() - started

    def _score(self, job_id: str, video: torch.Tensor, job: dict[str, Any], fps: float, per_section: int,
               device: torch.device, first: int = 0) -> dict[str, Any]:
        """Per-video values (also accumulated into each metric's overall state), drift and curves, of the frames
        from ``first`` on (a continuation's generated frames; 0: the whole video)."""
        if not 0 <= first < len(video):
            raise ValueError(f"job {job_id}: {len(video)} frames, none generated after its {first}-frame prefix.")
        # (T, 3, H, W) 0..255, the metrics' layout: the scored frames only
        frames = video[first:].permute(0, 3, 1, 2).to(device, torch.float32)
        record: dict[str, Any] = {"id": job_id, "group": job.get("group"), "seconds": job.get("seconds"),
                                  "sections_requested": job.get("sections"), "frames": int(video.shape[0]),
                                  "prefix_frames": first, "metrics": {}, "drift": {}, "sections": {}}
        t = len(frames)
        clips = vbench_long_clips(t, fps) if self.vbench_long else [slice(0, t)]
        # Sections of the whole video are [1 + s F, 1 + (s + 1) F); those of the prefix are not scored (None).
        skipped = -(-(first - 1) // per_section) if first > 1 else 0
        total = (first + t - 1) // per_section
        sections = [slice(1 + s * per_section - first, 1 + (s + 1) * per_section - first)
                    for s in range(skipped, total)]
        drifts = self.drifts or [None] * len(self.metrics)
        for metric, drift in zip(self.metrics, drifts, strict=True):
            # One clip_scores call per metric: the video (or its VBench-Long clips), the drift segments and the
            # sections share the frames' features.
            ends = drift.segments(t) if drift is not None else []
            curve = sections if self.curves and sections and per_section >= metric.min_frames else []
            scores = metric.clip_scores(frames, fps, [*clips, *ends, *curve])
            whole, scores = scores[:len(clips)], scores[len(clips):]
            metric.update(scores=whole)
            record["metrics"][metric.name] = _number(sum(n for n, _ in whole) / sum(d for _, d in whole))
            if drift is not None:
                delta = drift.score_segments(scores[:2])
                drift.update(scores=[delta])
                record["drift"][drift.name] = _number(delta[0])
            if curve:
                record["sections"][metric.name] = [None] * skipped + [_number(n / d) for n, d in scores[len(ends):]]
        if self.truth is not None and "truth_path" in job:
            truth = json.loads(Path(job["truth_path"]).read_text())
            values = self.truth([video], [truth], fps=fps, first=[first])
            record["metrics"].update({f"toy_world/{k}": _number(v) for k, v in values.items()})
            if "absences" in truth:  # undefined here (e.g. a return inside the prefix), yet a column of the suite
                for k in TRUTH_LABELLED:
                    record["metrics"].setdefault(f"toy_world/{k}", None)
            if self.curves:
                curves = self.truth.section_values(video, truth, per_section, first=first)
                record["sections"].update({f"toy_world/{k}": v for k, v in curves.items()})
        return record

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        overall: dict[str, float | None] = {m.name: _number(m.compute()) for m in self.metrics}
        drift = {d.name: _number(d.compute()) for d in self.drifts}
        if self.truth is not None and self.truth.update_called:
            overall.update({f"toy_world/{k}": _number(v) for k, v in self.truth.compute().items()})
        records, timing = self._records, dict(self._timing)
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, (records, timing))
            records = [r for part, _ in gathered for r in part]
            timing = {k: sum(t[k] for _, t in gathered) for k in timing}
        if trainer.is_global_zero:
            self._write(trainer, pl_module, overall, drift, sorted(records, key=lambda r: r["index"]), timing)

    def _write(self, trainer, pl_module, overall, drift, records, timing) -> None:
        from lvg.metrics.report import group_means

        name, out = self._run_name(trainer)
        higher = {m.name: bool(m.higher_is_better) for m in self.metrics}
        higher.update({f"toy_world/{k}": v for k, v in TRUTH_HIGHER.items()})
        fps = float(pl_module.hparams.fps)
        section_seconds = self._section_seconds(pl_module, fps)
        curves = {key: {"higher_is_better": higher.get(key, TRUTH_CURVES.get(key.removeprefix("toy_world/"))),
                        "section_seconds": section_seconds}
                  for key in sorted({k for r in records for k in r["sections"]})}
        total = timing["generation_s"] + timing["metrics_s"]
        report = {
            "name": name, "lvg_version": __version__, "checkpoint": trainer.ckpt_path,
            "suite": getattr(trainer.datamodule, "test_suite", None), "fps": fps, "num_videos": len(records),
            "metrics": overall, "drift": drift, "higher_is_better": higher, "groups": group_means(records),
            "videos": records, "curves": curves,
            "timing": {**timing, "metrics_share": timing["metrics_s"] / total if total else 0.0},
            "notes": [
                ("Metrics are computed on the generated uint8 frames before mp4 encoding (VBench scores "
                "re-encoded files, so its numbers can differ slightly)."),
                ("Group rows are means over the group's videos; the 'all' row reduces as VBench does "
                "(pair-weighted consistency)."),
            ],
        }
        if self.preferences:
            from lvg.metrics.elo import elo_ratings, read_preferences

            report["elo"] = elo_ratings(read_preferences(self.preferences))
        files = write_report(report, out)
        self._log(trainer, report)
        log.warning("benchmark report: %s", ", ".join(str(f) for f in files))
        print(f"wrote benchmark report {out / 'report.md'}")

    @staticmethod
    def _section_seconds(pl_module: L.LightningModule, fps: float) -> float:
        encoders = encoders_of(pl_module.trainer.datamodule)
        temporal = encoders.codec.temporal_factor if encoders is not None else 1
        return pl_module.memory_pack_config.window * temporal / fps

    @staticmethod
    def _log(trainer: L.Trainer, report: dict[str, Any]) -> None:
        scalars = {f"test/{k}": v for k, v in report["metrics"].items() if v is not None}
        scalars.update({f"test/delta_{k}": v for k, v in report["drift"].items() if v is not None})
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
            for curve in report["curves"]:
                for group in {v.get("group") or "all" for v in report["videos"]}:
                    series = [v["sections"][curve] for v in report["videos"]
                              if (v.get("group") or "all") == group and v["sections"].get(curve)]
                    for s in range(max(map(len, series), default=0)):
                        values = [x[s] for x in series if s < len(x) and x[s] is not None]
                        if values:
                            logger.log_metrics({f"test_curve/{curve}/{group}": sum(values) / len(values)}, step=s + 1)
            logger.save()
