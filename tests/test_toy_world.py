"""The embedded toy world: determinism, ground truth vs pixels, scripted events, files on disk."""

import json

import numpy as np
import pytest

from lvg.data.toy_world import COLOURS, PILLAR_RGB, ToyWorldConfig, generate_toy_world, render_video, sample_video_spec
from lvg.data.video_io import read_video, write_video

CONFIG = ToyWorldConfig(num_videos=6)


@pytest.fixture(scope="module")
def rendered():
    return [render_video(sample_video_spec(CONFIG, i)) for i in range(CONFIG.num_videos)]


def test_deterministic_for_a_seed(rendered):
    frames, truth = render_video(sample_video_spec(CONFIG, 0))
    assert np.array_equal(frames, rendered[0][0]) and truth == rendered[0][1]
    other, _ = render_video(sample_video_spec(ToyWorldConfig(seed=1), 0))
    assert other.shape != frames.shape or not np.array_equal(other, frames)


def test_ground_truth_matches_pixels(rendered):
    checked = {"visible": 0, "occluded": 0, "outside": 0}
    for frames, truth in rendered:
        s, occluder = truth["size"], truth["occluder"]
        for sprite in truth["sprites"]:
            for t, (x, y, visible, fraction) in enumerate(
                zip(sprite["x"], sprite["y"], sprite["visible"], sprite["visible_fraction"])
            ):
                on_screen = 0 <= x < s and 0 <= y < s
                behind_pillar = occluder is not None and occluder[0] <= x < occluder[1]
                if not on_screen and (x < -sprite["radius"] or x >= s + sprite["radius"]):
                    assert not visible and fraction == 0  # fully outside the frame
                    checked["outside"] += 1
                elif on_screen and behind_pillar:
                    assert tuple(frames[t, y, x]) == PILLAR_RGB  # the pillar covers the centre
                    checked["occluded"] += 1
                elif visible and fraction == 1.0 and on_screen:
                    assert tuple(frames[t, y, x]) == tuple(sprite["rgb"]) == COLOURS[sprite["colour"]]
                    checked["visible"] += 1
                if not visible:  # an invisible sprite shows at most half of itself
                    assert fraction < 0.5
    assert all(n > 0 for n in checked.values()), checked


def test_sprites_leave_hide_and_come_back(rendered):
    for _, truth in rendered:
        fps, roles = truth["fps"], {s["role"]: s for s in truth["sprites"]}
        for role in ("leaves", "hides"):
            visible = np.array(roles[role]["visible"])
            gone = np.flatnonzero(~visible)
            assert visible[0] and len(gone) >= 2 * fps, f"{truth['id']} {role}: not gone for 2 s"
            assert visible[gone[-1] + 1 :].any(), f"{truth['id']} {role}: never comes back"
        x, visible = np.array(roles["hides"]["x"]), np.array(roles["hides"]["visible"])
        behind_pillar = (x >= truth["occluder"][0]) & (x < truth["occluder"][1]) & ~visible
        assert behind_pillar.sum() >= 2 * fps, f"{truth['id']}: not hidden by the pillar for 2 s"


def test_identities_are_distinct_and_captioned():
    for i in range(CONFIG.num_videos):
        spec = sample_video_spec(CONFIG, i)
        identities = {(s.shape, s.colour) for s in spec.sprites}
        assert len(identities) == len(spec.sprites)
        assert all(f"{s.colour} {s.shape}" in spec.caption for s in spec.sprites)


def test_generate_writes_lossless_videos_manifest_and_is_idempotent(tmp_path, rendered):
    manifest = generate_toy_world(tmp_path, CONFIG)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"toy_{i:04d}" for i in range(CONFIG.num_videos)]
    for row, (frames, truth) in zip(rows, rendered):
        assert {"id", "video", "caption", "structured_caption", "fps", "num_frames", "width", "height"} <= row.keys()
        decoded, fps = read_video(tmp_path / row["video"])
        assert np.array_equal(decoded, frames) and fps == CONFIG.fps and row["num_frames"] == len(frames)
        assert json.loads((tmp_path / "truth" / f"{row['id']}.json").read_text()) == truth
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert generate_toy_world(tmp_path, CONFIG) == manifest
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before
    with pytest.raises(ValueError, match="choose another root or delete it"):
        generate_toy_world(tmp_path, ToyWorldConfig(num_videos=2))


def test_config_validation():
    with pytest.raises(ValueError, match="ToyWorldConfig.size"):
        ToyWorldConfig(size=40)
    with pytest.raises(ValueError, match="ToyWorldConfig.min_sprites"):
        ToyWorldConfig(min_sprites=1)


def test_video_io_round_trip_and_errors(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (5, 16, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "v.mp4", frames, 12)
    decoded, fps = read_video(tmp_path / "v.mp4")
    assert np.array_equal(decoded, frames) and fps == 12
    with pytest.raises(ValueError, match="missing.mp4 does not exist"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.mp4 is unreadable"):
        read_video(tmp_path / "bad.mp4")
    with pytest.raises(ValueError, match=r"uint8 array \(T, H, W, 3\)"):
        write_video(tmp_path / "x.mp4", frames.astype(np.float32), 8)
    assert not list(tmp_path.glob(".*"))  # no temp files left behind
