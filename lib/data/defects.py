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
           "scratch_recipe", "contamination_recipe", "CRACK", "HOLE", "SPOT", "STAIN", "COLOR_SHIFT",
           "FAINT_CRACK", "SHALLOW_HOLE", "FAINT_STAIN", "FAINT_COLOR_SHIFT", "FAINT_SPOT"]

MIN_DELTA = 6


def scratch(rng: np.random.Generator, img: np.ndarray, bright: bool | None = None,
            gain: tuple[float, float] | None = None) -> Defect:
    """Thin random polyline, brightened (``bright=True``), darkened (``False``) or either (``None``) by
    ``gain`` grey levels (default 50-90 brighter, 50-80 darker)."""
    shape = img.shape[:2]
    s = min(shape)
    start = inside(rng, shape, 0.15)
    n = rng.integers(3, 7)
    seg = rng.uniform(0.12, 0.25) * s
    pts = walk(rng, start, rng.uniform(0, 2 * np.pi), n - 1, seg, 0.35)
    width = max(1.0, s / 64 * rng.uniform(0.8, 1.6))
    mask = path_distance(shape, pts) <= (width - 1) / 2 + 0.01
    bright = rng.random() < 0.5 if bright is None else bright
    up, down = (gain, gain) if gain is not None else ((50, 90), (50, 80))
    target = img + (rng.uniform(*up) if bright else -rng.uniform(*down))
    return Defect(mask, target, MIN_DELTA)


def crack(rng: np.random.Generator, img: np.ndarray, dark: tuple[float, float] = (0.25, 0.45)) -> Defect:
    """Branching dark crack: a persistent random walk that spawns side branches, darkened to ``dark`` of the
    image (a darker core: 0.7 of that)."""
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
    target = img * rng.uniform(*dark)
    target[core] *= 0.7
    return Defect(mask, target, MIN_DELTA)


def hole(rng: np.random.Generator, img: np.ndarray, depth: float = 0.9) -> Defect:
    """Hole: a Fourier-perturbed disc filled dark, its rim lit on one side: img (1 - depth) + fill depth / 0.9."""
    shape = img.shape[:2]
    r = rng.uniform(0.06, 0.12) * min(shape)
    cy, cx = inside(rng, shape, 0.2)
    d = blob(rng, shape, cy, cx, r)
    yy, xx = grid(shape)
    a = rng.uniform(0, 2 * np.pi)
    side = ((yy - cy) * np.sin(a) + (xx - cx) * np.cos(a)) / r
    rim = np.clip(d - 0.6, 0, 0.4) / 0.4 * np.clip(side, 0, 1)
    fill = rng.uniform(12, 30) + 60 * rim
    kept = img * 0.1 if depth == 0.9 else img * (1 - depth)  # (the default keeps the original bytes)
    return Defect(d <= 1, kept + fill[..., None] * (depth / 0.9), MIN_DELTA)


def spot(rng: np.random.Generator, img: np.ndarray, radius: tuple[float, float] = (0.06, 0.14),
         dark: tuple[float, float] = (0.45, 0.7)) -> Defect:
    """Spot (KSDD2-like): a dark rounded blotch (``radius``: fraction of the short side) with a soft radial
    profile, darkened to ``dark`` at its centre."""
    shape = img.shape[:2]
    r = rng.uniform(*radius) * min(shape)
    d = blob(rng, shape, *inside(rng, shape, 0.2), r)
    alpha = 0.4 + 0.6 * np.clip(1 - d, 0, 1)
    target = img * (1 - alpha * (1 - rng.uniform(*dark)))[..., None]
    return Defect(d <= 1, target, MIN_DELTA)


def _tinted_blob(rng, img, tint, gain) -> Defect:
    shape = img.shape[:2]
    r = rng.uniform(0.12, 0.22) * min(shape)
    d = blob(rng, shape, *inside(rng, shape, 0.25), r, wobble=0.35)
    alpha = (0.35 + 0.65 * np.clip((1 - d) * 2.5, 0, 1))[..., None]
    tinted = img * np.asarray(tint, np.float32) * gain
    return Defect(d <= 1, img * (1 - alpha) + tinted * alpha, MIN_DELTA)


def _weaker(tint, strength: float) -> tuple[float, ...]:
    return tuple(tint) if strength == 1 else tuple(1 + strength * (c - 1) for c in tint)


def stain(rng: np.random.Generator, img: np.ndarray, strength: float = 1.0) -> Defect:
    """Stain: a smooth brown-dark tinted blob (soft alpha only inside the mask); ``strength`` < 1 moves the
    tint and the darkening towards none (a faint stain)."""
    g = rng.uniform(0.55, 0.8)
    return _tinted_blob(rng, img, _weaker((0.8, 0.62, 0.42), strength), g if strength == 1 else 1 + strength * (g - 1))


def color_shift(rng: np.random.Generator, img: np.ndarray, strength: float = 1.0) -> Defect:
    """Colour shift: a smooth yellow-brown tinted blob (a dry patch); ``strength`` < 1: a fainter tint."""
    return _tinted_blob(rng, img, _weaker((1.45, 1.05, 0.55), strength), rng.uniform(0.9, 1.1))


def contamination(rng: np.random.Generator, img: np.ndarray, colour: tuple[float, float, float],
                  alpha: float = 1.0) -> Defect:
    """Foreign particles: a cluster of 3-8 small Fourier blobs of a foreign ``colour`` (RGB 0..255),
    plus (half of the time) a thin curved fibre; ``alpha`` < 1: translucent, img (1 - alpha) + colour alpha."""
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
    target = np.broadcast_to(target, img.shape).copy()
    return Defect(mask, target if alpha == 1 else img * (1 - alpha) + target * alpha, MIN_DELTA)


def scratch_recipe(bright: bool | None = None, gain: tuple[float, float] | None = None) -> Recipe:
    """The scratch recipe, always bright (``True``, e.g. on metal), always dark or either (``None``), by ``gain``
    grey levels (None: 50-90)."""
    how = "brightened" if bright else "darkened" if bright is False else "brightened or darkened"
    by = "" if gain is None else f" by {gain[0]:g}-{gain[1]:g} grey levels"
    return Recipe(partial(scratch, bright=bright, gain=gain),
                  f"thin random polyline (3-6 vertices, 1-2 px at 64 px), {how}{by}")


def contamination_recipe(colour: tuple[float, float, float], alpha: float = 1.0) -> Recipe:
    """The contamination recipe with a category's foreign ``colour`` (RGB 0..255), translucent when ``alpha`` < 1."""
    return Recipe(partial(contamination, colour=colour, alpha=alpha),
                  "cluster of 3-8 foreign-coloured particles plus an optional thin fibre"
                  + ("" if alpha == 1 else f", translucent (alpha {alpha:g})"))


CRACK = Recipe(crack, "branching persistent random walk, darkened to 25-45 % with a darker core")
FAINT_CRACK = Recipe(partial(crack, dark=(0.55, 0.75)), "branching persistent random walk, darkened to 55-75 % "
                     "with a darker core (faint)")
SHALLOW_HOLE = Recipe(partial(hole, depth=0.5), "Fourier-perturbed disc, half filled dark with a lit rim (shallow)")
FAINT_STAIN = Recipe(partial(stain, strength=0.45), "Fourier-perturbed blob, faintly tinted brown-dark "
                     "(45 % of the stain's tint)")
FAINT_COLOR_SHIFT = Recipe(partial(color_shift, strength=0.45), "Fourier-perturbed blob, faintly tinted "
                           "yellow-brown (45 % of the colour shift's tint)")
FAINT_SPOT = Recipe(partial(spot, dark=(0.7, 0.85)), "Fourier-perturbed disc darkened to 70-85 % with a soft "
                    "radial profile (faint)")
HOLE = Recipe(hole, "Fourier-perturbed disc filled dark with a lit rim on one side")
SPOT = Recipe(spot, "Fourier-perturbed disc darkened to 45-70 % with a soft radial profile")
STAIN = Recipe(stain, "Fourier-perturbed blob tinted brown-dark with a soft alpha inside the mask")
COLOR_SHIFT = Recipe(color_shift, "Fourier-perturbed blob tinted yellow-brown (dry patch) with a soft alpha")
