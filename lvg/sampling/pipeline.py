"""LongVideoPipeline: minute-long generation, section by section, with MemoryPack carried along.

For each section n: draw noise from a CPU generator seeded by (seed, n), denoise it with the
configured sampler conditioned on ``MemoryPackState.context()`` (history + psi + the prompt active
at the section's first frame), append the result to the state, decode it and stream the frames
into the mp4. With an ``output`` path the run is resumable: ``<output>.parts/`` holds the run's
settings, every finished section's latents and the MemoryPack state after it, all written
atomically; a killed run started again with the same arguments re-decodes the finished sections
and continues, producing the same video as an uninterrupted run.

A *continuation* (``prefix=``) conditions on the first K sections of a ground-truth video instead of a
start image alone: :meth:`LongVideoPipeline.prefix_state` encodes the prefix frames with the codec in
one pass (as ``lvg prepare`` encodes a training clip), takes latent frame 0 as the start latent and
feeds the K sections' latents through :meth:`MemoryPackState.update` -- the update a Teacher Forcing
step makes with the same ground truth, so history and psi are exactly what training would hold --
then sections K, K+1, ... are generated with the same per-section seeds as a run from the start
image. The video holds the prefix's decoded latents followed by the generated frames, so its frame
indices are the ground truth's; prompt timestamps mean time in the whole video.

Shapes: B videos, C latent channels, W window, h/w latent height/width.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from lvg import flow
from lvg.io import atomic_path, atomic_write_text
from lvg.media import VideoWriter
from lvg.models.dit import PackedDiT
from lvg.models.encoders import Encoders, VideoCodec
from lvg.models.memory_pack import MemoryPackConfig, MemoryPackState
from lvg.models.semantic_pack import SemanticPack
from lvg.prompts import PromptSchedule
from lvg.sampling import teacache
from lvg.sampling.offload import enable_block_offload
from lvg.sampling.samplers import cfg_velocity, sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingConfig:
    """How each section is denoised."""

    steps: int = 25
    """Model evaluations per section (FramePack-F1: 25)."""
    sampler: Literal["unipc", "euler"] = "unipc"
    """``unipc`` (FramePack's flow-matching UniPC) or ``euler`` (diffusers' FramePack pipeline)."""
    shift: float | Literal["auto"] = "auto"
    """Schedule time shift: a number, or ``auto`` = FramePack's shift from the window's token count."""
    guidance: float = 10.0
    """Distilled guidance fed to the DiT (FramePack-F1: 10)."""
    cfg_scale: float = 1.0
    """Real classifier-free guidance (1 = off, no negative pass; FramePack-F1's default)."""
    cfg_rescale: float = 0.0
    """CFG rescale towards the conditional prediction's std (0 = off)."""
    negative_prompt: str = ""
    """Negative prompt for real CFG."""
    offload: bool = False
    """Keep the DiT's blocks in CPU memory and stream each to the GPU as it runs (:mod:`lvg.sampling.offload`):
    the 13B model in bf16 fits a consumer GPU, at the cost of one host-to-device copy of the weights per call."""
    teacache_threshold: float | None = None
    """TeaCache (:mod:`lvg.sampling.teacache`, LOSSY): skip the blocks on steps whose input barely changed until
    the accumulated change reaches this threshold (FramePack: 0.15, ~2x faster). None = off, exact sampling."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"SamplingConfig.steps must be >= 1, got {self.steps}.")
        if self.teacache_threshold is not None and not self.teacache_threshold > 0:
            raise ValueError(
                f"SamplingConfig.teacache_threshold must be > 0 or null (off), got {self.teacache_threshold}."
            )
        if self.sampler not in ("unipc", "euler"):
            raise ValueError(f"SamplingConfig.sampler must be 'unipc' or 'euler', got {self.sampler!r}.")


class SectionDecoder:
    """Decodes sections in order into pixel frames, streaming, with FramePack's overlap blending.

    A codec without temporal compression decodes each section on its own. A temporal VAE
    (``temporal_factor > 1``, e.g. HunyuanVideo's 4x) decodes every section together with the
    previous one for context, and the ``num_pixel_frames(window)`` frames both decodes cover are
    cross-faded linearly (FramePack's ``soft_append``). The last overlap frames are held back until
    the next section (or :meth:`finish`), so memory stays at two sections however long the video.
    Frames are ``(B, T, H, W, 3)`` uint8 numpy arrays.
    """

    def __init__(self, codec: VideoCodec, window: int):
        self.codec = codec
        self.overlap = codec.num_pixel_frames(window) if codec.temporal_factor > 1 else 0
        self.previous: Tensor | None = None  # latents of the last section (or the start latent)
        self.pending: np.ndarray | None = None  # decoded frames still to be blended

    def _decode(self, latents: Tensor) -> np.ndarray:
        return self.codec.decode(latents.float().cpu()).permute(0, 1, 3, 4, 2).numpy()

    def start(self, start: Tensor) -> np.ndarray:
        """Frames of the start latent (held back with a temporal codec: it is decoded with section 0)."""
        self.previous = start
        return np.zeros((start.shape[0], 0, 0, 0, 3), np.uint8) if self.overlap else self._decode(start)

    def add(self, latents: Tensor) -> np.ndarray:
        """Frames that are final once section ``latents`` ``(B, C, W, h, w)`` is known."""
        previous, self.previous = self.previous, latents
        if not self.overlap:
            return self._decode(latents)
        frames = self._decode(torch.cat([previous.to(latents), latents], dim=2))
        if self.pending is None:  # section 0, decoded with the start latent
            done, self.pending = frames[:, : -self.overlap], frames[:, -self.overlap :]
            return done
        w = np.linspace(1.0, 0.0, self.overlap)[None, :, None, None, None]
        blended = np.round(self.pending * w + frames[:, : self.overlap] * (1 - w)).astype(np.uint8)
        done = np.concatenate([blended, frames[:, self.overlap : -self.overlap]], axis=1)
        self.pending = frames[:, -self.overlap :]
        return done

    def finish(self) -> np.ndarray:
        """The frames still held back."""
        pending, self.pending = self.pending, None
        return pending if pending is not None else np.zeros((0,), np.uint8)


class LongVideoPipeline:
    """Section-by-section sampler over a PackedDiT + MemoryPack (also Student Forcing's rollout engine).

    ``encoders`` (codec, text, image) are needed to start from images and prompts; rollouts on
    latents (:meth:`denoise_section`) work without them. With ``sampling.offload`` the DiT's blocks
    are moved to CPU memory on construction and run on ``device`` (default: the current CUDA device,
    else the CPU); the rest of the DiT moves to ``device``.
    """

    def __init__(
        self,
        dit: PackedDiT,
        memory_pack: MemoryPackConfig,
        encoders: Encoders | None,
        semantic_pack: SemanticPack | None = None,
        sampling: SamplingConfig = SamplingConfig(),
        device: torch.device | str | None = None,
    ):
        self.dit, self.memory_pack, self.encoders = dit, memory_pack, encoders
        self.semantic_pack, self.sampling = semantic_pack, sampling
        if sampling.offload:
            if device is None:
                device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
            enable_block_offload(dit, device)

    # --- timing ----------------------------------------------------------------------------------

    def frames_per_section(self) -> int:
        return self.memory_pack.window * self.encoders.codec.temporal_factor

    def section_start(self, n: int, fps: float) -> float:
        """Seconds at which section ``n`` starts (its first frame; frame 0 is the start image)."""
        return (1 + n * self.frames_per_section()) / fps

    def sections_for(self, seconds: float, fps: float) -> int:
        """Sections needed for ``seconds`` of video at ``fps`` (at least one)."""
        return max(1, round(seconds * fps / self.frames_per_section()))

    def prefix_frames(self, sections: int) -> int:
        """Pixel frames of a ground-truth prefix of ``sections`` whole sections: the start frame and the
        frames of ``sections * window`` latent frames (``1 + sections * frames_per_section()``)."""
        return self.encoders.codec.num_pixel_frames(1 + sections * self.memory_pack.window)

    # --- conditioning ----------------------------------------------------------------------------

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        """Where the DiT computes (the execution device when offloaded) and its dtype."""
        p = next(self.dit.parameters())
        offload = getattr(self.dit, "block_offload", None)
        return (offload.device if offload is not None else p.device), p.dtype

    def _text(self, prompts: list[str]) -> dict[str, Tensor]:
        device, dtype = self._device_dtype()
        features = self.encoders.text.encode(prompts)
        return {"text": features.tokens.to(device, dtype), "text_mask": features.mask.to(device),
                    "pooled": features.pooled.to(device, dtype)}

    def start_state(self, images: Tensor, prompts: list[str]) -> MemoryPackState:
        """MemoryPack state for start images ``(B, 3, H, W)`` uint8 and the first prompts."""
        device, dtype = self._device_dtype()
        start = self.encoders.codec.encode(images.unsqueeze(1)).to(device, dtype)  # (B, C, 1, h, w)
        image = self.encoders.image.encode(images).to(device, dtype) if self.encoders.image is not None else None
        return MemoryPackState(self.memory_pack, start, image=image, semantic_pack=self.semantic_pack,
                               **self._text(prompts))

    def prefix_sections(self, prefix: Tensor) -> int:
        """K for ground-truth prefix frames ``(B, T, 3, H, W)`` uint8 of ``T = prefix_frames(K)``, K >= 1."""
        t = prefix.shape[1] if prefix.ndim == 5 else -1
        per = self.frames_per_section()
        if prefix.ndim != 5 or prefix.dtype != torch.uint8 or prefix.shape[2] != 3 or t < 1 + per or (t - 1) % per:
            raise ValueError(
                f"prefix must be uint8 (B, T, 3, H, W) frames of whole sections, T = 1 + K * {per} with K >= 1 "
                f"(prefix_frames(K)), got {prefix.dtype} {tuple(prefix.shape)}."
            )
        return (t - 1) // per

    @torch.no_grad()
    def prefix_state(self, prefix: Tensor, prompts: list[str]) -> tuple[MemoryPackState, Tensor]:
        """MemoryPack state after the ground-truth ``prefix`` ``(B, T, 3, H, W)`` uint8 (K whole sections, see
        :meth:`prefix_sections`), conditioned on the first prompts, and the prefix's latents ``(B, C, 1 + K W, h, w)``.

        The frames are encoded in one pass, as ``lvg prepare`` encodes a clip; latent frame 0 is the start latent,
        the image features are frame 0's, and each of the K sections goes through :meth:`MemoryPackState.update`
        in order: the state a Teacher Forcing step holds after the same sections (no second copy of the update).
        """
        k = self.prefix_sections(prefix)
        device, dtype = self._device_dtype()
        latents = self.encoders.codec.encode(prefix).to(device, dtype)  # (B, C, 1 + K W, h, w)
        image = self.encoders.image.encode(prefix[:, 0]).to(device, dtype) if self.encoders.image is not None else None
        state = MemoryPackState(self.memory_pack, latents[:, :, :1], image=image, semantic_pack=self.semantic_pack,
                                **self._text(prompts))
        w = self.memory_pack.window
        for n in range(k):
            state.update(latents[:, :, 1 + n * w : 1 + (n + 1) * w])
        return state, latents

    # --- sampling --------------------------------------------------------------------------------

    def denoise_section(self, state: MemoryPackState, noise: Tensor) -> Tensor:
        """One section ``(B, C, W, h, w)`` from ``noise`` under the state's context."""
        cfg = self.sampling
        b = noise.shape[0]
        context = state.context()
        negative = None
        if cfg.cfg_scale != 1.0:
            neg = self._text([cfg.negative_prompt] * b)
            negative = {**context, "encoder_hidden_states": neg["text"], "encoder_attention_mask": neg["text_mask"],
                        "pooled_projections": neg["pooled"]}
        guidance = torch.full((b,), flow.TIMESTEP_SCALE * cfg.guidance, device=noise.device)

        dtype = next(self.dit.parameters()).dtype
        # TeaCache: fresh caches per section, one per CFG branch (their inputs differ).
        caches = [None, None]
        if cfg.teacache_threshold is not None:
            caches = [teacache.TeaCache(self.dit, cfg.teacache_threshold, cfg.steps) for _ in range(2)]

        def velocity(x: Tensor, sigma: Tensor) -> Tensor:
            # The sampler integrates in float32; only the model runs in its own dtype (bf16 on GPU).
            timestep = flow.timestep_from_sigma(sigma.float().expand(b).to(x.device))
            with teacache.attach(self.dit, caches[0]):
                v = self.dit(hidden_states=x.to(dtype), timestep=timestep, guidance=guidance, **context).float()
            if negative is None:
                return v
            with teacache.attach(self.dit, caches[1]):
                v_neg = self.dit(hidden_states=x.to(dtype), timestep=timestep, guidance=guidance, **negative).float()
            return cfg_velocity(v, v_neg, cfg.cfg_scale, cfg.cfg_rescale)

        c = self.dit.config
        tokens = noise.shape[2] // c.patch_size_t * (noise.shape[3] // c.patch_size) * (noise.shape[4] // c.patch_size)
        shift = flow.shift_for_seq_len(tokens) if cfg.shift == "auto" else float(cfg.shift)
        return sample(velocity, noise.float(), cfg.steps, shift=shift, sampler=cfg.sampler)

    def section_noise(self, state: MemoryPackState, seed: int | Sequence[int], section: int) -> Tensor:
        """Noise of one section; video i of a batch uses a CPU generator seeded by (seed + i, section),
        or by (seed[i], section) when one seed per video is given, so a seed gives the same video on
        any device and in any batch."""
        b, c, _, h, w = state.start.shape
        seeds = [seed + i for i in range(b)] if isinstance(seed, int) else list(seed)
        if len(seeds) != b:
            raise ValueError(f"{len(seeds)} seeds for a batch of {b} videos; pass one seed per video or an int.")
        noise = [
            torch.randn(c, self.memory_pack.window, h, w,
                        generator=torch.Generator().manual_seed((s * 1_000_003 + section) % 2**63))
            for s in seeds
        ]
        return torch.stack(noise).to(state.start.device)

    @torch.no_grad()
    def sections(
        self, state: MemoryPackState, schedules: list[PromptSchedule], num_sections: int, seed: int | Sequence[int],
        fps: float,
    ) -> Iterator[tuple[int, Tensor]]:
        """Yield ``(n, latents of section n)`` from ``state.section`` up to ``num_sections``; updates ``state``."""
        prompts = None
        while state.section < num_sections:
            n = state.section
            current = [s.at(self.section_start(n, fps)) for s in schedules]
            if current != prompts:
                text = self._text(current)
                state.set_prompt(text["text"], text["text_mask"], text["pooled"], state.image)
                prompts = current
            latents = self.denoise_section(state, self.section_noise(state, seed, n))
            state.update(latents)
            yield n, latents

    # --- the user-facing call ----------------------------------------------------------------------

    def __call__(
        self,
        images: Tensor | None,
        prompts: list[str | PromptSchedule],
        *,
        num_sections: int,
        fps: float,
        seed: int | Sequence[int] = 0,
        output: str | Path | None = None,
        overwrite: bool = False,
        progress: bool = True,
        end_images: Tensor | None = None,
        prefix: Tensor | None = None,
    ) -> list[Path] | Tensor:
        """Generate one video per start image ``(B, 3, H, W)`` uint8 and prompt (or prompt schedule).

        Without ``output`` the decoded videos ``(B, T, H, W, 3)`` uint8 are returned. With it, video i
        is streamed to ``output`` (B = 1) or ``<stem>_<i>.mp4`` and the paths are returned; finished
        sections are kept under ``<output>.parts/`` so a killed run resumes where it stopped.
        ``end_images`` ``(B, 3, H, W)`` optionally condition every section on the video's last frame
        (see :meth:`MemoryPackState.set_end`; only models trained with end frames use it well).

        ``prefix`` ``(B, T, 3, H, W)`` uint8, ground-truth frames of K whole sections (``T = prefix_frames(K)``,
        ``K < num_sections``), makes a continuation: the state is seeded by :meth:`prefix_state`, sections K to
        ``num_sections - 1`` are generated, and the video is the prefix (decoded from its latents) followed by them.
        ``images`` may then be None; if given, they must be the prefix's first frames.
        """
        schedules = [p if isinstance(p, PromptSchedule) else PromptSchedule.parse(p) for p in prompts]
        if num_sections < 1:
            raise ValueError(f"num_sections must be >= 1, got {num_sections}.")
        if prefix is not None:
            k = self.prefix_sections(prefix)
            if k >= num_sections:
                raise ValueError(f"a prefix of {k} sections leaves nothing to generate in {num_sections} sections; "
                                 "num_sections counts the whole video, prefix included.")
            if images is None:
                images = prefix[:, 0]
            elif images.shape != prefix[:, 0].shape or not torch.equal(images, prefix[:, 0]):
                raise ValueError("images must be the prefix's first frames (a continuation starts from its prefix); "
                                 "pass images=None.")
        elif images is None:
            raise ValueError("images are required without a prefix.")
        starts = [self.section_start(n, fps) for n in range(num_sections)]
        for schedule in schedules:
            for reason in schedule.unused(starts):  # likely a timestamp past the video's end
                log.warning("Prompt schedule: %s", reason)
        if images.ndim != 4 or images.dtype != torch.uint8 or images.shape[0] != len(schedules):
            raise ValueError(
                f"images must be uint8 (B, 3, H, W) with one image per prompt ({len(schedules)}), "
                f"got {images.dtype} {tuple(images.shape)}."
            )
        first = [s.at(0.0) for s in schedules]
        if prefix is None:
            state, prefix_latents = self.start_state(images, first), None
        else:
            state, prefix_latents = self.prefix_state(prefix, first)
        if end_images is not None:
            if end_images.shape != images.shape or end_images.dtype != torch.uint8:
                raise ValueError(f"end_images must match images {tuple(images.shape)} uint8, "
                                 f"got {tuple(end_images.shape)}.")
            state.set_end(self.encoders.codec.encode(end_images.unsqueeze(1)).to(state.start), num_sections)
        if output is None:
            decoder = SectionDecoder(self.encoders.codec, self.memory_pack.window)
            videos = [decoder.start(state.start)]
            videos += [decoder.add(latents) for latents in self._prefix_sections(prefix_latents)]
            it = self.sections(state, schedules, num_sections, seed, fps)
            for _, latents in self._progress(it, num_sections, state.section, progress):
                videos.append(decoder.add(latents))
            videos.append(decoder.finish())
            return torch.from_numpy(np.concatenate([v for v in videos if v.size], axis=1))
        conditions = images if end_images is None else torch.cat([images, end_images])
        run = self._fingerprint(conditions, schedules, num_sections, fps, seed)
        if prefix is not None:  # only then, so runs without a prefix keep the fingerprint they always had
            digest = hashlib.sha256(prefix.cpu().numpy().tobytes()).hexdigest()
            run["prefix"] = {"sections": state.section, "sha256": digest}
        return self._generate_to_files(run, state, schedules, num_sections, fps, seed, Path(output), overwrite,
                                       progress, prefix_latents)

    def _prefix_sections(self, latents: Tensor | None) -> list[Tensor]:
        """The K section latents ``(B, C, W, h, w)`` of a prefix's latents (none without a prefix)."""
        if latents is None:
            return []
        w = self.memory_pack.window
        return [latents[:, :, 1 + n * w : 1 + (n + 1) * w] for n in range((latents.shape[2] - 1) // w)]

    def _progress(self, it, total: int, done: int, enabled: bool):
        return tqdm(it, total=total, initial=done, unit="section", disable=not enabled, desc="generating")

    def _fingerprint(self, images: Tensor, schedules, num_sections, fps, seed) -> dict:
        """Everything that determines the video; a partial run resumes only under the same fingerprint."""
        return {
            "images_sha256": hashlib.sha256(images.cpu().numpy().tobytes()).hexdigest(),
            "prompts": [list(map(list, s.entries)) for s in schedules],
            "num_sections": num_sections, "fps": fps, "seed": seed if isinstance(seed, int) else list(seed),
            "sampling": {k: v for k, v in asdict(self.sampling).items() if k != "offload"},  # offload is exact
            "memory_pack": asdict(self.memory_pack), "dit": self.dit.config.to_dict(),
            "weights": self._weights_digest(),
        }

    def _weights_digest(self) -> str:
        """A cheap identity of the weights (first values of every tensor), so another model never resumes a run."""
        modules = [self.dit] + ([self.semantic_pack] if self.semantic_pack is not None else [])
        h = hashlib.sha256()
        for module in modules:
            for p in module.parameters():
                h.update(p.detach().flatten()[:64].float().cpu().numpy().tobytes())
        return h.hexdigest()

    def _generate_to_files(self, run, state, schedules, num_sections, fps, seed, output, overwrite, progress,
                           prefix_latents=None):
        b = len(schedules)
        paths = [output] if b == 1 else [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(b)]
        parts = output.with_name(output.name + ".parts")
        run = json.loads(json.dumps(run))  # compare as stored
        if overwrite:
            shutil.rmtree(parts, ignore_errors=True)
        elif any(p.exists() for p in paths):
            existing = [str(p) for p in paths if p.exists()]
            raise ValueError(f"{existing} already exist; pass overwrite=True (--overwrite).")
        if parts.is_dir() and (parts / "state.pt").is_file():
            saved = json.loads((parts / "run.json").read_text())
            if saved != run:
                raise ValueError(
                    f"{parts} holds a partial run with other settings (or another model); rerun with those settings "
                    "to resume, or pass overwrite=True to start over."
                )
            state.load_state_dict(torch.load(parts / "state.pt", map_location=state.start.device, weights_only=True))
        else:
            parts.mkdir(parents=True, exist_ok=True)
            atomic_write_text(parts / "run.json", json.dumps(run, indent=1))
        writers = [VideoWriter(p, fps) for p in paths]
        decoder = SectionDecoder(self.encoders.codec, self.memory_pack.window)
        try:
            self._write(writers, decoder.start(state.start))
            prefix = self._prefix_sections(prefix_latents)
            for latents in prefix:  # a continuation's ground truth: encoded again, never stored in the parts
                self._write(writers, decoder.add(latents))
            for n in range(len(prefix), state.section):  # resumed: re-stream what is already done
                self._write(writers, decoder.add(load_file(str(parts / f"section_{n:05d}.safetensors"))["latents"]))
            it = self.sections(state, schedules, num_sections, seed, fps)
            for n, latents in self._progress(it, num_sections, state.section, progress):
                with atomic_path(parts / f"section_{n:05d}.safetensors") as tmp:
                    save_file({"latents": latents.cpu().contiguous()}, str(tmp))
                with atomic_path(parts / "state.pt") as tmp:
                    torch.save(state.state_dict(), tmp)
                self._write(writers, decoder.add(latents))
            self._write(writers, decoder.finish())
        except BaseException:
            for w in writers:
                w.abort()
            raise
        for w in writers:
            w.close()
        return paths

    def _write(self, writers: list[VideoWriter], frames: np.ndarray) -> None:
        if frames.size:
            for writer, video in zip(writers, frames):
                writer.write(video)

