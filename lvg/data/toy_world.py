"""The toy world: procedural long videos that test long-term consistency, learnable on a CPU.

Each video: a smooth-noise textured background seen through a camera that pans slowly
sideways, a grey pillar fixed in the frame (the occluder, drawn over everything), and 2-3 solid
sprites whose identity is (shape, colour), distinct within a video. Sprites move on smooth
screen-space paths built from keyframes; the script of every video makes one sprite leave the
frame for a few seconds and come back, and another hide behind the pillar for a few seconds and
come out -- what a model without long-term memory forgets. Pixels are exact (no antialiasing),
so the ground truth can be checked pixel by pixel, and the mp4s are lossless.

Coordinates are frame pixel coordinates: ``x`` grows to the right, ``y`` downwards, and pixel
``frames[t, i, j]`` has its centre at ``(x=j, y=i)``. Boxes ``[x0, y0, x1, y1]`` are integer pixel
ranges with exclusive ends (``frames[t, y0:y1, x0:x1]``).

Layout under ``root``: ``videos/<id>.mp4``, ``truth/<id>.json``, ``manifest.jsonl`` (the canonical
manifest, :mod:`lvg.data.manifest`), ``toy_world.json`` (the config that made it).

Shapes: T frames, S = frame size (square), L = side of a sprite's local grid, W = texture width.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lvg.media import write_video
from lvg.io import atomic_write_text
from lvg.toy_scene import BACKGROUNDS, COLOURS, PILLAR_RGB, SHAPES, TEXTURE_RANGE, shape_mask, texture_grid


@dataclass(frozen=True)
class ToyWorldConfig:
    """Settings of the toy-world generator."""

    num_videos: int = 16
    """Videos to generate."""
    min_seconds: float = 6.0
    """Shortest video duration (>= 2). The scripted absences last >= 2 s in videos of >= 5 s."""
    max_seconds: float = 10.0
    """Longest video duration."""
    fps: int = 8
    """Frames per second."""
    size: int = 32
    """Frame height = width in pixels (a multiple of 16, >= 32 to leave room beside the pillar)."""
    min_sprites: int = 2
    """Fewest sprites per video (>= 2: one leaves the frame, one hides behind the pillar)."""
    max_sprites: int = 3
    """Most sprites per video (<= 8, the number of colours)."""
    occluder: bool = True
    """Draw the pillar (and script a sprite to hide behind it)."""
    seed: int = 0
    """Seed of the whole dataset; video i is drawn from (seed, i)."""

    def __post_init__(self) -> None:
        checks = [
            ("num_videos", self.num_videos >= 1, "must be >= 1"),
            ("min_seconds", self.min_seconds >= 2.0, "must be >= 2 (room to leave and come back)"),
            ("max_seconds", self.max_seconds >= self.min_seconds, "must be >= min_seconds"),
            ("fps", self.fps >= 1, "must be >= 1"),
            ("size", self.size >= 32 and self.size % 16 == 0, "must be a multiple of 16 and >= 32"),
            ("min_sprites", self.min_sprites >= 2, "must be >= 2"),
            ("max_sprites", self.min_sprites <= self.max_sprites <= len(COLOURS), "must be in [min_sprites, 8]"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"ToyWorldConfig.{name} = {getattr(self, name)} {rule}.")


@dataclass
class SpriteSpec:
    """One sprite of a video: its identity and its scripted path."""

    shape: str
    """One of :data:`SHAPES`."""
    colour: str
    """A key of :data:`COLOURS`."""
    radius: int
    """Half the sprite's extent in pixels."""
    keyframes: list[tuple[float, float, float]]
    """``(time s, x px, y px)`` in screen coordinates, times increasing; eased in between."""
    role: str
    """``leaves`` (the frame, then returns), ``hides`` (behind the pillar, then returns) or ``wanders``."""


@dataclass
class VideoSpec:
    """Everything :func:`render_video` needs; drawn by :func:`sample_video_spec`."""

    id: str
    num_frames: int
    fps: int
    size: int
    background: str
    """A key of :data:`BACKGROUNDS`."""
    texture_seed: int
    pan_px_per_s: float
    """Camera speed; > 0 pans right (the background moves left in the frame)."""
    occluder: tuple[int, int] | None
    """Pillar columns ``[x0, x1)`` spanning the full frame height, or None."""
    sprites: list[SpriteSpec]

    @property
    def caption(self) -> str:
        names = [f"a {s.colour} {s.shape}" for s in self.sprites]
        subjects = ", ".join(names[:-1]) + f" and {names[-1]}"
        pan = "right" if self.pan_px_per_s > 0 else "left"
        pillar = "; a grey pillar stands in the frame" if self.occluder else ""
        return f"{subjects} move over a {self.background} textured field while the camera pans {pan}{pillar}."

    @property
    def structured_caption(self) -> dict[str, Any]:
        return {
            "subjects": [{"shape": s.shape, "colour": s.colour} for s in self.sprites],
            "background": self.background,
            "camera": "pan right" if self.pan_px_per_s > 0 else "pan left",
            "occluder": "grey pillar" if self.occluder else None,
        }


def sample_video_spec(config: ToyWorldConfig, index: int) -> VideoSpec:
    """The scripted scene of video ``index`` (deterministic in ``(config.seed, index)``)."""
    rng = np.random.default_rng([config.seed, index])
    size, fps = config.size, config.fps
    seconds = float(rng.uniform(config.min_seconds, config.max_seconds))
    num_frames = max(2, int(round(seconds * fps)))
    duration = (num_frames - 1) / fps  # time of the last frame: every keyframe is rendered
    count = int(rng.integers(config.min_sprites, config.max_sprites + 1))
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    shapes = rng.choice(SHAPES, size=count, replace=count > len(SHAPES))
    radius = max(3, size // 16)  # sprite extent ~ size / 8
    pillar_w = int(2.5 * radius) + 2  # wider than any sprite: one hides completely behind it
    pillar_x = int(rng.integers(size // 3, 2 * size // 3 - pillar_w + 1))
    occluder = (pillar_x, pillar_x + pillar_w) if config.occluder else None

    def inside() -> tuple[float, float]:
        return float(rng.uniform(radius + 1, size - radius - 2)), float(rng.uniform(radius + 1, size - radius - 2))

    def spot(avoid: list[tuple[float, float]]) -> tuple[float, float]:
        """A resting place clear of the pillar and at least a sprite apart from ``avoid``."""
        x, y = inside()
        for _ in range(200):
            clear_of_pillar = occluder is None or x + radius < occluder[0] - 1 or x - radius > occluder[1]
            if clear_of_pillar and all(abs(x - ax) + abs(y - ay) > 3 * radius for ax, ay in avoid):
                break
            x, y = inside()
        return x, y

    # Event windows scale with the video and always fit in it: travel away during the first
    # ~20 %, stay away for max(2.25 s, 30 %) (capped at 45 % so short videos keep their return),
    # travel back in <= 1 s and rest visibly until the end.
    gone = min(max(2.25, 0.3 * duration), 0.45 * duration)
    back = min(1.0, 0.15 * duration)
    sprites, rests = [], []
    for k in range(count):
        role = "leaves" if k == 0 else "hides" if k == 1 and occluder else "wanders"
        a = spot(rests)
        rests.append(a)
        b = spot(rests)
        rests.append(b)
        if role == "leaves":
            side = float(rng.choice([-1, 1]))
            off = (size + 2 * radius + 2) if side > 0 else -(2 * radius + 2)
            y_out = float(rng.uniform(radius + 1, size - radius - 2))
            t_out = 0.2 * duration
            keys = [(0.0, *a), (t_out, off, y_out), (t_out + gone, off, y_out), (t_out + gone + back, *b),
                    (duration, *b)]
        elif role == "hides":
            centre = (occluder[0] + occluder[1] - 1) / 2  # the pillar's middle pixel centre
            y = float(rng.uniform(radius + 1, size - radius - 2))
            t_in = 0.25 * duration
            keys = [(0.0, *a), (t_in, centre, y), (t_in + gone, centre, y), (t_in + gone + back, *b),
                    (duration, *b)]
        else:
            keys = [(float(t), *inside()) for t in np.linspace(0.0, duration, 4)]
        sprites.append(SpriteSpec(str(shapes[k]), str(colours[k]), radius, keys, role))
    return VideoSpec(
        id=f"toy_{index:04d}", num_frames=num_frames, fps=fps, size=size,
        background=str(rng.choice(list(BACKGROUNDS))), texture_seed=int(rng.integers(2**31)),
        pan_px_per_s=float(rng.choice([-1, 1]) * rng.uniform(1.0, 3.0)), occluder=occluder, sprites=sprites,
    )


def _path(keyframes: list[tuple[float, float, float]], times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(T,)`` at ``times`` with smoothstep easing between keyframes (zero speed at each)."""
    t_k = np.array([k[0] for k in keyframes])
    assert np.all(np.diff(t_k) >= 0), keyframes
    seg = np.clip(np.searchsorted(t_k, times, side="right") - 1, 0, len(t_k) - 2)
    span = np.maximum(t_k[seg + 1] - t_k[seg], 1e-9)
    u = np.clip((times - t_k[seg]) / span, 0.0, 1.0)
    u = u * u * (3 - 2 * u)
    xs, ys = np.array([k[1] for k in keyframes]), np.array([k[2] for k in keyframes])
    return xs[seg] + u * (xs[seg + 1] - xs[seg]), ys[seg] + u * (ys[seg + 1] - ys[seg])


def _texture(spec: VideoSpec, width: int) -> np.ndarray:
    """Smooth value noise ``(S, W)`` in [0, 1]: a coarse random grid upsampled with smoothstep weights."""
    rng = np.random.default_rng(spec.texture_seed)
    cell = texture_grid(spec.size)
    coarse = rng.random((spec.size // cell + 2, width // cell + 2))
    y, x = np.arange(spec.size) / cell, np.arange(width) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = y - y0, x - x0
    fy, fx = (fy * fy * (3 - 2 * fy))[:, None], (fx * fx * (3 - 2 * fx))[None, :]
    c = coarse
    return ((1 - fy) * ((1 - fx) * c[y0][:, x0] + fx * c[y0][:, x0 + 1])
            + fy * ((1 - fx) * c[y0 + 1][:, x0] + fx * c[y0 + 1][:, x0 + 1]))


def _footprint(sp: SpriteSpec, px: np.ndarray, py: np.ndarray, s: int) -> tuple[np.ndarray, list]:
    """Pixel count ``(T,)`` of the whole sprite (unclipped) and its box clipped to the frame (None if outside)."""
    local = np.arange(-sp.radius - 1, sp.radius + 2)
    lx = np.floor(px).astype(int)[:, None] + local  # (T, L) pixel columns around the centre
    ly = np.floor(py).astype(int)[:, None] + local  # (T, L) pixel rows
    mask = shape_mask(sp.shape, (lx - px[:, None])[:, None, :], (ly - py[:, None])[:, :, None], sp.radius)  # (T, L, L)
    cols, rows = mask.any(axis=1), mask.any(axis=2)  # (T, L) each
    x0 = np.maximum(np.where(cols, lx, s).min(axis=1), 0)
    x1 = np.minimum(np.where(cols, lx, -1).max(axis=1) + 1, s)
    y0 = np.maximum(np.where(rows, ly, s).min(axis=1), 0)
    y1 = np.minimum(np.where(rows, ly, -1).max(axis=1) + 1, s)
    boxes = [[int(a), int(b), int(c), int(d)] if a < c and b < d else None for a, b, c, d in zip(x0, y0, x1, y1)]
    return mask.sum(axis=(1, 2)), boxes


def render_video(spec: VideoSpec) -> tuple[np.ndarray, dict[str, Any]]:
    """Frames ``(T, S, S, 3)`` uint8 and their ground truth (JSON-serialisable).

    Per sprite and frame: centre ``x``, ``y`` (float, frame pixel coordinates; may lie outside the
    frame), ``visible_fraction`` = pixels showing the sprite / pixels of the whole sprite (the rest
    is outside the frame, behind the pillar or under a sprite drawn later), ``visible`` =
    ``visible_fraction >= 0.5``, and ``bbox`` = box of the whole sprite (hidden parts included)
    clipped to the frame, None when no part of it is inside the frame. Also per frame: the camera
    offset (world column of the frame's left edge) and the occluder box.
    """
    s, t = spec.size, spec.num_frames
    times = np.arange(t) / spec.fps
    pan = spec.pan_px_per_s * times
    # Whole-pixel camera steps: the background is copied, never resampled, so it stays exact.
    offsets = np.round(pan - pan.min()).astype(int)  # (T,)
    texture = _texture(spec, s + int(offsets.max()) + 1)  # (S, W)
    base = np.array(BACKGROUNDS[spec.background], dtype=np.float64)
    lo, hi = TEXTURE_RANGE
    world = np.round(base * (lo + (hi - lo) * texture[..., None])).astype(np.uint8)  # (S, W, 3)

    cols = offsets[:, None] + np.arange(s)[None, :]  # (T, S) world columns seen by each frame
    frames = world[:, cols].transpose(1, 0, 2, 3).copy()  # (T, S, S, 3)
    labels = np.full((t, s, s), -1, dtype=np.int16)  # what is drawn on top: sprite k, -2 pillar, -1 background
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)  # (S, S) pixel centres
    positions = [_path(sp.keyframes, times) for sp in spec.sprites]
    # Wandering sprites first: the scripted ones (leave / hide and come back) are never covered by them.
    for k in sorted(range(len(spec.sprites)), key=lambda k: spec.sprites[k].role != "wanders"):
        sp, (px, py) = spec.sprites[k], positions[k]
        mask = shape_mask(sp.shape, xx[None] - px[:, None, None], yy[None] - py[:, None, None], sp.radius)  # (T, S, S)
        frames[mask] = COLOURS[sp.colour]
        labels[mask] = k
    if spec.occluder is not None:
        x0, x1 = spec.occluder
        frames[:, :, x0:x1] = PILLAR_RGB
        labels[:, :, x0:x1] = -2

    sprites = []
    for k, (sp, (px, py)) in enumerate(zip(spec.sprites, positions)):
        area, boxes = _footprint(sp, px, py, s)
        fraction = (labels == k).sum(axis=(1, 2)) / area  # (T,)
        sprites.append({
            "shape": sp.shape, "colour": sp.colour, "rgb": list(COLOURS[sp.colour]), "radius": sp.radius,
            "role": sp.role, "x": np.round(px, 4).tolist(), "y": np.round(py, 4).tolist(),
            "visible": (fraction >= 0.5).tolist(), "visible_fraction": np.round(fraction, 4).tolist(),
            "bbox": boxes,
        })
    truth = {
        "id": spec.id, "fps": spec.fps, "num_frames": t, "size": s, "background": spec.background,
        "camera_pan_px_per_s": spec.pan_px_per_s, "camera_offset_px": offsets.tolist(),
        "occluder": [spec.occluder[0], 0, spec.occluder[1], s] if spec.occluder else None,
        "pillar_rgb": list(PILLAR_RGB), "sprites": sprites,
    }
    return frames, truth


def _is_complete(root: Path, config: ToyWorldConfig) -> bool:
    ids = [f"toy_{i:04d}" for i in range(config.num_videos)]
    files = [root / "videos" / f"{i}.mp4" for i in ids] + [root / "truth" / f"{i}.json" for i in ids]
    return all(f.is_file() for f in [root / "manifest.jsonl", *files])


def generate_toy_world(root: str | Path, config: ToyWorldConfig = ToyWorldConfig()) -> Path:
    """Write the toy world under ``root`` and return the manifest path.

    Idempotent: a complete toy world of the same config is left untouched; an interrupted one is
    completed (finished videos are kept). Every file is written atomically, the manifest last.
    """
    root = Path(root)
    stamp, manifest = root / "toy_world.json", root / "manifest.jsonl"
    wanted = dataclasses.asdict(config)
    if stamp.is_file():
        try:
            existing = json.loads(stamp.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{stamp} is unreadable ({err}); delete {root} or choose another root.") from err
        if existing != wanted:
            raise ValueError(
                f"{root} holds a toy world generated with {existing}, not {wanted}; choose another root or delete it."
            )
        if _is_complete(root, config):
            return manifest
    atomic_write_text(stamp, json.dumps(wanted, indent=1))
    rows = []
    for index in range(config.num_videos):
        spec = sample_video_spec(config, index)
        video, truth_file = root / "videos" / f"{spec.id}.mp4", root / "truth" / f"{spec.id}.json"
        if not (video.is_file() and truth_file.is_file()):
            frames, truth = render_video(spec)
            write_video(video, frames, spec.fps)
            atomic_write_text(truth_file, json.dumps(truth))
        rows.append({
            "id": spec.id, "video": f"videos/{spec.id}.mp4", "caption": spec.caption,
            "structured_caption": spec.structured_caption, "fps": spec.fps, "num_frames": spec.num_frames,
            "width": spec.size, "height": spec.size,
        })
    atomic_write_text(manifest, "".join(json.dumps(r) + "\n" for r in rows))
    return manifest
