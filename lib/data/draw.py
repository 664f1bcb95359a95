"""Drawing primitives shared by the embedded benchmark's category families.

A *category family* module (``panel``, ``strip``, ``textures``) describes each of its categories
with a :class:`CategorySpec`: a background (a defect-free image drawn from a seeded stream), its
defect types as :class:`Recipe` objects, and the image shape for a given short side. The helpers
here are the geometry those recipes are built from (pixel grids, Fourier-perturbed blobs, random
walks, distances to a polyline) and :func:`apply_defect`, which writes a defect into an image so
that only the mask's pixels change, each by at least ``min_delta`` grey levels.

Images are float32 H x W x 3 in 0..255 while drawn, uint8 once written.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
from scipy import ndimage

__all__ = ["Defect", "Recipe", "CategorySpec", "Scene", "square", "stream", "grid", "blob", "path_distance",
           "walk", "inside", "inside_mask", "light_field", "lighting", "coverage", "apply_defect"]

Shape = tuple[int, int]


class Defect(NamedTuple):
    """A drawn defect: a hard boolean ``mask`` (H x W), the ``target`` image (float H x W x 3, used
    only inside the mask) and ``min_delta``, the change every mask pixel must show (grey levels)."""

    mask: np.ndarray
    target: np.ndarray
    min_delta: int


class Scene(NamedTuple):
    """What an object category's background draws: the defect-free ``image`` (float H x W x 3), the
    object's ``foreground`` (bool H x W) and ``redraw(**changes) -> (image, foreground)``, which renders the
    same pose and lighting with some parts changed (the structural defects: a bent tip, swapped wires)."""

    image: np.ndarray
    foreground: np.ndarray
    redraw: Callable[..., tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Recipe:
    """A defect type: ``draw(rng, image) -> Defect`` and the one-line description the dataset card shows.
    ``scene=True``: an object category's recipe, called as ``draw(rng, image, scene)`` (:class:`Scene`)."""

    draw: Callable[..., Defect]
    description: str
    scene: bool = False


def square(size: int) -> Shape:
    """(H, W) of a square image whose side is ``size``."""
    return int(size), int(size)


@dataclass(frozen=True)
class CategorySpec:
    """How one category is drawn: ``background(rng, (H, W))`` -> float H x W x 3 (a :class:`Scene` for
    ``kind="object"``), its defect types in order (name -> :class:`Recipe`), ``shape(size)`` -> (H, W) for a
    short side of ``size`` and ``kind``, MVTec AD's split of classes into "texture" and "object"."""

    background: Callable[[np.random.Generator, Shape], np.ndarray | Scene]
    defects: dict[str, Recipe]
    shape: Callable[[int], Shape] = field(default=square)
    kind: str = "texture"


def stream(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent random stream per (seed, category, split/defect, index, purpose): strings are
    hashed with CRC-32 into the ``SeedSequence`` words."""
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def grid(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates (float32 H x W each) of every pixel."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return yy.astype(np.float32), xx.astype(np.float32)


def blob(rng: np.random.Generator, shape: Shape, cy: float, cx: float, r0: float,
         wobble: float = 0.25) -> np.ndarray:
    """Normalised radius d (<= 1 inside) of a disc whose radius is perturbed by a
    low-order Fourier series r(theta) = r0 (1 + sum_k a_k cos(k theta + phi_k)), k = 2..4."""
    yy, xx = grid(shape)
    theta = np.arctan2(yy - cy, xx - cx)
    r = np.ones_like(theta)
    for k in range(2, 5):
        r += rng.uniform(0, wobble / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(yy - cy, xx - cx) / (r0 * r)


def path_distance(shape: Shape, points: list[tuple[float, float]]) -> np.ndarray:
    """Distance of every pixel to a densely sampled polyline through ``points`` (list of (y, x));
    infinite everywhere when the polyline misses the image."""
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


def walk(rng: np.random.Generator, start: tuple[float, float], angle: float, n_steps: int,
         step: float, turn: float) -> list[tuple[float, float]]:
    """A persistent random walk of ``n_steps`` steps of length ``step``: the heading changes by
    N(0, turn) per step."""
    pts = [start]
    for _ in range(n_steps):
        angle += rng.normal(0, turn)
        y, x = pts[-1]
        pts.append((y + step * np.sin(angle), x + step * np.cos(angle)))
    return pts


def inside(rng: np.random.Generator, shape: Shape, margin: float) -> tuple[float, float]:
    """A random centre (y, x) at least ``margin`` (fraction of the short side) from the border."""
    m = margin * min(shape)
    return rng.uniform(m, shape[0] - m), rng.uniform(m, shape[1] - m)


def inside_mask(rng: np.random.Generator, mask: np.ndarray) -> tuple[float, float]:
    """A random pixel centre (y, x) of the True pixels of ``mask`` (e.g. a foreground)."""
    ys, xs = np.nonzero(mask)
    k = rng.integers(0, len(ys))
    return float(ys[k]), float(xs[k])


def coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased area coverage of a shape from its signed distance in pixels (< 0 inside):
    clip(0.5 - sdf, 0, 1), a one-pixel ramp across the edge."""
    return np.clip(0.5 - sdf, 0.0, 1.0).astype(np.float32)


def light_field(rng: np.random.Generator, shape: Shape, gain: tuple[float, float] = (0.85, 1.15),
                tilt: float = 0.15, vignette: tuple[float, float] = (0.0, 0.25),
                noise: tuple[float, float] = (0.5, 3.0)) -> tuple[np.ndarray, np.ndarray]:
    """Normal variation of illumination and sensor: the field g (1 + a 2u + b 2v)(1 - c 2(u^2 + v^2)) and the noise
    N(0, s^2) (H x W each), with g ~ U(gain), a, b ~ U(-tilt, tilt), c ~ U(vignette), s ~ U(noise) grey levels
    and u, v in [-1/2, 1/2]. An image under it is ``img * field + noise`` (:func:`lighting`)."""
    yy, xx = grid(shape)
    u, v = xx / shape[1] - 0.5, yy / shape[0] - 0.5
    g = rng.uniform(*gain)
    a, b = rng.uniform(-tilt, tilt, size=2)
    c = rng.uniform(*vignette)
    field = g * (1 + a * 2 * u + b * 2 * v) * (1 - c * 2 * (u ** 2 + v ** 2))
    sigma = rng.uniform(*noise)
    return field.astype(np.float32), rng.normal(0, sigma, shape).astype(np.float32)


def lighting(rng: np.random.Generator, img: np.ndarray, **ranges) -> np.ndarray:
    """``img`` (float H x W x 3) under a random :func:`light_field`: img * field + noise (grey noise)."""
    field, noise = light_field(rng, img.shape[:2], **ranges)
    return (img * field[..., None] + noise[..., None]).astype(np.float32)


def apply_defect(clean: np.ndarray, defect: Defect) -> np.ndarray:
    """Write ``defect.target`` into ``clean`` (uint8 H x W x 3) inside ``defect.mask`` only, and make
    every mask pixel differ from ``clean`` by at least ``defect.min_delta`` (max over channels)."""
    mask, target, min_delta = defect
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
