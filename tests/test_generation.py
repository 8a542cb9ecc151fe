"""LongVideoPipeline: determinism, resumable streamed output, prompt schedules, batches, errors."""

import numpy as np
import pytest
import torch

from lvg.config import DiTConfig
from lvg.media import read_video
from lvg.models.dit import PackedDiT
from lvg.models.encoders import Encoders, PixelCodec, ToyImageEncoder, ToyTextEncoder
from lvg.models.memory_pack import MemoryPackConfig
from lvg.prompts import PromptSchedule
from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig
from toy_setup import FPS, WINDOW, killed_at_denoise_call, make_pipeline, start_images


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()


def test_in_memory_generation_is_deterministic_and_starts_with_the_image(pipe):
    a = pipe(start_images(), ["a red circle"], num_sections=3, fps=FPS, seed=1, progress=False)
    b = pipe(start_images(), ["a red circle"], num_sections=3, fps=FPS, seed=1, progress=False)
    c = pipe(start_images(), ["a red circle"], num_sections=3, fps=FPS, seed=2, progress=False)
    assert a.shape == (1, 1 + 3 * WINDOW, 32, 32, 3) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[0, 0], start_images()[0].permute(1, 2, 0))  # the exact codec keeps the start frame


def test_streamed_output_resumes_after_a_kill_to_the_identical_video(pipe, tmp_path, monkeypatch):
    straight = pipe(start_images(), ["[0s] a red circle [1s] a blue square"], num_sections=5, fps=FPS, seed=3,
                    output=tmp_path / "straight.mp4", progress=False)[0]
    out = tmp_path / "resumed.mp4"
    with killed_at_denoise_call(4):  # while section 3 is generated
        pipe(start_images(), ["[0s] a red circle [1s] a blue square"], num_sections=5, fps=FPS, seed=3, output=out,
             progress=False)
    assert not out.exists() and len(list((tmp_path / "resumed.mp4.parts").glob("section_*"))) == 3
    resumed = pipe(start_images(), ["[0s] a red circle [1s] a blue square"], num_sections=5, fps=FPS, seed=3,
                   output=out, progress=False)[0]
    frames_a, fps_a = read_video(straight)
    frames_b, fps_b = read_video(resumed)
    assert fps_a == fps_b == FPS and frames_a.shape == (1 + 5 * WINDOW, 32, 32, 3)
    assert np.array_equal(frames_a, frames_b)


def test_existing_output_and_foreign_partial_runs_are_refused(pipe, tmp_path):
    out = tmp_path / "v.mp4"
    pipe(start_images(), ["a red circle"], num_sections=1, fps=FPS, output=out, progress=False)
    before = out.read_bytes()
    with pytest.raises(ValueError, match="already exist; pass overwrite=True"):
        pipe(start_images(), ["a red circle"], num_sections=1, fps=FPS, output=out, progress=False)
    assert out.read_bytes() == before  # nothing already generated is lost
    pipe(start_images(), ["a red circle"], num_sections=2, fps=FPS, output=out, overwrite=True, progress=False)
    out.unlink()  # a finished run's parts stay; another model must not resume from them
    other = make_pipeline(seed=1)
    with pytest.raises(ValueError, match="partial run with other settings"):
        other(start_images(), ["a red circle"], num_sections=2, fps=FPS, output=out, progress=False)


def test_prompt_schedule_switches_at_the_right_section(pipe, monkeypatch):
    used = []
    text = LongVideoPipeline._text

    def recording(self, prompts):
        used.append(list(prompts))
        return text(self, prompts)

    monkeypatch.setattr(LongVideoPipeline, "_text", recording)
    pipe(start_images(), ["[0s] first [1s] second"], num_sections=5, fps=FPS, progress=False)
    # section n starts at frame 1 + 3n, i.e. (1 + 3n) / 8 s: sections 0-2 before 1 s, 3-4 after
    assert used == [["first"], ["first"], ["second"]]  # start state, section 0, the switch at section 3


@pytest.mark.parametrize(
    "text, match",
    [
        ("intro [0s] a", "text before the first timestamp"),
        ("[1s] a", "first prompt must start at 0s"),
        ("[0s] a [5s] b [3s] c", "must increase"),
        ("[0s] a [2s]   ", "prompt at 2.0s is empty"),
        ("   ", "prompt at 0.0s is empty"),
        # a bracket that opens the prompt or holds a digit must be a timestamp
        ("[abc] x", r"\[abc\] is not a timestamp; write seconds"),
        ("[0s] a [5 sec] b", r"\[5 sec\] is not a timestamp"),
        ("[0s] a [1:2:3] b", r"\[1:2:3\] is not a timestamp"),
        ("[-5s] x", r"timestamp \[-5s\] is negative"),
        ("[0s] a [-0:05] b", r"timestamp \[-0:05\] is negative"),
        ("[0s] a [1:99] b", r"\[1:99\]: the seconds after the colon must be below 60; write \[2:39\] or \[159s\]"),
    ],
)
def test_prompt_schedule_errors(text, match):
    with pytest.raises(ValueError, match=match):
        PromptSchedule.parse(text)


def test_prompt_schedule_parsing():
    s = PromptSchedule.parse("[0s] walk [12.5s] run [1:05] stop")
    assert s.entries == ((0.0, "walk"), (12.5, "run"), (65.0, "stop"))
    assert s.at(0) == "walk" and s.at(12.4) == "walk" and s.at(12.5) == "run" and s.at(600) == "stop"
    assert PromptSchedule.parse("[ 0 ] a [ 2.5 s ] b [1:59] c").entries == ((0.0, "a"), (2.5, "b"), (119.0, "c"))
    # brackets around words (no digit, not opening the prompt) are prompt text
    assert PromptSchedule.parse("a sign reading [OPEN] flickers").entries == ((0.0, "a sign reading [OPEN] flickers"),)
    assert PromptSchedule.parse("[0s] a [neon] sign [2s] dark").entries == ((0.0, "a [neon] sign"), (2.0, "dark"))


def test_prompts_no_section_starts_under_are_reported(pipe, caplog):
    s = PromptSchedule.parse("[0s] a [0.2s] b [0.3s] c [5s] d")
    starts = [pipe.section_start(n, FPS) for n in range(2)]  # 0.125 s and 0.5 s
    assert s.unused(starts) == [
        "the prompt at 0.2s ('b') is never used: the prompt at 0.3s replaces it before a section starts.",
        "the prompt at 5s ('d') is never used: the last section starts at 0.50s.",
    ]
    assert PromptSchedule.parse("[0s] a [0.4s] b").unused(starts) == []
    with caplog.at_level("WARNING", logger="lvg.sampling.pipeline"):
        pipe(start_images(), ["[0s] a red circle [1:00] a blue square"], num_sections=1, fps=FPS, progress=False)
    assert "the prompt at 60s ('a blue square') is never used: the last section starts at 0.12s" in caplog.text


def test_batch_of_prompts_matches_single_runs(pipe):
    prompts = ["a red circle moves", "a blue square"]
    batch = pipe(start_images(2), prompts, num_sections=2, fps=FPS, seed=5, progress=False)
    for i in range(2):
        single = pipe(start_images(2)[i : i + 1], [prompts[i]], num_sections=2, fps=FPS, seed=5 + i, progress=False)
        assert (batch[i].int() - single[0].int()).abs().max() <= 1  # masked batch vs crop: float noise only


def test_real_cfg_runs_a_negative_pass(monkeypatch):
    pipe = make_pipeline(sampling=SamplingConfig(steps=2, cfg_scale=3.0, negative_prompt="blurry"))
    calls = []
    forward = PackedDiT.forward

    def counting(self, *args, **kwargs):
        calls.append(kwargs["encoder_hidden_states"].shape[1])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(PackedDiT, "forward", counting)
    pipe(start_images(), ["a red circle"], num_sections=1, fps=FPS, progress=False)
    assert len(calls) == 4  # 2 steps x (positive + negative)


def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="one image per prompt"):
        pipe(start_images(2), ["a"], num_sections=1, fps=FPS, progress=False)
    with pytest.raises(ValueError, match="num_sections must be >= 1, got 0"):
        pipe(start_images(), ["a"], num_sections=0, fps=FPS, progress=False)
    with pytest.raises(ValueError, match="SamplingConfig.steps"):
        SamplingConfig(steps=0)


@pytest.mark.parametrize("mode, first", [("relative", 20), ("absolute", 1)])
def test_end_frame_joins_the_clean_latents_at_the_final_frame(mode, first):
    from lvg.models.memory_pack import MemoryPackState

    g = torch.Generator().manual_seed(0)
    start, end = torch.randn(1, 48, 1, 8, 8, generator=g), torch.randn(1, 48, 1, 8, 8, generator=g)
    state = MemoryPackState(MemoryPackConfig(window=WINDOW, rope_time_mode=mode), start,
                            text=torch.randn(1, 3, 64), text_mask=torch.ones(1, 3), pooled=torch.randn(1, 64))
    state.set_end(end, total_sections=5)
    for n in range(3):
        ctx = state.context()
        assert torch.equal(ctx["latents_clean"][:, :, -1:], end)
        window_start = first + (n * WINDOW if mode == "absolute" else 0)
        assert ctx["indices_latents"][0, 0] == window_start
        assert ctx["indices_latents_clean"][0, -1] == window_start + (5 - n) * WINDOW - 1  # the video's last frame
        state.update(torch.randn(1, 48, WINDOW, 8, 8, generator=g))
    if mode == "absolute":
        assert state.context()["indices_latents_clean"][0, -1] == 5 * WINDOW
    with pytest.raises(ValueError, match="end latent must be"):
        state.set_end(torch.zeros(1, 48, 2, 8, 8), 5)


def test_generation_with_an_end_frame_changes_the_video_and_resumes(pipe, tmp_path):
    plain = pipe(start_images(), ["a red circle"], num_sections=2, fps=FPS, seed=1, progress=False)
    steered = pipe(start_images(), ["a red circle"], num_sections=2, fps=FPS, seed=1, progress=False,
                   end_images=start_images(seed=9))
    assert torch.equal(plain[:, 0], steered[:, 0]) and not torch.equal(plain, steered)
    out = pipe(start_images(), ["a red circle"], num_sections=2, fps=FPS, seed=1, progress=False,
               end_images=start_images(seed=9), output=tmp_path / "end.mp4")[0]
    assert np.array_equal(read_video(out)[0], steered[0].numpy())


def test_bf16_model_generates_close_to_fp32():
    pipe = make_pipeline()
    reference = pipe(start_images(), ["a red circle"], num_sections=2, fps=FPS, progress=False)
    pipe.dit.to(torch.bfloat16)
    pipe.semantic_pack.to(torch.bfloat16)
    video = pipe(start_images(), ["a red circle"], num_sections=2, fps=FPS, progress=False)
    assert (video.float() - reference.float()).abs().mean() < 1.0  # grey levels, out of 255


class TemporalCodec:
    """Stand-in for a causal temporal VAE (4x in time, 4N-3 frames): latent 0 -> frame 0, every later
    latent -> 4 frames interpolated from its predecessor; a decoded chunk darkens towards its start
    (like a VAE's border effects), so overlapping decodes differ and blending matters."""

    latent_channels, spatial_factor, temporal_factor = 12, 2, 4

    def __init__(self):
        self.frames = PixelCodec(2)

    def num_latent_frames(self, pixel_frames):
        return (pixel_frames + 3) // 4

    def num_pixel_frames(self, latent_frames):
        return 4 * latent_frames - 3

    def encode(self, video):
        return self.frames.encode(video[:, ::4])

    def decode(self, latents):
        key = self.frames.decode(latents).float()  # (B, F, 3, H, W)
        out = [key[:, :1]]
        for i in range(1, key.shape[1]):
            t = torch.arange(1, 5, dtype=torch.float32).view(1, 4, 1, 1, 1) / 4
            out.append(key[:, i - 1 : i] * (1 - t) + key[:, i : i + 1] * t)
        frames = torch.cat(out, dim=1)
        ramp = torch.linspace(0.8, 1.0, frames.shape[1]).view(1, -1, 1, 1, 1)
        return (frames * ramp).round().clamp(0, 255).to(torch.uint8)


def soft_append(history, current, overlap):
    """FramePack-F1's cross-fade of a new decode onto the pixel history, (T, H, W, 3) uint8."""
    w = np.linspace(1.0, 0.0, overlap)[:, None, None, None]
    blended = np.round(history[-overlap:] * w + current[:overlap] * (1 - w)).astype(np.uint8)
    return np.concatenate([history[:-overlap], blended, current[overlap:]])


def test_temporal_codec_sections_are_blended_like_framepack_and_streamed(tmp_path):
    torch.manual_seed(0)
    cfg = DiTConfig.from_name("debug", in_channels=12, out_channels=12, text_embed_dim=64, pooled_projection_dim=64,
                              image_proj_dim=48)
    dit = PackedDiT(cfg).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.05)
    codec = TemporalCodec()
    pipe = LongVideoPipeline(dit, MemoryPackConfig(window=WINDOW),
                             Encoders(codec, ToyTextEncoder(64), ToyImageEncoder()), sampling=SamplingConfig(steps=2))
    sections = 4
    video = pipe(start_images(), ["a red circle"], num_sections=sections, fps=FPS, progress=False)[0].numpy()
    path = pipe(start_images(), ["a red circle"], num_sections=sections, fps=FPS, progress=False,
                output=tmp_path / "t.mp4")[0]
    assert np.array_equal(read_video(path)[0], video)
    assert video.shape[0] == codec.num_pixel_frames(1 + sections * WINDOW)  # 4N - 3 frames for N latents

    # FramePack-F1's loop over the same section latents: decode [previous, current], soft-append.
    parts = tmp_path / "t.mp4.parts"
    from safetensors.torch import load_file

    latents = [load_file(str(parts / f"section_{n:05d}.safetensors"))["latents"] for n in range(sections)]
    start = codec.encode(start_images().unsqueeze(1))

    def decode(x):
        return codec.decode(x)[0].permute(0, 2, 3, 1).numpy()

    history = decode(torch.cat([start, latents[0]], dim=2))
    for n in range(1, sections):
        history = soft_append(history, decode(torch.cat([latents[n - 1], latents[n]], dim=2)),
                              codec.num_pixel_frames(WINDOW))
    assert np.array_equal(video, history)
    plain = np.concatenate([decode(torch.cat([start, latents[0]], dim=2))] + [decode(x)[1:] for x in latents[1:]])
    assert plain.shape != history.shape or not np.array_equal(plain, history)  # the blending did something
