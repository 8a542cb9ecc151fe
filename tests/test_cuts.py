"""Shot-cut detection and the dynamism filter on synthetic videos with known cuts."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvg.data import cuts as cuts_module
from lvg.data.cuts import CutDetectorConfig, detect_cuts, detect_cuts_pyscenedetect, frame_scores, split_shots
from lvg.data.dynamism import DynamismConfig, dynamism_verdict, measure_motion
from lvg.data.reader import available_backends, open_video
from lvg.data.toy_world import ToyWorldConfig, render_video, sample_video_spec
from lvg.media import write_video

SIZE, FPS = 64, 8


def toy_scene(index: int, frames: int) -> np.ndarray:
    """``(frames, S, S, 3)`` uint8: toy-world video ``index`` (moving sprites, panning camera)."""
    spec = sample_video_spec(ToyWorldConfig(size=SIZE, fps=FPS, min_seconds=4, max_seconds=4), index)
    return render_video(spec)[0][:frames]


def texture(seed: int, height: int = SIZE, width: int = SIZE, cell: int = 8) -> np.ndarray:
    """``(H, W, 3)`` uint8 smooth random colour texture (a coarse random grid, bicubically upsampled)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // cell + 1, width // cell + 1, generator=g) * 255
    fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return fine.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def texture_scene(seed: int, frames: int) -> np.ndarray:
    """A still textured shot with a little sensor-like noise, so consecutive frames are not identical."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-3, 4, size=(frames, SIZE, SIZE, 3))
    return np.clip(texture(seed)[None].astype(int) + noise, 0, 255).astype(np.uint8)


def assemble(shots: list[np.ndarray]) -> tuple[torch.Tensor, list[int]]:
    """Concatenated frames and the true cuts (first frame of every shot after the first)."""
    starts = np.cumsum([len(s) for s in shots])[:-1].tolist()
    return torch.from_numpy(np.concatenate(shots)), starts


def precision_recall(found: list[int], truth: list[int]) -> tuple[float, float]:
    hits = len(set(found) & set(truth))
    return hits / max(len(found), 1), hits / max(len(truth), 1)


@pytest.fixture(scope="module")
def hard_cut_video() -> tuple[torch.Tensor, list[int]]:
    # Toy scenes share palettes (3 backgrounds): the hard case. Shot lengths vary, two shorter than a chunk.
    lengths = [23, 30, 17, 26, 20, 31, 19, 24]
    shots = [toy_scene(i, n) if i % 2 == 0 else texture_scene(i, n) for i, n in enumerate(lengths)]
    return assemble(shots)


def test_hard_cuts_found_exactly(hard_cut_video):
    frames, truth = hard_cut_video
    found = detect_cuts(frames)
    assert precision_recall(found, truth) == (1.0, 1.0), (found, truth)


def test_reader_streaming_matches_tensor(hard_cut_video, tmp_path):
    frames, truth = hard_cut_video
    path = tmp_path / "cuts.mp4"
    write_video(path, frames.numpy(), FPS)
    config = CutDetectorConfig(chunk=16)  # chunks of 16: several cuts fall on chunk boundaries or next to them
    with open_video(path) as reader:
        streamed = frame_scores(reader, config)
        assert detect_cuts(reader, config) == truth
    torch.testing.assert_close(streamed, frame_scores(frames), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", available_backends()[:2])
def test_reader_streamed_at_detector_size(hard_cut_video, tmp_path, backend):
    # At 128 px the reader shrinks frames to the detector's 64 px while decoding (PyAV: FFmpeg's filter, not torch's).
    frames, truth = hard_cut_video
    big = frames[:100].repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    write_video(tmp_path / "big.mp4", big.numpy(), FPS)
    with open_video(tmp_path / "big.mp4", backend) as reader:
        streamed = frame_scores(reader)
        assert detect_cuts(reader) == [c for c in truth if c < 100]
    assert (streamed - frame_scores(big)).abs().max() < 0.02


def test_only_toy_world_shots():
    # Same-palette toy scenes back to back, no texture shots between them.
    frames, truth = assemble([toy_scene(i, 20) for i in range(6)])
    assert detect_cuts(frames) == truth


def test_default_toy_world_videos_are_single_shots():
    """The embedded toy world (6-10 s at 8 fps) goes through the cut detector without a false cut."""
    config = ToyWorldConfig()
    for index in range(config.num_videos):
        frames, _ = render_video(sample_video_spec(config, index))
        assert detect_cuts(torch.from_numpy(frames)) == [], index


def test_cross_fade_is_at_most_one_cut():
    a, b = toy_scene(0, 24), texture_scene(5, 24)
    for steps in (8, 10, 12):
        w = torch.linspace(0, 1, steps + 2)[1:-1, None, None, None]  # mixing weights strictly inside (0, 1)
        fade = (torch.from_numpy(a[-1]).float() * (1 - w) + torch.from_numpy(b[0]).float() * w).round().to(torch.uint8)
        frames = torch.cat([torch.from_numpy(a), fade, torch.from_numpy(b), torch.from_numpy(toy_scene(2, 20))])
        hard = len(a) + steps + len(b)
        found = detect_cuts(frames)
        assert hard in found, (steps, found)
        in_fade = [c for c in found if len(a) <= c <= len(a) + steps]
        assert len(in_fade) <= 1 and len(found) == 1 + len(in_fade), (steps, found)


def test_continuous_pan_has_no_cut():
    # A crop window sliding over a large texture, at a steady and at an accelerating speed.
    world = texture(7, height=SIZE, width=1200, cell=6)
    steady = np.stack([world[:, 6 * t : 6 * t + SIZE] for t in range(120)])
    offsets = np.cumsum(np.linspace(1, 12, 80)).astype(int)
    accelerating = np.stack([world[:, o : o + SIZE] for o in offsets])
    assert detect_cuts(torch.from_numpy(steady)) == []
    assert detect_cuts(torch.from_numpy(accelerating)) == []
    assert frame_scores(torch.from_numpy(steady))[1:].min() > 0  # it does move


def test_short_steady_shot_keeps_both_cuts():
    # A 5-frame still insert (a montage shot): both cuts stay, and split_shots drops the short shot.
    frames, truth = assemble([toy_scene(0, 20), texture_scene(3, 5), toy_scene(2, 20)])
    assert detect_cuts(frames) == truth
    assert split_shots(len(frames), truth, min_frames=15) == [(0, 20), (25, 45)]


def test_flash_is_one_cut():
    frames = torch.from_numpy(toy_scene(1, 40)).clone()
    frames[20] = 255  # one white frame: scores jump into it and out of it, nothing steady in between
    scores = frame_scores(frames)
    (kept,) = detect_cuts(frames)
    assert kept in (20, 21) and float(scores[kept]) == max(float(scores[20]), float(scores[21]))
    assert detect_cuts(frames, CutDetectorConfig(min_shot_frames=1)) == [20, 21]


def test_static_and_tiny_inputs():
    still = torch.from_numpy(texture(1)).expand(30, -1, -1, -1).contiguous()
    assert detect_cuts(still) == []
    assert detect_cuts(still[:1]) == []
    with pytest.raises(ValueError, match="uint8"):
        detect_cuts(still.float())
    with pytest.raises(ValueError, match="CutDetectorConfig.ratio"):
        CutDetectorConfig(ratio=0.5)


@pytest.mark.parametrize(
    "num_frames, cuts, min_frames, shots",
    [
        (100, [], 1, [(0, 100)]),
        (100, [30, 60], 1, [(0, 30), (30, 60), (60, 100)]),
        (100, [30, 35, 60], 10, [(0, 30), (35, 60), (60, 100)]),
        (100, [60, 30, 30], 50, []),  # unsorted and repeated cuts; every shot too short
        (10, [0, 10], 1, [(0, 10)]),
    ],
)
def test_split_shots(num_frames, cuts, min_frames, shots):
    assert split_shots(num_frames, cuts, min_frames) == shots


def test_split_shots_rejects_cuts_outside():
    with pytest.raises(ValueError, match=r"cuts \[120\] lie outside"):
        split_shots(100, [50, 120], 1)


@pytest.mark.skipif(importlib.util.find_spec("scenedetect") is None, reason="scenedetect not installed")
def test_pyscenedetect_agrees_on_distinct_scenes(tmp_path):
    frames, truth = assemble([texture_scene(seed, n) for seed, n in [(1, 30), (2, 25), (3, 40), (4, 30)]])
    path = tmp_path / "scenes.mp4"
    write_video(path, frames.numpy(), FPS)
    assert detect_cuts_pyscenedetect(path) == truth == detect_cuts(frames)


def test_pyscenedetect_missing_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(cuts_module.importlib.util, "find_spec", lambda n: None if n == "scenedetect" else real(n))
    with pytest.raises(ImportError, match="pip install"):
        detect_cuts_pyscenedetect("any.mp4")


# ---- dynamism


def test_static_video_is_rejected():
    still = torch.from_numpy(toy_scene(0, 1)).expand(24, -1, -1, -1).contiguous()
    motion = measure_motion(still, fps=FPS)
    assert motion.score == motion.flicker == 0.0
    assert dynamism_verdict(motion) == f"static: score 0.00 < lower {DynamismConfig().lower:g}"


def test_moving_toy_video_passes(tmp_path):
    frames = toy_scene(1, 32)
    motion = measure_motion(torch.from_numpy(frames), fps=FPS)
    assert dynamism_verdict(motion) is None, motion
    write_video(tmp_path / "toy.mp4", frames, FPS)
    with open_video(tmp_path / "toy.mp4") as reader:  # streamed with the reader's own fps: same score
        assert measure_motion(reader, DynamismConfig(chunk=3)).score == pytest.approx(motion.score, rel=1e-6)


def test_noise_is_rejected_as_chaotic():
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (16, SIZE, SIZE, 3), generator=g, dtype=torch.uint8)
    assert dynamism_verdict(measure_motion(noise, fps=FPS)).startswith("chaotic: pixel flicker")
    # Random 16-px blocks at 128 px: whole-frame change that survives the shrink.
    blocks = torch.randint(0, 256, (16, 8, 8, 3), generator=g, dtype=torch.uint8)
    blocks = blocks.repeat_interleave(16, 1).repeat_interleave(16, 2)
    assert dynamism_verdict(measure_motion(blocks, fps=FPS)).startswith("chaotic: score")


def test_score_is_frame_rate_independent():
    # The same motion filmed at 8 and at 24 fps: sampling at 4 fps compares the same moments.
    world = texture(3, height=SIZE, width=800)
    at_8 = np.stack([world[:, 6 * t : 6 * t + SIZE] for t in range(24)])
    at_24 = np.stack([world[:, 2 * t : 2 * t + SIZE] for t in range(72)])
    s8 = measure_motion(torch.from_numpy(at_8), fps=8).score
    s24 = measure_motion(torch.from_numpy(at_24), fps=24).score
    assert s8 > 1 and s8 == pytest.approx(s24, rel=1e-6)


def test_flow_score_uses_the_flow_model():
    def constant_flow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (N, 2, s, s): 3 px right, 4 px down
        assert a.shape == b.shape and a.shape[1:] == (3, 32, 32)
        return torch.tensor([3.0, 4.0])[None, :, None, None].expand(len(a), 2, 32, 32)

    frames = torch.from_numpy(toy_scene(0, 16))
    assert measure_motion(frames, DynamismConfig(size=32), fps=FPS, flow=constant_flow).score == pytest.approx(5.0)


def test_motion_score_needs_fps_for_tensors():
    with pytest.raises(ValueError, match="pass fps="):
        measure_motion(torch.zeros(4, 8, 8, 3, dtype=torch.uint8))
