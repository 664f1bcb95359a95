"""The ``metal_strip`` category: a portrait strip of brushed metal with the KSDD2 aspect of seed 001
(224 wide x 632 tall), so at a short side of ``size`` it is ``size`` wide and about 2.8x taller.

Brushed-metal streaks along the long axis, fine grain and lighting bands; its defects are bright
scratches, dark spots and whitish contamination marks (seed 001: "white marks").
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .defects import FAINT_SPOT, SPOT, contamination_recipe, scratch_recipe
from .draw import CategorySpec, Shape, grid, lighting

__all__ = ["KSDD2_ASPECT", "strip_shape", "metal_strip", "metal_strip_v3", "CATEGORIES", "CATEGORIES_V3"]

KSDD2_ASPECT = 632 / 224


def strip_shape(size: int) -> Shape:
    """(H, W) of a strip whose short side (the width) is ``size``: H = size * 632 / 224 rounded to a
    multiple of 8 (seed 001's KSDD2 aspect)."""
    return int(8 * round(size * KSDD2_ASPECT / 8)), int(size)


def metal_strip(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Brushed metal: streaks along the long axis, fine grain, lighting bands."""
    h, w = shape
    s = w / 64
    coarse = rng.normal(0, 1, (h // 8, w))  # streaks vary slowly along the strip: draw them 8x coarser
    coarse = ndimage.gaussian_filter(coarse, sigma=(0.015 * h, 0.5 * s), mode="wrap")
    streaks = ndimage.zoom(coarse, (h / coarse.shape[0], 1), order=1, mode="nearest")
    streaks /= streaks.std() + 1e-6
    grain = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=0.5 * s)
    yy, xx = grid(shape)
    light = 1 + 0.12 * np.sin(np.pi * yy / h * rng.uniform(0.6, 1.6) + rng.uniform(0, 2 * np.pi))
    light *= 1 - 0.15 * ((xx - w / 2) / w) ** 2 * 4
    grey = (rng.uniform(120, 150) + 7 * streaks + 4 * grain) * light
    tint = np.array([1.0, 0.96, 0.90], np.float32)
    return (grey[..., None] * tint).astype(np.float32)


CATEGORIES: dict[str, CategorySpec] = {
    "metal_strip": CategorySpec(metal_strip, {
        "scratch": scratch_recipe(bright=True),
        "spot": SPOT,
        "contamination": contamination_recipe((235, 232, 220)),  # whitish marks
    }, shape=strip_shape),
}


def metal_strip_v3(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Benchmark version 3's strip: :func:`metal_strip` under varied illumination (gain, tilt, vignetting) and
    sensor noise (:func:`lib.data.draw.lighting`)."""
    return lighting(rng, metal_strip(rng, shape), gain=(0.85, 1.15), tilt=0.15, vignette=(0.0, 0.3), noise=(0.5, 3.0))


CATEGORIES_V3: dict[str, CategorySpec] = {
    "metal_strip": CategorySpec(metal_strip_v3, {
        "scratch": scratch_recipe(bright=True, gain=(20, 40)),
        "spot": FAINT_SPOT,
        "contamination": contamination_recipe((235, 232, 220), alpha=0.5),  # whitish marks, translucent
    }, shape=strip_shape),
}
