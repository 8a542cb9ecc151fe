"""The shared section loop of every training stage.

A batch is whole videos (all sections, chronological). For each section n the module

1. noises the ground-truth section at a sigma drawn by :class:`~lvg.flow.SigmaSampling`,
2. predicts the velocity conditioned on ``MemoryPackState.context()`` (FramePack history + psi),
3. back-propagates the flow-matching loss of that section right away (activations of one section
   at a time; gradients accumulate over the video and are averaged across processes once),
4. hands the state the history section n+1 is conditioned on -- this is where the stages differ:
   ground truth (Teacher Forcing), the one-step estimate x0_hat (Direct Forcing), a k-step
   rollout (Student Forcing).

Then one optimizer step per batch of videos. All randomness of a step (sigmas, noise, rollout
noise) comes from a CPU generator seeded by (seed, global step, rank), so a resumed run draws
exactly what an uninterrupted one would, on any device.

Shapes: B videos, C channels, F latent frames of a video, W window, h/w latent height/width.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lvg import flow
from lvg.config import DiTConfig
from lvg.data.prompt_suite import load_prefix
from lvg.models.dit import PackedDiT
from lvg.models.encoders import Encoders, encoders_of
from lvg.models.lora import LoRAConfig, LoRALinear, apply_lora
from lvg.models.memory_pack import MemoryPackConfig, MemoryPackState
from lvg.models.semantic_pack import SemanticPack, SemanticPackConfig
from lvg.models.weights import check_state_dict, load_state_dict
from lvg.sampling.offload import enable_block_offload
from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig
from lvg.training import parallel

# Stage hyper-parameters (saved in every checkpoint) include these config dataclasses; allow them
# in torch's weights-only unpickler so `--ckpt_path` resumes without unsafe loading.
torch.serialization.add_safe_globals(
    [MemoryPackConfig, SemanticPackConfig, flow.SigmaSampling, SamplingConfig, LoRAConfig]
)


def read_weights(path: Path, argument: str, *, mmap: bool = False) -> dict[str, Tensor]:
    """The state dict of a stage checkpoint (``.ckpt``, weights only) or a ``.safetensors`` export.

    A file that does not load (a truncated download, a text file) is a ValueError naming ``argument``
    and the file, instead of torch's zip-reader traceback. ``mmap`` maps a checkpoint's tensors
    instead of reading them: a cheap check that a large checkpoint loads.
    """
    def refused(reason: str) -> ValueError:
        return ValueError(f"{argument}: {path} is damaged or not a checkpoint ({reason}); "
                          "pass a stage checkpoint (.ckpt) or .safetensors file.")

    if path.suffix != ".safetensors" and not zipfile.is_zipfile(path):  # torch's own errors here are cryptic
        raise refused("torch checkpoints are zip archives and this file is not one: truncated, or another format")
    try:
        if path.suffix == ".safetensors":
            return load_state_dict([path])
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap).get("state_dict", {})
    except Exception as err:
        raise refused(str(err).strip().split(". ")[0] or type(err).__name__) from err


TRAINABLE_GROUPS: dict[str, tuple[str, ...]] = {
    "all": ("",),
    "output_layer": ("dit.norm_out.", "dit.proj_out."),
    "semantic_pack": ("semantic_pack.",),
    "lora": (),  # the adapters (``lora_down`` / ``lora_up`` of LoRA layers), selected by module, not by prefix
}
"""Named parameter groups for ``trainable``; any other token is used as a parameter-name prefix."""


def _plain(value: Any) -> Any:
    """Dataclasses as dicts and tuples as lists, recursively: what plain YAML (and OmegaConf) can hold."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class StageModule(L.LightningModule):
    """Base of the training stages: model, MemoryPack, optimizer, the section loop and its logging."""

    def __init__(
        self,
        dit: str = "toy",
        dit_overrides: dict[str, Any] | None = None,
        memory_pack: MemoryPackConfig = MemoryPackConfig(),
        semantic_pack: SemanticPackConfig = SemanticPackConfig(),
        sigma: flow.SigmaSampling = flow.SigmaSampling(),
        guidance: float = 10.0,
        trainable: str | None = None,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        min_lr_ratio: float = 0.1,
        max_grad_norm: float | None = 1.0,
        pretrained: str | None = None,
        init_from: str | None = None,
        gradient_checkpointing: bool = False,
        max_sections: int | None = None,
        sections_per_step: int | None = None,
        seed: int = 0,
        histogram_every_n_steps: int = 50,
        sampling: SamplingConfig = SamplingConfig(),
        fps: float = 8.0,
        lora: LoRAConfig | None = None,
    ):
        """
        Args:
            dit: DiT preset (``debug``, ``toy``, ``framepack-f1``).
            dit_overrides: fields of the preset to change, e.g. ``{num_layers: 4}``.
            memory_pack: context packing, RoPE time mode and psi truncated BPTT.
            semantic_pack: long-term memory settings (``enabled: false`` = FramePack-F1 baseline).
            sigma: training noise-level distribution.
            guidance: distilled-guidance value fed to the DiT (FramePack-F1 uses 10).
            trainable: ``+``-joined groups (``all``, ``output_layer``, ``semantic_pack``, ``lora``) or
                parameter-name prefixes (e.g. ``dit.single_transformer_blocks``); the rest is frozen.
                Default: ``all``, or ``lora`` (the adapters only) when ``lora`` is set.
            lr: AdamW learning rate (the paper: 1e-5 on FramePack-F1).
            betas: AdamW betas.
            weight_decay: AdamW weight decay (decoupled).
            warmup_steps: linear learning-rate warm-up.
            lr_schedule: after the warm-up, ``constant`` or ``cosine`` decay to ``min_lr_ratio * lr`` at the
                trainer's ``max_steps`` (short from-scratch runs such as the toy recipe gain from the decay;
                fine-tuning FramePack-F1 at 1e-5 keeps it constant, as the paper does).
            min_lr_ratio: the cosine schedule's final learning rate relative to ``lr``.
            max_grad_norm: gradient-norm clipping (None: no clipping; the norm is logged either way).
            pretrained: FramePack(-F1) transformer weights for the DiT (directory, file or hub id).
            init_from: weights-only start from a stage checkpoint (``.ckpt``) or a ``.safetensors``
                export of this module, e.g. stage 1's result for stage 2. (``--ckpt_path`` resumes.)
            gradient_checkpointing: recompute DiT block activations in backward.
            max_sections: train on at most this many sections per video (None: all).
            sections_per_step: score this many sections of each video per step, drawn at random (None: all).
                The others only advance the memory: under Teacher Forcing (ground-truth history) they cost no
                DiT pass, so a step costs ``sections_per_step`` sections instead of the whole video and the same
                compute buys many more optimizer steps; stages whose history is the model's own prediction
                (Direct / Student Forcing) still run those sections' forward, without gradients.
            seed: seed of the per-step noise generator.
            histogram_every_n_steps: how often the sigma histogram goes to TensorBoard.
            sampling: sampler settings of ``lvg generate`` and ``lvg predict``.
            fps: frame rate that turns a job's ``seconds`` into sections in ``lvg predict``.
            lora: LoRA adapters on the Linear layers of the DiT blocks (None: no LoRA); export them with
                :func:`lvg.models.lora.save_lora` in musubi-tuner's FramePack format.
        """
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        config = DiTConfig.from_name(dit, **(dit_overrides or {}))
        self.dit = PackedDiT.from_pretrained(pretrained, config=config) if pretrained else PackedDiT(config)
        self.dit.gradient_checkpointing = gradient_checkpointing
        if lora is not None:  # before init_from, so a LoRA run's checkpoint loads into the same structure
            apply_lora(self.dit, lora)
        self.semantic_pack = SemanticPack(semantic_pack, config) if semantic_pack.enabled else None
        self.memory_pack_config, self.sigma_sampling, self.sampling_config = memory_pack, sigma, sampling
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}.")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}.")
        if sections_per_step is not None and sections_per_step < 1:
            raise ValueError(f"sections_per_step must be >= 1 or null (all sections), got {sections_per_step}.")
        if init_from:
            self.load_weights(init_from)
        self._set_trainable(trainable or ("lora" if lora is not None else "all"))

    # --- setup -----------------------------------------------------------------------------------

    def load_weights(self, path: str, argument: str = "init_from") -> None:
        """Weights only (no optimizer or loop state) from a stage checkpoint or a ``.safetensors`` export;
        strict, with every mismatching tensor named. ``argument`` names the option in errors."""
        file = Path(path)
        if not file.is_file() and not parallel.is_sharded_checkpoint(file):
            raise ValueError(f"{argument}: {path} does not exist; pass a stage checkpoint (.ckpt) or .safetensors "
                             "file.")
        sharded = parallel.is_sharded_checkpoint(file)  # an FSDP run's checkpoint directory
        # a sharded checkpoint gives shapes only here; it is read in place below, after the check
        state = parallel.sharded_weights(file) if sharded else read_weights(file, argument)
        check_state_dict(
            self.state_dict(), state, f"{argument} {path}", f"{type(self).__name__}({self.hparams.dit})",
            hint="Was it trained with the same dit / dit_overrides / semantic_pack settings?",
        )
        if sharded:
            parallel.load_sharded_weights(file, self.state_dict())
        else:
            self.load_state_dict(state)

    def _set_trainable(self, spec: str) -> None:
        tokens = [token.strip() for token in spec.split("+")]
        prefixes = [p for token in tokens for p in TRAINABLE_GROUPS.get(token, (token,))]
        adapters = {id(p) for m in self.modules() if isinstance(m, LoRALinear)
                    for p in (*m.lora_down.parameters(), *m.lora_up.parameters())}
        if "lora" in tokens and not adapters:
            raise ValueError("trainable: 'lora' needs LoRA layers; set `lora:` (e.g. `lora: {rank: 32}`).")
        names = [n for n, _ in self.named_parameters()]
        for prefix in prefixes:
            if not any(n.startswith(prefix) for n in names):
                raise ValueError(
                    f"trainable: {prefix!r} matches no parameter; use groups {sorted(TRAINABLE_GROUPS)} "
                    "or a parameter-name prefix such as 'dit.transformer_blocks'."
                )
        for name, param in self.named_parameters():
            adapter = "lora" in tokens and id(param) in adapters
            param.requires_grad_(adapter or any(name.startswith(p) for p in prefixes))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=hp.lr, betas=tuple(hp.betas),
                                      weight_decay=hp.weight_decay)
        warmup = max(hp.warmup_steps, 1)
        total = self.trainer.max_steps if self._trainer is not None else -1
        if hp.lr_schedule == "cosine" and total < 1:
            raise ValueError("lr_schedule: cosine decays over trainer.max_steps; set trainer.max_steps.")

        def factor(step: int) -> float:
            if hp.lr_schedule == "constant" or step < warmup:
                return min(1.0, (step + 1) / warmup)
            progress = min(1.0, (step - warmup) / max(total - warmup, 1))
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @property
    def hparams_initial(self) -> AttributeDict:
        """What loggers record (TensorBoard's hparams.yaml): the init arguments with the config dataclasses as
        plain dicts (:func:`_plain`). Readable, and it keeps Lightning's OmegaConf path (taken whenever omegaconf
        is installed, e.g. next to Hydra) from failing on the frozen dataclasses. Checkpoints keep the dataclasses."""
        return AttributeDict({k: _plain(v) for k, v in super().hparams_initial.items()})

    def prepare_generation(self, device: torch.device) -> None:
        """Call before the module moves to ``device`` for generation (``lvg generate``, ``lvg test`` / ``predict``):
        with ``sampling.offload`` the DiT's blocks stay in host memory (``.to()`` skips them) and stream to
        ``device`` one at a time, so the 13B model fits a consumer GPU."""
        if self.sampling_config.offload:
            enable_block_offload(self.dit, device)

    def setup(self, stage: str) -> None:
        if stage in ("test", "predict") and self.sampling_config.offload:
            parallel.check_offload_strategy(self.trainer.strategy)
            self.prepare_generation(self.trainer.strategy.root_device)  # the strategy moves the module next
        if stage == "fit":
            # fp32 master weights for what trains: FramePack-F1 ships bf16, and AdamW updates at lr 1e-5 vanish in
            # bf16. Frozen weights keep their dtype (memory); compute is bf16 via autocast / FSDP's param_dtype.
            for p in self.trainable_parameters():
                if p.is_floating_point() and p.dtype != torch.float32:
                    p.data = p.data.float()

    def configure_model(self) -> None:
        """Under :class:`~lvg.training.parallel.FSDPStrategy`: shard the DiT (FSDP2); otherwise nothing."""
        # no trainer: load_from_checkpoint
        parallel.shard_stage(self, self._trainer.strategy if self._trainer is not None else None)

    def on_fit_start(self) -> None:
        parallel.check_fit_strategy(self.trainer.strategy, self.trainer.world_size, self.hparams.sections_per_step)

    def on_train_start(self) -> None:
        counts = {
            "params/trainable": float(sum(p.numel() for p in self.trainable_parameters())),
            "params/total": float(sum(p.numel() for p in self.parameters())),
        }
        for logger in self.loggers:
            logger.log_metrics(counts, step=self.global_step)

    # --- the section loop ------------------------------------------------------------------------

    def pipeline(self, encoders: Encoders, sampling: SamplingConfig | None = None) -> LongVideoPipeline:
        """The generation pipeline of this stage's model (``lvg generate``, ``lvg test`` / ``predict``, the sample
        logger): its DiT, MemoryPack and SemanticPack, and its sampler settings unless ``sampling`` replaces them."""
        return LongVideoPipeline(self.dit, self.memory_pack_config, encoders, self.semantic_pack,
                                 sampling or self.sampling_config, device=self.device)

    def new_state(self, batch: dict[str, Any]) -> MemoryPackState:
        return MemoryPackState(
            self.memory_pack_config, batch["latents"][:, :, :1],
            text=batch["text"], text_mask=batch["text_mask"], pooled=batch["pooled"], image=batch.get("image"),
            semantic_pack=self.semantic_pack,
        )

    def num_sections(self, batch: dict[str, Any]) -> int:
        window = self.memory_pack_config.window
        frames = batch["latents"].shape[2]
        sections = (frames - 1) // window
        if sections < 1:
            raise ValueError(
                f"videos {batch['id']} have {frames} latent frames, fewer than 1 + window ({1 + window}); "
                f"raise the datamodule's min_latent_frames to at least {1 + window}."
            )
        return min(sections, self.hparams.max_sections or sections)

    def section_passes(self, sections: int) -> int:
        """Section passes of this step: the video's own count, or under FSDP (where every forward and backward
        is a collective) the largest count over all processes; the extra passes are not scored."""
        return parallel.section_passes(self.trainer.strategy, sections, self.device)

    def step_generator(self, step: int | None = None, rank: int | None = None) -> torch.Generator:
        """CPU generator of one step (default: the current step and rank): same draws after a resume and
        on every device."""
        step = self.global_step if step is None else step
        rank = self.global_rank if rank is None else rank
        seed = (self.hparams.seed * 1_000_003 + step) * 1_009 + rank
        return torch.Generator().manual_seed(seed % 2**63)

    def velocity(self, x_sigma: Tensor, sigma: Tensor, context: dict[str, Tensor]) -> Tensor:
        """The DiT's velocity for noisy latents at per-sample ``sigma`` ``(B,)``."""
        b = x_sigma.shape[0]
        guidance = torch.full((b,), flow.TIMESTEP_SCALE * self.hparams.guidance, device=x_sigma.device)
        return self.dit(hidden_states=x_sigma, timestep=flow.timestep_from_sigma(sigma), guidance=guidance, **context)

    def window_tokens(self, x: Tensor) -> int:
        cfg = self.dit.config
        return x.shape[2] // cfg.patch_size_t * (x.shape[3] // cfg.patch_size) * (x.shape[4] // cfg.patch_size)

    def noisy_section(self, x0: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_sigma, noise, sigma)`` for a clean section, drawn from ``gen``."""
        sigma = self.sigma_sampling.sample(x0.shape[0], seq_len=self.window_tokens(x0), generator=gen, device=x0.device)
        noise = torch.randn(x0.shape, generator=gen).to(x0.device, x0.dtype)
        return flow.add_noise(x0, noise, sigma), noise, sigma

    def next_history(
        self, *, x0: Tensor, x_sigma: Tensor, v: Tensor, sigma: Tensor, state: MemoryPackState, gen: torch.Generator
    ) -> Tensor:
        """What section n+1 is conditioned on, given section n's data, its (detached) prediction and
        the state section n was conditioned on. The base conditions on ground truth (Teacher Forcing);
        the other stages override this.
        """
        return x0

    def trained_sections(self, sections: int, gen: torch.Generator) -> list[int]:
        """The sections scored this step: all, or ``sections_per_step`` of them drawn from ``gen``."""
        k = self.hparams.sections_per_step
        if k is None or k >= sections:
            return list(range(sections))
        return sorted(torch.randperm(sections, generator=gen)[:k].tolist())

    def video_gradients(
        self, batch: dict[str, Any], gen: torch.Generator, backward: Callable[..., None],
        no_sync: Callable[[], AbstractContextManager], passes: int | None = None,
    ) -> tuple[dict[int, Tensor], Tensor]:
        """The section loop over one batch of videos: accumulates gradients of the mean section loss.

        ``backward(loss, retain_graph=...)`` and ``no_sync()`` come from the trainer (Lightning's
        ``manual_backward`` and DDP's ``no_sync``). ``passes`` (>= the video's sections; FSDP's aligned
        count) runs extra passes over the last section at loss weight 0: same graph, no gradient.
        Returns the loss of every trained section (by section index) and their sigmas.
        """
        sections, window = self.num_sections(batch), self.memory_pack_config.window
        passes = sections if passes is None else passes
        assert passes >= sections, (passes, sections)
        trained = self.trained_sections(sections, gen)
        # Teacher Forcing's history is the ground truth: an untrained section needs no DiT pass at all.
        predicts_history = type(self).next_history is not StageModule.next_history
        latents, state = batch["latents"], self.new_state(batch)
        # psi's graph spans sections (psi_0, truncated BPTT), so keep it alive across backward calls.
        retain = self.semantic_pack is not None and any(p.requires_grad for p in self.semantic_pack.parameters())
        losses, sigmas = {}, []
        for n in range(passes):
            real, k = n < sections, min(n, sections - 1)
            x0 = latents[:, :, 1 + k * window : 1 + (k + 1) * window]
            train = not real or n in trained
            if not train and not predicts_history:
                state.update(x0)
                continue
            x_sigma, noise, sigma = self.noisy_section(x0, gen)
            if train:
                with no_sync():
                    v = self.velocity(x_sigma, sigma, state.context())
                    loss = F.mse_loss(v.float(), flow.velocity_target(x0, noise).float())
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"Non-finite loss ({loss.item()}) at step {self.global_step}, section {n}, videos "
                            f"{batch['id']}; stopping. The last checkpoint was written before this step and is left "
                            "untouched."
                        )
                    backward(loss * (1 / len(trained) if real else 0.0), retain_graph=retain)
                if real:
                    losses[n] = loss.detach()
                    sigmas.append(sigma)
                del loss
            else:
                with torch.no_grad():
                    v = self.velocity(x_sigma, sigma, state.context())
            with torch.no_grad():
                history = self.next_history(x0=x0, x_sigma=x_sigma, v=v.detach(), sigma=sigma, state=state, gen=gen)
            state.update(history)
            del v
        return losses, torch.cat(sigmas)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        # DDP: every backward runs without sync; the video's gradients are averaged once, after the loop.
        # FSDP: every backward reduce-scatters, so all ranks run the same number of section passes.
        passes = self.section_passes(self.num_sections(batch))
        losses, sigmas = self.video_gradients(batch, self.step_generator(), self.manual_backward,
                                              lambda: optimizer.toggle_model(sync_grad=False), passes=passes)
        parallel.average_gradients(self.trainable_parameters(), self.trainer.world_size)
        grad_norm = parallel.clip_grad_norm(self.trainable_parameters(), self.hparams.max_grad_norm or None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        self._log_step(losses, sigmas, grad_norm, scheduler.get_last_lr()[0], len(batch["id"]))
        return torch.stack(list(losses.values())).mean()

    def _log_step(
        self, losses: dict[int, Tensor], sigmas: Tensor, grad_norm: Tensor, lr: float, batch_size: int
    ) -> None:
        self.log("train/loss", torch.stack(list(losses.values())).mean(), prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/loss_section_{n}": loss for n, loss in losses.items()}, batch_size=batch_size)
        self.log("train/grad_norm", grad_norm, batch_size=batch_size)
        self.log("train/lr", lr, batch_size=batch_size)
        self.log("train/sections", float(len(losses)), batch_size=batch_size)
        every = self.hparams.histogram_every_n_steps
        if every and self.global_step % every == 0:
            for logger in self.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_histogram("train/sigma", sigmas.float().cpu(), self.global_step)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Teacher-forced flow-matching loss with fixed draws: comparable across stages and runs."""
        gen = torch.Generator().manual_seed(self.hparams.seed + batch_idx)
        state, window, sections = self.new_state(batch), self.memory_pack_config.window, self.num_sections(batch)
        losses = []
        for n in range(self.section_passes(sections)):
            k = min(n, sections - 1)
            x0 = batch["latents"][:, :, 1 + k * window : 1 + (k + 1) * window]
            x_sigma, noise, sigma = self.noisy_section(x0, gen)
            v = self.velocity(x_sigma, sigma, state.context())
            if n < sections:
                losses.append(F.mse_loss(v.float(), flow.velocity_target(x0, noise).float()))
            state.update(x0)
        loss = torch.stack(losses).mean()
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["id"]))
        return loss

    @torch.no_grad()
    def generate_jobs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Generate the videos of a batch of prompt-suite jobs (``lvg predict`` and ``lvg test``).

        Job ``i`` of the suite is seeded with ``seed + i``, so a video does not depend on the batch
        size or on which process generates it. A continuation job (``prefix``, see
        :mod:`lvg.data.prompt_suite`) is seeded with the first K sections of its ground-truth video and
        generates the rest; jobs of a batch run together when they continue from the same K (the sections
        advance in lockstep), else one group after the other. Returns ids, videos ``(T_i, H, W, 3)`` uint8
        (a group runs to its longest job; each video is cut to its own length; a continuation's video starts
        with its prefix), ``prefix_frames`` (the prefix's frames per video, 0 without one: what the report
        leaves unscored), fps, frames per section and the generation time.
        """
        encoders = encoders_of(self.trainer.datamodule)
        if encoders is None:
            raise ValueError("the datamodule does not name its encoders (codec, text, image); lvg cannot generate.")
        pipeline, fps = self.pipeline(encoders), self.hparams.fps
        n = len(batch["id"])
        lengths = [k if k is not None else pipeline.sections_for(s, fps)
                   for k, s in zip(batch["sections"], batch["seconds"])]
        paths = batch.get("prefix") or [None] * n
        prefixes = [0 if path is None else k if k is not None else pipeline.sections_for(s, fps)  # K per job, 0: none
                    for path, k, s in zip(paths, batch.get("prefix_sections") or paths,
                                          batch.get("prefix_seconds") or paths)]
        for job_id, k, length in zip(batch["id"], prefixes, lengths):
            if k >= length:  # prefix_seconds vs seconds or sections: known only here, at the model's section length
                raise ValueError(f"job {job_id}: its prefix of {k} sections leaves nothing to generate in {length} "
                                 "sections (the length counts the whole video).")
        seeds = [self.hparams.seed + int(i) for i in batch["index"]]
        started = time.perf_counter()
        videos: list[Tensor | None] = [None] * n
        for k in sorted(set(prefixes)):
            group = [i for i in range(n) if prefixes[i] == k]
            prefix = torch.stack([load_prefix(paths[i], pipeline.prefix_frames(k), encoders.frame_size, fps)
                                  for i in group]) if k else None
            images = None if k else batch["image"][group]
            out = pipeline(images, [batch["prompt"][i] for i in group], num_sections=max(lengths[i] for i in group),
                           fps=fps, seed=[seeds[i] for i in group], progress=False, prefix=prefix)
            for i, video in zip(group, out):
                videos[i] = video[: 1 + lengths[i] * pipeline.frames_per_section()]
        return {"id": batch["id"], "index": batch["index"], "videos": videos,
                "prefix_frames": [pipeline.prefix_frames(k) if k else 0 for k in prefixes],
                "fps": fps, "frames_per_section": pipeline.frames_per_section(),
                "generation_s": time.perf_counter() - started}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Videos of a batch of prompt-suite jobs (written by ``lvg.callbacks.VideoPredictionWriter``)."""
        return self.generate_jobs(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """``lvg test``: videos of a batch of benchmark jobs, scored by ``lvg.callbacks.BenchmarkReport``."""
        return {**self.generate_jobs(batch), "jobs": batch["jobs"]}

