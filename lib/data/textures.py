"""The texture categories: ``brick``, ``grass`` and ``gravel`` (random crops of scikit-image's
bundled texture photographs, tinted) and ``fabric`` (a procedural plain weave), with their
surface defects (crack, hole, stain, colour shift, scratch, contamination; see ``defects``).
"""

from __future__ import annotations

from functools import lru_cache, partial

import numpy as np
from PIL import Image

from .defects import COLOR_SHIFT, CRACK, HOLE, STAIN, contamination_recipe, scratch_recipe
from .draw import CategorySpec, Shape, grid

__all__ = ["PHOTO_TINTS", "texture_crop", "fabric", "CATEGORIES"]

PHOTO_TINTS: dict[str, tuple[float, float, float]] = {
    "brick": (1.05, 0.72, 0.58),
    "grass": (0.62, 0.95, 0.48),
    "gravel": (1.0, 0.95, 0.86),
}


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def texture_crop(rng: np.random.Generator, shape: Shape, category: str) -> np.ndarray:
    """Random crop (position, flips, brightness jitter) of a scikit-image texture
    photograph (``skimage.data.brick/grass/gravel``), resized and tinted."""
    photo = _photo(category)
    side = int(rng.uniform(0.34, 0.44) * photo.shape[0])
    y0, x0 = rng.integers(0, photo.shape[0] - side + 1, size=2)
    crop = photo[y0:y0 + side, x0:x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    if category != "brick":  # keep the bricks along the photo's axis
        crop = np.rot90(crop, rng.integers(0, 4))
    small = Image.fromarray(np.ascontiguousarray(crop)).resize(shape[::-1], Image.BILINEAR)
    grey = np.asarray(small, np.float32) * rng.uniform(0.92, 1.08)
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
