"""The toy world: procedural long videos that test long-term consistency, learnable on a CPU.

Each video: a smooth-noise textured background seen through a camera that pans slowly
sideways, a grey pillar fixed in the frame (the occluder, drawn over everything), and 2-3 solid
sprites whose identity is (shape, colour), distinct within a video. Sprites move on smooth
screen-space paths built from keyframes; the script of every video makes one sprite leave the
frame for a few seconds and come back, and another hide behind the pillar for a few seconds and
come out -- what a model without long-term memory forgets. Pixels are exact (no antialiasing),
so the ground truth can be checked pixel by pixel, and the mp4s are lossless.

The *memory world* (``ToyWorldConfig(world="memory")``, :meth:`ToyWorldConfig.memory`) tests memory
beyond FramePack's context instead: one sprite enters after the start frame (the start latent cannot
hold it), rests in view for more than a section, hides for a short while (inside the history: a
control), rests again, then hides -- behind the pillar or off frame -- for longer than the whole
context span (:class:`ContextSpan`), and returns; the other sprites wander. Its truth lists every
such absence with its kind (``short`` / ``long``), for the ``long_recovery`` and ``short_recovery``
truth metrics (:mod:`lvg.metrics.toy_world`).

Coordinates are frame pixel coordinates: ``x`` grows to the right, ``y`` downwards, and pixel
``frames[t, i, j]`` has its centre at ``(x=j, y=i)``. Boxes ``[x0, y0, x1, y1]`` are integer pixel
ranges with exclusive ends (``frames[t, y0:y1, x0:x1]``).

Layout under ``root``: ``videos/<id>.mp4``, ``truth/<id>.json``, ``manifest.jsonl`` (the canonical
manifest, :mod:`lvg.data.manifest`), ``toy_world.json`` (the config that made it).

Shapes: T frames, S = frame size (square), L = side of a sprite's local grid, W = texture width.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lvg.io import atomic_write_text
from lvg.media import write_video
from lvg.toy_scene import (
    BACKGROUNDS,
    COLOURS,
    PILLAR_RGB,
    SHAPE_REACH,
    SHAPES,
    TEXTURE_RANGE,
    shape_mask,
    texture_grid,
)


@dataclass(frozen=True)
class ContextSpan:
    """The past that FramePack-F1's context holds while it generates a section, in video frames.

    The context is the start latent, the 4x/2x/1x history slots and the section's own window. The
    memory world scripts its absences against it and its truth labels each absence of ``L`` hidden
    frames: ``short`` when ``L < history_frames`` (a visible frame lies in the history wherever the
    section boundaries fall), ``long`` when ``L > frames`` (history plus window: no section that
    generates the return sees the sprite -- the start frame does not show it either, since the sprite
    enters later), ``partial`` in between (it depends on where the sections fall). With the
    HunyuanVideo VAE a section decodes to ``4 window - 3`` frames, so ``window x 4`` over-counts it
    slightly: ``long`` stays beyond the context.
    """

    window: int = 9
    """Latent frames generated per section (``MemoryPackConfig.window``; the toy recipes use 9)."""
    history: tuple[int, int, int] = (16, 2, 1)
    """Latent frames of the 4x, 2x and 1x history slots (``MemoryPackConfig.history_sizes``)."""
    temporal_factor: int = 1
    """Video frames per latent frame (PixelCodec, the toy's codec: 1; the HunyuanVideo VAE: 4)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "history", tuple(self.history))  # YAML and JSON give lists
        if self.window < 1:
            raise ValueError(f"ContextSpan.window = {self.window} must be >= 1.")
        if len(self.history) != 3 or min(self.history) < 1:
            raise ValueError(f"ContextSpan.history = {self.history} must be three positive ints (4x, 2x, 1x).")
        if self.temporal_factor < 1:
            raise ValueError(f"ContextSpan.temporal_factor = {self.temporal_factor} must be >= 1.")

    @property
    def section_frames(self) -> int:
        return self.window * self.temporal_factor

    @property
    def history_frames(self) -> int:
        return sum(self.history) * self.temporal_factor

    @property
    def frames(self) -> int:
        """History plus window: an absence longer than this is beyond the context."""
        return self.history_frames + self.section_frames

    def kind(self, hidden_frames: int) -> str:
        """``short``, ``long`` or ``partial`` for an absence of ``hidden_frames`` (see the class docstring)."""
        if hidden_frames < self.history_frames:
            return "short"
        return "long" if hidden_frames > self.frames else "partial"


def _memory_beats(context: ContextSpan) -> tuple[float, float, float, float]:
    """Frames of each beat of the memory world's script: ``move`` (between a resting and a hiding
    place), ``rest`` (in view), ``short`` and ``long`` (wholly hidden).

    A sprite is under half visible for at most ~60 % of a move (leaving from next to the frame's edge:
    it is half visible when its centre crosses the edge, 65 % of the way, which smoothstep easing
    reaches at 40 % of the time), so a short absence lasts under ``short + 1.2 move = 0.85`` of the
    history whatever the section length; ``rest`` keeps the sprite in view for a section and more;
    ``long`` alone already exceeds the context span.
    """
    move = max(2.0, context.history_frames / 2)
    return move, context.section_frames + 2.0, context.history_frames / 4, context.frames + 2.0


def memory_min_seconds(context: ContextSpan, fps: int) -> float:
    """Shortest video (``min_seconds``) of the memory world: its script fits up to the last frame."""
    move, rest, short, long = _memory_beats(context)
    return (math.ceil(5 * move + 3 * rest + short + long) + 1) / fps


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
    world: Literal["default", "memory"] = "default"
    """``default``: start sprites leave and hide for a few seconds. ``memory``: a sprite enters after the
    start frame, hides briefly (a control) and then beyond ``context``, and returns (module docstring);
    its videos last at least :func:`memory_min_seconds` (:meth:`memory` picks the durations)."""
    context: ContextSpan = ContextSpan()
    """The model's context the memory world's absences are measured against (unused by ``default``)."""

    @classmethod
    def memory(cls, **overrides: Any) -> ToyWorldConfig:
        """The memory world with videos from its shortest length up to 25 % longer; any field overridden by keyword."""
        shortest = memory_min_seconds(overrides.get("context", ContextSpan()), overrides.get("fps", cls.fps))
        return cls(**{"world": "memory", "min_seconds": shortest, "max_seconds": 1.25 * shortest, **overrides})

    def __post_init__(self) -> None:
        if self.world not in ("default", "memory"):
            raise ValueError(f"ToyWorldConfig.world = {self.world!r} must be 'default' or 'memory'.")
        checks = [
            ("num_videos", self.num_videos >= 1, "must be >= 1"),
            ("min_seconds", self.min_seconds >= 2.0, "must be >= 2 (room to leave and come back)"),
            ("max_seconds", self.max_seconds >= self.min_seconds, "must be >= min_seconds"),
            ("fps", self.fps >= 1, "must be >= 1"),
            ("size", self.size >= 32 and self.size % 16 == 0, "must be a multiple of 16 and >= 32"),
            ("min_sprites", self.min_sprites >= 2, "must be >= 2"),
            ("max_sprites", self.min_sprites <= self.max_sprites <= len(COLOURS), "must be in [min_sprites, 8]"),
        ]
        if self.world == "memory":
            shortest = memory_min_seconds(self.context, self.fps)
            checks.append(("min_seconds", self.min_seconds >= shortest,
                           (f"is too short for the memory world: its script (enter, rest, short absence, rest, "
                           f"absence beyond the {self.context.frames}-frame context, return, rest) needs "
                           f">= {shortest:g} s at {self.fps} fps; set min_seconds >= {shortest:g} or use "
                           "ToyWorldConfig.memory()")))
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
    """``leaves`` (the frame, then returns), ``hides`` (behind the pillar, then returns), ``wanders``, or, in the
    memory world, ``returns`` (enters after the start frame, hides briefly, hides beyond the context, returns)."""


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
    context: ContextSpan | None = None
    """The span the truth labels absences against (the memory world); None: no absence labels, so the
    default world's truth stays what it always was."""

    @property
    def caption(self) -> str:
        return self.describe()

    def describe(self, start_only: bool = False) -> str:
        """The caption; ``start_only`` names only the sprites the start frame shows (the memory world's late
        sprite, role ``returns``, is left out: its benchmark prompt must not give its identity away)."""
        sprites = [s for s in self.sprites if not (start_only and s.role == "returns")]
        names = [f"a {s.colour} {s.shape}" for s in sprites]
        subjects = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
        verb = "move" if len(names) > 1 else "moves"
        pan = "right" if self.pan_px_per_s > 0 else "left"
        pillar = "; a grey pillar stands in the frame" if self.occluder else ""
        return f"{subjects} {verb} over a {self.background} textured field while the camera pans {pan}{pillar}."

    @property
    def structured_caption(self) -> dict[str, Any]:
        return {
            "subjects": [{"shape": s.shape, "colour": s.colour} for s in self.sprites],
            "background": self.background,
            "camera": "pan right" if self.pan_px_per_s > 0 else "pan left",
            "occluder": "grey pillar" if self.occluder else None,
        }


@dataclass
class _Stage:
    """Where a video's sprites may go: the frame, the pillar, and the video's random stream."""

    rng: np.random.Generator
    size: int
    radius: int
    occluder: tuple[int, int] | None

    def inside(self) -> tuple[float, float]:
        lo, hi = self.radius + 1, self.size - self.radius - 2
        return float(self.rng.uniform(lo, hi)), float(self.rng.uniform(lo, hi))

    def spot(self, avoid: list[tuple[float, float]]) -> tuple[float, float]:
        """A resting place clear of the pillar and at least a sprite apart from ``avoid``."""
        r, occluder = self.radius, self.occluder
        x, y = self.inside()
        for _ in range(200):
            clear_of_pillar = occluder is None or x + r < occluder[0] - 1 or x - r > occluder[1]
            if clear_of_pillar and all(abs(x - ax) + abs(y - ay) > 3 * r for ax, ay in avoid):
                break
            x, y = self.inside()
        return x, y

    def beside(self, side: int) -> tuple[float, float]:
        """A resting place on one side (-1 left, 1 right) of the pillar (of the frame's middle without
        one), where every shape is wholly in view, a pixel clear of the pillar and of the frame's border
        (so the truth metrics see it whole); leaving the frame on that side never passes behind the pillar."""
        r, size, reach = self.radius, self.size, SHAPE_REACH * self.radius
        x0, x1 = self.occluder or (size // 2, size // 2)
        gap = 1 if self.occluder else 0
        lo, hi = (reach + 1, x0 - gap - reach) if side < 0 else (x1 + reach + gap, size - reach - 2)
        return float(self.rng.uniform(lo, hi)), float(self.rng.uniform(r + 1, size - r - 2))

    def off_frame(self, side: int) -> float:
        """A centre column just wholly outside the frame on ``side``."""
        return float(self.size + 2 * self.radius + 2) if side > 0 else -float(2 * self.radius + 2)


def sample_video_spec(config: ToyWorldConfig, index: int) -> VideoSpec:
    """The scripted scene of video ``index`` (deterministic in ``(config.seed, index)``)."""
    rng = np.random.default_rng([config.seed, index])
    size, fps = config.size, config.fps
    seconds = float(rng.uniform(config.min_seconds, config.max_seconds))
    num_frames = max(2, round(seconds * fps))
    duration = (num_frames - 1) / fps  # time of the last frame: every keyframe is rendered
    count = int(rng.integers(config.min_sprites, config.max_sprites + 1))
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    shapes = rng.choice(SHAPES, size=count, replace=count > len(SHAPES))
    radius = max(3, size // 16)  # sprite extent ~ size / 8
    pillar_w = int(2.5 * radius) + 2  # wider than any sprite: one hides completely behind it
    pillar_x = int(rng.integers(size // 3, 2 * size // 3 - pillar_w + 1))
    occluder = (pillar_x, pillar_x + pillar_w) if config.occluder else None
    stage = _Stage(rng, size, radius, occluder)
    if config.world == "memory":
        paths = _memory_paths(stage, config.context, count, duration, fps)
    else:
        paths = _default_paths(stage, count, duration)
    sprites = [SpriteSpec(str(shapes[k]), str(colours[k]), radius, keys, role) for k, (keys, role) in enumerate(paths)]
    return VideoSpec(
        id=f"toy_{index:04d}", num_frames=num_frames, fps=fps, size=size,
        background=str(rng.choice(list(BACKGROUNDS))), texture_seed=int(rng.integers(2**31)),
        pan_px_per_s=float(rng.choice([-1, 1]) * rng.uniform(1.0, 3.0)), occluder=occluder, sprites=sprites,
        context=config.context if config.world == "memory" else None,
    )


Keyframes = list[tuple[float, float, float]]


def _default_paths(stage: _Stage, count: int, duration: float) -> list[tuple[Keyframes, str]]:
    """Keyframes and role of each sprite of the default world: one leaves the frame, one hides behind the pillar."""
    rng, size, radius, occluder = stage.rng, stage.size, stage.radius, stage.occluder
    # Event windows scale with the video and always fit in it: travel away during the first
    # ~20 %, stay away for max(2.25 s, 30 %) (capped at 45 % so short videos keep their return),
    # travel back in <= 1 s and rest visibly until the end.
    gone = min(max(2.25, 0.3 * duration), 0.45 * duration)
    back = min(1.0, 0.15 * duration)
    paths, rests = [], []
    for k in range(count):
        role = "leaves" if k == 0 else "hides" if k == 1 and occluder else "wanders"
        a = stage.spot(rests)
        rests.append(a)
        b = stage.spot(rests)
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
            keys = [(float(t), *stage.inside()) for t in np.linspace(0.0, duration, 4)]
        paths.append((keys, role))
    return paths


def _memory_paths(
    stage: _Stage, context: ContextSpan, count: int, duration: float, fps: int
) -> list[tuple[Keyframes, str]]:
    """Keyframes and role of each sprite of the memory world: sprite 0 ``returns`` (module docstring), the
    others wander.

    Sprite 0 starts wholly off frame, enters to rest in view, hides (behind the pillar or off frame,
    each drawn at random) for a ``short`` stay, rests in view, hides for a ``long`` stay and rests in
    view until the end; spare time lengthens the three rests equally. It leaves the frame only on the
    side it rests on, so no move crosses the pillar (which would add an absence of its own). The
    wanderers pass between four keyframes like the default world's.
    """
    rng, radius, occluder = stage.rng, stage.radius, stage.occluder
    move, rest, short, long = (beat / fps for beat in _memory_beats(context))
    rest += (duration - (5 * move + 3 * rest + short + long)) / 3
    assert rest * fps >= context.section_frames, "ToyWorldConfig validates min_seconds against the script"

    def y() -> float:
        return float(rng.uniform(radius + 1, stage.size - radius - 2))

    side = int(rng.choice([-1, 1]))
    here = stage.beside(side)
    keys, t = [(0.0, stage.off_frame(side), y()), (move, *here)], move
    for stay in (short, long):
        t += rest
        keys.append((t, *here))
        if occluder is not None and rng.random() < 0.5:
            hide, side = ((occluder[0] + occluder[1] - 1) / 2, y()), int(rng.choice([-1, 1]))
        else:
            hide = (stage.off_frame(side), y())
        keys += [(t + move, *hide), (t + move + stay, *hide)]
        t += 2 * move + stay
        here = stage.beside(side)
        keys.append((t, *here))
    keys.append((duration, *here))
    # Wanderers start and end in view, clear of the pillar, of each other and of sprite 0's last rest (it is
    # drawn over them), so the start frame shows them all and the identity score can find them all at the end.
    firsts, lasts, wanderers = [], [here], []
    for _ in range(count - 1):
        first, last = stage.spot(firsts), stage.spot(lasts)
        firsts.append(first)
        lasts.append(last)
        t_mid = np.linspace(0.0, duration, 4)[1:3]
        wanderers.append(([(0.0, *first), *[(float(t), *stage.inside()) for t in t_mid], (duration, *last)], "wanders"))
    return [(keys, "returns"), *wanderers]


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

    With a ``spec.context`` (the memory world) also ``context`` (its sizes in frames) and
    ``absences``: every run of frames in which a scripted sprite (any role but ``wanders``) is not
    visible between two visible runs, as ``{"sprite": k, "hidden": [b, c], "back": [c, e], "frames":
    c - b, "kind": short | long | partial (ContextSpan.kind), "where": pillar | off_frame}`` --
    hidden in frames ``[b, c)``, visible again in ``[c, e)``.
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
    if spec.context is not None:
        c = spec.context
        truth["context"] = {"window": c.window, "history": list(c.history), "temporal_factor": c.temporal_factor,
                            "section_frames": c.section_frames, "history_frames": c.history_frames,
                            "span_frames": c.frames}
        truth["absences"] = _absences(spec, sprites)
    return frames, truth


def _absences(spec: VideoSpec, sprites: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The absence labels of :func:`render_video`, read off the rendered visibility (not the script)."""
    assert spec.context is not None
    absences = []
    for k, (sp, truth) in enumerate(zip(spec.sprites, sprites)):
        if sp.role == "wanders":  # incidental occlusions are not what the world tests
            continue
        visible = np.array(truth["visible"])
        bounds = [0, *(np.flatnonzero(np.diff(visible.astype(np.int8))) + 1).tolist(), len(visible)]
        runs = list(itertools.pairwise(bounds))  # alternately visible and hidden
        for (_, b), (_, c), (_, e) in zip(runs, runs[1:], runs[2:]):
            if visible[b]:
                continue
            x, y = np.array(truth["x"][b:c]), np.array(truth["y"][b:c])
            outside = (x < 0) | (x >= spec.size) | (y < 0) | (y >= spec.size)
            absences.append({"sprite": k, "hidden": [b, c], "back": [c, e], "frames": c - b,
                             "kind": spec.context.kind(c - b), "where": "off_frame" if outside.any() else "pillar"})
    return absences


def _stamp(config: ToyWorldConfig) -> dict[str, Any]:
    """The config as its JSON stamp reads back (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


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
    wanted = _stamp(config)
    if stamp.is_file():
        try:
            # A stamp written before a field existed was made with that field's default.
            existing = {**_stamp(ToyWorldConfig()), **json.loads(stamp.read_text())}
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
