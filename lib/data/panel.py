"""The ``display_panel`` category: a near-uniform grey LCD panel with the MURA defect types of
seed 000 (Fig. 1 and §4.1).

The background has faint sensor noise, a brightness tilt, vignetting and a faint pixel grid. The
five MURA types are low contrast with blurry contours, as the paper describes: white spot, black
spot, particle spot (a bright/dark dot in the centre of a dark/white mura), seal gap (a half spot
on the border) and shapeless mura. Every mask pixel changes by at least ``MIN_DELTA_MURA`` = 2
grey levels.
"""

from __future__ import annotations

import numpy as np

from functools import partial

from scipy import ndimage

from .draw import CategorySpec, Defect, Recipe, Shape, blob, grid, inside, lighting

__all__ = ["MIN_DELTA_MURA", "display_panel", "display_panel_v3", "CATEGORIES", "CATEGORIES_V3"]

MIN_DELTA_MURA = 2


def display_panel(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Near-uniform grey panel: tilt, vignetting, a faint pixel grid, sensor noise."""
    h, w = shape
    yy, xx = grid(shape)
    u, v = (xx - w / 2) / w, (yy - h / 2) / h
    base = rng.uniform(105, 150)
    g = rng.uniform(-6, 6, size=2)
    img = base + g[0] * 2 * u + g[1] * 2 * v - rng.uniform(4, 10) * (u ** 2 + v ** 2) * 2
    period = max(3, min(shape) // 16)
    pixel_grid = ((yy % period) == 0) | ((xx % period) == 0)
    img = img - 1.2 * pixel_grid + rng.normal(0, 1.1, shape)
    return np.repeat(img[..., None], 3, axis=2).astype(np.float32)


def _mura_disc(rng, img, cy, cx, r, sign, amp) -> Defect:
    d = blob(rng, img.shape[:2], cy, cx, r, wobble=0.08)
    profile = np.clip(1 - d ** 2, 0, 1) ** 0.7
    return Defect(d <= 1, img + (sign * amp * profile)[..., None], MIN_DELTA_MURA)


def _mura_spot(rng, img, sign, amp) -> Defect:
    """White/black spot of seed 000 Fig. 1: a filled low-contrast disc, blurry contour."""
    r = rng.uniform(0.07, 0.14) * min(img.shape[:2])
    cy, cx = inside(rng, img.shape[:2], 0.2)
    return _mura_disc(rng, img, cy, cx, r, sign, rng.uniform(*amp))


def white_spot(rng: np.random.Generator, img: np.ndarray, amp: tuple[float, float] = (8, 16)) -> Defect:
    """White spot (seed 000 Fig. 1): a disc brightened by ``amp`` grey levels at its centre."""
    return _mura_spot(rng, img, +1, amp)


def black_spot(rng: np.random.Generator, img: np.ndarray, amp: tuple[float, float] = (8, 16)) -> Defect:
    """Black spot (seed 000 Fig. 1): a disc darkened by ``amp`` grey levels at its centre."""
    return _mura_spot(rng, img, -1, amp)


def particle_spot(rng: np.random.Generator, img: np.ndarray, amp: tuple[float, float] = (8, 14),
                  dot: tuple[float, float] = (40, 70)) -> Defect:
    """Particle spot (seed 000 Fig. 1): a bright/dark dot (``dot`` grey levels) in the centre of a dark/white
    mura (``amp``)."""
    sign = rng.choice([-1, 1])
    r = rng.uniform(0.09, 0.15) * min(img.shape[:2])
    cy, cx = inside(rng, img.shape[:2], 0.2)
    mask, target, min_delta = _mura_disc(rng, img, cy, cx, r, sign, rng.uniform(*amp))
    yy, xx = grid(img.shape[:2])
    centre = np.hypot(yy - cy, xx - cx) <= max(1.0, 0.22 * r)
    target[centre] = img[centre] - sign * rng.uniform(*dot)
    return Defect(mask, target, min_delta)


def seal_gap(rng: np.random.Generator, img: np.ndarray, amp: tuple[float, float] = (8, 16)) -> Defect:
    """Seal gap (seed 000 Fig. 1): a half spot centred on the border of the panel, +-``amp`` grey levels."""
    h, w = img.shape[:2]
    r = rng.uniform(0.12, 0.2) * min(h, w)
    side = rng.integers(0, 4)
    along = rng.uniform(r, (w if side < 2 else h) - r)
    cy, cx = [(-0.5, along), (h - 0.5, along), (along, -0.5), (along, w - 0.5)][side]
    return _mura_disc(rng, img, cy, cx, r, rng.choice([-1, 1]), rng.uniform(*amp))


def shapeless_mura(rng: np.random.Generator, img: np.ndarray, amp: tuple[float, float] = (6, 12)) -> Defect:
    """Shapeless mura (seed 000 §4.1): an irregular low-contrast blotch, the
    thresholded sum of a few anisotropic Gaussians."""
    shape = img.shape[:2]
    s = min(shape)
    yy, xx = grid(shape)
    cy, cx = inside(rng, shape, 0.3)
    field = np.zeros(shape, np.float32)
    for _ in range(rng.integers(3, 7)):
        gy, gx = cy + rng.normal(0, 0.1 * s), cx + rng.normal(0, 0.1 * s)
        sy, sx = rng.uniform(0.04, 0.12, size=2) * s
        a = rng.uniform(0, np.pi)
        u = (yy - gy) * np.cos(a) + (xx - gx) * np.sin(a)
        v = -(yy - gy) * np.sin(a) + (xx - gx) * np.cos(a)
        field += np.exp(-0.5 * ((u / sy) ** 2 + (v / sx) ** 2))
    tau = 0.35 * field.max()
    profile = (field - tau) / (field.max() - tau)
    target = img + (rng.choice([-1, 1]) * rng.uniform(*amp) * np.sqrt(np.clip(profile, 0, 1)))[..., None]
    return Defect(field > tau, target, MIN_DELTA_MURA)


CATEGORIES: dict[str, CategorySpec] = {
    "display_panel": CategorySpec(display_panel, {
        "white_spot": Recipe(white_spot, "MURA (seed 000 Fig. 1): disc, brightened by 8-16 grey levels "
                                         "with a smooth radial profile"),
        "black_spot": Recipe(black_spot, "MURA (seed 000 Fig. 1): disc, darkened by 8-16 grey levels "
                                         "with a smooth radial profile"),
        "particle_spot": Recipe(particle_spot, "MURA (seed 000 Fig. 1): dark/white low-contrast disc with "
                                               "a strong bright/dark dot at its centre"),
        "seal_gap": Recipe(seal_gap, "MURA (seed 000 Fig. 1): half spot, a disc centred on an image "
                                     "border, +-8-16 grey levels"),
        "shapeless_mura": Recipe(shapeless_mura, "MURA (seed 000 §4.1): thresholded sum of 3-6 anisotropic "
                                                 "Gaussians, +-6-12 grey levels"),
    }),
}


def display_panel_v3(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Benchmark version 3's panel: :func:`display_panel` plus the panel's own non-uniformity (a smooth random
    field of 1-3 grey levels, the normal "mura" a real panel has) and varied illumination and sensor noise
    (:func:`lib.data.draw.lighting`)."""
    img = display_panel(rng, shape)
    field = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=min(shape) / 10, mode="wrap")
    field *= rng.uniform(1, 3) / (np.abs(field).max() + 1e-6)
    return lighting(rng, img + field[..., None].astype(np.float32), gain=(0.8, 1.15), tilt=0.1,
                    vignette=(0.0, 0.2), noise=(0.3, 1.5))


# Version 3: subtle MURA, a few grey levels above the panel's own variation (seed 000's point)
CATEGORIES_V3: dict[str, CategorySpec] = {
    "display_panel": CategorySpec(display_panel_v3, {
        "white_spot": Recipe(partial(white_spot, amp=(3, 7)), "MURA (seed 000 Fig. 1): disc, brightened by 3-7 "
                                                             "grey levels with a smooth radial profile"),
        "black_spot": Recipe(partial(black_spot, amp=(3, 7)), "MURA (seed 000 Fig. 1): disc, darkened by 3-7 grey "
                                                             "levels with a smooth radial profile"),
        "particle_spot": Recipe(partial(particle_spot, amp=(3, 6), dot=(12, 25)),
                                "MURA (seed 000 Fig. 1): dark/white disc of 3-6 grey levels with a 12-25 grey-level "
                                "dot at its centre"),
        "seal_gap": Recipe(partial(seal_gap, amp=(3, 7)), "MURA (seed 000 Fig. 1): half spot, a disc centred on an "
                                                         "image border, +-3-7 grey levels"),
        "shapeless_mura": Recipe(partial(shapeless_mura, amp=(3, 6)), "MURA (seed 000 §4.1): thresholded sum of "
                                                                     "3-6 anisotropic Gaussians, +-3-6 grey levels"),
    }),
}
