"""Continuations: suite jobs that condition on a ground-truth prefix, the pipeline seeding its MemoryPack state from
it (the Teacher Forcing state, tensor for tensor), generated-only scoring, the memory world's continuation suite."""

import json
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lvg.callbacks.benchmark import BenchmarkReport
from lvg.config import DiTConfig
from lvg.data.datamodule import collate_videos
from lvg.data.prepare import encode_clip
from lvg.data.prompt_suite import (
    PromptSuiteDataset,
    collate_jobs,
    memory_world_jobs,
    read_suite,
    toy_world_suite,
)
from lvg.data.toy_world import ContextSpan, ToyWorldConfig, generate_toy_world, render_video, sample_video_spec
from lvg.media import read_video, write_video
from lvg.metrics.toy_world import ToyWorldTruth
from lvg.metrics.video import VideoMetric
from lvg.models.dit import PackedDiT
from lvg.models.encoders import Encoders, PixelCodec, ToyImageEncoder, ToyTextEncoder
from lvg.models.memory_pack import MemoryPackConfig
from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig
from lvg.training import TeacherForcingModule
from toy_setup import DEBUG_FOR_TOY, FPS, SMALL_SP, WINDOW, killed_at_denoise_call, make_pipeline, start_images

# The tiny memory world: the context of a window-3 model with a (4, 2, 1) history, as the ablation's test uses.
CONTEXT = ContextSpan(window=3, history=(4, 2, 1))
MEMORY = ToyWorldConfig.memory(num_videos=2, context=CONTEXT, seed=1000)
PER = CONTEXT.section_frames


def frames_tchw(video: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(video).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def memory_videos():
    """``[(frames (T, S, S, 3), truth, {group: job})]`` of the tiny memory world, with its continuation jobs."""
    out = []
    for i in range(MEMORY.num_videos):
        frames, truth = render_video(sample_video_spec(MEMORY, i))
        jobs = memory_world_jobs(truth, "v.mp4", "t.json", "a prompt")
        out.append((frames, truth, {job["group"]: job for job in jobs}))
    return out


# --- the pipeline: prefix seeding ------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", ["A", "C"])
def test_prefix_seeding_equals_the_teacher_forcing_state(fusion):
    """The pipeline's state after a K-section prefix is the state the Teacher Forcing loop holds after the same
    ground-truth sections, encoded as lvg prepare encodes a clip: same latents, history, start, psi, reference."""
    torch.manual_seed(0)
    module = TeacherForcingModule(dit="debug", dit_overrides=DEBUG_FOR_TOY,
                                  semantic_pack=replace(SMALL_SP, fusion=fusion),
                                  memory_pack=MemoryPackConfig(window=WINDOW, rope_time_mode="absolute"))
    encoders = Encoders(PixelCodec(2), ToyTextEncoder(64), ToyImageEncoder(), frame_size=(32, 32))
    frames, _ = render_video(sample_video_spec(MEMORY, 0))
    k = 4
    clip = torch.from_numpy(frames[: 1 + k * WINDOW])
    caption = "a red circle and a blue square move"

    # Training: the shard tensors of lvg prepare, the datamodule's collate, the section loop of the stage.
    batch = collate_videos([{"id": "v", "caption": caption, **encode_clip(clip, caption, encoders)}])
    states = []
    new_state = module.new_state
    module.new_state = lambda b: states.append(new_state(b)) or states[-1]
    module.video_gradients(batch, torch.Generator().manual_seed(0), lambda *a, **kw: None, nullcontext)
    (trained,) = states
    assert trained.section == k

    pipe = module.pipeline(encoders)
    seeded, latents = pipe.prefix_state(frames_tchw(clip.numpy())[None], [caption])
    assert torch.equal(latents, batch["latents"])
    assert seeded.section == trained.section == k
    for key in ("start", "recent", "image", "reference"):
        a, b = getattr(seeded, key), getattr(trained, key)
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b.detach())), key
    # psi: the same valid tokens (the pipeline's text encoder pads, prepare's shard keeps the valid tokens only)
    torch.testing.assert_close(seeded.psi[seeded.psi_mask], trained.psi.detach()[trained.psi_mask],
                               rtol=1e-5, atol=1e-6)
    a, b = seeded.context(), trained.context()
    for key in ("latents_clean", "latents_history_2x", "latents_history_4x", "indices_latents",
                "indices_latents_clean", "indices_latents_history_2x", "indices_latents_history_4x"):
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()


def prefix_of(video: torch.Tensor, sections: int) -> torch.Tensor:
    """The first ``sections`` sections of decoded videos ``(B, T, H, W, 3)`` as prefix frames ``(B, T', 3, H, W)``."""
    return video[:, : 1 + sections * WINDOW].permute(0, 1, 4, 2, 3).contiguous()


def test_continuation_generates_only_the_rest_with_the_runs_seeds(pipe, monkeypatch):
    """Only sections K.. are denoised, each from the noise a whole run draws for it; the video starts with the
    prefix (exact codec). Continuing a generated video's own first sections gives that video back up to the
    uint8 rounding of the prefix; another seed does not."""
    full = pipe(start_images(), ["[0s] a red circle [1s] a blue square"], num_sections=4, fps=FPS, seed=1,
                progress=False)
    prefix = prefix_of(full, 2)
    denoised, denoise = [], LongVideoPipeline.denoise_section

    def recording(self, state, noise):
        denoised.append((state.section, noise))
        return denoise(self, state, noise)

    monkeypatch.setattr(LongVideoPipeline, "denoise_section", recording)
    cont = pipe(None, ["[0s] a red circle [1s] a blue square"], num_sections=4, fps=FPS, seed=1, progress=False,
                prefix=prefix)
    state, _ = pipe.prefix_state(prefix, ["a red circle"])
    assert [n for n, _ in denoised] == [2, 3]
    assert all(torch.equal(noise, pipe.section_noise(state, 1, n)) for n, noise in denoised)
    assert cont.shape == full.shape and torch.equal(cont[:, : 1 + 2 * WINDOW], full[:, : 1 + 2 * WINDOW])
    assert (cont.int() - full.int()).abs().max() <= 3
    other = pipe(None, ["[0s] a red circle [1s] a blue square"], num_sections=4, fps=FPS, seed=2, progress=False,
                 prefix=prefix)
    assert (other[:, 1 + 2 * WINDOW :].int() - full[:, 1 + 2 * WINDOW :].int()).abs().float().mean() > 10


def test_continuation_resumes_after_a_kill_to_the_identical_video(pipe, tmp_path, monkeypatch):
    prefix = torch.randint(0, 256, (1, 1 + 2 * WINDOW, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(4))
    kwargs = {"num_sections": 5, "fps": FPS, "seed": 3, "progress": False, "prefix": prefix}
    straight = pipe(None, ["a red circle"], output=tmp_path / "straight.mp4", **kwargs)[0]
    out = tmp_path / "resumed.mp4"
    with killed_at_denoise_call(2):  # the second generated section
        pipe(None, ["a red circle"], output=out, **kwargs)
    parts = tmp_path / "resumed.mp4.parts"
    assert not out.exists() and sorted(p.name for p in parts.glob("section_*")) == ["section_00002.safetensors"]
    resumed = pipe(None, ["a red circle"], output=out, **kwargs)[0]
    a, b = read_video(straight)[0], read_video(resumed)[0]
    assert a.shape == (1 + 5 * WINDOW, 32, 32, 3) and np.array_equal(a, b)
    assert np.array_equal(a[: 1 + 2 * WINDOW], prefix[0].permute(0, 2, 3, 1).numpy())  # the prefix, then the rest
    out.unlink()  # another prefix must not resume this run's sections
    with pytest.raises(ValueError, match="partial run with other settings"):
        pipe(None, ["a red circle"], output=out, **{**kwargs, "prefix": 255 - prefix})


def test_continuation_with_a_temporal_codec(tmp_path):
    """A 4x temporal codec: a K-section prefix is 1 + 4 K W frames, encoded in one pass (K W + 1 latents); the video
    has the whole length, and the streamed file equals the in-memory one."""
    from test_generation import TemporalCodec

    torch.manual_seed(0)
    cfg = DiTConfig.from_name("debug", **DEBUG_FOR_TOY)
    dit = PackedDiT(cfg).eval()
    codec = TemporalCodec()
    encoders = Encoders(codec, ToyTextEncoder(64), ToyImageEncoder())
    pipe = LongVideoPipeline(dit, MemoryPackConfig(window=WINDOW), encoders, sampling=SamplingConfig(steps=1))
    assert pipe.prefix_frames(2) == 1 + 2 * pipe.frames_per_section() == codec.num_pixel_frames(1 + 2 * WINDOW)
    prefix = torch.randint(0, 256, (1, pipe.prefix_frames(2), 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    state, latents = pipe.prefix_state(prefix, ["p"])
    assert state.section == 2 and latents.shape[2] == 1 + 2 * WINDOW
    video = pipe(None, ["p"], num_sections=3, fps=FPS, progress=False, prefix=prefix)[0].numpy()
    assert video.shape[0] == codec.num_pixel_frames(1 + 3 * WINDOW)
    path = pipe(None, ["p"], num_sections=3, fps=FPS, progress=False, prefix=prefix, output=tmp_path / "t.mp4")[0]
    assert np.array_equal(read_video(path)[0], video)


def test_bad_prefixes_are_refused(pipe):
    prefix = torch.zeros(1, 1 + 2 * WINDOW, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"frames of whole sections, T = 1 \+ K \* 3"):
        pipe(None, ["p"], num_sections=4, fps=FPS, prefix=prefix[:, :-1])
    with pytest.raises(ValueError, match=r"frames of whole sections"):
        pipe(None, ["p"], num_sections=4, fps=FPS, prefix=prefix[:, :1])
    with pytest.raises(ValueError, match="a prefix of 2 sections leaves nothing to generate in 2 sections"):
        pipe(None, ["p"], num_sections=2, fps=FPS, prefix=prefix)
    with pytest.raises(ValueError, match="images must be the prefix's first frames"):
        pipe(start_images(), ["p"], num_sections=4, fps=FPS, prefix=prefix)
    with pytest.raises(ValueError, match="images are required without a prefix"):
        pipe(None, ["p"], num_sections=4, fps=FPS)


# --- scoring the generated frames only -------------------------------------------------------------------------


def continued(frames: np.ndarray, job: dict, generated: str = "truth") -> tuple[torch.Tensor, int]:
    """A continuation's video (prefix = the truth's first frames) and its first generated frame: the generated
    part is the truth itself (the oracle), the prefix's last frame frozen, or noise."""
    p, t = 1 + job["prefix_sections"] * PER, 1 + job["sections"] * PER
    video = torch.from_numpy(frames[:t]).clone()
    if generated == "frozen":
        video[p:] = video[p - 1]
    elif generated == "noise":
        gen = torch.Generator().manual_seed(0)
        video[p:] = torch.randint(0, 256, video[p:].shape, dtype=torch.uint8, generator=gen)
    return video, p


def test_oracle_continuations_score_1_and_frozen_or_prefix_only_ones_do_not(memory_videos):
    metric = ToyWorldTruth()
    for frames, truth, jobs in memory_videos:
        fps = truth["fps"]
        oracle = {g: metric.video_values(*continued(frames, job)[:1], truth, fps, continued(frames, job)[1])
                  for g, job in jobs.items()}
        # the long job scores its long return; its short return lies in the prefix and is not the model's
        assert oracle["long_absence"]["long_recovery"] == 1.0 and oracle["long_absence"]["short_recovery"] is None
        # the control scores its short return; the long absence begins after its prefix (the script's, not the model's)
        assert oracle["short_absence"]["short_recovery"] == 1.0 and oracle["short_absence"]["long_recovery"] is None
        for g, job in jobs.items():
            assert oracle[g]["identity_consistency"] == oracle[g]["background_stability"] == 1.0
            kind = g.removesuffix("_absence")
            video, first = continued(frames, job, "frozen")
            assert metric.video_values(video, truth, fps, first)[f"{kind}_recovery"] == 0.0, g
            video, first = continued(frames, job, "noise")
            values = metric.video_values(video, truth, fps, first)
            assert values[f"{kind}_recovery"] == 0.0 and values["identity_consistency"] == 0.0, g
            assert values["background_stability"] < 0.05, g
        # Scored whole, the long job's video with noise after its prefix would get credit for the truth's short
        # return in the prefix; scored as a continuation it has no short return of its own.
        video, first = continued(frames, jobs["long_absence"], "noise")
        assert metric.video_values(video, truth, fps)["short_recovery"] == 1.0
        assert metric.video_values(video, truth, fps, first)["short_recovery"] is None
        with pytest.raises(ValueError, match="no generated frame from frame"):
            video, first = continued(frames, jobs["long_absence"])
            metric.video_values(video[:first], truth, fps, first)


class MeanValue(VideoMetric):
    """A stand-in VBench dimension: the mean pixel value / 255 (it sees exactly the frames it is given)."""

    name = "mean_value"
    min_frames = 1

    def video_score(self, video, fps):
        return float(video.float().mean() / 255), 1.0


def test_the_report_scores_only_the_generated_frames(memory_videos):
    """BenchmarkReport with a continuation: the metrics, their drift and every curve read only the frames after
    the prefix (a white prefix and a black continuation score 0); the prefix's sections are None in the curves."""
    frames, truth, jobs = memory_videos[0]
    job = jobs["long_absence"]
    video, first = continued(frames, job, "noise")
    video[:first] = 255
    video[first:] = 0
    report = BenchmarkReport(metrics=[MeanValue()], truth=False)
    record = report._score("v", video, {"group": "long_absence"}, truth["fps"], PER, torch.device("cpu"), first)
    assert record["metrics"]["mean_value"] == 0.0 and record["drift"]["mean_value"] == 0.0
    assert record["prefix_frames"] == first and record["frames"] == len(video)
    curve = record["sections"]["mean_value"]
    k = job["prefix_sections"]
    assert len(curve) == job["sections"] and curve[:k] == [None] * k and curve[k:] == [0.0] * (job["sections"] - k)
    whole = report._score("v", video, {"group": "long_absence"}, truth["fps"], PER, torch.device("cpu"))
    assert whole["metrics"]["mean_value"] > 0 and whole["sections"]["mean_value"][0] == 1.0  # scored whole


def test_the_report_passes_the_offset_to_the_truth_metrics(memory_videos, tmp_path):
    frames, truth, jobs = memory_videos[0]
    (tmp_path / "t.json").write_text(json.dumps(truth))
    job = {"group": "long_absence", "truth_path": str(tmp_path / "t.json")}
    report = BenchmarkReport(metrics=[], truth=True)
    for generated, expected in (("truth", 1.0), ("frozen", 0.0)):
        video, first = continued(frames, jobs["long_absence"], generated)
        record = report._score("v", video, job, truth["fps"], PER, torch.device("cpu"), first)
        assert record["metrics"]["toy_world/long_recovery"] == expected
        assert record["metrics"]["toy_world/short_recovery"] is None
        k = jobs["long_absence"]["prefix_sections"]
        assert record["sections"]["toy_world/identity"][:k] == [None] * k
        assert all(v is not None for v in record["sections"]["toy_world/identity"][k:])


# --- the memory world's suite ----------------------------------------------------------------------------------


def test_memory_suite_prefixes_end_where_only_memory_holds_the_late_sprite(memory_videos):
    for _, truth, jobs in memory_videos:
        history = CONTEXT.history_frames
        late = next(k for k, s in enumerate(truth["sprites"]) if s["role"] == "returns")
        fraction = truth["sprites"][late]["visible_fraction"]
        absence = {a["kind"]: a for a in truth["absences"] if a["sprite"] == late}
        seen = min(f for f, v in enumerate(truth["sprites"][late]["visible"]) if v)

        long = jobs["long_absence"]
        p, t = 1 + long["prefix_sections"] * PER, 1 + long["sections"] * PER
        assert seen < p and all(f == 0 for f in fraction[p - history : p])  # seen, then out of every context slot
        assert not truth["sprites"][late]["visible"][0]  # nor in the start frame
        assert p <= absence["long"]["back"][0] < t <= truth["num_frames"]  # its return is generated

        short = jobs["short_absence"]
        p = 1 + short["prefix_sections"] * PER
        b, c = absence["short"]["hidden"]
        assert b < p <= c and short["sections"] == long["sections"]  # hidden at the prefix's end, then returns
        assert any(fraction[f] > 0 for f in range(p - history, p))  # the control: its last view is in the history


def test_memory_suite_is_read_and_its_prompt_does_not_name_the_late_sprite(tmp_path):
    suite = toy_world_suite(tmp_path / "bench", MEMORY, {"ignored": 5.0}, videos_per_group=2)
    jobs = read_suite(suite)
    assert [j["group"] for j in jobs] == ["long_absence"] * 2 + ["short_absence"] * 2
    held_out = ToyWorldConfig.memory(num_videos=2, context=CONTEXT, seed=MEMORY.seed + 1000)
    for job in jobs:
        truth = json.loads(Path(job["truth_path"]).read_text())
        spec = sample_video_spec(held_out, int(truth["id"].removeprefix("toy_")))
        assert job["prefix_path"] == job["image_path"] and job["prefix_sections"] < job["sections"]
        for sprite in spec.sprites:
            assert (f"{sprite.colour} {sprite.shape}" in job["prompt"]) == (sprite.role != "returns")
    assert toy_world_suite(tmp_path / "bench", MEMORY, {"ignored": 5.0}, videos_per_group=2) == suite

    dataset = PromptSuiteDataset(jobs, (32, 32))
    batch = collate_jobs([dataset[0], dataset[2]])
    assert batch["prefix"] == [jobs[0]["prefix_path"], jobs[2]["prefix_path"]]
    assert batch["prefix_sections"] == [jobs[0]["prefix_sections"], jobs[2]["prefix_sections"]]


# --- the job format --------------------------------------------------------------------------------------------


@pytest.fixture
def gt_video(tmp_path):
    write_video(tmp_path / "gt.mp4", np.zeros((10, 32, 32, 3), np.uint8), FPS)
    write_video(tmp_path / "other.mp4", np.zeros((10, 32, 32, 3), np.uint8), FPS)
    return tmp_path


@pytest.mark.parametrize("fields, match", [
    ({"prefix_sections": 2}, "field 'prefix_sections' needs 'prefix'"),
    ({"prefix": "gt.mp4"}, "field 'prefix' needs exactly one of 'prefix_sections' and 'prefix_seconds'"),
    ({"prefix": "gt.mp4", "prefix_sections": 2, "prefix_seconds": 1.0}, r"field 'prefix' needs .* \(got 2\)"),
    ({"prefix": "gt.mp4", "prefix_sections": 0}, "field 'prefix_sections' must be an integer >= 1, got 0"),
    ({"prefix": "gt.mp4", "prefix_sections": True}, "field 'prefix_sections' must be an integer >= 1"),
    ({"prefix": "gt.mp4", "prefix_seconds": -1}, "field 'prefix_seconds' must be a number > 0, got -1"),
    ({"prefix": "gt.mp4", "prefix_sections": 4}, "field 'prefix_sections' = 4 leaves nothing to generate"),
    ({"prefix": "missing.mp4", "prefix_sections": 2}, r"field 'prefix': .*missing.mp4 does not exist"),
    ({"prefix": "gt.png", "prefix_sections": 2}, "field 'prefix' must be a video"),
    ({"prefix": 3, "prefix_sections": 2}, "field 'prefix' must be the path of a video, got 3"),
    ({"prefix": "other.mp4", "prefix_sections": 2}, "field 'image' must be the prefix video 'other.mp4'"),
])
def test_suite_validation_names_file_line_and_field(gt_video, fields, match):
    suite = gt_video / "suite.jsonl"
    good = {"id": "a", "image": "gt.mp4", "prompt": "p", "sections": 4}
    suite.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", **fields}) + "\n")
    with pytest.raises(ValueError, match=rf"suite.jsonl:2: {match}"):
        read_suite(suite)


def test_a_valid_continuation_job_reads_back(gt_video):
    suite = gt_video / "suite.jsonl"
    suite.write_text(json.dumps({"id": "a", "image": "gt.mp4", "prefix": "gt.mp4", "prefix_seconds": 0.5,
                                 "seconds": 1.0, "prompt": "p"}) + "\n")
    (job,) = read_suite(suite)
    assert job["prefix_path"] == str(gt_video / "gt.mp4") and job["prefix_seconds"] == 0.5


def test_generate_jobs_continues_from_the_prefix_and_reports_its_length(gt_video, monkeypatch):
    """The stage module's generate_jobs (lvg test / predict): a batch with a continuation and a start-image job runs
    them as two groups, reads the prefix frames and reports how many there are (what the report leaves unscored)."""
    world = generate_toy_world(gt_video / "world", ToyWorldConfig(num_videos=1, min_seconds=3.0, max_seconds=3.0))
    video = world.parent / "videos" / "toy_0000.mp4"
    suite = gt_video / "suite.jsonl"
    suite.write_text(json.dumps({"id": "c", "image": str(video), "prefix": str(video), "prefix_sections": 2,
                                 "sections": 3, "prompt": "p"}) + "\n"
                     + json.dumps({"id": "s", "image": str(video), "sections": 2, "prompt": "p"}) + "\n")
    jobs = read_suite(suite)
    dataset = PromptSuiteDataset(jobs, (32, 32))
    module = TeacherForcingModule(dit="debug", dit_overrides=DEBUG_FOR_TOY, semantic_pack=SMALL_SP,
                                  memory_pack=MemoryPackConfig(window=WINDOW), fps=FPS)
    module.sampling_config = replace(module.sampling_config, steps=1)
    encoders = Encoders(PixelCodec(2), ToyTextEncoder(64), ToyImageEncoder(), frame_size=(32, 32))

    class Trainer:
        datamodule = type("DM", (), {"encoders": staticmethod(lambda: encoders)})()

    monkeypatch.setattr(type(module), "trainer", property(lambda self: Trainer()))
    out = module.generate_jobs(collate_jobs([dataset[0], dataset[1]]))
    truth = read_video(video)[0]
    assert out["prefix_frames"] == [1 + 2 * WINDOW, 0]
    assert [len(v) for v in out["videos"]] == [1 + 3 * WINDOW, 1 + 2 * WINDOW]
    assert np.array_equal(out["videos"][0][: 1 + 2 * WINDOW].numpy(), truth[: 1 + 2 * WINDOW])
    assert not np.array_equal(out["videos"][0][1 + 2 * WINDOW :].numpy(), truth[1 + 2 * WINDOW : 1 + 3 * WINDOW])
