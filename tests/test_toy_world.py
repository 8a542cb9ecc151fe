"""The embedded toy world: determinism, ground truth vs pixels, scripted events, files on disk; the memory world."""

import hashlib
import json
import time
from itertools import pairwise

import numpy as np
import pytest

from lvg.data.toy_world import (
    COLOURS,
    PILLAR_RGB,
    ContextSpan,
    ToyWorldConfig,
    generate_toy_world,
    memory_min_seconds,
    render_video,
    sample_video_spec,
)
from lvg.media import read_video, write_video

CONFIG = ToyWorldConfig()  # the default dataset: the guarantees below are about it
MEMORY = ToyWorldConfig.memory()  # the memory world with the toy recipes' context (window 9, history 16/2/1)
DEFAULT_WORLD_SHA256 = "0ae475d2d839a8d7d3f3ee959d7d38aeb644d856d1ed97bf799969cb55b2f1dd"
"""Frames and truth JSON of the default world's 16 videos: existing toy worlds, shards and tests rely on them."""


@pytest.fixture(scope="module")
def rendered():
    return [render_video(sample_video_spec(CONFIG, i)) for i in range(CONFIG.num_videos)]


@pytest.fixture(scope="module")
def memory_rendered():
    return [render_video(sample_video_spec(MEMORY, i)) for i in range(MEMORY.num_videos)]


def test_default_world_is_unchanged(rendered):
    digest = hashlib.sha256()
    for frames, truth in rendered:
        digest.update(frames.tobytes())
        digest.update(json.dumps(truth).encode())
    assert digest.hexdigest() == DEFAULT_WORLD_SHA256
    assert all("absences" not in truth and "context" not in truth for _, truth in rendered)


def test_deterministic_for_a_seed(rendered):
    frames, truth = render_video(sample_video_spec(CONFIG, 0))
    assert np.array_equal(frames, rendered[0][0]) and truth == rendered[0][1]
    other, _ = render_video(sample_video_spec(ToyWorldConfig(seed=1), 0))
    assert other.shape != frames.shape or not np.array_equal(other, frames)


def test_truth_is_json_and_complete(rendered):
    for frames, truth in rendered:
        assert json.loads(json.dumps(truth)) == truth
        t = len(frames)
        assert truth["num_frames"] == t and len(truth["camera_offset_px"]) == t
        for sprite in truth["sprites"]:
            assert all(len(sprite[key]) == t for key in ("x", "y", "visible", "visible_fraction", "bbox"))


def test_ground_truth_matches_pixels(rendered):
    _check_truth_against_pixels(rendered)


def _check_truth_against_pixels(rendered):
    checked = {"visible": 0, "occluded": 0, "outside": 0}
    for frames, truth in rendered:
        s, (ox0, oy0, ox1, oy1) = truth["size"], truth["occluder"]
        assert np.all(frames[:, oy0:oy1, ox0:ox1] == PILLAR_RGB)
        for sprite in truth["sprites"]:
            r = sprite["radius"]
            for t, (x, y, visible, fraction, box) in enumerate(
                zip(sprite["x"], sprite["y"], sprite["visible"], sprite["visible_fraction"], sprite["bbox"])
            ):
                j, i = round(x), round(y)  # the pixel nearest the centre
                coloured = np.all(frames[t] == sprite["rgb"], axis=-1)  # no other sprite or background has it
                if x < -r - 1 or x > s + r or y < -r - 1 or y > s + r:  # wholly outside the frame
                    assert not visible and fraction == 0 and box is None and not coloured.any()
                    checked["outside"] += 1
                    continue
                if box is not None:
                    x0, y0, x1, y1 = box
                    assert coloured[y0:y1, x0:x1].sum() == coloured.sum()  # the box holds all of the sprite
                if not (0 <= j < s and 0 <= i < s):
                    continue
                assert x0 <= j < x1 and y0 <= i < y1
                if ox0 <= j < ox1:
                    assert tuple(frames[t, i, j]) == PILLAR_RGB
                    if fraction == 0:
                        checked["occluded"] += 1
                elif visible and fraction == 1.0:  # fully drawn: every pixel of it has its colour
                    assert tuple(frames[t, i, j]) == tuple(sprite["rgb"]) == COLOURS[sprite["colour"]]
                    checked["visible"] += 1
                assert visible == (fraction >= 0.5)
    assert all(n > 0 for n in checked.values()), checked


def _hidden_runs(visible: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of every run of invisible frames that has visible frames on both sides."""
    edges = np.flatnonzero(np.diff(visible.astype(int)))
    return [(a + 1, b + 1) for a, b in pairwise(edges) if visible[a] and not visible[a + 1]]


def test_sprites_leave_hide_and_come_back(rendered):
    for _, truth in rendered:
        fps, s, (ox0, _, ox1, _) = truth["fps"], truth["size"], truth["occluder"]
        long_gaps = []
        for sprite in truth["sprites"]:
            visible, x, r = np.array(sprite["visible"]), np.array(sprite["x"]), sprite["radius"]
            for a, b in _hidden_runs(visible):
                if b - a >= 2 * fps:
                    outside = (x[a:b] < 0) | (x[a:b] >= s)
                    # Pillar pixels cover x in [ox0 - 0.5, ox1 - 0.5); a sprite within r of them is (half) behind.
                    behind = (x[a:b] >= ox0 - 0.5 - r) & (x[a:b] < ox1 - 0.5 + r)
                    where = "left the frame" if outside.any() else "behind the pillar" if behind.all() else "?"
                    long_gaps.append(where)
        assert {"left the frame", "behind the pillar"} <= set(long_gaps), f"{truth['id']}: {long_gaps}"


def test_short_videos_still_leave_and_come_back():
    config = ToyWorldConfig(num_videos=3, min_seconds=2.0, max_seconds=3.0)
    for i in range(config.num_videos):
        _, truth = render_video(sample_video_spec(config, i))
        for sprite in truth["sprites"][:2]:  # the scripted ones
            assert _hidden_runs(np.array(sprite["visible"])), f"{truth['id']} {sprite['role']}"


def test_identities_are_distinct_and_captioned():
    for i in range(CONFIG.num_videos):
        spec = sample_video_spec(CONFIG, i)
        identities = {(s.shape, s.colour) for s in spec.sprites}
        assert len(identities) == len({s.colour for s in spec.sprites}) == len(spec.sprites)
        assert all(f"{s.colour} {s.shape}" in spec.caption for s in spec.sprites)
        assert spec.structured_caption["subjects"] == [{"shape": s.shape, "colour": s.colour} for s in spec.sprites]


def test_generate_writes_lossless_videos_manifest_and_is_idempotent(tmp_path, rendered):
    manifest = generate_toy_world(tmp_path, CONFIG)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"toy_{i:04d}" for i in range(CONFIG.num_videos)]
    for row, (frames, truth) in zip(rows, rendered):
        assert {"id", "video", "caption", "structured_caption", "fps", "num_frames", "width", "height"} <= row.keys()
        decoded, fps = read_video(tmp_path / row["video"])
        assert np.array_equal(decoded, frames) and fps == CONFIG.fps
        assert row["num_frames"] == len(frames) and row["width"] == row["height"] == CONFIG.size
        assert json.loads((tmp_path / "truth" / f"{row['id']}.json").read_text()) == truth
    assert json.loads((tmp_path / "toy_world.json").read_text())["seed"] == CONFIG.seed

    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    start = time.perf_counter()
    assert generate_toy_world(tmp_path, CONFIG) == manifest
    assert time.perf_counter() - start < 0.5
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before

    # An interrupted generation is completed: only the missing video is rewritten, same bytes.
    lost = tmp_path / "videos" / "toy_0003.mp4"
    content = lost.read_bytes()
    lost.unlink()
    generate_toy_world(tmp_path, CONFIG)
    assert lost.read_bytes() == content
    assert (tmp_path / "videos" / "toy_0004.mp4").stat().st_mtime_ns == before[tmp_path / "videos" / "toy_0004.mp4"]

    with pytest.raises(ValueError, match="choose another root or delete it"):
        generate_toy_world(tmp_path, ToyWorldConfig(num_videos=2))
    assert not list(tmp_path.rglob(".*"))  # no temp files left behind


def test_context_span_sizes_and_kinds():
    span = ContextSpan()  # the toy recipes: window 9, history 16/2/1, PixelCodec (no temporal compression)
    assert (span.section_frames, span.history_frames, span.frames) == (9, 19, 28)
    assert [span.kind(n) for n in (1, 18, 19, 28, 29)] == ["short", "short", "partial", "partial", "long"]
    vae = ContextSpan(temporal_factor=4)  # HunyuanVideo VAE: 4 video frames per latent frame
    assert (vae.history_frames, vae.frames) == (76, 112)
    assert ContextSpan(history=[8, 2, 1]).history == (8, 2, 1)  # YAML lists become the tuple
    for bad, match in [({"window": 0}, "window = 0"), ({"history": (4, 2)}, "history = "),
                       ({"temporal_factor": 0}, "temporal_factor = 0")]:
        with pytest.raises(ValueError, match=f"ContextSpan.{match}"):
            ContextSpan(**bad)


def _runs(visible: list[bool]) -> list[tuple[int, int, bool]]:
    """``(start, end, visible)`` of every maximal run of equal visibility."""
    edges = [0, *(np.flatnonzero(np.diff(np.array(visible, dtype=int))) + 1).tolist(), len(visible)]
    return [(a, b, visible[a]) for a, b in pairwise(edges)]


def _check_memory_world(config: ToyWorldConfig, rendered) -> set[str]:
    """Every video has a sprite that enters after frame 0, is in view for a section, hides briefly (inside the
    history), is in view again, hides for longer than the context span and returns; returns the hiding places."""
    span, places = config.context, set()
    for _frames, truth in rendered:
        assert truth["context"]["span_frames"] == span.frames
        assert truth["context"]["history_frames"] == span.history_frames
        (k,) = [k for k, s in enumerate(truth["sprites"]) if s["role"] == "returns"]
        sprite = truth["sprites"][k]
        assert sprite["visible_fraction"][0] == 0.0  # not a pixel of it in the start frame
        runs = _runs(sprite["visible"])
        assert [v for _, _, v in runs] == [False, True, False, True, False, True], runs  # enter, short, long, return
        in_view = runs[1::2]
        assert min(b - a for a, b, _ in in_view) >= span.section_frames  # in view for a section each time
        assert in_view[-1][1] == truth["num_frames"]  # back for good
        short, long = truth["absences"]
        assert short["kind"] == "short" and short["frames"] < span.history_frames
        assert long["kind"] == "long" and long["frames"] > span.frames
        for absence, (hidden, back) in zip((short, long), ((runs[2], runs[3]), (runs[4], runs[5]))):
            assert absence["sprite"] == k
            assert absence["hidden"] == list(hidden[:2]) and absence["back"] == list(back[:2])
            assert absence["frames"] == hidden[1] - hidden[0]
            places.add(absence["where"])
        x = np.array(sprite["x"][long["hidden"][0]:long["hidden"][1]])
        assert ((x < 0) | (x >= truth["size"])).any() == (long["where"] == "off_frame")
        assert len(truth["absences"]) == 2  # wanderers' incidental occlusions are not labelled
        wanderers = [s for s in truth["sprites"] if s["role"] == "wanders"]
        assert wanderers and all(s["visible"][0] and s["visible"][-1] for s in wanderers)  # start and end in view
    return places


def test_memory_world_hides_a_late_sprite_beyond_the_context(memory_rendered):
    assert _check_memory_world(MEMORY, memory_rendered) == {"pillar", "off_frame"}
    _check_truth_against_pixels(memory_rendered)


@pytest.mark.parametrize("config", [
    ToyWorldConfig.memory(num_videos=3, occluder=False, seed=2),
    ToyWorldConfig.memory(num_videos=3, size=64, max_sprites=4, seed=5),
    ToyWorldConfig.memory(num_videos=3, fps=12, context=ContextSpan(window=4, history=(8, 2, 1)), seed=9),
    ToyWorldConfig.memory(num_videos=2, context=ContextSpan(window=9, history=(16, 2, 1), temporal_factor=2)),
], ids=["no_pillar", "size64", "small_context_fps12", "temporal2"])
def test_memory_world_follows_its_context(config):
    """The script is a function of the context span: other spans, frame rates and sizes keep every guarantee."""
    rendered = [render_video(sample_video_spec(config, i)) for i in range(config.num_videos)]
    places = _check_memory_world(config, rendered)
    assert places <= ({"pillar", "off_frame"} if config.occluder else {"off_frame"})


def test_memory_world_lengths_come_from_the_context():
    assert MEMORY.world == "memory" and MEMORY.min_seconds == memory_min_seconds(ContextSpan(), 8) == 14.625
    assert MEMORY.max_seconds == 1.25 * MEMORY.min_seconds
    small = ToyWorldConfig.memory(context=ContextSpan(window=4, history=(8, 2, 1)))
    assert small.min_seconds < MEMORY.min_seconds
    assert ToyWorldConfig.memory(min_seconds=20.0, max_seconds=22.0).min_seconds == 20.0
    with pytest.raises(ValueError, match=r"ToyWorldConfig.min_seconds = 6.0 is too short for the memory world.*"
                                         r"28-frame context.*>= 14.625 s at 8 fps"):
        ToyWorldConfig(world="memory")
    with pytest.raises(ValueError, match="ToyWorldConfig.world = 'mem' must be 'default' or 'memory'"):
        ToyWorldConfig(world="mem")
    for i in range(4):
        spec = sample_video_spec(MEMORY, i)
        assert len({(s.shape, s.colour) for s in spec.sprites}) == len({s.colour for s in spec.sprites})
        assert all(f"{s.colour} {s.shape}" in spec.caption for s in spec.sprites)


def test_generate_memory_world_and_old_stamps(tmp_path):
    """A memory world's stamp (a nested context with a tuple) reads back as itself; a stamp written before the
    world and context fields existed still matches the default world."""
    memory = ToyWorldConfig.memory(num_videos=2)
    manifest = generate_toy_world(tmp_path / "memory", memory)
    assert generate_toy_world(tmp_path / "memory", memory) == manifest
    truth = json.loads((tmp_path / "memory" / "truth" / "toy_0000.json").read_text())
    assert truth == render_video(sample_video_spec(memory, 0))[1] and truth["absences"]
    with pytest.raises(ValueError, match="choose another root or delete it"):
        generate_toy_world(tmp_path / "memory", ToyWorldConfig.memory(num_videos=2, context=ContextSpan(window=8)))

    default = ToyWorldConfig(num_videos=1, min_seconds=2.0, max_seconds=2.0)
    generate_toy_world(tmp_path / "default", default)
    stamp = tmp_path / "default" / "toy_world.json"
    old = {k: v for k, v in json.loads(stamp.read_text()).items() if k not in ("world", "context")}
    stamp.write_text(json.dumps(old))
    generate_toy_world(tmp_path / "default", default)  # no error: the old stamp had the defaults


@pytest.mark.parametrize(
    "field, value",
    [("num_videos", 0), ("min_seconds", 1.0), ("max_seconds", 5.0), ("fps", 0), ("size", 40), ("size", 16),
     ("min_sprites", 1), ("max_sprites", 9)],
)
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=f"ToyWorldConfig.{field} = {value}"):
        ToyWorldConfig(**{field: value})


def test_video_io_round_trip_and_errors(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (5, 15, 33, 3), dtype=np.uint8)
    write_video(tmp_path / "v.mp4", frames, 12)
    decoded, fps = read_video(tmp_path / "v.mp4")
    assert np.array_equal(decoded, frames) and fps == 12
    write_video(tmp_path / "again.mp4", frames, 12)
    assert (tmp_path / "again.mp4").read_bytes() == (tmp_path / "v.mp4").read_bytes()  # deterministic bytes

    smooth = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, None, :, None], (4, 16, 32, 3)).copy()
    write_video(tmp_path / "lossy.mp4", smooth, 8, lossless=False)
    decoded, fps = read_video(tmp_path / "lossy.mp4")
    assert decoded.shape == smooth.shape and fps == 8 and np.abs(decoded.astype(int) - smooth).mean() < 4

    with pytest.raises(ValueError, match="missing.mp4 does not exist"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.mp4 is unreadable"):
        read_video(tmp_path / "bad.mp4")
    with pytest.raises(ValueError, match=r"uint8 array \(T, H, W, 3\), got float32"):
        write_video(tmp_path / "x.mp4", frames.astype(np.float32), 8)
    with pytest.raises(ValueError, match=r"uint8 array \(T, H, W, 3\), got uint8 \(15, 33, 3\)"):
        write_video(tmp_path / "x.mp4", frames[0], 8)
    with pytest.raises(ValueError, match="even height and width"):
        write_video(tmp_path / "x.mp4", frames, 8, lossless=False)
    with pytest.raises(ValueError, match="fps must be"):
        write_video(tmp_path / "x.mp4", frames, 0)
    assert not (tmp_path / "x.mp4").exists() and not list(tmp_path.glob(".*"))  # nothing half-written
