"""lvg prepare: bad input is skipped and reported, cuts split clips, runs resume, the toy world goes through it."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lvg.cli.tools import prepare_main
from lvg.data import scan as scan_module
from lvg.data.prepare import PrepareConfig, PrepareError, prepare_shards
from lvg.data.shards import read_index, read_shard
from lvg.data.toy_world import ToyWorldConfig, generate_toy_world, render_video, sample_video_spec
from lvg.media import read_video, write_video
from lvg.models.encoders import Encoders, PixelCodec, ToyImageEncoder, ToyTextEncoder

CONFIGS = Path(__file__).parent.parent / "configs"
TOY = ToyWorldConfig(num_videos=3, min_seconds=2.0, max_seconds=3.0)  # 16-24 frames of 32x32 at 8 fps
# Input checks only: toy videos are single shots (no cut detection), no dynamism filter, a section is 8 frames.
PLAIN = PrepareConfig(min_latent_frames=8, split_shots=False, filter_dynamism=False)
ORIGINAL_SCAN = scan_module.scan_video


def encoders() -> Encoders:
    return Encoders(PixelCodec(2), ToyTextEncoder(64), ToyImageEncoder(), frame_size=(32, 32))


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    generate_toy_world(root, TOY)
    return root


def toy_rows(root: Path) -> list[dict]:
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    return [{**row, "video": str(root / row["video"])} for row in rows]


def write_manifest(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def toy_frames(index: int, **over) -> np.ndarray:
    return render_video(sample_video_spec(dataclasses.replace(TOY, **over), index))[0]


def report_of(out: Path) -> dict:
    return json.loads((out / "prepare_report.json").read_text())


def outcomes(out: Path) -> dict[str, str]:
    """id -> 'kept' or the drop reason code, from the report."""
    return {i["id"]: i.get("code", "kept") for i in report_of(out)["items"]}


def assert_same_shards(a: Path, b: Path) -> None:
    index_a, index_b = read_index(a), read_index(b)
    assert index_a == index_b
    for video in index_a["videos"]:
        (ta, ma), (tb, mb) = read_shard(a / video["file"]), read_shard(b / video["file"])
        assert ma == mb and ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta), video["id"]


def test_bad_input_is_skipped_counted_and_reported(toy, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("this is not a video\n" * 50)
    whole = (toy / "videos/toy_0000.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    write_video(bad / "short.mp4", toy_frames(0)[:5], 8)  # shorter than one section (8 frames)
    write_video(bad / "one.mp4", toy_frames(1)[:1], 8)
    rows = toy_rows(toy) + [
        {"id": "zero", "video": "bad/zero.mp4", "caption": "x"},
        {"id": "text", "video": "bad/text.mp4", "caption": "x"},
        {"id": "truncated", "video": "bad/truncated.mp4", "caption": "x"},
        {"id": "missing", "video": "bad/missing.mp4", "caption": "x"},
        {"id": "short", "video": "bad/short.mp4", "caption": "x"},
        {"id": "one", "video": "bad/one.mp4", "caption": "x"},
        {"id": "huge", "video": str(toy / "videos/toy_0001.mp4"), "caption": "x", "num_frames": 10**9},
        {"id": "nocaption", "video": "bad/short.mp4"},
        {"id": "badfps", "video": "bad/short.mp4", "caption": "x", "fps": "fast"},
        "{torn json",
    ]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "shards"
    index = prepare_shards(manifest, out, encoders(), PLAIN, workers=2)

    assert [v["id"] for v in index["videos"]] == ["toy_0000", "toy_0001", "toy_0002"]
    got = outcomes(out)
    assert {k: v for k, v in got.items() if v != "kept"} == {
        "zero": "empty_file", "text": "unreadable", "truncated": "unreadable", "missing": "missing_file",
        "short": "too_short", "one": "too_short", "huge": "too_long", "nocaption": "bad_row", "badfps": "bad_row",
        f"{manifest}:13": "bad_row",
    }
    report = report_of(out)
    assert report["dropped_by_reason"] == {"bad_row": 3, "unreadable": 2, "too_short": 2, "empty_file": 1,
                                           "missing_file": 1, "too_long": 1}
    assert report["videos"] == {"input": 13, "with_clips": 3, "without_clips": 10}
    reasons = {i["id"]: i["reason"] for i in report["items"] if i["status"] == "dropped"}
    assert "1 frame < 8" in reasons["one"] and "5 frames < 8" in reasons["short"]
    assert "m.jsonl:11: missing required field 'caption'" in reasons["nocaption"]
    assert "'fps' must be a number > 0" in reasons["badfps"] and "declares 1000000000 frames" in reasons["huge"]
    markdown = (out / "prepare_report.md").read_text()
    assert all(name in markdown for name in ("| zero | empty_file |", "| truncated | unreadable |", "kept hours"))
    assert {s["id"] for s in index["skipped"]} == {k for k, v in got.items() if v != "kept"}

    # every good video is in its shard exactly (PixelCodec is lossless), with its provenance
    codec = PixelCodec(2)
    for row in toy_rows(toy):
        tensors, meta = read_shard(out / f"{row['id']}.safetensors")
        frames = read_video(row["video"])[0]
        decoded = codec.decode(tensors["latents"][None])[0].permute(0, 2, 3, 1)  # (T, H, W, 3)
        assert torch.equal(decoded, torch.from_numpy(frames))
        assert meta["source_id"] == row["id"] and (meta["start_frame"], meta["end_frame"]) == (0, len(frames))
        assert meta["caption"] == row["caption"] and meta["structured_caption"] == row["structured_caption"]


def test_strict_stops_at_the_first_bad_item_and_names_it(toy, tmp_path):
    good = toy_rows(toy)[0]
    manifest = write_manifest(tmp_path / "m.jsonl", [good, {"id": "gone", "video": "gone.mp4", "caption": "x"}])
    with pytest.raises(PrepareError, match=r"gone \(.*gone.mp4\): missing_file"):
        prepare_shards(manifest, tmp_path / "a", encoders(), PLAIN, strict=True)
    (tmp_path / "text.mp4").write_text("hello")
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "text", "video": "text.mp4", "caption": "x"}, good])
    with pytest.raises(PrepareError, match=r"text \(.*text.mp4\): unreadable"):
        prepare_shards(manifest, tmp_path / "b", encoders(), PLAIN, strict=True)
    manifest = write_manifest(tmp_path / "m.jsonl", [good, {"id": "x", "video": "x.mp4"}])
    with pytest.raises(PrepareError, match=r"bad manifest row: .*m.jsonl:2: missing required field 'caption'"):
        prepare_shards(manifest, tmp_path / "c", encoders(), PLAIN, strict=True)


def test_a_hard_cut_splits_a_video_into_two_clips(tmp_path):
    a, b = toy_frames(0), 255 - toy_frames(1)  # two scenes: other sprites, inverted colours
    write_video(tmp_path / "two.mp4", np.concatenate([a[:14], b[:12]]), 8)
    write_video(tmp_path / "tail.mp4", np.concatenate([a[:14], b[:3]]), 8)  # the second shot is too short
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "two", "video": "two.mp4", "caption": "two scenes"},
                                                     {"id": "tail", "video": "tail.mp4", "caption": "tail"}])
    out = tmp_path / "shards"
    index = prepare_shards(manifest, out, encoders(), dataclasses.replace(PLAIN, split_shots=True))
    assert [v["id"] for v in index["videos"]] == ["tail-s0", "two-s0", "two-s1"]
    assert outcomes(out)["tail-s1"] == "short_shot"
    spans = {}
    for clip in ("two-s0", "two-s1"):
        tensors, meta = read_shard(out / f"{clip}.safetensors")
        spans[clip] = (meta["start_frame"], meta["end_frame"], tensors["latents"].shape[1])
        assert meta["source_id"] == "two" and meta["source"] == "two.mp4"
    assert spans == {"two-s0": (0, 14, 14), "two-s1": (14, 26, 12)}
    first_of_b = PixelCodec(2).decode(read_shard(out / "two-s1.safetensors")[0]["latents"][None])[0, 0]
    assert torch.equal(first_of_b.permute(1, 2, 0), torch.from_numpy(b[0]))


def test_dynamism_filter_drops_a_frozen_clip(toy, tmp_path):
    write_video(tmp_path / "frozen.mp4", np.repeat(toy_frames(2)[:1], 20, axis=0), 8)
    rows = toy_rows(toy)[:1] + [{"id": "frozen", "video": "frozen.mp4", "caption": "nothing moves"}]
    out = tmp_path / "shards"
    prepare_shards(write_manifest(tmp_path / "m.jsonl", rows), out, encoders(),
                   dataclasses.replace(PLAIN, filter_dynamism=True))
    got = outcomes(out)
    assert got["frozen"] == "static" and got["toy_0000"] == "kept"
    assert report_of(out)["histograms"]["motion_score"]


def test_dynamism_filter_drops_pure_noise_and_keeps_thin_and_tall_frames(toy, tmp_path):
    write_video(tmp_path / "noise.mp4", np.random.default_rng(0).integers(0, 256, (20, 64, 64, 3), np.uint8), 8)
    thin = np.full((20, 32, 512, 3), 40, np.uint8)
    for t in range(20):  # a square moving in the right half: the filter judges the whole frame, not the bucket crop
        thin[t, 8:24, 400 + 3 * t : 416 + 3 * t] = 220
    write_video(tmp_path / "thin.mp4", thin, 8)
    write_video(tmp_path / "tall.mp4", np.ascontiguousarray(thin.transpose(0, 2, 1, 3)), 8)
    rows = toy_rows(toy)[:1] + [{"id": n, "video": f"{n}.mp4", "caption": "x"} for n in ("noise", "thin", "tall")]
    out = tmp_path / "shards"
    prepare_shards(write_manifest(tmp_path / "m.jsonl", rows), out, encoders(),
                   dataclasses.replace(PLAIN, filter_dynamism=True))
    assert outcomes(out) == {"toy_0000": "kept", "noise": "chaotic", "thin": "kept", "tall": "kept"}
    noise = next(i for i in report_of(out)["items"] if i["id"] == "noise")
    assert noise["reason"].startswith("chaotic: pixel flicker")


class Interrupt(KeyboardInterrupt):
    """Stands for a kill: not an Exception, so nothing in prepare may swallow it."""


class CountingCodec(PixelCodec):
    """PixelCodec that counts encodes and is 'killed' at encode number ``kill_at`` (private attributes:
    they are not part of the encoder identity stamped on the shards)."""

    def __init__(self, kill_at: int | None = None):
        super().__init__(2)
        self._calls, self._kill_at = 0, kill_at

    def encode(self, video):
        self._calls += 1
        if self._calls == self._kill_at:
            raise Interrupt
        return super().encode(video)


def counting(codec: CountingCodec) -> Encoders:
    return Encoders(codec, ToyTextEncoder(64), ToyImageEncoder(), (32, 32))


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(toy, tmp_path, monkeypatch):
    (tmp_path / "one.mp4").write_bytes((toy / "videos/toy_0000.mp4").read_bytes()[:1])  # a 1-byte file
    rows = toy_rows(toy) + [{"id": "broken", "video": "one.mp4", "caption": "x"}]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    reference = tmp_path / "reference"
    prepare_shards(manifest, reference, counting(CountingCodec()), PLAIN)

    out = tmp_path / "resumed"
    codec = CountingCodec(kill_at=2)
    with pytest.raises(Interrupt):  # the index is rewritten after every video (index_every is not a stamped setting)
        prepare_shards(manifest, out, counting(codec), dataclasses.replace(PLAIN, index_every=1))
    assert [json.loads(line)["id"] for line in (out / "prepare_log.jsonl").read_text().splitlines()] == ["toy_0000"]
    assert [v["id"] for v in read_index(out)["videos"]] == ["toy_0000"]  # finished videos only
    assert not (out / "toy_0001.safetensors").exists() and not list(out.glob(".*"))  # no partial shard left
    with (out / "prepare_log.jsonl").open("a") as f:
        f.write('{"id": "toy_0002", "stat": [1, ')  # the kill tore the next log line
    (out / "toy_0002.safetensors").write_bytes(b"half a shard")  # e.g. copied in by hand: not logged, so redone

    scanned = []

    def counting_scan(task, *args):
        scanned.append(task.id)
        return ORIGINAL_SCAN(task, *args)

    monkeypatch.setattr(scan_module, "scan_video", counting_scan)
    codec = CountingCodec()
    prepare_shards(manifest, out, counting(codec), PLAIN)
    assert scanned == ["toy_0001", "toy_0002", "broken"] and codec._calls == 2
    assert_same_shards(out, reference)
    assert outcomes(out) == outcomes(reference)

    # done: a rerun decodes and encodes nothing (the unreadable video is not retried) and changes nothing
    scanned.clear()
    codec = CountingCodec(kill_at=1)
    index_bytes = (out / "index.json").read_bytes()
    (out / "prepare_report.md").unlink()
    prepare_shards(manifest, out, counting(codec), PLAIN)
    assert scanned == [] and codec._calls == 0
    assert (out / "index.json").read_bytes() == index_bytes and (out / "prepare_report.md").is_file()

    # a video whose shard was deleted is redone
    (out / "toy_0001.safetensors").unlink()
    prepare_shards(manifest, out, counting(CountingCodec()), PLAIN)
    assert scanned == ["toy_0001"]
    assert_same_shards(out, reference)

    with pytest.raises(PrepareError, match=r"prepared with other settings \['min_latent_frames'\]"):
        prepare_shards(manifest, out, counting(CountingCodec()), dataclasses.replace(PLAIN, min_latent_frames=4))
    with pytest.raises(PrepareError, match=r"prepared with other encoders"):
        prepare_shards(manifest, out, encoders(), PLAIN)



def test_a_log_written_before_the_scan_records_still_resumes(toy, tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path / "m.jsonl", toy_rows(toy))
    out = tmp_path / "shards"
    prepare_shards(manifest, out, encoders(), PLAIN)
    old_keys = {"id", "stat", "fps", "frames", "code", "reason", "clips", "dropped"}  # the log's lines until now
    lines = [json.loads(line) for line in (out / "prepare_log.jsonl").read_text().splitlines()]
    (out / "prepare_log.jsonl").write_text("".join(json.dumps({k: e[k] for k in old_keys}) + "\n" for e in lines))
    index_bytes = (out / "index.json").read_bytes()
    scanned = []
    monkeypatch.setattr(scan_module, "scan_video", lambda task, *a: scanned.append(task.id) or ORIGINAL_SCAN(task, *a))
    prepare_shards(manifest, out, encoders(), PLAIN)
    assert scanned == [] and (out / "index.json").read_bytes() == index_bytes


def crash_on_toy_0001(task, *args):
    """scan_video, except that the worker dies on toy_0001 (what a decoder segfault looks like to the pool).
    Module-level in a light module: the spawned worker imports it from here (test_streaming uses it too)."""
    if task.id == "toy_0001":
        os._exit(1)
    return ORIGINAL_SCAN(task, *args)


def crash_always(task, *args):
    os._exit(1)


def test_a_worker_crash_fails_only_its_video_and_is_retried(toy, tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path / "m.jsonl", toy_rows(toy))
    out = tmp_path / "shards"
    monkeypatch.setattr(scan_module, "scan_video", crash_on_toy_0001)
    index = prepare_shards(manifest, out, encoders(), PLAIN, workers=1)
    assert outcomes(out) == {"toy_0000": "kept", "toy_0001": "worker_crash", "toy_0002": "kept"}
    assert [s["id"] for s in index["skipped"]] == ["toy_0001"]
    monkeypatch.undo()
    prepare_shards(manifest, out, encoders(), PLAIN)  # not logged: retried
    assert set(outcomes(out).values()) == {"kept"}

    monkeypatch.setattr(scan_module, "scan_video", crash_always)  # workers that never finish a video stop the run
    with pytest.raises(ValueError, match="worker processes die before finishing any video"):
        prepare_shards(write_manifest(tmp_path / "two.jsonl", toy_rows(toy)[:2]), tmp_path / "none", encoders(),
                       PLAIN, workers=1)


def test_too_long_by_header_and_by_range(toy, tmp_path):
    rows = toy_rows(toy)[:1]
    frames = read_video(rows[0]["video"])[0]
    rows.append({**rows[0], "id": "part", "start": 0.5, "end": 2.0})  # frames [4, 16) at 8 fps
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "shards"
    prepare_shards(manifest, out, encoders(), dataclasses.replace(PLAIN, max_frames=len(frames) - 1))
    assert outcomes(out) == {"toy_0000": "too_long", "part": "too_long"}  # the header declares too many
    prepare_shards(manifest, tmp_path / "ok", encoders(), PLAIN)
    tensors, meta = read_shard(tmp_path / "ok/part.safetensors")
    assert (meta["start_frame"], meta["end_frame"], tensors["latents"].shape[1]) == (4, 16, 12)
    decoded = PixelCodec(2).decode(tensors["latents"][None])[0].permute(0, 2, 3, 1)
    assert torch.equal(decoded, torch.from_numpy(frames[4:16]))


def test_the_default_toy_world_goes_through_prepare_and_the_cli_agrees(tmp_path, monkeypatch):
    from lvg.data.datamodule import ToyWorldDataModule

    monkeypatch.chdir(tmp_path)
    ToyWorldDataModule(root="data/toy_world").prepare_data()  # the default toy world: 16 videos
    index = read_index("data/toy_world/shards")
    assert [v["id"] for v in index["videos"]] == [f"toy_{i:04d}" for i in range(16)] and not index["skipped"]
    assert "scaling_factor=3.8, shift_factor=-0.2" in index["encoders"]["codec"]  # the normalisation is recorded
    # the prepare YAML = what the datamodule does
    prepare_main(["--config", str(CONFIGS / "prepare/toy_world.yaml"), "--out", "cli", "--no_progress"])
    assert_same_shards(Path("cli"), Path("data/toy_world/shards"))


def test_cli_takes_the_data_section_of_a_training_config(toy, tmp_path, capsys):
    rows = toy_rows(toy)
    manifest = write_manifest(tmp_path / "m.jsonl", rows + [{"id": "gone", "video": "gone.mp4", "caption": "x"}])
    args = ["--config", str(CONFIGS / "teacher_forcing.yaml"), "--manifest", str(manifest), "--no_progress",
            "--prepare.min_latent_frames=17"]
    # model:, trainer:, seed_everything: (and the recipe they build on, `base:`) are ignored
    prepare_main([*args, "--out", str(tmp_path / "out")])
    index = read_index(tmp_path / "out")
    lengths = {r["id"]: r["num_frames"] for r in rows}
    assert [v["id"] for v in index["videos"]] == sorted(k for k, n in lengths.items() if n >= 17)
    assert index["prepare"]["min_latent_frames"] == 17
    assert index["prepare"]["split_shots"] is False  # the rest: the toy datamodule's own prepare_settings()
    assert "gone" in outcomes(tmp_path / "out")
    with pytest.raises(PrepareError, match="gone"):
        prepare_main([*args, "--out", str(tmp_path / "strict"), "--strict"])
    with pytest.raises(PrepareError, match="pass --manifest"):
        prepare_main(["--config", str(CONFIGS / "teacher_forcing.yaml")])


def test_lvg_prepare_command_exits_with_the_bad_item(toy, tmp_path):
    from lvg.cli import main

    manifest = write_manifest(tmp_path / "m.jsonl", toy_rows(toy)[:1] + [{"id": "gone", "video": "gone.mp4",
                                                                          "caption": "x"}])
    with pytest.raises(SystemExit, match=r"lvg prepare: error: gone \(.*gone.mp4\): missing_file"):
        main(["prepare", "--config", str(CONFIGS / "prepare/toy_world.yaml"), "--manifest", str(manifest),
              "--out", str(tmp_path / "out"), "--strict", "--no_progress"])


def test_litdata_output_is_handed_to_the_streaming_converter(toy, tmp_path, monkeypatch):
    import lvg.data.litdata_chunks

    calls = []
    monkeypatch.setattr(lvg.data.litdata_chunks, "write_litdata", lambda *args, **kw: calls.append((args, kw)))
    manifest = write_manifest(tmp_path / "m.jsonl", toy_rows(toy)[:1])
    prepare_shards(manifest, tmp_path / "out", encoders(), PLAIN, output_format="litdata")
    assert calls == [((tmp_path / "out", str(tmp_path / "out/litdata")), {"overwrite": True})]


def test_shards_written_before_latent_normalisation_are_refused(toy, tmp_path):
    out = tmp_path / "out"
    prepare_main(["--config", str(CONFIGS / "prepare/toy_world.yaml"), "--no_progress", "--out", str(out),
                  "--manifest", str(write_manifest(tmp_path / "m.jsonl", toy_rows(toy)[:1]))])
    index = json.loads((out / "index.json").read_text())
    (out / "index.json").write_text(json.dumps({**index, "format": 1}))
    with pytest.raises(ValueError,
                       match=r"format 1 is not 2 \(written before latents were normalised.*rerun `lvg prepare`"):
        read_index(out)
