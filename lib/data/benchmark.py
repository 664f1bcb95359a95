"""The embedded inspection benchmark and a loader for any MVTec AD-layout folder.

The embedded benchmark
----------------------
Every notebook runs offline on a small benchmark that this module *draws by code*:
seeded and deterministic (same seed and size give byte-identical PNGs), written in
the MVTec AD layout::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png     (0/255, one channel)

Categories (``CATEGORIES``) and their defect types (``DEFECT_TYPES``):

* ``display_panel`` -- a near-uniform grey LCD panel (faint sensor noise, brightness
  tilt, vignetting, faint pixel grid) with the MURA types of seed 000, Fig. 1 and
  §4.1: white spot, black spot, particle spot (a bright/dark dot in the centre of a
  dark/white mura), seal gap (a half spot on the border) and shapeless mura. They are
  low contrast with blurry contours, as the paper describes.
* ``metal_strip`` -- a portrait strip with the KSDD2 aspect of seed 001 (224 wide x
  632 tall, scaled so the width is ``image_size``): brushed-metal streaks and a
  lighting gradient; scratches, dark spots and whitish contamination marks.
* ``brick``, ``grass``, ``gravel`` -- random crops (position, flips, brightness
  jitter) of scikit-image's bundled texture photographs, tinted.
* ``fabric`` -- a procedural plain weave.

Defect recipes (``RECIPES``) are geometric: random polylines, branching random
walks, discs and Fourier-perturbed blobs, sums of a few Gaussians. **None of them
uses Perlin-noise masks or DTD-texture blending**, the pseudo-anomalies DRAEM and
DiffusionAD train on (seed 003 §IV-D), so an evaluation on this benchmark is not
circular when a model was trained on those.

Pixel-exact masks: each defect is a hard boolean mask plus a change applied only
inside it (soft blending only inside the mask). Pixels outside the mask are
byte-identical to the defect-free image of the same seed (``_render`` returns both),
and every mask pixel changes by at least ``min_delta`` grey levels in the 8-bit
image (2 for the low-contrast MURA, 6 for the others); this is enforced, not hoped.

The loader
----------
``load_category(root, category)`` reads any MVTec AD-layout folder (the generated
one or the real MVTec AD) into numpy arrays, checks it, and raises ``DatasetError``
naming the offending file and the fix. It never writes into the dataset folder.

Example::

    from lib import data
    root = data.embedded_benchmark(image_size=64)      # generated on first use
    cat = data.load_category(root, "display_panel")
    x = data.to_tensor(cat.train.images)               # N x 3 x H x W in [-1, 1]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..core.paths import REPO

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

__all__ = [
    "CATEGORIES", "DEFECT_TYPES", "RECIPES", "GENERATOR_VERSION", "DatasetError",
    "make_benchmark", "embedded_benchmark", "default_data_dir", "dataset_card_figure",
    "Split", "Category", "load_category", "list_categories", "select_categories", "to_tensor", "to_uint8",
    "fingerprint", "image_shape", "IMAGE_EXTENSIONS", "split_validation",
]

GENERATOR_VERSION = "2"
_GENERATOR = "lib.data.make_benchmark"

DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "display_panel": ("white_spot", "black_spot", "particle_spot", "seal_gap", "shapeless_mura"),
    "metal_strip": ("scratch", "spot", "contamination"),
    "brick": ("crack", "hole", "stain"),
    "grass": ("color_shift", "contamination", "hole"),
    "gravel": ("hole", "stain", "contamination"),
    "fabric": ("hole", "scratch", "stain", "contamination"),
}
CATEGORIES: tuple[str, ...] = tuple(DEFECT_TYPES)

RECIPES: dict[str, str] = {
    "white_spot": "MURA (seed 000 Fig. 1): disc, brightened by 8-16 grey levels with a smooth radial profile",
    "black_spot": "MURA (seed 000 Fig. 1): disc, darkened by 8-16 grey levels with a smooth radial profile",
    "particle_spot": "MURA (seed 000 Fig. 1): dark/white low-contrast disc with a strong bright/dark dot at its centre",
    "seal_gap": "MURA (seed 000 Fig. 1): half spot, a disc centred on an image border, +-8-16 grey levels",
    "shapeless_mura": "MURA (seed 000 §4.1): thresholded sum of 3-6 anisotropic Gaussians, +-6-12 grey levels",
    "scratch": "thin random polyline (3-6 vertices, 1-2 px at 64 px), brightened or darkened",
    "crack": "branching persistent random walk, darkened to 25-45 % with a darker core",
    "hole": "Fourier-perturbed disc filled dark with a lit rim on one side",
    "spot": "Fourier-perturbed disc darkened to 45-70 % with a soft radial profile",
    "stain": "Fourier-perturbed blob tinted brown-dark with a soft alpha inside the mask",
    "color_shift": "Fourier-perturbed blob tinted yellow-brown (dry patch) with a soft alpha",
    "contamination": "cluster of 3-8 foreign-coloured particles plus an optional thin fibre",
}

_MIN_DELTA_MURA = 2
_MIN_DELTA = 6
_KSDD2_ASPECT = 632 / 224


class DatasetError(ValueError):
    """A dataset folder is missing, incomplete or corrupt; the message names the
    offending file or folder and says how to fix it."""


# ----------------------------------------------------------------------------------
# Small helpers: seeded streams, shapes, geometry
# ----------------------------------------------------------------------------------

def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent stream per (seed, category, split/defect, index, purpose)."""
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def image_shape(category: str, image_size: int) -> tuple[int, int]:
    """(H, W) of a category's images: square, except ``metal_strip`` which has the
    KSDD2 portrait aspect (seed 001: 224 wide x 632 tall) with W = image_size and
    H = round(image_size * 632 / 224) rounded to a multiple of 8."""
    if category == "metal_strip":
        return int(8 * round(image_size * _KSDD2_ASPECT / 8)), int(image_size)
    return int(image_size), int(image_size)


def _grid(shape):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return yy.astype(np.float32), xx.astype(np.float32)


def _blob(rng, shape, cy, cx, r0, wobble=0.25):
    """Normalised radius d (<= 1 inside) of a disc whose radius is perturbed by a
    low-order Fourier series r(theta) = r0 (1 + sum a_k cos(k theta + phi_k))."""
    yy, xx = _grid(shape)
    theta = np.arctan2(yy - cy, xx - cx)
    r = np.ones_like(theta)
    for k in range(2, 5):
        r += rng.uniform(0, wobble / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(yy - cy, xx - cx) / (r0 * r)


def _path_distance(shape, points):
    """Distance of every pixel to a densely sampled polyline (list of (y, x))."""
    hit = np.zeros(shape, bool)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        n = int(np.ceil(2 * np.hypot(y1 - y0, x1 - x0))) + 1
        ys = np.rint(np.linspace(y0, y1, n)).astype(int)
        xs = np.rint(np.linspace(x0, x1, n)).astype(int)
        ok = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
        hit[ys[ok], xs[ok]] = True
    if not hit.any():
        return np.full(shape, np.inf, np.float32)
    return ndimage.distance_transform_edt(~hit).astype(np.float32)


def _walk(rng, start, angle, n_steps, step, turn):
    """A persistent random walk: the heading changes by N(0, turn) per step."""
    pts = [start]
    for _ in range(n_steps):
        angle += rng.normal(0, turn)
        y, x = pts[-1]
        pts.append((y + step * np.sin(angle), x + step * np.cos(angle)))
    return pts


def _inside(rng, shape, margin):
    """A random centre at least ``margin`` (fraction of the short side) from the border."""
    m = margin * min(shape)
    return rng.uniform(m, shape[0] - m), rng.uniform(m, shape[1] - m)


# ----------------------------------------------------------------------------------
# Backgrounds (defect-free images), float32 H x W x 3 in 0..255
# ----------------------------------------------------------------------------------

def _display_panel(rng, shape):
    """Near-uniform grey panel: tilt, vignetting, a faint pixel grid, sensor noise."""
    h, w = shape
    yy, xx = _grid(shape)
    u, v = (xx - w / 2) / w, (yy - h / 2) / h
    base = rng.uniform(105, 150)
    g = rng.uniform(-6, 6, size=2)
    img = base + g[0] * 2 * u + g[1] * 2 * v - rng.uniform(4, 10) * (u ** 2 + v ** 2) * 2
    period = max(3, min(shape) // 16)
    grid = ((yy % period) == 0) | ((xx % period) == 0)
    img = img - 1.2 * grid + rng.normal(0, 1.1, shape)
    return np.repeat(img[..., None], 3, axis=2).astype(np.float32)


def _metal_strip(rng, shape):
    """Brushed metal: streaks along the long axis, fine grain, lighting bands."""
    h, w = shape
    s = w / 64
    coarse = rng.normal(0, 1, (h // 8, w))  # streaks vary slowly along the strip: draw them 8x coarser
    coarse = ndimage.gaussian_filter(coarse, sigma=(0.015 * h, 0.5 * s), mode="wrap")
    streaks = ndimage.zoom(coarse, (h / coarse.shape[0], 1), order=1, mode="nearest")
    streaks /= streaks.std() + 1e-6
    grain = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=0.5 * s)
    yy, xx = _grid(shape)
    light = 1 + 0.12 * np.sin(np.pi * yy / h * rng.uniform(0.6, 1.6) + rng.uniform(0, 2 * np.pi))
    light *= 1 - 0.15 * ((xx - w / 2) / w) ** 2 * 4
    grey = (rng.uniform(120, 150) + 7 * streaks + 4 * grain) * light
    tint = np.array([1.0, 0.96, 0.90], np.float32)
    return (grey[..., None] * tint).astype(np.float32)


_TEXTURE_TINTS = {
    "brick": (1.05, 0.72, 0.58),
    "grass": (0.62, 0.95, 0.48),
    "gravel": (1.0, 0.95, 0.86),
}


@lru_cache(maxsize=None)
def _texture_photo(category):
    import skimage.data

    return getattr(skimage.data, category)()


def _texture_crop(rng, shape, category):
    """Random crop (position, flips, brightness jitter) of a scikit-image texture
    photograph (``skimage.data.brick/grass/gravel``), resized and tinted."""
    photo = _texture_photo(category)
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
    return grey[..., None] * np.array(_TEXTURE_TINTS[category], np.float32)


def _fabric(rng, shape):
    """Plain weave: alternating over/under threads, per-thread brightness, fibre noise."""
    h, w = shape
    yy, xx = _grid(shape)
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


def _background(category, rng, shape):
    if category == "display_panel":
        return _display_panel(rng, shape)
    if category == "metal_strip":
        return _metal_strip(rng, shape)
    if category == "fabric":
        return _fabric(rng, shape)
    return _texture_crop(rng, shape, category)


# ----------------------------------------------------------------------------------
# Defects: each returns (mask bool H x W, target float H x W x 3, min_delta)
# ----------------------------------------------------------------------------------

def _mura_disc(rng, img, cy, cx, r, sign, amp):
    d = _blob(rng, img.shape[:2], cy, cx, r, wobble=0.08)
    mask = d <= 1
    profile = np.clip(1 - d ** 2, 0, 1) ** 0.7
    return mask, img + (sign * amp * profile)[..., None]


def _mura_spot(rng, img, sign):
    """White/black spot of seed 000 Fig. 1: a filled low-contrast disc, blurry contour."""
    r = rng.uniform(0.07, 0.14) * min(img.shape[:2])
    cy, cx = _inside(rng, img.shape[:2], 0.2)
    mask, target = _mura_disc(rng, img, cy, cx, r, sign, rng.uniform(8, 16))
    return mask, target, _MIN_DELTA_MURA


def _white_spot(rng, img):
    return _mura_spot(rng, img, +1)


def _black_spot(rng, img):
    return _mura_spot(rng, img, -1)


def _particle_spot(rng, img):
    """Particle spot (seed 000 Fig. 1): a bright/dark dot in the centre of a dark/white mura."""
    sign = rng.choice([-1, 1])
    r = rng.uniform(0.09, 0.15) * min(img.shape[:2])
    cy, cx = _inside(rng, img.shape[:2], 0.2)
    mask, target = _mura_disc(rng, img, cy, cx, r, sign, rng.uniform(8, 14))
    yy, xx = _grid(img.shape[:2])
    dot = np.hypot(yy - cy, xx - cx) <= max(1.0, 0.22 * r)
    target[dot] = img[dot] - sign * rng.uniform(40, 70)
    return mask, target, _MIN_DELTA_MURA


def _seal_gap(rng, img):
    """Seal gap (seed 000 Fig. 1): a half spot centred on the border of the panel."""
    h, w = img.shape[:2]
    r = rng.uniform(0.12, 0.2) * min(h, w)
    side = rng.integers(0, 4)
    along = rng.uniform(r, (w if side < 2 else h) - r)
    cy, cx = [(-0.5, along), (h - 0.5, along), (along, -0.5), (along, w - 0.5)][side]
    mask, target = _mura_disc(rng, img, cy, cx, r, rng.choice([-1, 1]), rng.uniform(8, 16))
    return mask, target, _MIN_DELTA_MURA


def _shapeless_mura(rng, img):
    """Shapeless mura (seed 000 §4.1): an irregular low-contrast blotch, the
    thresholded sum of a few anisotropic Gaussians."""
    shape = img.shape[:2]
    s = min(shape)
    yy, xx = _grid(shape)
    cy, cx = _inside(rng, shape, 0.3)
    field = np.zeros(shape, np.float32)
    for _ in range(rng.integers(3, 7)):
        gy, gx = cy + rng.normal(0, 0.1 * s), cx + rng.normal(0, 0.1 * s)
        sy, sx = rng.uniform(0.04, 0.12, size=2) * s
        a = rng.uniform(0, np.pi)
        u = (yy - gy) * np.cos(a) + (xx - gx) * np.sin(a)
        v = -(yy - gy) * np.sin(a) + (xx - gx) * np.cos(a)
        field += np.exp(-0.5 * ((u / sy) ** 2 + (v / sx) ** 2))
    tau = 0.35 * field.max()
    mask = field > tau
    profile = (field - tau) / (field.max() - tau)
    target = img + (rng.choice([-1, 1]) * rng.uniform(6, 12) * np.sqrt(np.clip(profile, 0, 1)))[..., None]
    return mask, target, _MIN_DELTA_MURA


def _scratch(rng, img, bright=None):
    """Thin random polyline, brightened (metal) or darkened/brightened (others)."""
    shape = img.shape[:2]
    s = min(shape)
    start = _inside(rng, shape, 0.15)
    n = rng.integers(3, 7)
    seg = rng.uniform(0.12, 0.25) * s
    pts = _walk(rng, start, rng.uniform(0, 2 * np.pi), n - 1, seg, 0.35)
    width = max(1.0, s / 64 * rng.uniform(0.8, 1.6))
    mask = _path_distance(shape, pts) <= (width - 1) / 2 + 0.01
    bright = rng.random() < 0.5 if bright is None else bright
    target = img + (rng.uniform(50, 90) if bright else -rng.uniform(50, 80))
    return mask, target, _MIN_DELTA


def _crack(rng, img):
    """Branching dark crack: a persistent random walk that spawns side branches."""
    shape = img.shape[:2]
    s = min(shape)
    step = max(1.0, s / 64)
    trunk = _walk(rng, _inside(rng, shape, 0.2), rng.uniform(0, 2 * np.pi), int(0.5 * s / step), step, 0.3)
    branches = []
    for i in range(5, len(trunk) - 5):
        if rng.random() < 0.05:
            y0, x0 = trunk[i]
            y1, x1 = trunk[i + 1]
            a = np.arctan2(y1 - y0, x1 - x0) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
            branches.append(_walk(rng, trunk[i], a, int(rng.uniform(0.1, 0.25) * s / step), step, 0.35))
    mask = _path_distance(shape, trunk) <= 0.5 * step
    core = mask.copy()
    for b in branches:
        mask |= _path_distance(shape, b) <= 0.25 * step
    target = img * rng.uniform(0.25, 0.45)
    target[core] *= 0.7
    return mask, target, _MIN_DELTA


def _hole(rng, img):
    """Hole: a Fourier-perturbed disc filled dark, its rim lit on one side."""
    shape = img.shape[:2]
    r = rng.uniform(0.06, 0.12) * min(shape)
    cy, cx = _inside(rng, shape, 0.2)
    d = _blob(rng, shape, cy, cx, r)
    mask = d <= 1
    yy, xx = _grid(shape)
    a = rng.uniform(0, 2 * np.pi)
    side = ((yy - cy) * np.sin(a) + (xx - cx) * np.cos(a)) / r
    rim = np.clip(d - 0.6, 0, 0.4) / 0.4 * np.clip(side, 0, 1)
    fill = rng.uniform(12, 30) + 60 * rim
    target = img * 0.1 + fill[..., None]
    return mask, target, _MIN_DELTA


def _spot(rng, img):
    """Spot (KSDD2-like): a dark rounded blotch with a soft radial profile."""
    shape = img.shape[:2]
    r = rng.uniform(0.06, 0.14) * min(shape)
    d = _blob(rng, shape, *_inside(rng, shape, 0.2), r)
    mask = d <= 1
    alpha = 0.4 + 0.6 * np.clip(1 - d, 0, 1)
    target = img * (1 - alpha * (1 - rng.uniform(0.45, 0.7)))[..., None]
    return mask, target, _MIN_DELTA


def _tinted_blob(rng, img, tint, gain):
    shape = img.shape[:2]
    r = rng.uniform(0.12, 0.22) * min(shape)
    d = _blob(rng, shape, *_inside(rng, shape, 0.25), r, wobble=0.35)
    mask = d <= 1
    alpha = (0.35 + 0.65 * np.clip((1 - d) * 2.5, 0, 1))[..., None]
    tinted = img * np.asarray(tint, np.float32) * gain
    return mask, img * (1 - alpha) + tinted * alpha, _MIN_DELTA


def _stain(rng, img):
    """Stain: a smooth brown-dark tinted blob (soft alpha only inside the mask)."""
    return _tinted_blob(rng, img, (0.8, 0.62, 0.42), rng.uniform(0.55, 0.8))


def _color_shift(rng, img):
    """Colour shift: a smooth yellow-brown tinted blob (a dry patch)."""
    return _tinted_blob(rng, img, (1.45, 1.05, 0.55), rng.uniform(0.9, 1.1))


_FOREIGN_COLOURS = {
    "metal_strip": (235, 232, 220),  # whitish marks (seed 001: "white marks")
    "grass": (225, 220, 235),         # white/blue plastic litter
    "gravel": (40, 90, 200),          # blue plastic bits
    "fabric": (30, 25, 20),           # dark hair / lint
}


def _contamination(rng, img, colour):
    """Foreign particles: a cluster of 3-8 small Fourier blobs of a foreign colour,
    plus (half of the time) a thin curved fibre."""
    shape = img.shape[:2]
    s = min(shape)
    cy, cx = _inside(rng, shape, 0.2)
    mask = np.zeros(shape, bool)
    for _ in range(rng.integers(3, 9)):
        py, px = cy + rng.normal(0, 0.07 * s), cx + rng.normal(0, 0.07 * s)
        mask |= _blob(rng, shape, py, px, rng.uniform(0.015, 0.045) * s + 0.6, wobble=0.4) <= 1
    if rng.random() < 0.5:
        fibre = _walk(rng, (cy, cx), rng.uniform(0, 2 * np.pi), 12, 0.03 * s, 0.4)
        mask |= _path_distance(shape, fibre) <= 0.01 + 0.3 * max(0.0, s / 64 - 1)
    shade = rng.uniform(0.8, 1.1, shape)[..., None]
    target = np.asarray(colour, np.float32) * shade
    return mask, np.broadcast_to(target, img.shape).copy(), _MIN_DELTA


def _defect(category, defect, rng, img):
    recipes = {
        "white_spot": _white_spot, "black_spot": _black_spot, "particle_spot": _particle_spot,
        "seal_gap": _seal_gap, "shapeless_mura": _shapeless_mura, "crack": _crack,
        "hole": _hole, "spot": _spot, "stain": _stain, "color_shift": _color_shift,
    }
    if defect == "scratch":
        return _scratch(rng, img, bright=True if category == "metal_strip" else None)
    if defect == "contamination":
        return _contamination(rng, img, _FOREIGN_COLOURS[category])
    return recipes[defect](rng, img)


def _apply(clean, mask, target, min_delta):
    """Write ``target`` into ``clean`` (uint8) inside ``mask`` only, and make every
    mask pixel differ from ``clean`` by at least ``min_delta`` (max over channels)."""
    out = clean.copy()
    c = clean[mask].astype(np.int16)
    new = np.clip(np.rint(target[mask]), 0, 255).astype(np.int16)
    weak = np.abs(new - c).max(axis=1) < min_delta
    sign = np.where((target[mask] - c).mean(axis=1) < 0, -1, 1)[:, None]
    pushed = c + sign * min_delta
    bad = ((pushed < 0) | (pushed > 255)).any(axis=1, keepdims=True)
    pushed = np.where(bad, c - sign * min_delta, pushed)
    new[weak] = pushed[weak]
    out[mask] = new.astype(np.uint8)
    return out


def _render(category, index, defect="good", seed=0, size=64, split="test"):
    """Draw one image: returns (clean uint8 HxWx3, defective uint8 HxWx3, mask bool HxW).

    ``defect`` is "good" or one of ``DEFECT_TYPES[category]``; ``split`` is "train"
    (good only) or "test". For a good image ``defective`` equals ``clean`` and the
    mask is empty. The background and the defect come from separate seeded streams,
    so ``clean`` is exactly the image the same seed gives without the defect. A
    defect covering fewer than a quarter of the short side in pixels (e.g. a
    scratch that mostly left the image) is redrawn from the same stream.
    """
    if category not in DEFECT_TYPES:
        raise ValueError(f"unknown category {category!r}; choose from {CATEGORIES}")
    if defect != "good" and (split != "test" or defect not in DEFECT_TYPES[category]):
        raise ValueError(f"{category!r} has no test defect {defect!r}; choose from {DEFECT_TYPES[category]}")
    shape = image_shape(category, size)
    stream = f"{split}/{defect}"
    bg = _background(category, _rng(seed, category, stream, index, "background"), shape)
    clean = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
    if defect == "good":
        return clean, clean.copy(), np.zeros(shape, bool)
    rng = _rng(seed, category, stream, index, "defect")
    for _ in range(50):  # redraw the rare defect that mostly leaves the image
        mask, target, min_delta = _defect(category, defect, rng, clean.astype(np.float32))
        if mask.sum() >= min(shape) / 4:
            return clean, _apply(clean, mask, target, min_delta), mask
    raise RuntimeError(f"no visible {defect} drawn for {category} index {index} seed {seed}")


# ----------------------------------------------------------------------------------
# Writing the benchmark
# ----------------------------------------------------------------------------------

def _config(image_size, seed, categories, n_train, n_test_good, n_test_defect):
    return {"image_size": int(image_size), "seed": int(seed), "categories": list(categories),
            "n_train": int(n_train), "n_test_good": int(n_test_good),
            "n_test_defect": int(n_test_defect), "generator_version": GENERATOR_VERSION}


def _save_png(path, array):
    Image.fromarray(array).save(path, format="PNG", compress_level=1)  # fast; same bytes every run


def _write_category(root, category, cfg):
    size, seed = cfg["image_size"], cfg["seed"]
    base = root / category
    counts = {"train/good": cfg["n_train"], "test/good": cfg["n_test_good"]}
    (base / "train" / "good").mkdir(parents=True)
    (base / "test" / "good").mkdir(parents=True)
    for i in range(cfg["n_train"]):
        _save_png(base / "train" / "good" / f"{i:03d}.png", _render(category, i, "good", seed, size, "train")[1])
    for i in range(cfg["n_test_good"]):
        _save_png(base / "test" / "good" / f"{i:03d}.png", _render(category, i, "good", seed, size)[1])
    for defect in DEFECT_TYPES[category]:
        (base / "test" / defect).mkdir(parents=True)
        (base / "ground_truth" / defect).mkdir(parents=True)
        for i in range(cfg["n_test_defect"]):
            _, img, mask = _render(category, i, defect, seed, size)
            _save_png(base / "test" / defect / f"{i:03d}.png", img)
            _save_png(base / "ground_truth" / defect / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
        counts[f"test/{defect}"] = cfg["n_test_defect"]
    h, w = image_shape(category, size)
    return {"image_size": [h, w], "defect_types": list(DEFECT_TYPES[category]), "counts": counts,
            "recipes": {d: RECIPES[d] for d in DEFECT_TYPES[category]}}


def _readme(card):
    cfg = card["config"]
    lines = [
        "# Embedded inspection benchmark (synthetic)",
        "",
        f"Generated by `{_GENERATOR}` (generator version {GENERATOR_VERSION}) with seed {cfg['seed']} "
        f"and image size {cfg['image_size']}. **Every image is synthetic**: drawn by code, deterministic "
        "(same seed and size give byte-identical files). Layout: MVTec AD "
        "(`train/good`, `test/<defect>`, `ground_truth/<defect>/<name>_mask.png`, masks 0/255).",
        "",
        "Test defects are drawn by geometric recipes (polylines, random walks, discs, Fourier blobs, "
        "sums of Gaussians), not by the Perlin-noise / DTD-texture pseudo-anomalies that DRAEM and "
        "DiffusionAD train on. Masks are pixel-exact: outside the mask the image equals the defect-free "
        "image of the same seed; every mask pixel changed by at least 2 (MURA) or 6 grey levels.",
        "",
        "| category | H x W | train/good | test/good | defect types (test images each) |",
        "|---|---|---|---|---|",
    ]
    for name, c in card["categories"].items():
        n = c["counts"]
        defects = ", ".join(f"`{d}` ({n['test/' + d]})" for d in c["defect_types"])
        lines.append(f"| {name} | {c['image_size'][0]} x {c['image_size'][1]} | {n['train/good']} "
                     f"| {n['test/good']} | {defects} |")
    lines += ["", "| defect | recipe |", "|---|---|"]
    used = sorted({d for c in card["categories"].values() for d in c["defect_types"]})
    lines += [f"| `{d}` | {RECIPES[d]} |" for d in used]
    lines += ["", "Backgrounds: `display_panel` near-uniform grey panel (seed 000 MURA types, Fig. 1); "
              "`metal_strip` brushed metal with the KSDD2 aspect (seed 001, 224 x 632); `brick`, `grass`, "
              "`gravel` random crops of scikit-image's bundled photographs; `fabric` procedural weave.", ""]
    return "\n".join(lines)


def _is_generated(root: Path) -> dict | None:
    """The stored card if ``root`` holds a benchmark this module wrote, else None."""
    try:
        card = json.loads((root / "benchmark.json").read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("generator") == _GENERATOR else None


def _install(tmp: Path, root: Path, config: dict) -> None:
    """Move the finished ``tmp`` folder to ``root`` (``os.replace``). A concurrent
    writer that already installed the same config wins; an older one is replaced."""
    old = _is_generated(root) if root.exists() else None
    if old is not None and old["config"] == config:
        shutil.rmtree(tmp)
        return
    if root.exists():
        aside = root.with_name(f".{root.name}.{os.getpid()}.old.tmp")
        os.replace(root, aside)
        os.replace(tmp, root)
        shutil.rmtree(aside)
    else:
        os.replace(tmp, root)


def make_benchmark(root, image_size: int = 64, seed: int = 0, categories=None,
                   n_train: int = 60, n_test_good: int = 12, n_test_defect: int = 6) -> Path:
    """Generate the embedded benchmark into ``root`` and return ``root``.

    The folder is built in a temporary sibling and moved into place with
    ``os.replace``, so a reader never sees half a benchmark. An existing ``root`` is
    replaced only if this function generated it (its ``benchmark.json`` says so) or
    it is empty; anything else raises ``FileExistsError``.
    """
    root = Path(root)
    categories = list(CATEGORIES if categories is None else categories)
    unknown = [c for c in categories if c not in DEFECT_TYPES]
    if unknown:
        raise ValueError(f"unknown categories {unknown}; choose from {CATEGORIES}")
    if not 8 <= image_size <= 1024:
        raise ValueError(f"image_size must be between 8 and 1024, got {image_size}")
    if n_train < 1 or n_test_good < 0 or n_test_defect < 0:
        raise ValueError("need n_train >= 1 and non-negative test counts")
    if root.exists() and any(root.iterdir()) and _is_generated(root) is None:
        raise FileExistsError(
            f"{root} exists and was not generated by {_GENERATOR} (no matching benchmark.json); "
            "refusing to overwrite it. Pass another root or delete that folder yourself.")
    cfg = _config(image_size, seed, categories, n_train, n_test_good, n_test_defect)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        card = {"generator": _GENERATOR, "generator_version": GENERATOR_VERSION, "synthetic": True,
                "config": cfg, "categories": {c: _write_category(tmp, c, cfg) for c in categories}}
        (tmp / "benchmark.json").write_text(json.dumps(card, indent=2) + "\n")
        (tmp / "README.md").write_text(_readme(card))
        _install(tmp, root, cfg)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def default_data_dir() -> Path:
    """``$KIT_DATA_DIR`` if set, else ``data/`` at the repository root (the parent of
    the ``lib`` package)."""
    env = os.environ.get("KIT_DATA_DIR")
    return Path(env) if env else REPO / "data"


def embedded_benchmark(image_size: int = 64, seed: int = 0, root=None) -> Path:
    """The default benchmark folder ``<data dir>/embedded/size{S}_seed{seed}``
    (``root`` overrides it), generated with the default counts if it is missing or
    its ``benchmark.json`` holds another config."""
    root = Path(root) if root is not None else default_data_dir() / "embedded" / f"size{image_size}_seed{seed}"
    cfg = _config(image_size, seed, CATEGORIES, 60, 12, 6)
    card = _is_generated(root)
    if card is None or card.get("config") != cfg:
        make_benchmark(root, image_size=image_size, seed=seed)
    return root


# ----------------------------------------------------------------------------------
# Loading any MVTec AD-layout folder
# ----------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Split:
    """One split: ``images`` uint8 N x H x W x 3, ``masks`` bool N x H x W (all False
    for good images), ``labels`` int64 0 (good) / 1 (anomalous), ``defect_types``
    ('good' or the defect folder name) and ``paths`` of the image files."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    defect_types: list[str]
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Category:
    """A category of an MVTec AD-layout dataset: ``train`` (good only) and ``test``."""

    name: str
    root: Path
    train: Split
    test: Split

    @property
    def defect_types(self) -> list[str]:
        return sorted({d for d in self.test.defect_types if d != "good"})


def split_validation(split: Split, fraction: float) -> tuple[Split, Split]:
    """Hold out the last ``round(fraction·N)`` images of a (train) split as a validation set.

    Deterministic (file order), so a checkpoint trained on the first part and a notebook that
    uses the held-out part agree on which images are which. The thesis (seed 002 §4.1) holds out
    20% of the normal training images. ``fraction = 0`` returns ``(split, empty split)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction={fraction} must be in [0, 1), e.g. 0.2 for the thesis' 20% validation set")
    n_val = int(round(fraction * len(split)))
    k = len(split) - n_val

    def part(sl):
        return Split(split.images[sl], split.masks[sl], split.labels[sl], split.defect_types[sl],
                     split.paths[sl])

    return part(slice(0, k)), part(slice(k, len(split)))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def list_categories(root) -> list[str]:
    """Sub-folders of ``root`` that look like categories (they hold ``train/``)."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir())


def select_categories(categories, root, order=()) -> list[str]:
    """The notebooks' ``categories`` parameter → category names found in ``root``.

    ``None`` → every category of ``root``, alphabetically (those named in ``order`` first); a
    string → one name or several separated by commas (``"grass"``, ``"grass,brick"``; what
    ``papermill -p categories grass`` passes); a list or tuple → those names. An unknown name
    raises :class:`DatasetError` naming the parameter and the categories that exist."""
    available = list_categories(root)
    if not available:
        raise DatasetError(f"no category folders (with a train/ sub-folder) in {root}")
    if categories is None or (isinstance(categories, (str, list, tuple)) and len(categories) == 0):
        return [c for c in order if c in available] + [c for c in available if c not in order]
    if isinstance(categories, str):
        categories = [c.strip() for c in categories.split(",") if c.strip()]
    if not isinstance(categories, (list, tuple)) or not all(isinstance(c, str) for c in categories):
        raise ValueError(f"categories={categories!r}: give None, a name, a comma-separated string "
                         f"or a list of names from {available}")
    unknown = [c for c in categories if c not in available]
    if unknown:
        raise DatasetError(f"categories={list(categories)!r}: {unknown} not found in {root}; "
                           f"the categories there are {available}")
    return list(dict.fromkeys(categories))


def _open(path: Path, mode: str) -> Image.Image:
    """Read an image fully (read-only) and convert it; corrupt files raise DatasetError."""
    try:
        with open(path, "rb") as f, Image.open(f) as im:
            im.verify()
        with open(path, "rb") as f, Image.open(f) as im:
            im.load()
            return im.convert(mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image {path}: {e}. The file is corrupt or truncated; "
                           "replace it (re-download or regenerate the dataset) or delete it.") from e


def _resize(im: Image.Image, size, resample) -> Image.Image:
    if size is None:
        return im
    h, w = (size, size) if isinstance(size, int) else size
    return im if im.size == (w, h) else im.resize((w, h), resample)


def _find_mask(category_dir: Path, defect: str, image: Path) -> Path:
    folder = category_dir / "ground_truth" / defect
    candidates = [folder / f"{image.stem}_mask{ext}" for ext in IMAGE_EXTENSIONS]
    for c in candidates:
        if c.is_file():
            return c
    raise DatasetError(f"anomalous test image {image} has no mask: expected {candidates[0]} "
                       f"(or another of {', '.join(IMAGE_EXTENSIONS)}). Add the mask, or move the "
                       "image to test/good if it is not anomalous.")


def _load_mask(path: Path, image: Path, native_size, size) -> np.ndarray:
    m = _open(path, "L")
    if m.size != native_size:
        raise DatasetError(f"mask {path} is {m.size[0]}x{m.size[1]} (W x H) but its image {image} is "
                           f"{native_size[0]}x{native_size[1]}; regenerate the mask at the image's size.")
    mask = np.asarray(_resize(m, size, Image.NEAREST)) > 127
    if not mask.any():
        warnings.warn(f"mask {path} of anomalous image {image} is all zero; the pixel metrics will "
                      "treat the image as defect-free there.", stacklevel=4)
    return mask


def _load_split(category_dir: Path, split: str, size) -> Split:
    folder = category_dir / split
    images, masks, labels, kinds, paths = [], [], [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in _image_files(sub):
            im = _open(path, "RGB")
            image = np.asarray(_resize(im, size, Image.BILINEAR))
            if sub.name == "good":
                mask = np.zeros(image.shape[:2], bool)
            else:
                mask = _load_mask(_find_mask(category_dir, sub.name, path), path, im.size, size)
            images.append(image)
            masks.append(mask)
            labels.append(int(sub.name != "good"))
            kinds.append(sub.name)
            paths.append(path)
    if not paths:
        raise DatasetError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its sub-folders; "
                           f"expected {folder}/good/*.png. Regenerate or re-download the category.")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        odd = next(p for p, a in zip(paths, images) if a.shape != images[0].shape)
        raise DatasetError(f"images of {folder} differ in size ({paths[0]} is {images[0].shape[:2]}, "
                           f"{odd} is not); pass image_size=... to load_category to resize them.")
    return Split(np.stack(images), np.stack(masks), np.asarray(labels, np.int64), kinds, paths)


def load_category(root, category: str, image_size=None) -> Category:
    """Load ``<root>/<category>`` of an MVTec AD-layout folder.

    ``image_size``: None keeps the native size (a split's images must then share
    one size), an int resizes to a square, an (H, W) tuple to that shape; images
    bilinear, masks nearest. Greyscale images load as 3 channels; masks
    ``ground_truth/<defect>/<stem>_mask.<ext>`` are binarised at > 127. The folder is
    only read, never written.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist; generate the embedded benchmark with "
                           "lib.data.embedded_benchmark() or make_benchmark(root), or point root at an "
                           "MVTec AD-layout folder.")
    category_dir = root / category
    if not category_dir.is_dir():
        raise DatasetError(f"category folder {category_dir} does not exist; categories in {root}: "
                           f"{', '.join(list_categories(root)) or '(none)'}. Check the name.")
    for split in ("train", "test"):
        if not (category_dir / split).is_dir():
            raise DatasetError(f"category {category_dir} has no {split}/ folder (empty or incomplete "
                               "category); regenerate or re-download it.")
    if not (category_dir / "train" / "good").is_dir() or not _image_files(category_dir / "train" / "good"):
        raise DatasetError(f"{category_dir / 'train' / 'good'} is missing or holds no images; a category "
                           "needs defect-free training images there. Regenerate or re-download it.")
    return Category(category, category_dir, _load_split(category_dir, "train", image_size),
                    _load_split(category_dir, "test", image_size))


# ----------------------------------------------------------------------------------
# Tensors and fingerprints
# ----------------------------------------------------------------------------------

def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 (or one H x W x 3) -> float32 N x 3 x H x W (or 3 x H x W)
    in [-1, 1], the range the diffusion models work in."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N x) H x W x 3, got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).float() / 127.5 - 1
    return x.movedim(-1, -3).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Inverse of ``to_tensor``: values in [-1, 1] (clamped) -> uint8 (N x) H x W x 3."""
    x = ((x.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def fingerprint(path) -> str:
    """sha256 over the sorted relative paths and bytes of every file under ``path``
    (a dataset or a category folder); recorded in training manifests."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"cannot fingerprint {path}: not a folder.")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


# ----------------------------------------------------------------------------------
# Dataset card figure
# ----------------------------------------------------------------------------------

def dataset_card_figure(root, out_path, index: int = 0) -> Path:
    """Save a sample grid of a benchmark: one row per category, a good test image then
    one image per defect type with its ground-truth mask outlined in red (the
    ``index``-th image of each kind). Categories and defects follow ``benchmark.json``
    when the folder has one, else alphabetical order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    root = Path(root)
    card = _is_generated(root)
    names = list(card["categories"]) if card else list_categories(root)
    cats = [load_category(root, n) for n in names]
    kinds = [["good"] + (card["categories"][c.name]["defect_types"] if card else c.defect_types) for c in cats]
    ncol = max(len(k) for k in kinds)
    ratios = [c.test.images.shape[1] / c.test.images.shape[2] for c in cats]
    fig = Figure(figsize=(1.8 * ncol, 1.8 * sum(ratios) + 0.6), dpi=120)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(cats), ncol, height_ratios=ratios)
    for r, (cat, row) in enumerate(zip(cats, kinds)):
        for c, kind in enumerate(row):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([]), ax.set_yticks([])
            idx = [i for i, k in enumerate(cat.test.defect_types) if k == kind]
            i = idx[min(index, len(idx) - 1)]
            ax.imshow(cat.test.images[i], interpolation="nearest")
            if cat.test.masks[i].any():
                ax.contour(cat.test.masks[i], levels=[0.5], colors="red", linewidths=0.6)
            ax.set_title(kind, fontsize=7, pad=2)
            if c == 0:
                ax.set_ylabel(cat.name, fontsize=8)
    fig.suptitle(f"Embedded benchmark (synthetic images): {root.name}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, metadata={"Software": None})
    return out_path
