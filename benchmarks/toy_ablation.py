"""The paper's Table 2 ablation (and its A/B/C fusion study) on the toy memory world, with bootstrap intervals.

Every arm trains on the same memory world (:meth:`lvg.data.toy_world.ToyWorldConfig.memory`), for the same
steps and seeds, through the real ``lvg`` CLI (``lvg fit --config configs/<stage>.yaml`` plus overrides), and
is scored by ``lvg test`` (the embedded benchmark suite -- continuations of held-out videos from a ground-truth
prefix, :func:`lvg.data.prompt_suite.memory_world_jobs` -- and the toy-world truth metrics of ``BenchmarkReport``):

* ``F1``: SemanticPack off, relative RoPE (FramePack-F1 fine-tuned: the paper's F1 w/CT analogue);
* ``MemoryPack``: stage 1 with SemanticPack (fusion A, semantic psi0, absolute RoPE);
* ``zero-MemoryPack``: the same with psi0 = zero;
* ``Student Forcing``: stage 2 from the MemoryPack checkpoint of the same seed, 5-step rollouts;
* ``All``: stage 2 Direct Forcing from the MemoryPack checkpoint of the same seed;
* ``fusion B`` / ``fusion C``: stage 1 as MemoryPack with the other Squeeze structures.

    python benchmarks/toy_ablation.py --output runs/ablation                 # 3 seeds, the default steps
    python benchmarks/toy_ablation.py --quick --output runs/ablation_quick   # 1 seed, 20 steps, a tiny world
    python benchmarks/toy_ablation.py --seeds 5 --steps 600 --output DIR

Writes ``DIR/ablation.json`` (per arm: per-seed metrics, mean and 95 % bootstrap interval over seeds and
videos, median train step time; the comparisons the paper makes), ``DIR/ablation.md`` (the Table 2 layout of
``lvg compare`` for the means, the same table with the intervals, one line per question) and
``DIR/plots/*.png`` (every per-section metric, one line per arm). Each (arm, seed) runs under
``DIR/runs/<arm>/seed<k>/`` and ends with an atomic ``result.json``: a rerun skips finished pairs, so a
killed run keeps them. Prints the JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import yaml

from lvg.cli import LvgCLI
from lvg.cli import main as lvg_main
from lvg.data.toy_world import ContextSpan, ToyWorldConfig
from lvg.io import atomic_write_text
from lvg.metrics.report import TITLES, markdown_tables
from lvg.metrics.toy_world import HIGHER_IS_BETTER, SCORES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
METRICS = tuple(f"toy_world/{name}" for name in SCORES)
"""Per-video truth scores, in report order (identity, occlusion recovery, long / short recovery, background,
occluder, colour and contrast drift)."""
HIGHER = {f"toy_world/{name}": better for name, better in HIGHER_IS_BETTER.items()}
RESAMPLES, BOOTSTRAP_SEED, LEVEL = 2000, 2000, 0.95
# Widths of the debug DiT that fit the toy encoders (tests/toy_setup.py DEBUG_FOR_TOY).
DEBUG_FOR_TOY = {"in_channels": 12, "out_channels": 12, "text_embed_dim": 64, "pooled_projection_dim": 64,
                 "image_proj_dim": 48}


@dataclass(frozen=True)
class Arm:
    """One row of the table: a stage recipe and the overrides that make the ablation."""

    name: str
    slug: str
    """Directory name under ``DIR/runs``."""
    recipe: str
    """``configs/<recipe>.yaml``."""
    args: tuple[str, ...] = ()
    init_from: str | None = None
    """Name of the arm whose checkpoint (same seed) this stage-2 arm starts from."""


P = "--model.init_args."
ARMS = (
    Arm("F1", "F1", "teacher_forcing", (f"{P}semantic_pack.enabled=false", f"{P}memory_pack.rope_time_mode=relative")),
    Arm("MemoryPack", "MemoryPack", "teacher_forcing",
        (f"{P}semantic_pack.fusion=A", f"{P}semantic_pack.psi0=semantic", f"{P}memory_pack.rope_time_mode=absolute")),
    Arm("zero-MemoryPack", "zero-MemoryPack", "teacher_forcing",
        (f"{P}semantic_pack.fusion=A", f"{P}semantic_pack.psi0=zero", f"{P}memory_pack.rope_time_mode=absolute")),
    # Student Forcing scores as many sections per step as the Direct Forcing recipe does, so their step-time
    # ratio measures the history mechanism (a 5-step rollout vs a reused prediction), not the gradient count.
    Arm("Student Forcing", "Student-Forcing", "student_forcing",
        (f"{P}rollout_steps=5", f"{P}memory_pack.rope_time_mode=absolute"), init_from="MemoryPack"),
    Arm("All", "All", "direct_forcing", (f"{P}memory_pack.rope_time_mode=absolute",), init_from="MemoryPack"),
    Arm("fusion B", "fusion-B", "teacher_forcing",
        (f"{P}semantic_pack.fusion=B", f"{P}semantic_pack.psi0=semantic", f"{P}memory_pack.rope_time_mode=absolute")),
    Arm("fusion C", "fusion-C", "teacher_forcing",
        (f"{P}semantic_pack.fusion=C", f"{P}semantic_pack.psi0=semantic", f"{P}memory_pack.rope_time_mode=absolute")),
)
BY_NAME = {arm.name: arm for arm in ARMS}
FUSION = {"MemoryPack": "A", "fusion B": "B", "fusion C": "C"}
"""The Squeeze structure of each arm of the fusion study (fusion A is the MemoryPack arm)."""


@dataclass(frozen=True)
class Setting:
    """Scale of a run: the world, the steps, the seeds and the model overrides every arm shares."""

    steps: int
    seeds: int
    num_videos: int
    benchmark_videos: int
    window: int = 9
    history: tuple[int, int, int] = (16, 2, 1)
    sampling_steps: int | None = None
    """``model.sampling.steps`` of ``lvg test`` (None: the recipe's)."""
    model_args: tuple[str, ...] = ()

    @property
    def toy(self) -> ToyWorldConfig:
        # The world's absences are measured against the context of the model that is trained on it.
        return ToyWorldConfig.memory(num_videos=self.num_videos, context=ContextSpan(window=self.window,
                                                                                      history=self.history))


def setting_for(args: argparse.Namespace) -> Setting:
    if args.tiny:  # the runner's test: the debug DiT, a 3-frame window, a short history, two videos
        tiny = (f"{P}dit=debug", f"{P}dit_overrides={json.dumps(DEBUG_FOR_TOY)}", f"{P}semantic_pack.dim=32",
                f"{P}semantic_pack.memory_grid=[2, 2]")
        base = Setting(steps=2, seeds=1, num_videos=2, benchmark_videos=2, window=3, history=(4, 2, 1),
                       sampling_steps=2, model_args=tiny)
    elif args.quick:
        base = Setting(steps=20, seeds=1, num_videos=4, benchmark_videos=2, sampling_steps=4)
    else:
        base = Setting(steps=150, seeds=3, num_videos=16, benchmark_videos=4)
    overrides = {k: v for k, v in (("steps", args.steps), ("seeds", args.seeds)) if v is not None}
    return dataclasses.replace(base, **overrides)


class StepTimes(L.Callback):
    """Wall time of every training step (the optimizer step included), written as JSON when training ends."""

    def __init__(self, path: str):
        self.path, self.times, self._start = path, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)

    def on_train_end(self, trainer, pl_module) -> None:
        atomic_write_text(self.path, json.dumps(self.times))


def _recipe(name: str) -> dict[str, Any]:
    """A stage config as ``lvg fit`` reads it (its ``base:`` recipe included, defaults filled)."""
    return LvgCLI.read(["--config", str(CONFIGS / f"{name}.yaml")]).as_dict()


def overlay(run: Path, data_root: Path, setting: Setting, arm_name: str) -> dict[str, Any]:
    """The config layered over the recipe: this run's directories, no TensorBoard or sample videos (time),
    the step timer, the benchmark report, the memory world and its suite (``benchmark_videos`` held-out videos,
    each continued twice: :func:`lvg.data.prompt_suite.memory_world_jobs`)."""
    toy = setting.toy
    return {
        "trainer": {
            "default_root_dir": str(run),
            "logger": False,
            "enable_progress_bar": False,
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(run / "checkpoints"), "save_top_k": 0, "save_last": True,
                               # one save, at the end: no epoch-end copies (an epoch is one pass over the videos)
                               "every_n_train_steps": setting.steps, "save_on_train_epoch_end": False}},
                {"class_path": f"{StepTimes.__module__}.StepTimes",
                 "init_args": {"path": str(run / "step_times.json")}},
                {"class_path": "lvg.callbacks.BenchmarkReport",
                 "init_args": {"metrics": [], "output_dir": str(run / "benchmark"), "name": arm_name}},
            ],
        },
        "data": {"init_args": {
            "root": str(data_root),
            "toy": json.loads(json.dumps(dataclasses.asdict(toy))),  # plain lists for YAML
            "benchmark_videos": setting.benchmark_videos,
            "min_latent_frames": 1 + setting.window,
        }},
    }


def arm_args(arm: Arm, seed: int, setting: Setting, out: Path) -> list[str]:
    """Overrides of one (arm, seed) run shared by ``fit`` and ``test`` (``test`` builds the same model)."""
    recipe = _recipe(arm.recipe)
    model = recipe["model"]["init_args"]
    # The recipe's warm-up, as the same share of the (shorter or longer) run.
    warmup = round(model.get("warmup_steps", 0) * setting.steps / recipe["trainer"]["max_steps"])
    words = [f"--seed_everything={seed}", f"{P}seed={seed}", f"--trainer.max_steps={setting.steps}",
             f"{P}warmup_steps={warmup}", f"{P}memory_pack.window={setting.window}",
             f"{P}memory_pack.history_sizes={list(setting.history)}", *setting.model_args, *arm.args]
    if arm.recipe == "student_forcing":
        words.append(f"{P}sections_per_step={_recipe('direct_forcing')['model']['init_args']['sections_per_step']}")
    if setting.sampling_steps is not None:
        words.append(f"{P}sampling.steps={setting.sampling_steps}")
    if arm.init_from is not None:
        words.append(f"{P}init_from={checkpoint(out, BY_NAME[arm.init_from], seed)}")
    return words


def run_setting(setting: Setting) -> dict[str, Any]:
    """What a finished (arm, seed) depends on: everything but the number of seeds, as JSON values."""
    return json.loads(json.dumps({k: v for k, v in dataclasses.asdict(setting).items() if k != "seeds"}))


def run_dir(out: Path, arm: Arm, seed: int) -> Path:
    return out / "runs" / arm.slug / f"seed{seed}"


def checkpoint(out: Path, arm: Arm, seed: int) -> Path:
    return run_dir(out, arm, seed) / "checkpoints" / "last.ckpt"


def run_arm(arm: Arm, seed: int, setting: Setting, out: Path) -> dict[str, Any]:
    """Train and test one (arm, seed); returns (and atomically writes) its ``result.json``."""
    run = run_dir(out, arm, seed)
    parent = BY_NAME[arm.init_from] if arm.init_from is not None else None
    if parent is not None and not checkpoint(out, parent, seed).is_file():
        raise SystemExit(f"toy_ablation: {arm.name} starts from {checkpoint(out, parent, seed)}, which is missing; "
                         f"delete {run_dir(out, parent, seed)} to retrain it.")
    if run.exists():  # what a killed run left (no result.json): start the pair afresh
        shutil.rmtree(run)
    run.mkdir(parents=True)
    layer = run / "overlay.yaml"
    layer.write_text(yaml.safe_dump(overlay(run, out / "data" / "memory_world", setting, arm.name)))
    configs = ["--config", str(CONFIGS / f"{arm.recipe}.yaml"), "--config", str(layer)]
    words = arm_args(arm, seed, setting, out)
    started = time.perf_counter()
    commands = {"fit": ["fit", *configs, *words],
                "test": ["test", *configs, *words, f"--ckpt_path={checkpoint(out, arm, seed)}"]}
    lvg_main(commands["fit"])
    train_s = time.perf_counter() - started
    lvg_main(commands["test"])
    test_s = time.perf_counter() - train_s - started
    report = json.loads((run / "benchmark" / "report.json").read_text())
    step_times = json.loads((run / "step_times.json").read_text())
    result = {
        "arm": arm.name, "seed": seed, "setting": run_setting(setting), "commands": commands,  # `lvg` argv
        "train_s": train_s, "test_s": test_s,
        "step_times_s": step_times, "step_time_s": float(np.median(step_times)),
        "curves": report["curves"],
        "videos": [{"id": v["id"], "metrics": {k: v["metrics"].get(k) for k in METRICS}, "sections": v["sections"]}
                   for v in report["videos"]],
    }
    atomic_write_text(run / "result.json", json.dumps(result, indent=1))
    return result


# --- statistics -----------------------------------------------------------------------------------


def _nanmean(values: np.ndarray, axis: Any) -> np.ndarray:
    with warnings.catch_warnings():  # an all-undefined resample is NaN, dropped by the percentiles
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def bootstrap_indices(rng: np.random.Generator, seeds: int, items: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-level resampling: seeds with replacement, then items (videos, steps) within each drawn seed."""
    return rng.integers(0, seeds, (RESAMPLES, seeds)), rng.integers(0, items, (RESAMPLES, seeds, items))


def resample(values: np.ndarray, index: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``(RESAMPLES, S, N)`` draws of a ``(S, N)`` matrix."""
    s, n = index
    return values[s[..., None], n]


def interval(draws: np.ndarray) -> tuple[float | None, float | None]:
    kept = draws[~np.isnan(draws)]
    if not kept.size:
        return None, None
    lo, hi = np.percentile(kept, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return float(lo), float(hi)


def _value(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def matrices(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, np.ndarray]]:
    """Per arm and metric, the ``(seeds, videos)`` values (NaN where undefined); seeds and videos in the same
    order for every arm, so resampling the same indices pairs the arms."""
    out = {}
    for name, runs in results.items():
        ids = [v["id"] for v in runs[0]["videos"]]
        assert all([v["id"] for v in r["videos"]] == ids for r in runs), f"{name}: seeds scored different suites"
        out[name] = {m: np.array([[np.nan if v["metrics"][m] is None else v["metrics"][m] for v in r["videos"]]
                                  for r in runs], dtype=float) for m in METRICS}
    return out


def summarise(results: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-arm statistics and the comparisons the paper makes, each with its bootstrap interval."""
    values = matrices(results)
    shape = next(iter(values.values()))[METRICS[0]].shape
    index = bootstrap_indices(np.random.default_rng(BOOTSTRAP_SEED), *shape)  # shared: paired differences
    draws = {name: {m: _nanmean(resample(v, index), (1, 2)) for m, v in per.items()} for name, per in values.items()}
    step_draws = {}
    arms: dict[str, Any] = {}
    for k, (name, runs) in enumerate(results.items()):
        steps = np.array([r["step_times_s"] for r in runs], dtype=float)
        # Step times of different arms are not paired: each arm draws its own indices.
        step_index = bootstrap_indices(np.random.default_rng([BOOTSTRAP_SEED, k]), *steps.shape)
        step_draws[name] = np.median(resample(steps, step_index).reshape(RESAMPLES, -1), axis=1)
        metrics = {}
        for m in METRICS:
            lo, hi = interval(draws[name][m])
            metrics[m] = {"mean": _value(_nanmean(values[name][m], None)), "lo": lo, "hi": hi,
                          "n": int((~np.isnan(values[name][m])).sum())}
        lo, hi = interval(step_draws[name])
        arms[name] = {
            "metrics": metrics,
            "step_time_s": {"median": float(np.median(steps)), "lo": lo, "hi": hi},
            "train_s": sum(r["train_s"] for r in runs), "test_s": sum(r["test_s"] for r in runs),
            "seeds": {str(r["seed"]): {"metrics": {m: _value(_nanmean(values[name][m][i], None)) for m in METRICS},
                                       "step_time_s": r["step_time_s"], "videos": len(r["videos"])}
                      for i, r in enumerate(runs)},
        }

    def difference(question: str, a: str, b: str, metric: str) -> dict[str, Any]:
        lo, hi = interval(draws[a][metric] - draws[b][metric])
        diff = _nanmean(values[a][metric], None) - _nanmean(values[b][metric], None)
        return {"question": question, "a": a, "b": b, "metric": metric, "kind": "difference", "value": _value(diff),
                "lo": lo, "hi": hi}

    comparisons = [
        difference("MemoryPack recovers what F1 forgets (long absence)", "MemoryPack", "F1", "toy_world/long_recovery"),
        difference("short-absence control: no difference expected", "MemoryPack", "F1", "toy_world/short_recovery"),
        difference("Direct Forcing lowers colour drift", "All", "MemoryPack", "toy_world/colour_drift"),
        difference("Direct Forcing lowers contrast drift", "All", "MemoryPack", "toy_world/contrast_drift"),
        difference("semantic psi0 matters (long absence)", "MemoryPack", "zero-MemoryPack", "toy_world/long_recovery"),
        difference("semantic psi0 matters (identity)", "MemoryPack", "zero-MemoryPack",
                   "toy_world/identity_consistency"),
    ]
    lo, hi = interval(step_draws["Student Forcing"] / step_draws["All"])
    ratio = arms["Student Forcing"]["step_time_s"]["median"] / arms["All"]["step_time_s"]["median"]
    comparisons.append({"question": "Student Forcing is much slower than Direct Forcing (step time ratio)",
                        "a": "Student Forcing", "b": "All", "metric": "step_time", "kind": "ratio", "value": ratio,
                        "lo": lo, "hi": hi})
    comparisons += [difference("Student Forcing vs All quality", "Student Forcing", "All", m)
                    for m in ("toy_world/long_recovery", "toy_world/identity_consistency", "toy_world/colour_drift")]
    comparisons += [difference(f"fusion {FUSION[a]} vs {FUSION[b]}", a, b, m)
                    for a, b in (("MemoryPack", "fusion B"), ("MemoryPack", "fusion C"), ("fusion B", "fusion C"))
                    for m in ("toy_world/long_recovery", "toy_world/identity_consistency")]
    return arms, comparisons


# --- report ---------------------------------------------------------------------------------------


def _scale(metric: str) -> float:
    return 1.0 if metric.endswith("drift") else 100.0  # lvg compare's units: fractions x 100, drifts in 0..255


def _fmt(x: float | None, scale: float) -> str:
    return "-" if x is None else f"{x * scale:.1f}"


def _cell(stat: dict[str, Any], scale: float) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{_fmt(stat['mean'], scale)} [{_fmt(stat['lo'], scale)}, {_fmt(stat['hi'], scale)}]"


def _verdict(c: dict[str, Any]) -> str:
    """Which way the interval falls, in words: the better arm for a metric, the slower one for a time ratio."""
    if c["lo"] is None:
        return "undefined (no video defines it)"
    null = 1.0 if c["kind"] == "ratio" else 0.0
    if c["lo"] <= null <= c["hi"]:
        return f"the interval contains {null:g}: no difference shown"
    above = c["lo"] > null
    if c["kind"] == "ratio":
        return f"{c['a'] if above else c['b']} slower"
    return f"{c['a'] if above == HIGHER[c['metric']] else c['b']} better"


def markdown(summary: dict[str, Any]) -> str:
    arms, setting = summary["arms"], summary["setting"]
    present = [m for m in METRICS if any(a["metrics"][m]["mean"] is not None for a in arms.values())]
    rows = [(name, {"metrics": {m: a["metrics"][m]["mean"] for m in present}, "drift": {}}) for name, a in arms.items()]
    lines = [
        "# Toy-world ablation (the paper's Table 2 and fusion study)", "",
        (f"{setting['seeds']} seed(s), {setting['steps']} training steps per arm (stage-2 arms: {setting['steps']} "
        f"more from the MemoryPack checkpoint of the same seed), {setting['num_videos']} training videos of the "
        f"memory world, {setting['benchmark_videos']} held-out benchmark videos per seed, each continued twice from "
        f"a ground-truth prefix (long_absence, short_absence); window {setting['window']}, history "
        f"{setting['history']}. 95 % bootstrap intervals "
        f"({RESAMPLES} resamples: seeds, then videos within each seed)."), "",
        "Means (the layout of `lvg compare`):", "",
        markdown_tables(rows, HIGHER),
        "With the 95 % intervals (fractions x 100; drifts in 0..255 pixel units; step time in seconds):", "",
        "| | " + " | ".join(f"{TITLES.get(m, m)} {'↑' if HIGHER[m] else '↓'}" for m in present) + " | Step s |",
        "|---" * (len(present) + 2) + "|",
    ]
    for name, a in arms.items():
        step = a["step_time_s"]
        cells = [_cell(a["metrics"][m], _scale(m)) for m in present]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {step['median']:.3f} [{step['lo']:.3f}, {step['hi']:.3f}] |")
    lines += ["", "## The questions (difference a - b, or ratio a / b, with its 95 % interval)", ""]
    for c in summary["comparisons"]:
        scale = 1.0 if c["kind"] == "ratio" else _scale(c["metric"])
        what = "step time ratio" if c["kind"] == "ratio" else TITLES.get(c["metric"], c["metric"])
        sign = "+" if c["kind"] == "difference" else ""  # significant digits: toy differences can be tiny
        value = "-" if c["value"] is None else f"{c['value'] * scale:{sign}.3g}"
        lo = "-" if c["lo"] is None else f"{c['lo'] * scale:.3g}"
        hi = "-" if c["hi"] is None else f"{c['hi'] * scale:.3g}"
        lines.append(f"* {c['question']}: {c['a']} vs {c['b']}, {what}: {value} [{lo}, {hi}] -- {_verdict(c)}.")
    one_seed = ["With 1 seed the intervals cover video variation only."] if setting["seeds"] == 1 else []
    notes = summary["notes"] + one_seed
    lines += ["", "## Notes", "", *[f"* {note}" for note in notes], ""]
    return "\n".join(lines)


def plot(results: dict[str, list[dict[str, Any]]], out: Path) -> list[str]:
    """One PNG per per-section curve of the reports: the mean over seeds and videos, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    curves = {k: info for runs in results.values() for r in runs for k, info in r["curves"].items()}
    paths = []
    for curve, info in sorted(curves.items()):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for name, runs in results.items():
            series = [v["sections"][curve] for r in runs for v in r["videos"] if v["sections"].get(curve)]
            if not series:
                continue
            length = max(map(len, series))
            table = np.full((len(series), length), np.nan)
            for i, s in enumerate(series):
                table[i, :len(s)] = [np.nan if x is None else x for x in s]
            xs = [(i + 1) * info["section_seconds"] for i in range(length)]
            ax.plot(xs, _nanmean(table, 0), marker=".", label=name)
        better = {True: " (higher is better)", False: " (lower is better)"}.get(info["higher_is_better"], "")
        ax.set_xlabel("time (s, end of section)")
        ax.set_ylabel(curve + better)
        ax.set_title(f"{curve} per section, mean over seeds and videos")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "plots" / f"{curve.replace('/', '_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        plt.close(fig)
        paths.append(str(path))
    return paths


def notes(setting: Setting) -> list[str]:
    return [
        ("long_recovery comes from continuations (lvg.data.prompt_suite.memory_world_jobs): each held-out video's "
         "ground truth up to the first section start at which no frame of FramePack's context (start frame, "
         f"{sum(setting.history)}-latent history) shows any pixel of the late sprite, which has been seen and is "
         "hidden for its long absence; the pipeline seeds history and psi from that prefix as Teacher Forcing "
         "would, generates the rest, and only the generated frames are scored. So only psi can hold the sprite "
         "when it is due back; the prompt does not name it (the training captions do), so text cannot bring it."),
        ("short_recovery is the control: its continuation starts inside the short absence, whose last view of the "
         "sprite still lies in the history, so the FramePack context alone can bridge it."),
        ("Identity, background, occluder and drift are means over both continuations of each video, over the "
         "generated frames (the prefix never counts), which run to the held-out video's end "
         f"({setting.toy.min_seconds:g}-{setting.toy.max_seconds:g} s), not the paper's 60 s."),
        ("Student Forcing trains as many sections per step as the Direct Forcing recipe (sections_per_step), so "
        "the step-time ratio compares the history mechanisms. Every recipe's warm-up is scaled to the run's "
        "steps (same share of the run)."),
        ("Toy scale on a CPU: a tiny DiT trained for minutes on a procedural world. The intervals cover seed and "
        "video variation only, not the choice of world or scale."),
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="directory for ablation.json, ablation.md, plots/, runs/")
    parser.add_argument("--quick", action="store_true", help="1 seed, 20 steps, 4 training videos (minutes)")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds per arm (default 3; --quick: 1)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per arm (default 150; --quick: 20)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the runner's own test
    args = parser.parse_args(argv)
    for name in ("seeds", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    setting = setting_for(args)
    out = Path(args.output)
    started = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {arm.name: [] for arm in ARMS}
    for seed in range(setting.seeds):
        for arm in ARMS:  # MemoryPack comes before the stage-2 arms that start from its checkpoint
            done = run_dir(out, arm, seed) / "result.json"
            if done.is_file():
                result = json.loads(done.read_text())
                if result["setting"] != run_setting(setting):  # mixing scales would make the table meaningless
                    raise SystemExit(f"toy_ablation: {done} was made with {result['setting']}, not "
                                     f"{run_setting(setting)}; pass another --output (or delete {out / 'runs'}).")
                print(f"toy_ablation: {arm.name} seed {seed}: finished before, kept", file=sys.stderr)
                results[arm.name].append(result)
                continue
            print(f"toy_ablation: {arm.name} seed {seed}: training and testing", file=sys.stderr)
            results[arm.name].append(run_arm(arm, seed, setting, out))
    arms, comparisons = summarise(results)
    summary = {
        "setting": {**dataclasses.asdict(setting), "toy": dataclasses.asdict(setting.toy)},
        "bootstrap": {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "level": LEVEL,
                      "scheme": "seeds with replacement, then videos (step times: steps) within each drawn seed; "
                                "metrics: the same draws for every arm, so differences are paired; step times: "
                                "independent draws per arm"},
        "arms": arms, "comparisons": comparisons, "notes": notes(setting),
    }
    try:
        summary["plots"] = plot(results, out)
    except ImportError:
        print("toy_ablation: matplotlib is not installed: no plots", file=sys.stderr)
        summary["notes"].append("matplotlib is not installed: no plots.")
    # This invocation only: pairs kept from an earlier run count in the arms' train_s / test_s instead.
    summary["invocation_wall_s"] = time.perf_counter() - started
    atomic_write_text(out / "ablation.json", json.dumps(summary, indent=1))
    atomic_write_text(out / "ablation.md", markdown(summary))
    print(json.dumps({name: {"step_time_s": a["step_time_s"]["median"],
                             **{m.removeprefix("toy_world/"): a["metrics"][m]["mean"] for m in METRICS}}
                      for name, a in arms.items()} | {"invocation_wall_s": summary["invocation_wall_s"]}, indent=1))
    return summary


if __name__ == "__main__":
    main()
