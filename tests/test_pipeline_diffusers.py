"""Generation parity with diffusers' ``HunyuanVideoFramepackPipeline`` (the reference oracle), CPU, tiny random models.

diffusers runs FramePack-F1's loop (``sampling_type=FramepackSamplingType.VANILLA``) with its
``FlowMatchEulerDiscreteScheduler``; lvg runs :class:`LongVideoPipeline` with the settings that mean the same
algorithm: ``MemoryPackConfig(rope_time_mode="relative")`` (F1's index layout and its ``[16, 2, 1]`` history
over a buffer of zeros + the start latent), no SemanticPack, ``sampler="euler"`` on the schedule diffusers
builds (``linspace(1, 0, n + 1)`` shifted: a static ``shift`` = lvg's number, or ``use_dynamic_shifting``
with the pipeline's resolution-dependent mu capped at ln 7 = lvg's ``shift="auto"``), the same steps and
distilled guidance, real CFG off (``true_cfg_scale`` / ``cfg_scale`` 1). Both share the very same DiT weights,
VAE, LLaMA + CLIP text encoders and SigLIP image encoder. The section latents agree to fp32 rounding (measured
<= 1e-6 at |x| <= 4.6, also at 25 steps: the DiTs round differently, and diffusers computes the schedule in fp32
where lvg uses fp64, 1 ulp apart) and the decoded frames to one grey level.

What differs by design, and how the test bridges it:

* **Noise.** diffusers draws everything from one generator in sequence: the start image's VAE posterior
  sample, then one window of noise per section. lvg seeds a generator per (seed, section), so a section's
  noise does not depend on how the run got there (resume, batch composition). The test makes lvg draw
  diffusers' stream (:class:`DiffusersNoisePipeline`).
* **Start latent.** diffusers (like FramePack) encodes the start image to a *sample* of the VAE posterior;
  lvg takes its *mode*, so the same image always gives the same start latent. The test gives lvg a VAE
  adapter that samples from the shared generator (:class:`PosteriorSampleVAE`).
* **Sampler.** lvg's default is FramePack's flow-matching UniPC (25 steps, returns the last x0 prediction);
  diffusers' FramePack pipeline steps ``FlowMatchEulerDiscreteScheduler``, which is lvg's ``sampler="euler"``
  -- the one compared here.
* **Cross-fade.** Both decode ``[start, section 0]``, then every section with the one before it, and blend the
  ``4 (window - 1) + 1`` overlapping frames linearly. lvg streams uint8 frames, so it clamps and rounds each
  decode *before* blending; diffusers blends the raw decoder output and clamps once at the end. Hence up to
  one grey level of rounding, and a larger difference wherever a decode leaves [-1, 1] inside an overlap; the
  test's VAE has its output layer scaled so its decodes stay inside [-1, 1].
* **Not compared.** End frames (``end_images``: diffusers' vanilla mode has no ``last_image``), SemanticPack,
  absolute RoPE and UniPC are lvg's own; diffusers' ``inverted_anti_drifting`` mode (the original FramePack's
  backward-in-time sampling) has no counterpart in lvg, which implements F1.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="the `test` extra installs the diffusers oracle")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import FramepackSamplingType  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402

from hunyuan_tiny import TEMPLATE, TinyModules, tiny_modules  # noqa: E402
from lvg.config import DiTConfig  # noqa: E402
from lvg.models.dit import PackedDiT  # noqa: E402
from lvg.models.encoders import Encoders  # noqa: E402
from lvg.models.hunyuan import HunyuanTextEncoder, HunyuanVideoVAE, SiglipImageEncoder  # noqa: E402
from lvg.models.memory_pack import MemoryPackConfig, MemoryPackState  # noqa: E402
from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig  # noqa: E402

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "generation_vs_diffusers.py"
WINDOW, STEPS, SECTIONS, GUIDANCE, SEED = 3, 5, 3, 10.0, 0
SIZE = 32  # pixels; latents 4 x 4
MAX_TOKENS = 8  # text tokens after the template (diffusers' max_sequence_length)
PROMPT = "a red circle moves slowly"


class PosteriorSampleVAE(HunyuanVideoVAE):
    """lvg's VAE adapter, but encoding to a posterior sample drawn from ``generator``, as diffusers does."""

    def __init__(self, vae: torch.nn.Module, generator: torch.Generator):
        super().__init__(vae, tiling=False)
        self.generator = generator

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        x = video.permute(0, 2, 1, 3, 4).float() / 127.5 - 1.0  # (B, 3, T, H, W) in [-1, 1]
        return self.vae.encode(x).latent_dist.sample(generator=self.generator) * self.scaling_factor


class DiffusersNoisePipeline(LongVideoPipeline):
    """lvg's pipeline drawing each section's noise from one generator in sequence (diffusers' stream); keeps
    every section's latents."""

    def __init__(self, *args, generator: torch.Generator, **kwargs):
        super().__init__(*args, **kwargs)
        self.generator, self.latents = generator, []

    def section_noise(self, state: MemoryPackState, seed: int, section: int) -> Tensor:
        b, c, _, h, w = state.start.shape
        return torch.randn(b, c, self.memory_pack.window, h, w, generator=self.generator)

    def denoise_section(self, state: MemoryPackState, noise: Tensor) -> Tensor:
        latents = super().denoise_section(state, noise)
        self.latents.append(latents)
        return latents


@pytest.fixture(scope="module")
def models() -> tuple[TinyModules, torch.nn.Module, PackedDiT]:
    modules = tiny_modules()
    # Random decoder outputs reach [-1.6, 3.7]; a quarter keeps every decode inside [-1, 1], where lvg's
    # clamp-then-blend equals diffusers' blend-then-clamp (module docstring).
    with torch.no_grad():
        for p in modules.vae.decoder.conv_out.parameters():
            p.mul_(0.25)
    cfg = DiTConfig.from_name("debug", text_embed_dim=16, pooled_projection_dim=8, image_proj_dim=8)
    ref = diffusers.HunyuanVideoFramepackTransformer3DModel(**cfg.to_dict()).eval()  # non-zero random init
    dit = PackedDiT(cfg).eval()
    dit.load_state_dict(ref.state_dict(), strict=True)
    return modules, ref, dit


def start_image() -> Tensor:
    return torch.randint(0, 256, (1, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))


def run_diffusers(modules: TinyModules, ref: torch.nn.Module, dynamic_shift: bool) -> tuple[list[Tensor], np.ndarray]:
    """diffusers' F1 loop: each section's final latents and the video (T, H, W, 3) float in [0, 1]."""
    scheduler = (diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True) if dynamic_shift
                 else diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0))
    pipe = diffusers.HunyuanVideoFramepackPipeline(
        text_encoder=modules.llama, tokenizer=modules.llama_tokenizer, transformer=ref, vae=modules.vae,
        scheduler=scheduler, text_encoder_2=modules.clip, tokenizer_2=modules.clip_tokenizer,
        image_encoder=modules.siglip, feature_extractor=modules.processor,
    )
    pipe.set_progress_bar_config(disable=True)
    latents = []

    def keep_section(pipeline, step: int, timestep: Tensor, tensors: dict) -> dict:
        if step == STEPS - 1:  # the scheduler's last step of a section: its final latents
            latents.append(tensors["latents"].clone())
        return {}

    frames = pipe(
        image=Image.fromarray(start_image()[0].permute(1, 2, 0).numpy()), prompt=PROMPT, height=SIZE, width=SIZE,
        num_frames=SECTIONS * (4 * (WINDOW - 1) + 1), latent_window_size=WINDOW, num_inference_steps=STEPS,
        guidance_scale=GUIDANCE, true_cfg_scale=1.0, generator=torch.Generator().manual_seed(SEED),
        sampling_type=FramepackSamplingType.VANILLA, prompt_template=TEMPLATE, max_sequence_length=MAX_TOKENS,
        output_type="np", callback_on_step_end=keep_section,
    ).frames
    return latents, frames[0]


def run_lvg(modules: TinyModules, dit: PackedDiT, dynamic_shift: bool) -> tuple[list[Tensor], np.ndarray]:
    """lvg's pipeline with the same algorithm and diffusers' draws: section latents and the uint8 video."""
    generator = torch.Generator().manual_seed(SEED)
    encoders = Encoders(
        codec=PosteriorSampleVAE(modules.vae, generator),
        text=HunyuanTextEncoder(modules.llama, modules.llama_tokenizer, modules.clip, modules.clip_tokenizer,
                                max_tokens=MAX_TOKENS, template=TEMPLATE),
        image=SiglipImageEncoder(modules.siglip, modules.processor),
        frame_size=(SIZE, SIZE),
    )
    sampling = SamplingConfig(steps=STEPS, sampler="euler", shift="auto" if dynamic_shift else 7.0,
                              guidance=GUIDANCE, cfg_scale=1.0)
    pipe = DiffusersNoisePipeline(dit, MemoryPackConfig(window=WINDOW, rope_time_mode="relative"), encoders,
                                  semantic_pack=None, sampling=sampling, generator=generator)
    video = pipe(start_image(), [PROMPT], num_sections=SECTIONS, fps=30.0, progress=False)
    return pipe.latents, video[0].numpy()


@pytest.mark.parametrize("dynamic_shift", [False, True], ids=["static-shift-7", "resolution-shift"])
def test_pipeline_matches_diffusers_f1_vanilla_sampling(models, dynamic_shift):
    modules, ref, dit = models
    theirs, ref_frames = run_diffusers(modules, ref, dynamic_shift)
    ours, frames = run_lvg(modules, dit, dynamic_shift)

    assert len(ours) == len(theirs) == SECTIONS
    for n, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape == (1, 4, WINDOW, SIZE // 8, SIZE // 8)
        err = (a - b).abs().max().item()
        assert err <= 1e-5, f"section {n}: latents differ by {err:.3g}"
    assert (ours[2] - ours[1]).abs().max() > 0.1  # sections differ: history and noise really took part

    overlap = 4 * (WINDOW - 1) + 1
    assert frames.shape == ref_frames.shape == (4 * (1 + SECTIONS * WINDOW) - 3, SIZE, SIZE, 3)
    assert ref_frames.min() > 0 and ref_frames.max() < 1  # nothing clamped: the cross-fades are comparable
    diff = np.abs(frames.astype(np.float64) - ref_frames.astype(np.float64) * 255)  # grey levels
    assert diff.max() <= 1 + 1e-3  # rounding each decode before the cross-fade: <= 0.5 + 0.5
    single = np.ones(len(frames), bool)  # frames that come from one decode, outside every cross-fade
    for n in range(SECTIONS - 1):
        start = 4 * (1 + (n + 1) * WINDOW) - 3 - overlap
        single[start + 1 : start + overlap - 1] = False  # the overlap's ends have weight 1 / 0
    assert diff[single].max() <= 0.5 + 1e-3  # one rounding
    assert frames.std() > 5  # a real picture, not a flat grey


def test_generation_vs_diffusers_benchmark_tiny_run(monkeypatch, capsys):
    """The benchmark's own code path at the tiny size: two subprocesses, one JSON object, equal latents."""
    spec = importlib.util.spec_from_file_location("generation_vs_diffusers", BENCHMARK)
    benchmark = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, benchmark)  # its dataclasses look their module up there
    spec.loader.exec_module(benchmark)
    # In this process, so that only the two measured subprocesses pay for importing torch and diffusers.
    monkeypatch.setattr(sys, "argv", [str(BENCHMARK), "--tiny", "--sections", "2", "--steps", "2", "--repeats", "1"])
    benchmark.main()
    result = json.loads(capsys.readouterr().out)
    assert result["latents_max_abs_diff"] <= 1e-5
    assert result["sections_timed"] == 1 and result["speedup"] > 0 and result["speedup_cpu"] > 0
    for impl in ("lvg", "diffusers"):
        assert result[impl]["section_wall_s_median"] > 0 and len(result[impl]["peak_rss_mib"]) == 1
        assert result[impl]["peak_rss_mib"][0] > result[impl]["generation_rss_mib"][0] >= 0
