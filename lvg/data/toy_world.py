"""The toy world: procedural long videos that test long-term consistency, learnable on a CPU.

Each video: a smooth-noise textured background seen through a camera that pans slowly
sideways, a grey pillar fixed in the frame (the occluder, drawn over everything), and 2-3 solid
sprites whose identity is (shape, colour), distinct within a video. Sprites move on smooth
screen-space paths built from keyframes; the script of every video makes one sprite leave the
frame for a few seconds and come back, and another hide behind the pillar for a few seconds and
come out -- what a model without long-term memory forgets. Pixels are exact (no antialiasing),
so the ground truth can be checked pixel by pixel, and the mp4s are lossless.

Layout under ``root``: ``videos/<id>.mp4``, ``truth/<id>.json``, ``manifest.jsonl`` (the canonical
manifest, :mod:`lvg.data.manifest`), ``toy_world.json`` (the config that made it).

Shapes: T frames, S = frame size (square), K sprites.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lvg.data.video_io import write_video
from lvg.io import atomic_write_text

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (240, 220, 40),
    "magenta": (220, 50, 220), "cyan": (40, 220, 230), "white": (245, 245, 245), "orange": (250, 140, 20),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"sand": (170, 150, 110), "slate": (90, 100, 120), "moss": (80, 110, 70)}
PILLAR_RGB = (128, 128, 128)
# Background texture = base colour * (0.6 + 0.4 * noise): never a sprite colour or the pillar grey.


@dataclass(frozen=True)
class ToyWorldConfig:
    """Settings of the toy-world generator."""

    num_videos: int = 16
    """Videos to generate."""
    min_seconds: float = 6.0
    """Shortest video duration."""
    max_seconds: float = 10.0
    """Longest video duration."""
    fps: int = 8
    """Frames per second."""
    size: int = 32
    """Frame height = width in pixels (multiple of 16)."""
    min_sprites: int = 2
    """Fewest sprites per video (>= 2: one leaves the frame, one hides behind the pillar)."""
    max_sprites: int = 3
    """Most sprites per video (<= 8)."""
    occluder: bool = True
    """Draw the pillar (and script a sprite to hide behind it)."""
    seed: int = 0
    """Seed of the whole dataset; video i is drawn from (seed, i)."""

    def __post_init__(self) -> None:
        checks = {
            "num_videos": self.num_videos >= 1,
            "min_seconds": 2.0 <= self.min_seconds <= self.max_seconds,
            "fps": self.fps >= 1,
            "size": self.size >= 16 and self.size % 16 == 0,
            "min_sprites": 2 <= self.min_sprites <= self.max_sprites <= len(COLOURS),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"ToyWorldConfig.{name} is invalid ({self}); need num_videos >= 1, 2 <= min_seconds <= "
                    "max_seconds, fps >= 1, size a multiple of 16 (>= 16), 2 <= min_sprites <= max_sprites <= 8."
                )


@dataclass
class SpriteSpec:
    shape: str
    colour: str
    radius: int
    keyframes: list[tuple[float, float, float]]  # (time s, x px, y px), screen coordinates
    role: str  # "leaves" | "hides" | "wanders"


@dataclass
class VideoSpec:
    id: str
    num_frames: int
    fps: int
    size: int
    background: str
    texture_seed: int
    pan_px_per_s: float
    occluder: tuple[int, int] | None  # pillar columns [x0, x1)
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
    duration = int(round(seconds * fps)) / fps
    count = int(rng.integers(config.min_sprites, config.max_sprites + 1))
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    shapes = rng.choice(SHAPES, size=count, replace=count > len(SHAPES))
    radius = max(3, size // 16)
    pillar_w = int(2.5 * radius) + 2
    pillar_x = int(rng.integers(size // 3, 2 * size // 3 - pillar_w))
    occluder = (pillar_x, pillar_x + pillar_w) if config.occluder else None

    def inside() -> tuple[float, float]:
        return float(rng.uniform(radius + 1, size - radius - 2)), float(rng.uniform(radius + 1, size - radius - 2))

    def spot(avoid: list[tuple[float, float]] = ()) -> tuple[float, float]:
        """A resting place clear of the pillar and at least a sprite apart from ``avoid``."""
        x, y = inside()
        for _ in range(200):
            clear_of_pillar = occluder is None or x + radius < occluder[0] - 1 or x - radius > occluder[1]
            if clear_of_pillar and all(abs(x - ax) + abs(y - ay) > 3 * radius for ax, ay in avoid):
                break
            x, y = inside()
        return x, y

    # Event windows scale with the video: out of view for >= 2 s in the middle, visible around it.
    gone = max(2.25, 0.3 * duration)
    t_leave = 0.2 * duration
    t_back = t_leave + gone
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
            keys = [(0.0, *a), (t_leave, off, y_out), (t_back, off, y_out), (min(t_back + 1.0, duration), *b),
                    (duration, *b)]
        elif role == "hides":
            centre = (occluder[0] + occluder[1]) / 2 - 0.5
            y = float(rng.uniform(radius + 1, size - radius - 2))
            t_in = 0.25 * duration
            keys = [(0.0, *a), (t_in, centre, y), (t_in + gone, centre, y), (min(t_in + gone + 1.0, duration), *b),
                    (duration, *b)]
        else:
            keys = [(t, *inside()) for t in np.linspace(0.0, duration, 4)]
        sprites.append(SpriteSpec(str(shapes[k]), str(colours[k]), radius, keys, role))
    return VideoSpec(
        id=f"toy_{index:04d}", num_frames=int(round(duration * fps)), fps=fps, size=size,
        background=str(rng.choice(list(BACKGROUNDS))), texture_seed=int(rng.integers(2**31)),
        pan_px_per_s=float(rng.choice([-1, 1]) * rng.uniform(1.0, 3.0)), occluder=occluder, sprites=sprites,
    )


def _path(keyframes: list[tuple[float, float, float]], times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions at ``times`` with smoothstep easing between keyframes (zero speed at each)."""
    t_k = np.array([k[0] for k in keyframes])
    seg = np.clip(np.searchsorted(t_k, times, side="right") - 1, 0, len(t_k) - 2)
    span = np.maximum(t_k[seg + 1] - t_k[seg], 1e-9)
    u = np.clip((times - t_k[seg]) / span, 0.0, 1.0)
    u = u * u * (3 - 2 * u)
    xs, ys = np.array([k[1] for k in keyframes]), np.array([k[2] for k in keyframes])
    return xs[seg] + u * (xs[seg + 1] - xs[seg]), ys[seg] + u * (ys[seg + 1] - ys[seg])


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: int) -> np.ndarray:
    """Pixels of a shape of radius ``r`` at offsets (dx, dy) from its centre."""
    adx, ady = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(adx, ady) <= 0.8 * r
    if shape == "diamond":
        return adx + ady <= r
    if shape == "triangle":  # pointing up
        return (dy >= -r) & (dy <= 0.8 * r) & (adx <= 0.6 * (dy + r))
    return ((adx <= r / 3) & (ady <= r)) | ((ady <= r / 3) & (adx <= r))  # cross


def _texture(spec: VideoSpec, width: int) -> np.ndarray:
    """Smooth value noise ``(S, width)`` in [0, 1]: bilinear upsampling of a coarse random grid."""
    rng = np.random.default_rng(spec.texture_seed)
    cell = max(4, spec.size // 8)
    coarse = rng.random((spec.size // cell + 2, width // cell + 2))
    y, x = np.arange(spec.size) / cell, np.arange(width) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    c = coarse
    return ((1 - fy) * ((1 - fx) * c[y0][:, x0] + fx * c[y0][:, x0 + 1])
            + fy * ((1 - fx) * c[y0 + 1][:, x0] + fx * c[y0 + 1][:, x0 + 1]))


def render_video(spec: VideoSpec) -> tuple[np.ndarray, dict[str, Any]]:
    """Frames ``(T, S, S, 3)`` uint8 and their ground truth (JSON-serialisable).

    A sprite is ``visible`` in a frame when at least half of its pixels are on screen and not
    covered by the pillar or a later sprite (``visible_fraction`` holds the exact share).
    """
    s, t = spec.size, spec.num_frames
    times = np.arange(t) / spec.fps
    pan = spec.pan_px_per_s * times  # camera offset in px (world x of the frame's left column)
    offsets = np.round(pan - pan.min()).astype(int)
    texture = _texture(spec, s + int(offsets.max()) + 1)
    base = np.array(BACKGROUNDS[spec.background], dtype=np.float64)
    world = np.round(base * (0.6 + 0.4 * texture[..., None])).astype(np.uint8)  # (S, W_world, 3)

    cols = offsets[:, None] + np.arange(s)[None, :]  # (T, S) world columns seen by each frame
    frames = world[:, cols].transpose(1, 0, 2, 3).copy()  # (T, S, S, 3)
    labels = np.full((t, s, s), -1, dtype=np.int16)  # what is drawn on top: sprite k, -2 pillar, -1 background
    yy, xx = np.mgrid[0:s, 0:s]
    positions = [_path(sp.keyframes, times) for sp in spec.sprites]
    areas = []
    for sp in spec.sprites:
        local = np.arange(-sp.radius - 1, sp.radius + 2)
        areas.append(int(_shape_mask(sp.shape, local[None, :], local[:, None], sp.radius).sum()))
    # Wandering sprites first: the scripted ones (leave / hide and come back) are never covered by them.
    for k in sorted(range(len(spec.sprites)), key=lambda k: spec.sprites[k].role != "wanders"):
        sp, (px, py) = spec.sprites[k], positions[k]
        cx, cy = np.round(px).astype(int), np.round(py).astype(int)
        mask = _shape_mask(sp.shape, xx[None] - cx[:, None, None], yy[None] - cy[:, None, None], sp.radius)
        frames[mask] = COLOURS[sp.colour]
        labels[mask] = k
    if spec.occluder is not None:
        x0, x1 = spec.occluder
        frames[:, :, x0:x1] = PILLAR_RGB
        labels[:, :, x0:x1] = -2

    sprites = []
    for k, (sp, (px, py)) in enumerate(zip(spec.sprites, positions)):
        drawn = (labels == k).sum(axis=(1, 2))
        fraction = drawn / areas[k]
        cx, cy = np.round(px).astype(int), np.round(py).astype(int)
        boxes = [
            [int(max(x - sp.radius, 0)), int(max(y - sp.radius, 0)), int(min(x + sp.radius, s - 1)),
             int(min(y + sp.radius, s - 1))] if -sp.radius <= x < s + sp.radius and -sp.radius <= y < s + sp.radius
            else None
            for x, y in zip(cx, cy)
        ]
        sprites.append({
            "shape": sp.shape, "colour": sp.colour, "rgb": list(COLOURS[sp.colour]), "radius": sp.radius,
            "role": sp.role, "x": cx.tolist(), "y": cy.tolist(), "visible": (fraction >= 0.5).tolist(),
            "visible_fraction": np.round(fraction, 4).tolist(), "bbox": boxes,
        })
    truth = {
        "id": spec.id, "fps": spec.fps, "num_frames": t, "size": s, "background": spec.background,
        "camera_offset_px": offsets.tolist(), "occluder": list(spec.occluder) if spec.occluder else None,
        "pillar_rgb": list(PILLAR_RGB), "sprites": sprites,
    }
    return frames, truth


def generate_toy_world(root: str | Path, config: ToyWorldConfig = ToyWorldConfig()) -> Path:
    """Write the toy world under ``root`` (idempotent) and return the manifest path."""
    root = Path(root)
    stamp, manifest = root / "toy_world.json", root / "manifest.jsonl"
    wanted = dataclasses.asdict(config)
    if stamp.is_file():
        existing = json.loads(stamp.read_text())
        if existing != wanted:
            raise ValueError(
                f"{root} holds a toy world generated with {existing}, not {wanted}; choose another root or delete it."
            )
        if manifest.is_file():
            return manifest
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "truth").mkdir(exist_ok=True)
    atomic_write_text(stamp, json.dumps(wanted, indent=1))
    rows = []
    for index in range(config.num_videos):
        spec = sample_video_spec(config, index)
        video, truth_file = root / "videos" / f"{spec.id}.mp4", root / "truth" / f"{spec.id}.json"
        if not (video.is_file() and truth_file.is_file()):  # resume an interrupted generation
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
