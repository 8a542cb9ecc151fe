"""Generation speed beside diffusers: lvg's LongVideoPipeline vs diffusers' HunyuanVideoFramepackPipeline (CPU).

Both run FramePack-F1's section loop on the same random models (DiT weights saved once, then adopted by each
implementation's class built on the meta device, so one copy is in memory; HunyuanVideo VAE, LLaMA + CLIP text
and SigLIP image encoders built from one seed) with the settings that mean the same algorithm, as in
``tests/test_pipeline_diffusers.py``: diffusers' ``vanilla`` sampling with ``FlowMatchEulerDiscreteScheduler
(shift=7)``; lvg with F1's relative RoPE layout, no SemanticPack, ``sampler="euler"``, ``shift=7``, the same
steps and distilled guidance, real CFG off, and diffusers' draws (the start latent's posterior sample, then
one noise window per section, from one generator). So the latents must agree to fp32 rounding; the run
reports it (``latents_max_abs_diff``) as the check that like is timed with like. The default DiT is sized to
dominate a section's time (width 512, 2 dual + 4 single blocks, 64x64 frames, window 9: ~80% of it on one
CPU thread at 10 steps, the rest mostly the VAE decode); ``--tiny`` runs the parity test's sizes in seconds (a
smoke run, not a timing).

Each implementation runs in its own fresh subprocess, ``--repeats`` times, alternating which goes first, so
neither inherits the other's allocator state or warm caches and each peak RSS is its own. Per run:
``peak_rss_mib`` is the subprocess's ``ru_maxrss`` (high-water mark of resident memory: interpreter, imports,
models and generation), ``generation_rss_mib`` how far generation raised it above the mark just before the
pipeline call. A section's time runs from the end of one section's denoising loop to the end of the next
(the previous section's VAE decode + this section's denoising); section 0, which also encodes the prompt and
the start image and warms up, is left out. Wall time is what a user waits; CPU time (``process_time``) is the
same work without the time other processes took from this one, so on a shared machine ``speedup_cpu`` is the
steadier figure. ``speedup`` = diffusers' median wall time / lvg's (goal >= 1.0: lvg no slower).

    python benchmarks/generation_vs_diffusers.py [--sections 6] [--steps 10] [--repeats 2] [--tiny]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import diffusers
import tokenizers
import torch
import transformers
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import FramepackSamplingType
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor

from lvg.config import DiTConfig
from lvg.models.dit import PackedDiT
from lvg.models.encoders import Encoders
from lvg.models.hunyuan import HunyuanTextEncoder, HunyuanVideoVAE, SiglipImageEncoder
from lvg.models.memory_pack import MemoryPackConfig, MemoryPackState
from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig

TEMPLATE = {"template": "system describe the video {} end", "crop_start": 4}
WORDS = ["system", "describe", "the", "video", "end", "a", "red", "circle", "moves", "slowly"]
PROMPT = "a red circle moves slowly"
GUIDANCE, SHIFT, SEED, MAX_TOKENS = 10.0, 7.0, 0, 8


@dataclass(frozen=True)
class Size:
    """Model and video size of a run."""

    dit: DiTConfig
    frame: int
    """Frame height = width in pixels (latents are 8x smaller)."""
    window: int
    """Latent frames per section."""
    vae_channels: int
    """Channels of every VAE block (HunyuanVideo's: 128-512)."""
    text_dim: int
    pooled_dim: int
    image_dim: int


def size(tiny: bool) -> Size:
    """``tiny``: the parity test's sizes (seconds); otherwise a DiT that dominates the section time."""
    if tiny:
        cfg = DiTConfig.from_name("debug", text_embed_dim=16, pooled_projection_dim=8, image_proj_dim=8)
        return Size(cfg, frame=32, window=3, vae_channels=8, text_dim=16, pooled_dim=8, image_dim=8)
    # Measured on one CPU thread: the DiT takes ~80% of a section's time at 10 steps, the VAE decode most of the rest.
    cfg = DiTConfig.from_name(
        "debug", num_attention_heads=8, attention_head_dim=64, rope_axes_dim=(16, 24, 24), num_layers=2,
        num_single_layers=4, text_embed_dim=32, pooled_projection_dim=16, image_proj_dim=16,
    )
    return Size(cfg, frame=64, window=9, vae_channels=4, text_dim=32, pooled_dim=16, image_dim=16)


def word_tokenizer() -> transformers.PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS])}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=model, pad_token="[PAD]", unk_token="[UNK]")


@dataclass
class Modules:
    """Everything but the DiT, as raw diffusers / transformers modules (both pipelines use these)."""

    vae: torch.nn.Module
    llama: torch.nn.Module
    clip: torch.nn.Module
    siglip: torch.nn.Module
    processor: transformers.SiglipImageProcessor


def build_modules(s: Size) -> Modules:
    """Random VAE and encoders, the same in every process (seeded)."""
    torch.manual_seed(SEED)
    vae = diffusers.AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=s.dit.in_channels,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4, up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(s.vae_channels,) * 4, layers_per_block=1, norm_num_groups=4, spatial_compression_ratio=8,
        temporal_compression_ratio=4, mid_block_add_attention=True,
    ).eval()
    vocab = len(WORDS) + 2
    llama = transformers.LlamaModel(transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=s.text_dim, intermediate_size=2 * s.text_dim, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=2)).eval()
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=vocab, hidden_size=s.pooled_dim, intermediate_size=2 * s.pooled_dim, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77)).eval()
    siglip = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
        image_size=s.frame, patch_size=8, hidden_size=s.image_dim, intermediate_size=2 * s.image_dim,
        num_hidden_layers=1, num_attention_heads=2)).eval()
    processor = transformers.SiglipImageProcessor(size={"height": s.frame, "width": s.frame})
    return Modules(vae, llama, clip, siglip, processor)


def start_image(s: Size) -> Tensor:
    generator = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (1, 3, s.frame, s.frame), dtype=torch.uint8, generator=generator)


class PosteriorSampleVAE(HunyuanVideoVAE):
    """lvg's VAE adapter, but encoding to a posterior sample drawn from ``generator``, as diffusers does
    (lvg itself takes the posterior mode)."""

    def __init__(self, vae: torch.nn.Module, generator: torch.Generator):
        super().__init__(vae, tiling=False)
        self.generator = generator

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        x = video.permute(0, 2, 1, 3, 4).float() / 127.5 - 1.0  # (B, 3, T, H, W) in [-1, 1]
        return self.vae.encode(x).latent_dist.sample(generator=self.generator) * self.scaling_factor


Clock = tuple[float, float]
"""``(wall, cpu)`` seconds: ``time.perf_counter()`` and ``time.process_time()``."""


def clock() -> Clock:
    return time.perf_counter(), time.process_time()


class DiffusersNoisePipeline(LongVideoPipeline):
    """lvg's pipeline drawing each section's noise from one generator in sequence (diffusers' stream; lvg
    itself seeds one generator per section); records when each section's denoising ends and its latents."""

    def __init__(self, *args, generator: torch.Generator, **kwargs):
        super().__init__(*args, **kwargs)
        self.generator = generator
        self.ends: list[Clock] = []
        self.latents: list[Tensor] = []

    def section_noise(self, state: MemoryPackState, seed: int, section: int) -> Tensor:
        b, c, _, h, w = state.start.shape
        return torch.randn(b, c, self.memory_pack.window, h, w, generator=self.generator)

    def denoise_section(self, state: MemoryPackState, noise: Tensor) -> Tensor:
        latents = super().denoise_section(state, noise)
        self.ends.append(clock())
        self.latents.append(latents)
        return latents


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def load_dit(cls: type[torch.nn.Module], s: Size, weights: Path) -> torch.nn.Module:
    """Build ``cls`` on the meta device and adopt the saved tensors: one copy of the weights in memory."""
    with torch.device("meta"):
        dit = cls(s.dit) if cls is PackedDiT else cls(**s.dit.to_dict())
    dit.load_state_dict(load_file(str(weights)), strict=True, assign=True)
    return dit.eval()


@dataclass
class Run:
    """What one implementation's run reports."""

    rss_before_mib: float
    """Peak RSS just before the pipeline call: interpreter, imports and models."""
    start: Clock
    """At the pipeline call."""
    ends: list[Clock]
    """At the end of each section's denoising."""
    latents: list[Tensor]
    """Each section's latents ``(1, C, W, h, w)``."""


def run_lvg(s: Size, weights: Path, sections: int, steps: int) -> Run:
    """lvg's pipeline with diffusers' algorithm and draws."""
    m = build_modules(s)
    generator = torch.Generator().manual_seed(SEED)
    encoders = Encoders(
        codec=PosteriorSampleVAE(m.vae, generator),
        text=HunyuanTextEncoder(m.llama, word_tokenizer(), m.clip, word_tokenizer(), max_tokens=MAX_TOKENS,
                                template=TEMPLATE),
        image=SiglipImageEncoder(m.siglip, m.processor),
        frame_size=(s.frame, s.frame),
    )
    pipe = DiffusersNoisePipeline(
        load_dit(PackedDiT, s, weights), MemoryPackConfig(window=s.window, rope_time_mode="relative"), encoders,
        semantic_pack=None,
        sampling=SamplingConfig(steps=steps, sampler="euler", shift=SHIFT, guidance=GUIDANCE, cfg_scale=1.0),
        generator=generator,
    )
    image = start_image(s)
    before, start = peak_rss_mib(), clock()
    pipe(image, [PROMPT], num_sections=sections, fps=30.0, progress=False)
    return Run(before, start, pipe.ends, pipe.latents)


def run_diffusers(s: Size, weights: Path, sections: int, steps: int) -> Run:
    """diffusers' pipeline, F1 (``vanilla``) sampling."""
    m = build_modules(s)
    pipe = diffusers.HunyuanVideoFramepackPipeline(
        text_encoder=m.llama, tokenizer=word_tokenizer(),
        transformer=load_dit(diffusers.HunyuanVideoFramepackTransformer3DModel, s, weights), vae=m.vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=SHIFT), text_encoder_2=m.clip,
        tokenizer_2=word_tokenizer(), image_encoder=m.siglip, feature_extractor=m.processor,
    )
    pipe.set_progress_bar_config(disable=True)
    ends: list[Clock] = []
    latents: list[Tensor] = []

    def section_end(pipeline, step: int, timestep: Tensor, tensors: dict) -> dict:
        if step == steps - 1:  # the scheduler's last step: the section's denoising is done
            ends.append(clock())
            latents.append(tensors["latents"].clone())
        return {}

    image = Image.fromarray(start_image(s)[0].permute(1, 2, 0).numpy())
    before, start = peak_rss_mib(), clock()
    pipe(image=image, prompt=PROMPT, height=s.frame, width=s.frame, num_frames=sections * (4 * (s.window - 1) + 1),
         latent_window_size=s.window, num_inference_steps=steps, guidance_scale=GUIDANCE, true_cfg_scale=1.0,
         generator=torch.Generator().manual_seed(SEED), sampling_type=FramepackSamplingType.VANILLA,
         prompt_template=TEMPLATE, max_sequence_length=MAX_TOKENS, output_type="np", callback_on_step_end=section_end)
    return Run(before, start, ends, latents)


def child(impl: str, args: argparse.Namespace) -> None:
    """One implementation's run: prints its times and RSS as JSON, saves its latents to ``args.latents``."""
    run = (run_lvg if impl == "lvg" else run_diffusers)(size(args.tiny), Path(args.weights), args.sections, args.steps)
    assert len(run.latents) == len(run.ends) == args.sections
    spans = list(itertools.pairwise([run.start, *run.ends]))
    save_file({f"section_{n}": x.contiguous() for n, x in enumerate(run.latents)}, args.latents)
    print(json.dumps({
        "wall_s": [b[0] - a[0] for a, b in spans],
        "cpu_s": [b[1] - a[1] for a, b in spans],
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": run.rss_before_mib,
    }))


def summary(runs: list[dict]) -> dict:
    """One implementation's times over every timed section of all its runs, and each run's memory."""
    wall = [t for run in runs for t in run["wall_s"][1:]]
    return {
        "section_wall_s_median": statistics.median(wall),
        "section_wall_s_min": min(wall),
        "section_cpu_s_median": statistics.median(t for run in runs for t in run["cpu_s"][1:]),
        "first_section_wall_s_median": statistics.median(run["wall_s"][0] for run in runs),
        "peak_rss_mib": [run["peak_rss_mib"] for run in runs],
        "generation_rss_mib": [run["peak_rss_mib"] - run["rss_before_mib"] for run in runs],
    }


def parent(args: argparse.Namespace) -> None:
    """Save the DiT weights, run both implementations ``args.repeats`` times each and print the JSON object."""
    s = size(args.tiny)
    runs: dict[str, list[dict]] = {"lvg": [], "diffusers": []}
    diff = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "dit.safetensors"
        torch.manual_seed(SEED)  # diffusers' default init: non-zero outputs (lvg's adaLN-Zero init gives zeros)
        state = diffusers.HunyuanVideoFramepackTransformer3DModel(**s.dit.to_dict()).state_dict()
        save_file(state, str(weights))
        for r in range(args.repeats):
            latents = {}
            for impl in ("lvg", "diffusers") if r % 2 == 0 else ("diffusers", "lvg"):
                out = Path(tmp) / f"{impl}.safetensors"
                cmd = [sys.executable, __file__, "--child", impl, "--weights", str(weights), "--latents", str(out),
                       "--sections", str(args.sections), "--steps", str(args.steps), *(["--tiny"] if args.tiny else [])]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode:
                    raise RuntimeError(f"the {impl} run failed:\n{proc.stderr[-4000:]}")
                runs[impl].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                latents[impl] = load_file(str(out))
            diff = max(diff, *((latents["lvg"][k] - x).abs().max().item() for k, x in latents["diffusers"].items()))

    result = {impl: summary(r) for impl, r in runs.items()}
    print(json.dumps({
        "benchmark": "generation_vs_diffusers",
        "size": "tiny" if args.tiny else "default",
        "dit_params_m": sum(v.numel() for v in state.values()) / 1e6,
        "frame": s.frame, "window": s.window, "sections": args.sections, "steps": args.steps,
        "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
        "sections_timed": args.repeats * (args.sections - 1),
        **result,
        "speedup": result["diffusers"]["section_wall_s_median"] / result["lvg"]["section_wall_s_median"],
        "speedup_cpu": result["diffusers"]["section_cpu_s_median"] / result["lvg"]["section_cpu_s_median"],
        "latents_max_abs_diff": diff,
    }, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=int, default=6, help="sections per run (the first is not timed)")
    parser.add_argument("--steps", type=int, default=10, help="Euler steps per section")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each implementation, alternating")
    parser.add_argument("--tiny", action="store_true", help="the parity test's tiny sizes (a smoke run)")
    parser.add_argument("--child", choices=("lvg", "diffusers"), help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--latents", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sections < 2:
        parser.error("--sections must be >= 2: the first section is not timed.")
    if args.child:
        child(args.child, args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
