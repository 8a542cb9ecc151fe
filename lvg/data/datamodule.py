"""Datamodules that yield whole videos (all sections of one video, in order) from latent shards.

A batch is a dict: ``id`` (list of B video ids), ``latents`` ``(B, C, F, h, w)`` (videos of a batch
are cut to the shortest), ``text`` ``(B, L, D)`` padded, ``text_mask`` ``(B, L)`` bool, ``pooled``
``(B, D_pool)``, ``image`` ``(B, L_i, D_img)`` when the shards have it. The paper trains with one
video per GPU (``batch_size: 1``).

Order: ``random`` (reshuffled each epoch from ``seed``) or ``curriculum`` (shortest videos first,
the Direct Forcing option). Sharded by rank without Lightning's sampler wrapping, and resumable
mid-epoch: a checkpoint records how many videos of the epoch were consumed and a resumed run
continues with the next one, so data order equals an uninterrupted run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lvg.data.prompt_suite import BENCHMARK_SECONDS, PromptSuiteDataset, collate_jobs, read_suite, toy_world_suite
from lvg.data.shards import read_index, read_shard
from lvg.data.toy_world import ToyWorldConfig, generate_toy_world
from lvg.models.encoders import Encoders, PixelCodec, ToyImageEncoder, ToyTextEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoders the data is (or was) encoded with: generation needs them, raw clips are encoded with them."""

    kind: Literal["none", "toy", "framepack-f1"] = "none"
    """``toy``: PixelCodec + ToyTextEncoder + ToyImageEncoder; ``framepack-f1``:
    HunyuanVideo VAE + LLaMA/CLIP-L + SigLIP; ``none``: unknown."""
    frame_size: tuple[int, int] = (32, 32)
    """(height, width) the model is trained and generates at; raw clips are resized to it."""
    codec_factor: int = 2
    """toy: PixelCodec space-to-depth factor."""
    text_dim: int = 64
    """toy: ToyTextEncoder width (the DiT's ``text_embed_dim`` and ``pooled_projection_dim``)."""
    hunyuan: str = "hunyuanvideo-community/HunyuanVideo"
    """framepack-f1: HunyuanVideo repository (vae, text encoders, tokenizers)."""
    siglip: str = "lllyasviel/flux_redux_bfl"
    """framepack-f1: repository with the SigLIP image encoder."""

    def build(self) -> Encoders | None:
        if self.kind == "none":
            return None
        if self.kind == "toy":
            return Encoders(PixelCodec(self.codec_factor), ToyTextEncoder(self.text_dim), ToyImageEncoder(),
                            frame_size=tuple(self.frame_size))
        if self.kind == "framepack-f1":
            from lvg.models.hunyuan import framepack_f1_encoders

            return framepack_f1_encoders(self.hunyuan, self.siglip, tuple(self.frame_size))
        raise ValueError(f"EncoderSpec.kind must be 'none', 'toy' or 'framepack-f1', got {self.kind!r}.")



class VideoShardDataset(Dataset):
    """One item = one video's shard tensors."""

    def __init__(self, shard_dir: str | Path, videos: list[dict[str, Any]]):
        self.shard_dir, self.videos = Path(shard_dir), videos

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        tensors, meta = read_shard(self.shard_dir / self.videos[i]["file"])
        tensors["text_mask"] = tensors["text_mask"].bool()
        return {"id": self.videos[i]["id"], "caption": meta.get("caption", ""), **tensors}


def collate_videos(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack videos: cut latents to the shortest, right-pad text with a false mask; ids and captions as lists."""
    frames = min(it["latents"].shape[1] for it in items)
    length = max(it["text"].shape[0] for it in items)
    text = torch.zeros(len(items), length, items[0]["text"].shape[1], dtype=items[0]["text"].dtype)
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for i, it in enumerate(items):
        n = it["text"].shape[0]
        text[i, :n], mask[i, :n] = it["text"], it["text_mask"]
    batch = {
        "id": [it["id"] for it in items],
        "latents": torch.stack([it["latents"][:, :frames] for it in items]),
        "text": text,
        "text_mask": mask,
        "pooled": torch.stack([it["pooled"] for it in items]),
    }
    if "image" in items[0]:
        batch["image"] = torch.stack([it["image"] for it in items])
    if "caption" in items[0]:  # what the sample logger prompts with
        batch["caption"] = [it["caption"] for it in items]
    return batch


@dataclass
class Progress:
    """Videos of ``epoch`` already consumed on this rank."""

    epoch: int = -1
    consumed: int = 0


class VideoSampler(DistributedSampler):
    """Per-rank video order with mid-epoch resume. A DistributedSampler so Lightning does not re-wrap it."""

    def __init__(
        self, dataset: VideoShardDataset, lengths: list[int], order: str, seed: int, num_replicas: int, rank: int,
        resume: Progress | None = None,
    ):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=order == "random", seed=seed)
        self.lengths, self.order, self.resume, self.skip = lengths, order, resume, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start; the resumed epoch starts after its consumed videos."""
        super().set_epoch(epoch)
        if self.resume is not None and self.resume.epoch == epoch:
            self.skip = self.resume.consumed
        self.resume = None

    def __iter__(self):
        n = len(self.lengths)
        if self.order == "curriculum":
            indices = sorted(range(n), key=lambda i: (self.lengths[i], i))
        else:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(n, generator=gen).tolist()
        indices += indices[: self.total_size - n]  # pad so every rank gets the same count
        mine = indices[self.rank : self.total_size : self.num_replicas]
        skip, self.skip = self.skip, 0
        return iter(mine[skip:])


class VideoLatentDataModule(L.LightningDataModule):
    """Videos from a directory of latent shards (see :mod:`lvg.data.shards`)."""

    def __init__(
        self,
        shard_dir: str = "data/shards",
        batch_size: int = 1,
        num_workers: int = 0,
        order: Literal["random", "curriculum"] = "random",
        val_videos: int = 0,
        min_latent_frames: int = 10,
        seed: int = 0,
        predict_suite: str | None = None,
        test_suite: str | None = None,
        encoders: EncoderSpec = EncoderSpec(),
    ):
        """
        Args:
            shard_dir: directory with ``index.json`` and one ``<id>.safetensors`` per video.
            batch_size: videos per batch (per process); the paper uses 1.
            num_workers: DataLoader worker processes.
            order: ``random`` (reshuffled per epoch) or ``curriculum`` (short videos first).
            val_videos: videos held out for validation (the last ones by id).
            min_latent_frames: shorter videos are skipped (and reported); at least ``1 + window``.
            seed: shuffling seed.
            predict_suite: JSONL of generation jobs for ``lvg predict`` (see :mod:`lvg.data.prompt_suite`).
            test_suite: JSONL benchmark suite for ``lvg test`` (same format, plus ``group`` and ``truth``;
                e.g. one made by :func:`lvg.data.prompt_suite.vbench_i2v_suite`).
            encoders: the encoders the data is (or was) encoded with: ``lvg prepare`` and raw clips encode
                with them, generation (``lvg generate`` / ``test`` / ``predict``, sample videos) needs them.
        """
        super().__init__()
        self.encoder_spec = encoders
        self._encoders: Encoders | None = None
        if order not in ("random", "curriculum"):
            raise ValueError(f"order must be 'random' or 'curriculum', got {order!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.shard_dir = Path(shard_dir)
        self.batch_size, self.num_workers, self.order = batch_size, num_workers, order
        self.val_videos, self.min_latent_frames, self.seed = val_videos, min_latent_frames, seed
        self.predict_suite, self.test_suite = predict_suite, test_suite
        self._resume: Progress | None = None
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if stage in ("predict", "test"):
            return
        index = read_index(self.shard_dir)
        videos = sorted(index["videos"], key=lambda v: v["id"])
        short = [v["id"] for v in videos if v["latent_frames"] < self.min_latent_frames]
        if short:
            log.warning("%d videos shorter than %d latent frames are skipped: %s",
                        len(short), self.min_latent_frames, short)
        videos = [v for v in videos if v["latent_frames"] >= self.min_latent_frames]
        if len(videos) <= self.val_videos:
            raise ValueError(
                f"{self.shard_dir}: {len(videos)} usable videos (>= {self.min_latent_frames} latent frames) "
                f"but val_videos={self.val_videos}; nothing left to train on."
            )
        split = len(videos) - self.val_videos
        self.train_set = VideoShardDataset(self.shard_dir, videos[:split])
        self.val_set = VideoShardDataset(self.shard_dir, videos[split:])

    def _loader(self, dataset: VideoShardDataset, sampler=None) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
            collate_fn=collate_videos, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = VideoSampler(
            self.train_set, [v["latent_frames"] for v in self.train_set.videos], self.order, self.seed,
            num_replicas=trainer.world_size if trainer else 1, rank=trainer.global_rank if trainer else 0,
            resume=self._resume,
        )
        self._resume = None
        return self._loader(self.train_set, sampler)

    def encoders(self) -> Encoders | None:
        """The encoders of the ``encoders`` spec (built on first use: the full-size ones weigh GBs); None for
        ``kind: none``."""
        if self._encoders is None:
            self._encoders = self.encoder_spec.build()
        return self._encoders

    def prepare_settings(self):
        """Default ``lvg prepare`` filters for this data (a ``PrepareConfig``; None: prepare's own defaults).
        ``lvg prepare`` applies them under what its configs and flags say."""
        return None

    def _suite_loader(self, suite: str) -> DataLoader:
        """Jobs of a suite, start images at the training frame size, split across processes without the
        padding duplicates of a plain DistributedSampler (every job is generated and scored once)."""
        encoders = self.encoders()
        dataset = PromptSuiteDataset(read_suite(suite), encoders.frame_size if encoders else None)
        trainer = self.trainer
        sampler = (UnrepeatedDistributedSampler(dataset, trainer.world_size, trainer.global_rank, shuffle=False)
                   if trainer is not None and trainer.world_size > 1 else None)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate_jobs)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_suite is None:
            raise ValueError("lvg predict needs --data.init_args.predict_suite=<jobs.jsonl> (one job per line).")
        return self._suite_loader(self.predict_suite)

    def test_dataloader(self) -> DataLoader:
        """The benchmark suite of ``lvg test``."""
        if self.test_suite is None:
            raise ValueError("lvg test needs --data.init_args.test_suite=<suite.jsonl> (one job per line).")
        return self._suite_loader(self.test_suite)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set) if len(self.val_set) else []

    def state_dict(self) -> dict[str, int]:
        """Videos of the current epoch already consumed on this rank (one optimizer step per batch)."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        done = trainer.global_step - trainer.current_epoch * trainer.num_training_batches
        return {"epoch": trainer.current_epoch, "consumed": done * self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state:
            self._resume = Progress(epoch=state["epoch"], consumed=state["consumed"])


class ToyWorldDataModule(VideoLatentDataModule):
    """The embedded default: generates the toy world and its shards on first use (``prepare_data``)."""

    def __init__(
        self,
        root: str = "data/toy_world",
        toy: ToyWorldConfig = ToyWorldConfig(),
        codec_factor: int = 2,
        text_dim: int = 64,
        benchmark_seconds: dict[str, float] = BENCHMARK_SECONDS,
        benchmark_videos: int = 2,
        **kwargs: Any,
    ):
        """
        Args:
            root: where videos, manifest, ground truth and ``shards/`` are written.
            toy: the generator's settings (number and length of videos, size, fps, seed).
            codec_factor: PixelCodec space-to-depth factor (2: 32x32 RGB -> 12 x 16 x 16 latents).
            text_dim: ToyTextEncoder width (the DiT's ``text_embed_dim`` and ``pooled_projection_dim``).
            benchmark_seconds: length groups of the embedded ``lvg test`` suite (used when ``test_suite`` is
                not set): the paper's 10 s / 30 s / 60 s. The memory world's suite ignores it: its jobs continue
                held-out videos to their end (``long_absence`` / ``short_absence`` groups).
            benchmark_videos: held-out start frames per length group of the embedded suite (memory world: held-out
                videos, each continued twice).
            kwargs: loader settings of :class:`VideoLatentDataModule` (``shard_dir`` is ``root/shards``).
        """
        spec = EncoderSpec(kind="toy", frame_size=(toy.size, toy.size), codec_factor=codec_factor, text_dim=text_dim)
        super().__init__(shard_dir=str(Path(root) / "shards"), encoders=spec, **kwargs)
        self.root, self.toy, self.codec_factor, self.text_dim = Path(root), toy, codec_factor, text_dim
        self.benchmark_seconds, self.benchmark_videos = dict(benchmark_seconds), benchmark_videos

    def prepare_settings(self):
        """The toy world's filters: single shots by construction, every length kept (training drops
        what is shorter than its own ``min_latent_frames``)."""
        from lvg.data.prepare import TOY_PREPARE

        return TOY_PREPARE

    def prepare_data(self) -> None:
        from lvg.data.prepare import prepare_shards  # the decoding stack loads only when preparing

        manifest = generate_toy_world(self.root, self.toy)
        prepare_shards(manifest, self.shard_dir, self.encoders(), self.prepare_settings())

    def test_dataloader(self) -> DataLoader:
        """``test_suite`` if set, else the embedded suite: held-out toy-world start frames with their truth
        (written under ``root/benchmark``; idempotent, atomic writes, so every process may call it)."""
        if self.test_suite is None:
            self.test_suite = str(toy_world_suite(self.root / "benchmark", self.toy, self.benchmark_seconds,
                                                  self.benchmark_videos))
        return super().test_dataloader()


class FramePackF1DataModule(VideoLatentDataModule):
    """Shards of the full-size FramePack-F1 encoders: :class:`VideoLatentDataModule` with
    ``EncoderSpec(kind="framepack-f1", ...)`` built from three flat options (what the F1 recipes set)."""

    def __init__(
        self,
        hunyuan: str = "hunyuanvideo-community/HunyuanVideo",
        siglip: str = "lllyasviel/flux_redux_bfl",
        frame_size: tuple[int, int] = (480, 832),
        **kwargs: Any,
    ):
        """
        Args:
            hunyuan: HunyuanVideo repository (local directory or hub id) with ``vae``, ``text_encoder``
                (LLaMA), ``tokenizer``, ``text_encoder_2`` (CLIP-L) and ``tokenizer_2``.
            siglip: repository with ``image_encoder`` + ``feature_extractor`` (SigLIP; flux_redux_bfl).
            frame_size: (height, width) videos are generated at; start images are resized and cropped to it.
            kwargs: loader settings of :class:`VideoLatentDataModule`.
        """
        spec = EncoderSpec(kind="framepack-f1", frame_size=tuple(frame_size), hunyuan=hunyuan, siglip=siglip)
        super().__init__(encoders=spec, **kwargs)
        self.hunyuan, self.siglip, self.frame_size = hunyuan, siglip, tuple(frame_size)

