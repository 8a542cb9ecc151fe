"""Streaming data for scale-out: litdata chunks of whole videos, and raw clips decoded on the fly.

Two datamodules yield exactly the batches of :class:`~lvg.data.datamodule.VideoLatentDataModule`
(``id``, ``latents (B, C, F, h, w)``, ``text``, ``text_mask``, ``pooled``, ``image``; same
:func:`~lvg.data.datamodule.collate_videos`), so every training stage plugs into them unchanged:

* :class:`StreamingLatentDataModule` streams latent shards converted by
  :func:`~lvg.data.litdata_chunks.write_litdata` into litdata chunks, from local disk or object storage
  (``s3://``, ``gs://``, ...; litdata downloads chunks ahead and caches them). One litdata item is one whole
  video, so "all sections of one video, in order" holds by construction. litdata shards the items by rank
  (``drop_last`` under DDP, so every rank takes the same number of steps and no video is seen twice) and
  reshuffles per epoch from ``seed``.
* :class:`RawClipDataModule` reads a manifest of raw videos: it splits them at shot cuts and
  filters clips by length and dynamism with ``lvg prepare``'s scan and worker pool
  (:mod:`lvg.data.scan`; decisions kept in the same log as ``lvg prepare``'s, computed once per video
  across epochs and runs), then decodes the kept clips in DataLoader workers every epoch and encodes
  them there or on the training device -- no precomputed latents.

Both resume mid-epoch: the datamodule's ``state_dict`` records how many videos of the epoch this
rank has trained on (one optimizer step per batch), and a run resumed with ``--ckpt_path``
continues with the next video, in the order an uninterrupted run would have used.

litdata is optional (``pip install "lvg[stream]"``); only the litdata path imports it.

Shapes: B videos, C latent channels, F latent frames, h/w latent height/width, L text tokens, D widths.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from lvg.config import DTYPES
from lvg.data.datamodule import EncoderSpec, Progress, VideoLatentDataModule, collate_videos
from lvg.data.litdata_chunks import require_litdata
from lvg.data.manifest import validate_manifest
from lvg.data.prepare import PrepareConfig, encode_clip, resolve_config, scan_tasks
from lvg.data.reader import VideoReadError
from lvg.data.scan import LOG, Scan, ScanLog, Task, read_clip, scan_all
from lvg.io import atomic_write_text
from lvg.models.encoders import Encoders

log = logging.getLogger(__name__)


@functools.cache
def _loader_class() -> type:
    """litdata's StreamingDataLoader positioned by the datamodule (defined lazily: litdata is optional)."""
    from litdata import StreamingDataLoader

    class VideoStreamLoader(StreamingDataLoader):
        """litdata's loader without its own checkpoint state: that state counts the batches handed out,
        including the one Lightning prefetches, so a resume would skip a video. The datamodule records
        the exact position instead and :func:`stream_loader` restores it."""

        _resume_pending = False

        def state_dict(self) -> dict[str, Any]:
            return {}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            if state:
                super().load_state_dict(state)
                self._resume_pending = True

        def __iter__(self):
            # litdata leaves resume mode only when an epoch's generator runs to its end, but Lightning
            # stops after len(loader) batches without exhausting it; without this, every later epoch
            # would replay the resumed one.
            if self.restore and not self._resume_pending:
                self.restore = False
            self._resume_pending = False
            yield from super().__iter__()

    return VideoStreamLoader


def stream_loader(dataset, batch_size: int, num_workers: int, resume: Progress | None = None):
    """A litdata loader of whole-video batches over ``dataset``, after ``resume.consumed`` videos of ``resume.epoch``.

    litdata counts epochs from 1 and starts a new one on every ``iter``; Lightning counts from 0.
    """
    loader = _loader_class()(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_videos,
                             persistent_workers=num_workers > 0)
    if resume is None:
        return loader
    if resume.consumed == 0:  # nothing of that epoch seen yet: the next iter starts it afresh
        loader.current_epoch = resume.epoch
        return loader
    dataset.set_epoch(resume.epoch + 1)
    workers, batches = max(num_workers, 1), -(-resume.consumed // batch_size)
    loader.load_state_dict({
        "dataset": dataset.state_dict(resume.consumed, num_workers, batch_size),
        "current_epoch": resume.epoch + 1,
        "num_samples_yielded": resume.consumed,
        "latest_worker_idx": (batches - 1) % workers,
    })
    return loader


class StreamingLatentDataModule(VideoLatentDataModule):
    """Whole videos streamed from litdata chunks written by :func:`~lvg.data.litdata_chunks.write_litdata` (local or
    object storage).

    Prediction, ``lvg test`` suites and the resume position are :class:`VideoLatentDataModule`'s.
    """

    def __init__(
        self,
        input_dir: str = "data/shards/litdata",
        batch_size: int = 1,
        num_workers: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        val_dir: str | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        encoders: EncoderSpec = EncoderSpec(),
        shard_dir: str = "data/shards",
        min_latent_frames: int = 10,
        predict_suite: str | None = None,
        test_suite: str | None = None,
    ):
        """
        Args:
            input_dir: litdata dataset (``index.json`` + chunks): a local directory or ``s3://...`` URL.
            batch_size: videos per batch (per process); the paper uses 1.
            num_workers: DataLoader worker processes (each streams its own chunks).
            shuffle: reshuffle every epoch (litdata: chunk order, then items inside chunks), from ``seed``.
            seed: shuffling seed.
            val_dir: litdata dataset of validation videos (not shuffled); None: no validation.
            cache_dir: where chunks of a remote ``input_dir`` are cached (None: litdata's default).
            max_cache_size: cache budget, e.g. ``"100GB"`` (None: litdata's default).
            encoders: the encoders the shards were written with (for ``lvg prepare``, ``generate``, ``predict``).
            shard_dir: where ``lvg prepare`` writes shards for this config; ``--format litdata`` also
                writes their chunks to ``<shard_dir>/litdata``, the default ``input_dir``.
            min_latent_frames: shortest clip ``lvg prepare`` keeps for this config (``1 + window``);
                streaming itself takes what the chunks hold.
            predict_suite: JSONL of generation jobs for ``lvg predict`` (see :mod:`lvg.data.prompt_suite`).
            test_suite: JSONL benchmark suite for ``lvg test``.
        """
        super().__init__(shard_dir=shard_dir, batch_size=batch_size, num_workers=num_workers, seed=seed,
                         min_latent_frames=min_latent_frames, predict_suite=predict_suite, test_suite=test_suite,
                         encoders=encoders)
        self.input_dir, self.shuffle, self.val_dir = input_dir, shuffle, val_dir
        self.cache_dir, self.max_cache_size = cache_dir, max_cache_size

    def setup(self, stage: str | None = None) -> None:
        """Nothing to read up front: litdata opens ``input_dir`` when the loader is built."""

    def _world(self) -> tuple[int, int]:
        """(world size, rank) of the attached trainer; (1, 0) without one."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def dataset(self, input_dir: str, shuffle: bool):
        """A litdata StreamingDataset of ``input_dir`` sharded for this rank."""
        require_litdata()
        from litdata import StreamingDataset
        from litdata.utilities.env import _DistributedEnv

        world_size, rank = self._world()
        dataset = StreamingDataset(input_dir, cache_dir=self.cache_dir, shuffle=shuffle, seed=self.seed,
                                   drop_last=world_size > 1, max_cache_size=self.max_cache_size)
        # litdata reads the world from torch.distributed; take Lightning's instead, which is the same under
        # DDP and also right before the process group exists or for a rank simulated in a test.
        num_nodes = getattr(self.trainer, "num_nodes", 1) if self.trainer is not None else 1
        dataset.distributed_env = _DistributedEnv(world_size, rank, num_nodes)
        return dataset

    def train_dataloader(self):
        resume, self._resume = self._resume, None
        return stream_loader(self.dataset(self.input_dir, self.shuffle), self.batch_size, self.num_workers, resume)

    def val_dataloader(self):
        if self.val_dir is None:
            return []
        return stream_loader(self.dataset(self.val_dir, False), self.batch_size, self.num_workers)


# --- raw clips, decoded and encoded on the fly ---------------------------------------------------


@dataclass(frozen=True)
class RawClip:
    """One kept clip of a manifest video: frames ``[start, end)`` of ``path``, resized to ``size``."""

    id: str
    path: str
    start: int
    end: int
    size: tuple[int, int]
    caption: str
    latent_frames: int


class RawClipDataset(torch.utils.data.Dataset):
    """One item = one kept clip, decoded (and, with ``encode``, encoded) when asked for, in a DataLoader worker.

    The encoders are built in the process that uses them (each worker builds its own on first use),
    so nothing large is pickled to the workers. Without ``encode`` an item is ``id``, ``frames``
    ``(T, h, w, 3)`` uint8 and ``caption``, encoded later on the training device
    (:meth:`RawClipDataModule.on_after_batch_transfer`).
    """

    def __init__(self, clips: list[RawClip], encoders: EncoderSpec, dtype: torch.dtype = torch.float32,
                 encode: bool = True):
        self.clips, self.encoder_spec, self.dtype, self.encode = clips, encoders, dtype, encode
        self._encoders: Encoders | None = None
        # VideoLatentDataModule's sampler and curriculum read each video's length from here
        self.videos = [{"id": c.id, "latent_frames": c.latent_frames} for c in clips]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, Any]:
        clip, frames = self._read(i)
        if not self.encode:
            return {"id": clip.id, "frames": frames, "caption": clip.caption}
        if self._encoders is None:
            self._encoders = self.encoder_spec.build()
        return {"id": clip.id, "caption": clip.caption, **encode_clip(frames, clip.caption, self._encoders, self.dtype)}

    def _read(self, i: int) -> tuple[RawClip, torch.Tensor]:
        """Clip ``i``, or -- when its file was changed or removed since the filter scan -- the next readable
        clip, with a warning: a long run never stops on a file that went bad under it."""
        for k in range(len(self.clips)):
            clip = self.clips[(i + k) % len(self.clips)]
            try:
                frames = read_clip(clip.path, clip.start, clip.end, clip.size)
            except VideoReadError as err:
                log.warning("skipping clip %s (unreadable since the filter scan: %s); using the next clip",
                            clip.id, err)
                continue
            if len(frames) == clip.end - clip.start:
                return clip, frames
            log.warning("skipping clip %s (%d of %d frames decode since the filter scan); using the next clip",
                        clip.id, len(frames), clip.end - clip.start)
        raise VideoReadError(self.clips[i].path, f"none of the {len(self.clips)} clips can be read any more; "
                             f"delete {LOG} in the cache_dir to rescan the manifest")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_encoders": None}


def collate_clips(items: list[dict[str, Any]]) -> dict[str, list]:
    """Decoded clips as lists (``id``, ``frames``, ``caption``), to be encoded on the training device."""
    return {key: [it[key] for it in items] for key in ("id", "frames", "caption")}


class RawClipDataModule(VideoLatentDataModule):
    """Whole clips straight from raw videos: split, filtered, decoded and encoded on the fly.

    The same clips, ids and tensors as ``lvg prepare`` with the same :class:`PrepareConfig` would
    write as shards (a video split at cuts gives ``<id>-s<k>``), without storing latents. The scan
    (:func:`lvg.data.scan.scan_video`: decode, cut detection, dynamism) is done once per video in
    ``prepare_data`` -- in ``num_workers`` processes of ``lvg prepare``'s pool, so a video that crashes
    its decoder is skipped as ``worker_crash`` -- and recorded in ``cache_dir/prepare_log.jsonl``, the
    log ``lvg prepare`` keeps (a prepared shard directory as ``cache_dir`` is not scanned again); every
    epoch then decodes only the kept clips, in the loader's workers, and encodes them there or on the
    training device (``encode_on``). Bad or rejected videos are skipped, counted, logged and listed in
    ``cache_dir/skipped.json`` (``id``, ``reason``, with ``lvg prepare``'s codes); they never stop
    training. Loader settings, order (``random`` or ``curriculum``), validation split and mid-epoch
    resume are :class:`VideoLatentDataModule`'s.
    """

    def __init__(
        self,
        manifest: str = "data/manifest.jsonl",
        encoders: EncoderSpec = EncoderSpec(kind="toy"),
        prepare: PrepareConfig | None = None,
        cache_dir: str = "data/raw_clip_cache",
        encode_on: Literal["worker", "device"] = "worker",
        **kwargs: Any,
    ):
        """
        Args:
            manifest: canonical JSONL manifest (``id``, ``video``, ``caption``, optional ``start``/``end``).
            encoders: the encoders clips are encoded with.
            prepare: ``lvg prepare``'s filter settings (shot cuts, dynamism, buckets, ...); None: its
                defaults. ``min_latent_frames`` left unset takes this datamodule's.
            cache_dir: where the scan log (``prepare_log.jsonl``) and ``skipped.json`` are written.
            encode_on: ``worker``: clips are encoded in the loader's workers (CPU; right for small
                encoders such as the toy ones); ``device``: workers only decode, and each batch is
                encoded once it is on the training device (the VAE and text encoders live on the GPU,
                loaded once in the training process).
            kwargs: settings of :class:`VideoLatentDataModule` (``batch_size``, ``num_workers``,
                ``order``, ``val_videos``, ``min_latent_frames``, ``seed``, ...); ``shard_dir`` is
                ``cache_dir/shards``, where ``lvg prepare`` with this config would write shards.
        """
        super().__init__(shard_dir=str(Path(cache_dir) / "shards"), encoders=encoders, **kwargs)
        self.manifest, self.cache_dir = manifest, Path(cache_dir)
        if encode_on not in ("worker", "device"):
            raise ValueError(f"encode_on must be 'worker' or 'device', got {encode_on!r}.")
        self.prepare_config, self.encode_on = prepare, encode_on
        self._dtype = torch.float32
        self.skipped: list[dict[str, str]] = []

    def _plan(self) -> tuple[PrepareConfig, list[dict[str, Any]], list[Task], list[dict[str, str]]]:
        """The resolved settings, valid manifest rows, their scan tasks, and the rows refused as they are."""
        encoders = self.encoders()
        if encoders is None:
            raise ValueError("RawClipDataModule needs encoders to encode clips: set encoders.kind (toy, framepack-f1).")
        config = resolve_config(self.prepare_config or PrepareConfig(), encoders, self.min_latent_frames)
        report = validate_manifest(self.manifest)
        refused = [{"id": issue.id or issue.where, "reason": f"bad_row: {issue}"} for issue in report.issues]
        return config, report.rows, scan_tasks(report.rows, config, encoders.codec), refused

    def scan(self, tasks: list[Task], scan_log: ScanLog) -> dict[str, Scan]:
        """The scan of every task by video id: from ``scan_log``, or scanned (in ``num_workers`` processes of
        ``lvg prepare``'s pool) and recorded there."""
        scans = {t.id: scan for t in tasks if (scan := scan_log.scan(t)) is not None}
        todo = [t for t in tasks if t.id not in scans]
        if todo:
            log.info("scanning %d videos for shot cuts and dynamism (recorded in %s)", len(todo), scan_log.path)
        for scan in scan_all(todo, self.num_workers, keep_frames=False):
            scans[scan.id] = scan
            # a missing file has no stat and a crash no answer: neither is recorded, a later run tries again
            if scan.stat is not None:
                scan_log.append(scan.record())
        return scans

    def prepare_data(self) -> None:
        """The filter pass (once per node, before any process trains): fills the scan log."""
        _, _, tasks, _ = self._plan()
        self.scan(tasks, ScanLog(self.cache_dir / LOG))

    def setup(self, stage: str | None = None) -> None:
        if stage in ("predict", "test"):
            return
        config, rows, tasks, skipped = self._plan()
        # all from the log when prepare_data ran; scanned here when used without a Trainer
        scans = self.scan(tasks, ScanLog(self.cache_dir / LOG))
        codec = self.encoders().codec
        clips: list[RawClip] = []
        for row in rows:
            scan = scans[row["id"]]
            if scan.code:
                skipped.append({"id": row["id"], "reason": f"{scan.code}: {scan.reason}"})
                continue
            for c in scan.clips:
                clip_id = scan.clip_id(c)
                if c.code:
                    skipped.append({"id": clip_id, "reason": f"{c.code}: {c.reason}"})
                    continue
                latent_frames = codec.num_latent_frames(c.end - c.start)
                if latent_frames < self.min_latent_frames:
                    skipped.append({"id": clip_id, "reason": f"too_short: {latent_frames} latent frames < "
                                                              f"min_latent_frames={self.min_latent_frames}"})
                    continue
                end = c.start + codec.num_pixel_frames(latent_frames)  # e.g. 4N - 3 frames for a causal VAE
                clips.append(RawClip(clip_id, row["video_path"], c.start, end, scan.size, row["caption"],
                                     latent_frames))
        self.skipped = sorted(skipped, key=lambda s: s["id"])
        if self.trainer is None or self.trainer.is_global_zero:
            atomic_write_text(self.cache_dir / "skipped.json", json.dumps(self.skipped, indent=1))
        if self.skipped:
            log.warning("%d videos/clips of %s are skipped (listed in %s): %s", len(self.skipped), self.manifest,
                        self.cache_dir / "skipped.json", "; ".join(f"{s['id']}: {s['reason']}" for s in self.skipped))
        clips.sort(key=lambda c: c.id)
        if len(clips) <= self.val_videos:
            raise ValueError(
                f"{self.manifest}: {len(clips)} clips pass the filters but val_videos={self.val_videos}; nothing left "
                f"to train on (reasons in {self.cache_dir / 'skipped.json'})."
            )
        split = len(clips) - self.val_videos
        dtype = DTYPES[config.dtype]
        encode = self.encode_on == "worker"
        self.train_set = RawClipDataset(clips[:split], self.encoder_spec, dtype, encode)
        self.val_set = RawClipDataset(clips[split:], self.encoder_spec, dtype, encode)
        self._dtype = dtype

    def _loader(self, dataset: RawClipDataset, sampler=None) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
            collate_fn=collate_videos if dataset.encode else collate_clips, persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """With ``encode_on: device``: encode the decoded clips where the batch now is (the training device)."""
        if "frames" not in batch:
            return batch
        encoders = self.encoders()
        device = batch["frames"][0].device
        for module in (encoders.codec, encoders.text, encoders.image):
            if isinstance(module, torch.nn.Module):
                module.to(device)
        items = [{"id": i, "caption": c, **encode_clip(f, c, encoders, self._dtype)}
                 for i, f, c in zip(batch["id"], batch["frames"], batch["caption"])]
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collate_videos(items).items()}
