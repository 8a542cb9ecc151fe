"""The toy world's scene vocabulary: sprite colours and shapes, background tones, the pillar grey.

Below both the generator (:mod:`lvg.data.toy_world`) and its truth metrics
(:mod:`lvg.metrics.toy_world`), so the judge of generated videos shares the scene's definitions
without importing the data stage. Offsets and radii are in frame pixels.
"""

from __future__ import annotations

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (240, 220, 40),
    "magenta": (220, 50, 220), "cyan": (40, 220, 230), "white": (245, 245, 245), "orange": (250, 140, 20),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"sand": (170, 150, 110), "slate": (90, 100, 120), "moss": (80, 110, 70)}
PILLAR_RGB = (128, 128, 128)
TEXTURE_RANGE = (0.6, 1.0)
"""The background field is ``base * (lo + (hi - lo) * noise)``, noise in [0, 1]: muted tones that never
equal a sprite colour, so a pixel's colour says whether a sprite is drawn there."""


SHAPE_REACH = 1.08
"""Farthest a shape's pixels reach sideways from its centre, in radii (the triangle's base: 0.6 x 1.8)."""


def texture_grid(size: int) -> int:
    """Cell of the background's value-noise grid in pixels for frames of ``size`` pixels."""
    return max(4, size // 8)


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: int) -> np.ndarray:
    """Pixels of a shape of radius ``r`` whose centres lie at offsets (dx, dy) from the shape's centre.

    Every shape contains the disc of radius 1 around its centre, so the pixel nearest the centre
    always shows the sprite (what the ground-truth tests rely on).
    """
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
