"""The dynamism filter's calibration: labelled synthetic clips, each with the verdict it must get.

The scores and flickers the README's "Dynamism filter calibration" paragraph quotes are these clips'
(``python -m pytest tests/test_dynamism.py -s`` prints them).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvg.data.dynamism import (
    DynamismConfig,
    Motion,
    analysis_frames,
    analysis_size,
    dynamism_verdict,
    measure_motion,
)
from lvg.data.reader import open_video
from lvg.data.toy_world import ToyWorldConfig, render_video, sample_video_spec
from lvg.media import write_video

FPS, FRAMES = 8, 32  # 4 s


def texture(seed: int, height: int, width: int, cell: int = 16) -> np.ndarray:
    """``(H, W, 3)`` uint8 smooth random colour texture (a coarse random grid, bicubically upsampled)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // cell + 2, width // cell + 2, generator=g) * 255
    fine = F.interpolate(coarse, size=((height // cell + 2) * cell, (width // cell + 2) * cell), mode="bicubic")
    return fine.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()[:height, :width]


def pan(seed: int, size: int, px_per_frame: int, cell: int = 16) -> np.ndarray:
    world = texture(seed, size, size + px_per_frame * FRAMES, cell)
    return np.stack([world[:, px_per_frame * t : px_per_frame * t + size] for t in range(FRAMES)])


def square(frames: np.ndarray, x0: int, y0: int, vx: int, vy: int, side: int = 16) -> np.ndarray:
    """``frames`` with a yellow square moving from ``(x0, y0)`` at ``(vx, vy)`` px per frame, bouncing off the edges."""
    out, (h, w) = frames.copy(), frames.shape[1:3]

    def bounce(p: int, span: int) -> int:
        return abs(p % (2 * span) - span) if span else 0

    for t in range(len(out)):
        y, x = h - side - bounce(y0 + vy * t, h - side), bounce(x0 + vx * t, w - side)
        out[t, y : y + side, x : x + side] = (230, 200, 40)
    return out


def still(size: int) -> np.ndarray:
    return np.repeat(texture(1, size, size)[None], FRAMES, axis=0)


def flat(height: int, width: int, grey: int = 40) -> np.ndarray:
    return np.full((FRAMES, height, width, 3), grey, np.uint8)


def sensor_noise(frames: np.ndarray, seed: int = 0, amplitude: int = 3) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-amplitude, amplitude + 1, size=frames.shape)
    return np.clip(frames.astype(int) + noise, 0, 255).astype(np.uint8)


def pure_noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (FRAMES, height, width, 3), dtype=np.uint8)


def toy_world() -> np.ndarray:
    spec = sample_video_spec(ToyWorldConfig(size=64, fps=FPS, min_seconds=4, max_seconds=4), 1)
    return render_video(spec)[0][:FRAMES]


def replaced_every_frame() -> np.ndarray:
    """Random 16-px blocks at 128 px, new every frame: whole-picture change that survives the shrink."""
    blocks = np.random.default_rng(1).integers(0, 256, (FRAMES, 8, 8, 3), dtype=np.uint8)
    return blocks.repeat(16, axis=1).repeat(16, axis=2)


# name -> (clip, verdict code: "kept", "static" or "chaotic")
CLIPS: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    "still image": (lambda: still(64), "static"),
    "static shot, sensor noise, 64 px": (lambda: sensor_noise(still(64)), "static"),
    "static shot, sensor noise, 256 px": (lambda: sensor_noise(still(256)), "static"),
    "blank screen, sensor noise": (lambda: sensor_noise(flat(64, 64, 128)), "static"),
    "slow pan (1 px/frame)": (lambda: pan(2, 64, 1), "kept"),
    "toy world": (toy_world, "kept"),
    "fast motion (square and pan, 6 px/frame)": (lambda: square(pan(4, 64, 6, cell=32), 0, 0, 6, 5), "kept"),
    "thin 32x512, moving square": (lambda: square(flat(32, 512), 300, 0, 3, 0), "kept"),
    "tall 512x32, moving square": (lambda: square(flat(512, 32), 0, 300, 0, 3), "kept"),
    "content replaced every frame": (replaced_every_frame, "chaotic"),
    "pure noise, 64 px": (lambda: pure_noise(64, 64), "chaotic"),
    "pure noise, 256 px": (lambda: pure_noise(256, 256), "chaotic"),
    "pure noise, thin 32x512": (lambda: pure_noise(32, 512), "chaotic"),
}


def code(motion: Motion) -> str:
    verdict = dynamism_verdict(motion)
    return "kept" if verdict is None else verdict.split(":")[0]


@pytest.mark.parametrize("name", list(CLIPS))
def test_labelled_clip_gets_its_verdict(name):
    make, label = CLIPS[name]
    motion = measure_motion(torch.from_numpy(make()), fps=FPS)
    print(f"{name}: score {motion.score:.2f}, flicker {motion.flicker:.1f}, {code(motion)}")
    assert code(motion) == label, (name, motion)


def test_thin_and_tall_frames_keep_their_aspect_ratio():
    assert analysis_size(32, 512, 64) == (16, 256) and analysis_size(512, 32, 64) == (256, 16)
    assert analysis_size(1080, 1920, 64) == (46, 83) and analysis_size(48, 64, 64) == (48, 64)  # never enlarged
    assert analysis_size(*analysis_size(720, 1280, 64), 64) == analysis_size(720, 1280, 64)  # not shrunk twice
    thin = square(flat(32, 512), 300, 0, 3, 0)
    tall = thin.transpose(0, 2, 1, 3)
    assert measure_motion(torch.from_numpy(thin), fps=FPS) == measure_motion(torch.from_numpy(tall), fps=FPS)


def test_noise_flicker_does_not_depend_on_resolution():
    flickers = [measure_motion(torch.from_numpy(pure_noise(s, s)[:8]), fps=FPS).flicker for s in (64, 128, 512)]
    assert max(flickers) < 1.1 * min(flickers)
    assert min(flickers) > 1.5 * DynamismConfig().max_flicker


def test_analysis_frames_measure_like_the_full_frames():
    """What lvg prepare does: shrink the sampled frames once, measure them against the source size."""
    video = torch.from_numpy(sensor_noise(square(pan(3, 256, 4), 0, 0, 8, 8)))
    small = analysis_frames(video[::2])
    assert small.shape == (FRAMES // 2, 64, 64, 3) and small.dtype == torch.float32
    direct = measure_motion(video, fps=FPS)
    shrunk = measure_motion(small, fps=FPS / 2, source_size=(256, 256))
    assert shrunk.score == pytest.approx(direct.score, rel=1e-5)
    assert shrunk.flicker == pytest.approx(direct.flicker, rel=1e-5)


@pytest.mark.parametrize("name", ["pure noise, 256 px", "thin 32x512, moving square",
                                  "static shot, sensor noise, 256 px"])
def test_streamed_from_an_mp4_the_verdict_holds(name, tmp_path):
    make, label = CLIPS[name]
    write_video(tmp_path / "clip.mp4", make(), FPS)
    with open_video(tmp_path / "clip.mp4") as reader:  # the decoder scales (area filter)
        assert code(measure_motion(reader)) == label


def test_config_is_checked():
    with pytest.raises(ValueError, match="max_flicker = 0 must be > 0"):
        DynamismConfig(max_flicker=0)
