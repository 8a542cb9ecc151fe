"""Streaming datamodules: litdata chunks of latent shards, and raw clips decoded on the fly (CPU, tiny)."""

import dataclasses
import json
import os
import types

import lightning as L
import numpy as np
import pytest
import torch

from lvg.data import scan
from lvg.data.datamodule import ToyWorldDataModule, VideoShardDataset, collate_videos
from lvg.data.prepare import TOY_PREPARE, PrepareConfig, prepare_shards
from lvg.data.reader import VideoReadError
from lvg.data.shards import read_index
from lvg.data.toy_world import ToyWorldConfig
from lvg.models.memory_pack import MemoryPackConfig
from lvg.models.semantic_pack import SemanticPackConfig
from lvg.training import TeacherForcingModule

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # older litdata versions ask PyPI on first use

WINDOW = 3
TINY_TOY = ToyWorldConfig(num_videos=5, min_seconds=2.0, max_seconds=3.0, fps=8, size=32, seed=0)
DEBUG_FOR_TOY = {"in_channels": 12, "out_channels": 12, "text_embed_dim": 64, "pooled_projection_dim": 64,
                 "image_proj_dim": 48}


def tiny_model():
    return TeacherForcingModule(dit="debug", dit_overrides=DEBUG_FOR_TOY, memory_pack=MemoryPackConfig(window=WINDOW),
                                semantic_pack=SemanticPackConfig(dim=32, num_heads=4, memory_grid=(2, 2)), lr=1e-3,
                                max_sections=1)


class Recorder(L.Callback):
    """(step, video ids, loss) of every training step."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((trainer.global_step, batch["id"], float(outputs["loss"])))


def fit(datamodule, root, max_steps, ckpt_path=None, checkpoint=True):
    L.seed_everything(0)
    recorder = Recorder()
    callbacks = [recorder]
    if checkpoint:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1))
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=checkpoint, default_root_dir=root, max_steps=max_steps, callbacks=callbacks).fit(
        tiny_model(), datamodule, ckpt_path=ckpt_path)
    return recorder.steps


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    ToyWorldDataModule(root=str(root), toy=TINY_TOY).prepare_data()
    return root


@pytest.fixture(scope="module")
def shard_videos(toy_root):
    """The reference: VideoLatentDataModule's dataset of every shard, by id."""
    dataset = VideoShardDataset(toy_root / "shards", read_index(toy_root / "shards")["videos"])
    return {dataset.videos[i]["id"]: dataset[i] for i in range(len(dataset))}


# --- litdata -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litdata_dir(toy_root, tmp_path_factory):
    pytest.importorskip("litdata")
    from lvg.data.litdata_chunks import write_litdata

    out = tmp_path_factory.mktemp("litdata") / "chunks"
    # ~2 videos per chunk: several chunks, so shuffling and rank sharding cross chunk boundaries
    assert write_litdata(toy_root / "shards", str(out), chunk_bytes="400KB", start_method="fork") == str(out)
    return str(out)


def shard_ids():
    return [f"toy_{k:04d}" for k in range(TINY_TOY.num_videos)]


def streaming(litdata_dir, **kwargs):
    from lvg.data.streaming import StreamingLatentDataModule

    return StreamingLatentDataModule(input_dir=litdata_dir, **kwargs)


def ids(loader):
    return [i for batch in loader for i in batch["id"]]


def assert_batches_equal(a, b):
    assert a.keys() == b.keys() and a["id"] == b["id"] and a["caption"] == b["caption"]
    for key in a.keys() - {"id", "caption"}:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("batch_size", [1, 2])
def test_litdata_batches_equal_the_shard_datamodule_batches(litdata_dir, shard_videos, batch_size):
    loader = streaming(litdata_dir, batch_size=batch_size, shuffle=False).train_dataloader()
    batches = list(loader)
    assert sorted(i for b in batches for i in b["id"]) == sorted(shard_videos)
    for batch in batches:  # same tensors, dtypes, padding and cut to the shortest as collate_videos of the shards
        assert_batches_equal(batch, collate_videos([shard_videos[i] for i in batch["id"]]))
    assert batches[0]["latents"].shape[:3] == (batch_size, 12, min(
        shard_videos[i]["latents"].shape[1] for i in batches[0]["id"]))


def test_every_video_once_per_epoch_in_a_new_order_each_epoch(litdata_dir, shard_videos):
    loader = streaming(litdata_dir, seed=3).train_dataloader()
    epochs = [ids(loader) for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == sorted(shard_videos)  # each video exactly once
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled per epoch
    assert ids(streaming(litdata_dir, seed=3).train_dataloader()) == epochs[0]  # the seed fixes the order
    for batch in loader:  # one item = the whole video: every latent frame, chronological
        assert torch.equal(batch["latents"][0], shard_videos[batch["id"][0]]["latents"])


def test_two_ranks_share_an_epoch_without_duplicates(litdata_dir, shard_videos):
    per_rank = []
    for rank in range(2):
        dm = streaming(litdata_dir, seed=1)
        dm.trainer = types.SimpleNamespace(world_size=2, global_rank=rank, num_nodes=1)
        loader = dm.train_dataloader()
        per_rank.append([ids(loader) for _ in range(2)])
        assert len(loader) == len(shard_videos) // 2  # drop_last: every rank takes the same number of steps
    for epoch in range(2):
        a, b = per_rank[0][epoch], per_rank[1][epoch]
        assert len(a) == len(b) == len(shard_videos) // 2 and not set(a) & set(b)
        assert set(a) | set(b) <= set(shard_videos)
    assert per_rank[0][0] != per_rank[0][1]


@pytest.mark.parametrize("epoch, consumed", [(0, 2), (1, 1), (1, 0)])
def test_resume_continues_with_the_next_video_of_the_epoch(litdata_dir, epoch, consumed):
    straight = streaming(litdata_dir, seed=5).train_dataloader()
    orders = [ids(straight) for _ in range(2)]
    dm = streaming(litdata_dir, seed=5)
    dm.load_state_dict({"epoch": epoch, "consumed": consumed})
    resumed = dm.train_dataloader()
    assert ids(resumed) == orders[epoch][consumed:]
    if epoch == 0:
        assert ids(resumed) == orders[1]  # and the next epoch is the uninterrupted run's next epoch


def test_lightning_fit_and_ckpt_resume_on_litdata(litdata_dir, tmp_path):
    """6 steps straight == 2 steps, stop, resume from last.ckpt, 4 more (data order and losses), across an epoch end."""
    straight = fit(streaming(litdata_dir), tmp_path / "a", 6, checkpoint=False)  # 5 videos per epoch
    first = fit(streaming(litdata_dir), tmp_path / "b", 2)
    resumed = fit(streaming(litdata_dir), tmp_path / "b", 6, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    combined = first + resumed
    assert [s[:2] for s in combined] == [s[:2] for s in straight]
    assert sorted(i for _, (i,), _ in straight[:5]) == sorted(shard_ids())
    for (_, _, a), (_, _, b) in zip(combined, straight):
        assert a == pytest.approx(b, abs=1e-6)


def test_write_litdata_refuses_to_replace_a_dataset_unless_asked(litdata_dir, toy_root):
    from lvg.data.litdata_chunks import write_litdata

    with pytest.raises(ValueError, match="already holds a litdata dataset; pass overwrite=True"):
        write_litdata(toy_root / "shards", litdata_dir)


def test_litdata_missing_is_a_clear_install_hint(monkeypatch):
    import sys

    from lvg.data.litdata_chunks import require_litdata

    monkeypatch.setitem(sys.modules, "litdata", None)
    with pytest.raises(ImportError, match=r'pip install "lvg\[stream\]"'):
        require_litdata()


# --- raw clips -----------------------------------------------------------------------------------

TOY_ENCODERS = {"kind": "toy", "frame_size": (32, 32), "codec_factor": 2, "text_dim": 64}


@pytest.fixture
def raw_manifest(toy_root, tmp_path):
    """The toy world's videos plus a zero-byte .mp4 and a text file named .mp4."""
    rows = [json.loads(line) for line in (toy_root / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        row["video"] = str(toy_root / row["video"])
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    rows += [{"id": "empty", "video": "empty.mp4", "caption": "nothing"},
             {"id": "text", "video": "text.mp4", "caption": "nothing"}]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    return manifest


def raw(manifest, cache_dir, prepare=TOY_PREPARE, **kwargs):
    from lvg.data.datamodule import EncoderSpec
    from lvg.data.streaming import RawClipDataModule

    kwargs.setdefault("min_latent_frames", 1 + WINDOW)
    return RawClipDataModule(str(manifest), encoders=EncoderSpec(**TOY_ENCODERS), prepare=prepare,
                             cache_dir=str(cache_dir), **kwargs)


def test_raw_clips_equal_the_shard_batches_and_bad_files_are_skipped_and_reported(raw_manifest, tmp_path,
                                                                                   shard_videos, caplog):
    dm = raw(raw_manifest, tmp_path / "cache", seed=2)
    dm.prepare_data()
    dm.setup("fit")
    assert [s["id"] for s in dm.skipped] == ["empty", "text"]
    assert "empty.mp4" in dm.skipped[0]["reason"] and "empty (0 bytes)" in dm.skipped[0]["reason"]
    assert "text.mp4" in dm.skipped[1]["reason"] and "not a video" in dm.skipped[1]["reason"]
    assert json.loads((tmp_path / "cache" / "skipped.json").read_text()) == dm.skipped
    assert "2 videos/clips" in caplog.text and "empty.mp4" in caplog.text
    batches = list(dm.train_dataloader())
    assert sorted(b["id"][0] for b in batches) == sorted(shard_videos)  # each good video once
    for batch in batches:  # PixelCodec is exact: the same tensors as lvg prepare's shards
        assert_batches_equal(batch, collate_videos([shard_videos[i] for i in batch["id"]]))

    # encode_on=device: workers only decode; the batch is encoded after the transfer hook, to the same tensors
    on_device = raw(raw_manifest, tmp_path / "cache", seed=2, encode_on="device", batch_size=2)
    on_device.setup("fit")
    for batch in on_device.train_dataloader():
        assert batch.keys() == {"id", "frames", "caption"} and batch["frames"][0].dtype == torch.uint8
        encoded = on_device.on_after_batch_transfer(batch, 0)
        assert_batches_equal(encoded, collate_videos([shard_videos[i] for i in batch["id"]]))


def test_a_file_that_goes_bad_after_the_scan_is_skipped_not_fatal(raw_manifest, tmp_path, caplog):
    import shutil

    rows = [json.loads(line) for line in raw_manifest.read_text().splitlines()][:2]
    for k, row in enumerate(rows):  # private copies: one is truncated under the running datamodule
        shutil.copy(row["video"], tmp_path / f"v{k}.mp4")
        row["video"] = f"v{k}.mp4"
    manifest = tmp_path / "two.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    dm = raw(manifest, tmp_path / "cache")
    dm.setup("fit")
    dataset = dm.train_set
    (tmp_path / "v0.mp4").write_bytes(b"gone")
    item = dataset[0]  # clip 0's file is no longer a video: the next clip is used, with a warning
    assert item["id"] == dataset.clips[1].id and f"skipping clip {dataset.clips[0].id}" in caplog.text
    (tmp_path / "v1.mp4").unlink()
    with pytest.raises(VideoReadError, match="none of the 2 clips can be read any more"):
        dataset[0]


def test_raw_clips_resume_mid_epoch_with_the_next_clip(raw_manifest, tmp_path):
    straight = raw(raw_manifest, tmp_path / "cache", seed=4)
    straight.setup("fit")
    order = ids(straight.train_dataloader())
    resumed = raw(raw_manifest, tmp_path / "cache", seed=4)
    resumed.load_state_dict({"epoch": 0, "consumed": 2})
    resumed.setup("fit")
    loader = resumed.train_dataloader()
    loader.sampler.set_epoch(0)  # what Lightning does at every epoch start
    assert ids(loader) == order[2:]


def test_a_video_split_at_a_cut_gives_clips_named_by_shot(toy_root, tmp_path, shard_videos):
    from lvg.media import read_video, write_video
    from lvg.models.encoders import PixelCodec

    first, fps = read_video(toy_root / "videos/toy_0000.mp4")
    second, _ = read_video(toy_root / "videos/toy_0001.mp4")
    joined = np.concatenate([first, second])  # a hard cut between two scenes
    write_video(tmp_path / "joined.mp4", joined, fps)
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"id": "joined", "video": "joined.mp4", "caption": "two"}))
    dm = raw(tmp_path / "manifest.jsonl", tmp_path / "cache", prepare=PrepareConfig(min_latent_frames=2),
             min_latent_frames=2)
    dm.setup("fit")
    clips = sorted(dm.train_set.clips, key=lambda c: c.start)
    assert [c.id for c in clips] == [f"joined-s{k}" for k in range(len(clips))] and len(clips) >= 2
    assert (clips[0].start, clips[0].end) == (0, len(first))  # split at the cut
    assert torch.equal(dm.train_set[dm.train_set.clips.index(clips[0])]["latents"], shard_videos["toy_0000"]["latents"])
    for clip in clips:  # every clip holds exactly its frames of the source video
        video = torch.from_numpy(joined[clip.start : clip.end]).permute(0, 3, 1, 2).unsqueeze(0)
        item = dm.train_set[dm.train_set.clips.index(clip)]
        assert item["id"] == clip.id and torch.equal(item["latents"], PixelCodec(2).encode(video)[0])


def test_filter_decisions_are_cached_across_epochs_and_runs(raw_manifest, tmp_path, monkeypatch):
    from lvg.data import streaming
    from lvg.data.dynamism import DynamismConfig

    scans, reads = [], []
    scan_video, read_clip = scan.scan_video, streaming.read_clip
    monkeypatch.setattr(scan, "scan_video", lambda task, *a: scans.append(task.id) or scan_video(task, *a))
    monkeypatch.setattr(streaming, "read_clip", lambda path, *a, **k: reads.append(path) or read_clip(path, *a, **k))

    # score the toy videos once, then set the static-shot bound between the 2nd and 3rd lowest score
    whole = PrepareConfig(min_latent_frames=2, split_shots=False)  # the toy videos are single shots
    probe = raw(raw_manifest, tmp_path / "probe", prepare=whole)
    probe.setup("fit")
    records = [json.loads(line) for line in (tmp_path / "probe" / "prepare_log.jsonl").read_text().splitlines()]
    motion = {r["shots"][0]["motion"]: r["path"] for r in records if r["shots"]}
    low = sorted(motion)
    config = dataclasses.replace(whole, dynamism=DynamismConfig(lower=(low[1] + low[2]) / 2))
    rejected = {motion[s] for s in low[:2]}
    scans.clear()

    dm = raw(raw_manifest, tmp_path / "cache", prepare=config)
    dm.prepare_data()
    dm.setup("fit")
    assert len(scans) == 7  # every video scanned once (the two bad files too)
    static = [s for s in dm.skipped if "static: score" in s["reason"]]
    assert len(static) == 2 and len(dm.train_set) == 3
    loader = dm.train_dataloader()
    for _ in range(2):
        reads.clear()
        assert len(list(loader)) == 3
        assert len(reads) == 3 and not rejected & set(reads)  # rejected videos are never decoded again
    scans.clear()
    again = raw(raw_manifest, tmp_path / "cache", prepare=config)  # a new run: the cache decides
    again.prepare_data()
    again.setup("fit")
    assert scans == [] and again.skipped == dm.skipped
    os.utime(next(iter(rejected)))  # a changed file is scanned again
    raw(raw_manifest, tmp_path / "cache", prepare=config).setup("fit")
    assert len(scans) == 1


@pytest.mark.parametrize("encode_on, workers", [("worker", 1), ("device", 0)])
def test_lightning_fit_on_raw_clips(raw_manifest, tmp_path, encode_on, workers):
    steps = fit(raw(raw_manifest, tmp_path / "cache", num_workers=workers, encode_on=encode_on), tmp_path, 2)
    assert [s[0] for s in steps] == [1, 2] and all(np.isfinite(s[2]) for s in steps)
    assert {i for _, (i,), _ in steps} <= set(shard_ids())


def test_sample_video_logger_inputs_are_the_same_from_litdata_raw_clips_and_shards(litdata_dir, raw_manifest,
                                                                                  tmp_path, shard_videos):
    """SampleVideoLogger reads its start frames and captions from batches: every datamodule gives the same.
    (A litdata datamodule names no encoders of its own yet, so the toy ones decode here for both.)"""
    from lvg.callbacks import SampleVideoLogger

    clips = raw(raw_manifest, tmp_path / "cache", seed=2)
    clips.prepare_data()
    clips.setup("fit")
    encoders = clips.encoders()

    def inputs(datamodule) -> tuple[torch.Tensor, list[str]]:
        callback = SampleVideoLogger(num_videos=1)
        batch = next(iter(datamodule.train_dataloader()))
        callback._collect(batch, encoders)
        reference = SampleVideoLogger(num_videos=1)
        reference._collect(collate_videos([shard_videos[i] for i in batch["id"]]), encoders)
        return callback._fixed, reference._fixed

    for datamodule in (streaming(litdata_dir, shuffle=False), clips):
        (images, prompts), (expected_images, expected_prompts) = inputs(datamodule)
        assert prompts == expected_prompts and prompts[0] and torch.equal(images, expected_images)


def log_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_raw_clips_take_lvg_prepares_scans_and_drop_what_it_drops(raw_manifest, tmp_path, monkeypatch):
    """One scan log: a directory lvg prepare wrote, used as cache_dir, is not scanned again and gives the
    same clips and the same drops (codes and reasons); a log the datamodule wrote is one lvg prepare reads."""
    prepared = tmp_path / "prepared"
    dm = raw(raw_manifest, prepared)
    index = prepare_shards(raw_manifest, prepared, dm.encoders(), TOY_PREPARE)
    scans = []
    scan_video = scan.scan_video
    monkeypatch.setattr(scan, "scan_video", lambda task, *a: scans.append(task.id) or scan_video(task, *a))
    dm.setup("fit")
    assert scans == []  # every video, the two bad files too, decided by lvg prepare's log
    assert dm.skipped == index["skipped"] and [s["id"] for s in dm.skipped] == ["empty", "text"]
    assert [c.id for c in dm.train_set.clips] == [v["id"] for v in index["videos"]]

    cache = tmp_path / "cache"  # the other way: the datamodule's log, then lvg prepare into that directory
    raw(raw_manifest, cache).setup("fit")
    assert len(scans) == 7
    again = prepare_shards(raw_manifest, cache, dm.encoders(), TOY_PREPARE)
    assert again == index  # scan records without encode results: lvg prepare encodes every video
    assert len(scans) == 14


def test_a_video_that_crashes_its_worker_is_skipped_as_in_lvg_prepare(raw_manifest, tmp_path, monkeypatch):
    from test_prepare import crash_on_toy_0001  # the spawned worker imports it: from a module lighter than this one

    monkeypatch.setattr(scan, "scan_video", crash_on_toy_0001)
    dm = raw(raw_manifest, tmp_path / "cache", num_workers=1)
    dm.setup("fit")
    assert dm.skipped[2] == {"id": "toy_0001", "reason": f"worker_crash: {scan.WORKER_CRASH}"}
    assert [s["id"] for s in dm.skipped] == ["empty", "text", "toy_0001"]  # only the video that crashed
    assert [c.id for c in dm.train_set.clips] == [i for i in shard_ids() if i != "toy_0001"]
    assert "toy_0001" not in {r["id"] for r in log_records(tmp_path / "cache" / "prepare_log.jsonl")}
    monkeypatch.undo()  # not recorded: the next run scans it again, and only it
    scans = []
    scan_video = scan.scan_video
    monkeypatch.setattr(scan, "scan_video", lambda task, *a: scans.append(task.id) or scan_video(task, *a))
    dm = raw(raw_manifest, tmp_path / "cache")
    dm.setup("fit")
    assert scans == ["toy_0001"] and len(dm.train_set) == 5


def test_a_damaged_scan_log_is_rescanned_with_a_warning(raw_manifest, tmp_path, caplog):
    raw(raw_manifest, tmp_path / "cache").setup("fit")
    log_file = tmp_path / "cache" / "prepare_log.jsonl"
    lines = log_file.read_text().splitlines()
    log_file.write_text("\n".join(["not json", *lines[1:], lines[0][:20]]))  # one damaged line, one torn
    dm = raw(raw_manifest, tmp_path / "cache")
    dm.setup("fit")
    assert "prepare_log.jsonl: 2 damaged lines skipped; those videos are scanned again" in caplog.text
    now = log_file.read_text().splitlines()
    assert len(dm.train_set) == 5 and len(now) == len(lines) + 2  # the torn line ended, the first video again
    assert json.loads(now[-1])["id"] == json.loads(lines[0])["id"]
