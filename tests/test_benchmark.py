"""Toy-world truth metrics, benchmark suites, `lvg test` reports and `lvg compare` (CPU, no weights)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lvg.cli import main
from lvg.data.prompt_suite import read_suite, toy_world_suite, vbench_i2v_suite
from lvg.data.toy_world import BACKGROUNDS, ToyWorldConfig, render_video, sample_video_spec
from lvg.metrics.drift import segment_length
from lvg.metrics.toy_world import ToyWorldTruth

CONFIGS = Path(__file__).parents[1] / "configs"
TOY = ToyWorldConfig(num_videos=12)


@pytest.fixture(scope="module")
def toy_videos():
    return [render_video(sample_video_spec(TOY, i)) for i in range(TOY.num_videos)]


def test_truth_metrics_agree_with_the_generators_labels(toy_videos):
    """On real toy-world videos, pixel-based identity and recovery equal what the truth's own visibility
    labels give; the pillar is always intact."""
    metric = ToyWorldTruth()
    for frames, truth in toy_videos:
        values = metric.video_values(torch.from_numpy(frames), truth, fps=truth["fps"])
        visible = torch.tensor([s["visible"] for s in truth["sprites"]])  # (K, T) truth labels
        start = visible[:, 0]
        n = segment_length(truth["num_frames"], 1)
        assert values["identity_consistency"] == pytest.approx(float(visible[start, -n:].any(dim=1).double().mean()))
        assert values["occlusion_recovery"] == ToyWorldTruth._recovery(visible[start], gap=4)  # 0.5 s at 8 fps
        assert values["occluder_persistence"] == 1.0
        assert 0.7 < values["background_stability"] <= 1.0  # the camera pans over new texture
    recoveries = [metric.video_values(torch.from_numpy(f), t, 8)["occlusion_recovery"] for f, t in toy_videos]
    assert recoveries.count(1.0) == len(recoveries)  # every scripted leave / hide comes back


def test_truth_metrics_catch_identity_changes_loss_and_drift(toy_videos):
    frames, truth = toy_videos[0]
    metric, t = ToyWorldTruth(), len(frames)
    n = segment_length(t, 1)
    base = metric.video_values(torch.from_numpy(frames), truth, 8)
    assert base["identity_consistency"] == 1.0

    # A sprite that changes colour at the end has lost its identity.
    recoloured = frames.copy()
    k = 0
    rgb = np.array(truth["sprites"][k]["rgb"], np.uint8)
    recoloured[-n:][np.all(recoloured[-n:] == rgb, axis=-1)] = (255 - rgb[0], rgb[2], rgb[1])
    values = metric.video_values(torch.from_numpy(recoloured), truth, 8)
    assert values["identity_consistency"] == pytest.approx(1 - 1 / len(truth["sprites"]))

    # A sprite painted over with background from the middle on: disappears and never comes back.
    lost = frames.copy()
    background = np.array(BACKGROUNDS[truth["background"]], np.uint8)
    lost[t // 2 :][np.all(lost[t // 2 :] == rgb, axis=-1)] = background
    values = metric.video_values(torch.from_numpy(lost), truth, 8)
    assert values["occlusion_recovery"] < base["occlusion_recovery"]
    assert values["identity_consistency"] < 1.0

    # A frozen video: nothing drifts, nothing disappears (recovery undefined), the palette is identical.
    frozen = np.repeat(frames[:1], t, axis=0)
    values = metric.video_values(torch.from_numpy(frozen), truth, 8)
    assert values["colour_drift"] == values["contrast_drift"] == 0.0
    assert values["background_stability"] == pytest.approx(1.0)
    assert values["occlusion_recovery"] is None

    # A brightness ramp: colour drift equals the mean shift (closed form, no clipping at +20).
    brighter = frames.astype(np.float32)
    brighter[-n:] += 20
    values = metric.video_values(torch.from_numpy(brighter).clamp(0, 255), truth, 8)
    shifted = torch.from_numpy(brighter).clamp(0, 255)
    expected = float((shifted[:n].mean(dim=(0, 1, 2)) - shifted[-n:].mean(dim=(0, 1, 2))).abs().mean())
    assert values["colour_drift"] == pytest.approx(expected, abs=1e-4)


def test_truth_metric_reduces_sums_and_counts_like_ddp(toy_videos):
    """Two shards (uneven) merged == one metric over all videos; undefined scores are not counted."""
    full, parts = ToyWorldTruth(), [ToyWorldTruth(), ToyWorldTruth()]
    videos = [(torch.from_numpy(f), t) for f, t in toy_videos[:5]]
    full.update([v for v, _ in videos], [t for _, t in videos], fps=8)
    parts[0].update([v for v, _ in videos[:2]], [t for _, t in videos[:2]], fps=8)
    parts[1].update([v for v, _ in videos[2:]], [t for _, t in videos[2:]], fps=8)
    parts[0].merge_state(parts[1])
    for key, value in full.compute().items():
        torch.testing.assert_close(parts[0].compute()[key], value, msg=key)
    per_video = [full.video_values(v, t, 8)["background_stability"] for v, t in videos]
    assert float(full.compute()["background_stability"]) == pytest.approx(sum(per_video) / len(per_video))
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert math.isnan(float(ToyWorldTruth().compute()["identity_consistency"]))
    with pytest.raises(ValueError, match="2 videos but 1 truths"):
        full.update([videos[0][0], videos[1][0]], [videos[0][1]], fps=8)


def test_section_curves_split_after_the_start_frame(toy_videos):
    frames, truth = toy_videos[1]
    curves = ToyWorldTruth().section_values(torch.from_numpy(frames), truth, frames_per_section=9)
    sections = (len(frames) - 1) // 9
    assert all(len(v) == sections for v in curves.values())
    expected = torch.from_numpy(frames[1:10]).float() @ torch.tensor([0.299, 0.587, 0.114])
    assert curves["mean_luma"][0] == pytest.approx(float(expected.mean()), rel=1e-6)
    assert all(v == 1.0 for v in curves["occluder"])


def test_embedded_suite_holds_out_videos_and_groups_lengths(tmp_path):
    suite = toy_world_suite(tmp_path / "bench", ToyWorldConfig(num_videos=16), {"short": 10, "long": 60}, 2)
    jobs = read_suite(suite)
    assert [j["group"] for j in jobs] == ["short", "short", "long", "long"]
    assert [j["seconds"] for j in jobs] == [10, 10, 60, 60]
    truths = [json.loads(Path(j["truth_path"]).read_text()) for j in jobs]
    train = [sample_video_spec(ToyWorldConfig(num_videos=16), i).caption for i in range(16)]
    assert not {j["prompt"] for j in jobs} & set(train)  # held out: another seed
    assert truths[0]["id"] == "toy_0000" and len({t["id"] for t in truths}) == 4
    assert toy_world_suite(tmp_path / "bench", ToyWorldConfig(num_videos=16), {"short": 10, "long": 60}, 2) == suite


def test_vbench_i2v_suite_from_vbench_info(tmp_path):
    images = tmp_path / "crop" / "16-9"
    images.mkdir(parents=True)
    Image.new("RGB", (64, 36)).save(images / "a cat.jpg")
    info = tmp_path / "vbench2_i2v_full_info.json"
    info.write_text(json.dumps([
        {"image_name": "a cat.jpg", "prompt_en": "a cat walks", "dimension": ["subject_consistency"]},
        {"image_name": "a hill.jpg", "prompt_en": "a hill", "dimension": ["background_consistency"]},
    ]))
    jobs = read_suite(vbench_i2v_suite(info, images, tmp_path / "suite.jsonl", {"short": 10, "long": 60}))
    assert [(j["group"], j["prompt"]) for j in jobs] == [("short", "a cat walks"), ("long", "a cat walks")]
    with pytest.raises(ValueError, match="a hill.jpg .* is missing; download the VBench-I2V images"):
        vbench_i2v_suite(info, images, tmp_path / "all.jsonl", dimension=None)


TINY = [
    "--model.init_args.dit=debug",
    ('--model.init_args.dit_overrides={"in_channels": 12, "out_channels": 12, "text_embed_dim": 64, '
     '"pooled_projection_dim": 64, "image_proj_dim": 48}'),
    "--model.init_args.memory_pack.window=3",
    "--model.init_args.semantic_pack.dim=32",
    "--model.init_args.semantic_pack.memory_grid=[2, 2]",
    "--data.init_args.toy.num_videos=3", "--data.init_args.toy.min_seconds=2", "--data.init_args.toy.max_seconds=3",
    "--data.init_args.min_latent_frames=4",
]


CONFIG = ["--config", str(CONFIGS / "teacher_forcing.yaml"), *TINY]
BENCH = ["--model.init_args.sampling.steps=2", '--data.init_args.benchmark_seconds={"short": 1, "long": 2}',
         "--data.init_args.benchmark_videos=2", "--ckpt_path", "runs/teacher_forcing/checkpoints/last.ckpt"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A directory holding a 1-step stage-1 run of the tiny model on a tiny toy world."""
    root = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        main(["fit", *CONFIG, "--trainer.max_steps=1"])
    return root


def test_lvg_test_writes_the_report_and_lvg_compare_tables_runs(tiny_run, monkeypatch, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lvg.media import read_video

    tmp_path = tiny_run
    monkeypatch.chdir(tmp_path)
    config, bench = CONFIG, BENCH
    main(["test", *config, *bench])
    out = tmp_path / "runs/teacher_forcing/benchmark/last"
    report = json.loads((out / "report.json").read_text())
    assert report["num_videos"] == 4 and [v["group"] for v in report["videos"]] == ["short"] * 2 + ["long"] * 2
    assert set(report["groups"]) == {"short", "long"}
    frames = [v["frames"] for v in report["videos"]]
    assert frames == [1 + 3 * 3] * 2 + [1 + 5 * 3] * 2  # 1 s / 2 s at 8 fps, 3 frames per section
    for key in ("identity_consistency", "occlusion_recovery", "background_stability", "colour_drift"):
        assert f"toy_world/{key}" in report["metrics"]
    stability = [v["metrics"]["toy_world/background_stability"] for v in report["videos"]]
    assert report["metrics"]["toy_world/background_stability"] == pytest.approx(sum(stability) / 4)
    assert len(report["videos"][2]["sections"]["toy_world/identity"]) == 5
    assert 0 < report["timing"]["metrics_share"] < 1
    md = (out / "report.md").read_text()
    assert "| | Identity ↑ | Recovery ↑ |" in md and "| short |" in md and "| long |" in md
    for png in ("toy_world_identity", "toy_world_background", "toy_world_mean_luma"):
        assert Image.open(out / "plots" / f"{png}.png").format == "PNG"
    video, fps = read_video(out / "videos/long_toy_0003.mp4")
    assert video.shape[0] == 16 and fps == 8
    events = EventAccumulator(str(tmp_path / "runs/teacher_forcing/tensorboard")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"test/toy_world/identity_consistency", "test_curve/toy_world/identity/long"} <= scalars
    assert [e.step for e in events.Scalars("test_curve/toy_world/background/long")] == [1, 2, 3, 4, 5]

    # The same suite generated again is the same (one seed per job), and block offload is exact: a second run
    # with the DiT's blocks kept in host memory (the strategy's .to() skips them) reproduces the report.
    main(["test", *config, *bench, "--trainer.callbacks.output_dir=again", "--trainer.callbacks.name=again",
          "--model.init_args.sampling.offload=true"])
    again = json.loads((tmp_path / "again/report.json").read_text())
    assert again["metrics"] == report["metrics"]

    capsys.readouterr()
    main(["compare", str(out), "again", "--names", "[stage1, rerun]", "--group", "long"])
    table = capsys.readouterr().out
    assert "| stage1 |" in table and "| rerun |" in table
    with pytest.raises(SystemExit, match="lvg compare: error: .*nothing.json does not exist"):
        main(["compare", "nothing.json"])


def test_benchmark_report_refuses_metrics_that_cannot_score_clips():
    from torchmetrics import MeanMetric

    from lvg.callbacks.benchmark import BenchmarkReport

    with pytest.raises(ValueError, match="MeanMetric is not an lvg video metric"):
        BenchmarkReport(metrics=[MeanMetric()])


def test_vbench_long_clip_rule():
    from lvg.callbacks.benchmark import vbench_long_clips

    # 16-frame clips at 8 fps; 50 = 3 x 16 + 2 -> one more clip of the last 16
    assert vbench_long_clips(50, fps=8) == [slice(0, 16), slice(16, 32), slice(32, 48), slice(34, 50)]
    assert vbench_long_clips(48, fps=8) == [slice(0, 16), slice(16, 32), slice(32, 48)]
    assert vbench_long_clips(10, fps=8) == [slice(0, 10)]


def test_lvg_test_on_two_ddp_processes_equals_one_process(tiny_run):
    """2 CPU processes (gloo): the suite is split without duplicates, every job is generated with its
    own seed, metric states are reduced and the records gathered: the same report as one process."""
    import subprocess
    import sys

    single = json.loads((tiny_run / "runs/teacher_forcing/benchmark/last/report.json").read_text()) \
        if (tiny_run / "runs/teacher_forcing/benchmark/last/report.json").is_file() else None
    if single is None:
        subprocess.run([sys.executable, "-m", "lvg", "test", *CONFIG, *BENCH], cwd=tiny_run, check=True,
                       capture_output=True, timeout=300)
        single = json.loads((tiny_run / "runs/teacher_forcing/benchmark/last/report.json").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "lvg", "test", *CONFIG, *BENCH, "--trainer.strategy=ddp", "--trainer.devices=2",
         "--trainer.callbacks.output_dir=ddp"], cwd=tiny_run, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = json.loads((tiny_run / "ddp/report.json").read_text())
    assert [v["id"] for v in ddp["videos"]] == [v["id"] for v in single["videos"]]  # each job once, in suite order
    for key, value in single["metrics"].items():
        assert ddp["metrics"][key] == pytest.approx(value, abs=1e-9), key
    assert [v["metrics"] for v in ddp["videos"]] == [v["metrics"] for v in single["videos"]]


def test_lvg_test_with_a_vbench_metric_from_yaml_adds_table_1_columns(tiny_run, monkeypatch):
    """A VBench dimension configured in YAML (real CLIP ViT-B/32 architecture, `weights: random`): per-video
    values, drift and per-section curves reach the report; the evaluator is not in the module's checkpoint."""
    monkeypatch.chdir(tiny_run)
    (tiny_run / "vbench.yaml").write_text(
        "trainer:\n  callbacks:\n    - class_path: lvg.callbacks.BenchmarkReport\n      init_args:\n"
        "        output_dir: vbench\n        save_videos: false\n        metrics:\n"
        "          - class_path: lvg.metrics.BackgroundConsistency\n            init_args: {weights: random}\n"
        'data:\n  init_args:\n    benchmark_seconds: {"short": 1}\n    benchmark_videos: 1\n')
    with pytest.warns(UserWarning, match="RANDOM weights"):
        main(["test", *CONFIG, *BENCH, "--config", "vbench.yaml"])
    report = json.loads((tiny_run / "vbench/report.json").read_text())
    (video,) = report["videos"]
    assert 0.0 <= video["metrics"]["background_consistency"] <= 1.0
    assert report["metrics"]["background_consistency"] == pytest.approx(video["metrics"]["background_consistency"])
    assert 0.0 <= report["drift"]["background_consistency"] <= 1.0
    assert len(video["sections"]["background_consistency"]) == 3
    assert report["higher_is_better"]["background_consistency"] is True
    table = (tiny_run / "vbench/report.md").read_text()
    assert "| | Background ↑ | ΔBackground ↓ |" in table
    assert Image.open(tiny_run / "vbench/plots/background_consistency.png").format == "PNG"
    checkpoint = torch.load(tiny_run / "runs/teacher_forcing/checkpoints/last.ckpt", weights_only=True)
    assert not any("visual" in k or "clip" in k.lower() for k in checkpoint["state_dict"])


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_check_on_the_cpu():
    """benchmarks/gpu_check.py --dry-run: the prepared GPU check's own code at tiny size on the CPU prints one
    JSON object in which no check failed (the CUDA tests are skipped here, or pass on a GPU machine)."""
    import subprocess
    import sys

    root = Path(__file__).parents[1]
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run"], cwd=root, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    checks = report["checks"]
    assert list(checks) == ["cuda_tests", "bf16_vs_fp32", "sdpa_path", "offload", "mfu", "f1_generate", "stage2_memory"]
    assert not {name: c["error"] for name, c in checks.items() if "error" in c}
    assert all(c["seconds"] > 0 for c in checks.values())
    assert report["environment"]["torch"] == torch.__version__ and report["dry_run"] is True

    tests = checks["cuda_tests"]
    assert tests["returncode"] == 0 and tests["failed"] == tests["errors"] == 0
    assert tests["passed" if torch.cuda.is_available() else "skipped"] >= 5
    for errors in checks["bf16_vs_fp32"]["configs"].values():
        assert 0 < errors["relative_rms"] < 0.03 and 0 < errors["max_abs_over_max_ref"] < 0.06
    assert checks["sdpa_path"]["backends"] == ["flash (cpu)"]
    offload = checks["offload"]
    assert offload["identical"] and offload["resident_repeatable"] and offload["blocks"] == 4
    assert 0 < checks["mfu"]["mfu"] < 1 and checks["mfu"]["gradient_checkpointing"]
    generate = checks["f1_generate"]
    assert generate["finite"] and generate["steps"] == 2 and generate["seconds_per_step"] > 0
    assert generate["plan"].get("tokens", {}).get("video") == 736, generate["plan"]  # the same 16 x 16 section
    stage2 = checks["stage2_memory"]
    assert stage2["sections"] == 2 and all(math.isfinite(v) for v in stage2["losses"])
    assert stage2["plan"].get("params_total") == stage2["parameters"], stage2["plan"]
