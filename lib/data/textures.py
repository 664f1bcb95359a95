"""The texture categories: ``brick``, ``grass`` and ``gravel`` (random crops of scikit-image's
bundled texture photographs, tinted) and ``fabric`` (a procedural plain weave), with their
surface defects (crack, hole, stain, colour shift, scratch, contamination; see ``defects``).
"""

from __future__ import annotations

from functools import lru_cache, partial

import numpy as np
from PIL import Image

from .defects import (COLOR_SHIFT, CRACK, FAINT_COLOR_SHIFT, FAINT_CRACK, FAINT_STAIN, HOLE, SHALLOW_HOLE, STAIN,
                      contamination_recipe, scratch_recipe)
from .draw import CategorySpec, Shape, grid, lighting

__all__ = ["PHOTO_TINTS", "texture_crop", "fabric", "varied", "CATEGORIES", "CATEGORIES_V3"]

PHOTO_TINTS: dict[str, tuple[float, float, float]] = {
    "brick": (1.05, 0.72, 0.58),
    "grass": (0.62, 0.95, 0.48),
    "gravel": (1.0, 0.95, 0.86),
}


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def texture_crop(rng: np.random.Generator, shape: Shape, category: str,
                 side: tuple[float, float] = (0.34, 0.44), jitter: tuple[float, float] = (0.92, 1.08)) -> np.ndarray:
    """Random crop (position, flips, brightness jitter) of a scikit-image texture
    photograph (``skimage.data.brick/grass/gravel``), resized and tinted; ``side``: the crop's side as a
    fraction of the photo's (the texture's scale), ``jitter``: the brightness factor's range."""
    photo = _photo(category)
    side = int(rng.uniform(*side) * photo.shape[0])
    y0, x0 = rng.integers(0, photo.shape[0] - side + 1, size=2)
    crop = photo[y0:y0 + side, x0:x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    if category != "brick":  # keep the bricks along the photo's axis
        crop = np.rot90(crop, rng.integers(0, 4))
    small = Image.fromarray(np.ascontiguousarray(crop)).resize(shape[::-1], Image.BILINEAR)
    grey = np.asarray(small, np.float32) * rng.uniform(*jitter)
    return grey[..., None] * np.array(PHOTO_TINTS[category], np.float32)


def fabric(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Plain weave: alternating over/under threads, per-thread brightness, fibre noise."""
    h, w = shape
    yy, xx = grid(shape)
    p = max(3.0, min(shape) / 10)
    yy, xx = yy + rng.uniform(0, 2 * p), xx + rng.uniform(0, 2 * p)
    cell = (np.floor(yy / p) + np.floor(xx / p)) % 2
    across = 0.5 + 0.5 * np.cos(2 * np.pi * (yy % p) / p - np.pi)
    along = 0.5 + 0.5 * np.cos(2 * np.pi * (xx % p) / p - np.pi)
    weave = np.where(cell == 1, along, across)
    row = rng.normal(0, 0.06, int(h / p) + 3)[np.floor(yy / p).astype(int)]
    grey = 0.72 + 0.28 * weave + row + rng.normal(0, 0.04, shape)
    colour = np.array([0.33, 0.42, 0.62], np.float32) * 255 * rng.uniform(0.93, 1.07)
    return (grey[..., None] * colour).astype(np.float32)


def _photo_spec(name: str, defects: dict) -> CategorySpec:
    return CategorySpec(partial(texture_crop, category=name), defects)


CATEGORIES: dict[str, CategorySpec] = {
    "brick": _photo_spec("brick", {"crack": CRACK, "hole": HOLE, "stain": STAIN}),
    "grass": _photo_spec("grass", {"color_shift": COLOR_SHIFT,
                                   "contamination": contamination_recipe((225, 220, 235)),  # white/blue litter
                                   "hole": HOLE}),
    "gravel": _photo_spec("gravel", {"hole": HOLE, "stain": STAIN,
                                     "contamination": contamination_recipe((40, 90, 200))}),  # blue plastic bits
    "fabric": CategorySpec(fabric, {"hole": HOLE, "scratch": scratch_recipe(), "stain": STAIN,
                                    "contamination": contamination_recipe((30, 25, 20))}),  # dark hair / lint
}


def varied(background, **lighting_ranges):
    """Benchmark version 3's normal variation on top of a texture ``background``: varied illumination and
    sensor noise (:func:`lib.data.draw.lighting`)."""
    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        return lighting(rng, background(rng, shape), **lighting_ranges)
    return draw


def _photo_v3(name: str) -> partial:
    return partial(texture_crop, category=name, side=(0.28, 0.5), jitter=(0.85, 1.15))


_LIGHT = dict(gain=(0.85, 1.15), tilt=0.2, vignette=(0.0, 0.3), noise=(1.0, 4.0))

# Version 3: more normal variation (texture scale, brightness, illumination, noise) and fainter defects
CATEGORIES_V3: dict[str, CategorySpec] = {
    "brick": CategorySpec(varied(_photo_v3("brick"), **_LIGHT), {"crack": FAINT_CRACK, "hole": SHALLOW_HOLE,
                                                                "stain": FAINT_STAIN}),
    "grass": CategorySpec(varied(_photo_v3("grass"), **_LIGHT), {
        "color_shift": FAINT_COLOR_SHIFT, "contamination": contamination_recipe((225, 220, 235), alpha=0.6),
        "hole": SHALLOW_HOLE}),
    "gravel": CategorySpec(varied(_photo_v3("gravel"), **_LIGHT), {
        "hole": SHALLOW_HOLE, "stain": FAINT_STAIN, "contamination": contamination_recipe((40, 90, 200), alpha=0.6)}),
    "fabric": CategorySpec(varied(fabric, **_LIGHT), {
        "hole": SHALLOW_HOLE, "scratch": scratch_recipe(gain=(25, 45)), "stain": FAINT_STAIN,
        "contamination": contamination_recipe((30, 25, 20), alpha=0.6)}),
}
