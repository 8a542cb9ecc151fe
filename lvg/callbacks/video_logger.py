"""Log generated long-video samples to TensorBoard during training.

Every ``every_n_steps`` steps the callback generates a short multi-section video for the first
``num_videos`` training videos (their start frames and captions, fixed for the whole run) with
the model being trained, and logs

* ``sample/video_<i>``: an animated GIF in TensorBoard's Images tab. (torch's ``add_video`` goes
  through moviepy and silently logs nothing with moviepy >= 2, so the GIF is encoded here with
  Pillow and written as a plain image summary -- which is what ``add_video`` produces too);
* ``sample/frames_<i>``: a strip of one frame per section;
* ``sample/mean_section_<n>`` and ``sample/drift``: the mean pixel value per section and its
  change from the first to the last section, a cheap early signal of colour drift.

Usage in a stage YAML::

    trainer:
      callbacks:
        - class_path: lvg.callbacks.SampleVideoLogger
          init_args: {every_n_steps: 100, sections: 4}
"""

from __future__ import annotations

import io
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary

from lvg.models.encoders import encoders_of
from lvg.sampling.pipeline import SamplingConfig
from lvg.training import parallel


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """``(T, H, W, 3)`` uint8 -> an animated, looping GIF."""
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return buffer.getvalue()


def log_gif(logger: TensorBoardLogger, tag: str, frames: np.ndarray, fps: float, step: int) -> None:
    image = Summary.Image(height=frames.shape[1], width=frames.shape[2], colorspace=3,
                          encoded_image_string=gif_bytes(frames, fps))
    logger.experiment._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


class SampleVideoLogger(L.Callback):
    """Generate and log short sample videos every N training steps (rank 0 logs to TensorBoard loggers;
    under FSDP every rank takes part in generating)."""

    def __init__(self, every_n_steps: int = 100, sections: int = 3, num_videos: int = 1, fps: float = 8.0,
                 sampling: SamplingConfig = SamplingConfig(steps=10), seed: int = 0):
        """
        Args:
            every_n_steps: sampling interval in optimizer steps.
            sections: sections per sample video.
            num_videos: how many training videos (start frame + caption) to sample from.
            fps: frame rate of the logged GIF.
            sampling: sampler settings (fewer steps than inference keeps this cheap).
            seed: noise seed, fixed so samples are comparable across steps.
        """
        super().__init__()
        if every_n_steps < 1 or sections < 1 or num_videos < 1:
            raise ValueError("SampleVideoLogger: every_n_steps, sections and num_videos must be >= 1.")
        self.every_n_steps, self.sections, self.num_videos = every_n_steps, sections, num_videos
        self.fps, self.sampling, self.seed = fps, sampling, seed
        self._fixed: tuple[torch.Tensor, list[str]] = (torch.zeros(0, 3, 0, 0, dtype=torch.uint8), [])

    def _collect(self, batch: dict[str, Any], encoders) -> None:
        """Keep the start frames and captions of the first ``num_videos`` training videos seen: fixed from then on
        (and saved with the checkpoint), so samples are comparable across steps. Works with every datamodule
        whose batches carry ``caption`` (shards, litdata chunks, raw clips)."""
        images, prompts = self._fixed
        need = self.num_videos - len(prompts)
        if need <= 0 or "caption" not in batch:
            return
        starts = batch["latents"][:need, :, :1].float().cpu()
        decoded = encoders.codec.decode(starts)[:, 0]  # (B, 3, H, W) uint8
        self._fixed = (torch.cat([images, decoded]) if len(prompts) else decoded,
                       prompts + list(batch["caption"][:need]))

    def state_dict(self) -> dict[str, Any]:
        images, prompts = self._fixed
        return {"images": images, "prompts": prompts}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._fixed = (state_dict["images"], list(state_dict["prompts"]))

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        encoders = encoders_of(trainer.datamodule)
        if encoders is None:
            return
        self._collect(batch, encoders)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        # A sharded DiT (FSDP) runs collectives in every forward: then every rank generates, rank 0 logs.
        sharded = parallel.is_sharded(next(pl_module.dit.parameters()))
        if step % self.every_n_steps or not loggers or not (trainer.is_global_zero or sharded):
            return
        images, prompts = self._fixed
        if not prompts:
            return
        pipeline = pl_module.pipeline(encoders, self.sampling)
        was_training = pl_module.training
        pl_module.eval()
        videos = pipeline(images, prompts, num_sections=self.sections, fps=self.fps, seed=self.seed,
                          progress=False).numpy()
        pl_module.train(was_training)
        if not trainer.is_global_zero:
            return
        per_section = pipeline.frames_per_section()
        for i, video in enumerate(videos):
            sections = video[1:].reshape(self.sections, per_section, *video.shape[1:])
            means = sections.reshape(self.sections, -1).mean(axis=1) if i == 0 else None
            for logger in loggers:
                log_gif(logger, f"sample/video_{i}", video, self.fps, step)
                strip = np.concatenate([video[0], *sections[:, -1]], axis=1)  # start + last frame of each section
                logger.experiment.add_image(f"sample/frames_{i}", strip, step, dataformats="HWC")
                if means is not None:
                    for n, m in enumerate(means):
                        logger.experiment.add_scalar(f"sample/mean_section_{n}", float(m), step)
                    logger.experiment.add_scalar("sample/drift", float(abs(means[-1] - means[0])), step)
