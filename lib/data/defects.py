"""Surface defects shared by the ``metal_strip`` and texture categories: scratch, crack, hole,
spot, stain, colour shift and contamination.

Each recipe is geometric (random polylines, branching random walks, Fourier-perturbed discs and
blobs). None uses Perlin-noise masks or DTD-texture blending, the pseudo-anomalies DRAEM and
DiffusionAD train on (seed 003 §IV-D). Every mask pixel changes by at least ``MIN_DELTA`` = 6
grey levels. The family modules pick the recipes they need (``SCRATCH``, ``contamination_recipe``...).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .draw import Defect, Recipe, blob, grid, inside, path_distance, walk

__all__ = ["MIN_DELTA", "scratch", "crack", "hole", "spot", "stain", "color_shift", "contamination",
           "scratch_recipe", "contamination_recipe", "CRACK", "HOLE", "SPOT", "STAIN", "COLOR_SHIFT"]

MIN_DELTA = 6


def scratch(rng: np.random.Generator, img: np.ndarray, bright: bool | None = None) -> Defect:
    """Thin random polyline, brightened (``bright=True``), darkened (``False``) or either (``None``)."""
    shape = img.shape[:2]
    s = min(shape)
    start = inside(rng, shape, 0.15)
    n = rng.integers(3, 7)
    seg = rng.uniform(0.12, 0.25) * s
    pts = walk(rng, start, rng.uniform(0, 2 * np.pi), n - 1, seg, 0.35)
    width = max(1.0, s / 64 * rng.uniform(0.8, 1.6))
    mask = path_distance(shape, pts) <= (width - 1) / 2 + 0.01
    bright = rng.random() < 0.5 if bright is None else bright
    target = img + (rng.uniform(50, 90) if bright else -rng.uniform(50, 80))
    return Defect(mask, target, MIN_DELTA)


def crack(rng: np.random.Generator, img: np.ndarray) -> Defect:
    """Branching dark crack: a persistent random walk that spawns side branches."""
    shape = img.shape[:2]
    s = min(shape)
    step = max(1.0, s / 64)
    trunk = walk(rng, inside(rng, shape, 0.2), rng.uniform(0, 2 * np.pi), int(0.5 * s / step), step, 0.3)
    branches = []
    for i in range(5, len(trunk) - 5):
        if rng.random() < 0.05:
            y0, x0 = trunk[i]
            y1, x1 = trunk[i + 1]
            a = np.arctan2(y1 - y0, x1 - x0) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
            branches.append(walk(rng, trunk[i], a, int(rng.uniform(0.1, 0.25) * s / step), step, 0.35))
    mask = path_distance(shape, trunk) <= 0.5 * step
    core = mask.copy()
    for b in branches:
        mask |= path_distance(shape, b) <= 0.25 * step
    target = img * rng.uniform(0.25, 0.45)
    target[core] *= 0.7
    return Defect(mask, target, MIN_DELTA)


def hole(rng: np.random.Generator, img: np.ndarray) -> Defect:
    """Hole: a Fourier-perturbed disc filled dark, its rim lit on one side."""
    shape = img.shape[:2]
    r = rng.uniform(0.06, 0.12) * min(shape)
    cy, cx = inside(rng, shape, 0.2)
    d = blob(rng, shape, cy, cx, r)
    yy, xx = grid(shape)
    a = rng.uniform(0, 2 * np.pi)
    side = ((yy - cy) * np.sin(a) + (xx - cx) * np.cos(a)) / r
    rim = np.clip(d - 0.6, 0, 0.4) / 0.4 * np.clip(side, 0, 1)
    fill = rng.uniform(12, 30) + 60 * rim
    return Defect(d <= 1, img * 0.1 + fill[..., None], MIN_DELTA)


def spot(rng: np.random.Generator, img: np.ndarray) -> Defect:
    """Spot (KSDD2-like): a dark rounded blotch with a soft radial profile."""
    shape = img.shape[:2]
    r = rng.uniform(0.06, 0.14) * min(shape)
    d = blob(rng, shape, *inside(rng, shape, 0.2), r)
    alpha = 0.4 + 0.6 * np.clip(1 - d, 0, 1)
    target = img * (1 - alpha * (1 - rng.uniform(0.45, 0.7)))[..., None]
    return Defect(d <= 1, target, MIN_DELTA)


def _tinted_blob(rng, img, tint, gain) -> Defect:
    shape = img.shape[:2]
    r = rng.uniform(0.12, 0.22) * min(shape)
    d = blob(rng, shape, *inside(rng, shape, 0.25), r, wobble=0.35)
    alpha = (0.35 + 0.65 * np.clip((1 - d) * 2.5, 0, 1))[..., None]
    tinted = img * np.asarray(tint, np.float32) * gain
    return Defect(d <= 1, img * (1 - alpha) + tinted * alpha, MIN_DELTA)


def stain(rng: np.random.Generator, img: np.ndarray) -> Defect:
    """Stain: a smooth brown-dark tinted blob (soft alpha only inside the mask)."""
    return _tinted_blob(rng, img, (0.8, 0.62, 0.42), rng.uniform(0.55, 0.8))


def color_shift(rng: np.random.Generator, img: np.ndarray) -> Defect:
    """Colour shift: a smooth yellow-brown tinted blob (a dry patch)."""
    return _tinted_blob(rng, img, (1.45, 1.05, 0.55), rng.uniform(0.9, 1.1))


def contamination(rng: np.random.Generator, img: np.ndarray, colour: tuple[float, float, float]) -> Defect:
    """Foreign particles: a cluster of 3-8 small Fourier blobs of a foreign ``colour`` (RGB 0..255),
    plus (half of the time) a thin curved fibre."""
    shape = img.shape[:2]
    s = min(shape)
    cy, cx = inside(rng, shape, 0.2)
    mask = np.zeros(shape, bool)
    for _ in range(rng.integers(3, 9)):
        py, px = cy + rng.normal(0, 0.07 * s), cx + rng.normal(0, 0.07 * s)
        mask |= blob(rng, shape, py, px, rng.uniform(0.015, 0.045) * s + 0.6, wobble=0.4) <= 1
    if rng.random() < 0.5:
        fibre = walk(rng, (cy, cx), rng.uniform(0, 2 * np.pi), 12, 0.03 * s, 0.4)
        mask |= path_distance(shape, fibre) <= 0.01 + 0.3 * max(0.0, s / 64 - 1)
    shade = rng.uniform(0.8, 1.1, shape)[..., None]
    target = np.asarray(colour, np.float32) * shade
    return Defect(mask, np.broadcast_to(target, img.shape).copy(), MIN_DELTA)


def scratch_recipe(bright: bool | None = None) -> Recipe:
    """The scratch recipe, always bright (``True``, e.g. on metal), always dark or either (``None``)."""
    return Recipe(partial(scratch, bright=bright),
                  "thin random polyline (3-6 vertices, 1-2 px at 64 px), brightened or darkened")


def contamination_recipe(colour: tuple[float, float, float]) -> Recipe:
    """The contamination recipe with a category's foreign ``colour`` (RGB 0..255)."""
    return Recipe(partial(contamination, colour=colour),
                  "cluster of 3-8 foreign-coloured particles plus an optional thin fibre")


CRACK = Recipe(crack, "branching persistent random walk, darkened to 25-45 % with a darker core")
HOLE = Recipe(hole, "Fourier-perturbed disc filled dark with a lit rim on one side")
SPOT = Recipe(spot, "Fourier-perturbed disc darkened to 45-70 % with a soft radial profile")
STAIN = Recipe(stain, "Fourier-perturbed blob tinted brown-dark with a soft alpha inside the mask")
COLOR_SHIFT = Recipe(color_shift, "Fourier-perturbed blob tinted yellow-brown (dry patch) with a soft alpha")
