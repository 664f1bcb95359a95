"""The object categories of benchmark version 3: ``screw`` (side view, a threaded shaft), ``pill`` (top view, a
round tablet with a print) and ``cable`` (a cut cable seen end-on, three coloured cores).

As in MVTec AD's object classes, each image is an object (its *foreground*, a mask the benchmark writes for the
training images) on a background, and normal images vary: pose (rotation, translation, scale within a range),
lighting (a gain, a tilt, vignetting, sensor noise: :func:`lib.data.draw.light_field`) and the surface (metal
tone, speckles, copper strands). Shapes are signed-distance fields in object coordinates, anti-aliased by
:func:`lib.data.draw.coverage`.

Two kinds of defect:

* **structural** -- the same scene re-rendered with a part changed (a damaged thread, a bent tip, a chip out of
  the rim, a faulty print, two cores swapped, a core missing, cut insulation). The mask is *exactly* the set of
  pixels whose 8-bit value changed, so every mask pixel changes by at least 1 grey level (``STRUCTURAL_MIN_DELTA``)
  and every other pixel is byte-identical to the good render;
* **surface** -- the shared geometric recipes of :mod:`lib.data.defects` (scratch, crack, contamination, spot)
  restricted to the foreground.

None is a Perlin-noise mask or a DTD blend (training's pseudo-anomalies).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
from scipy import ndimage

from .defects import contamination, crack, scratch, spot
from .draw import CategorySpec, Defect, Recipe, Scene, Shape, coverage, grid, light_field

__all__ = ["STRUCTURAL_MIN_DELTA", "screw", "pill", "cable", "structural", "on_object", "CATEGORIES"]

STRUCTURAL_MIN_DELTA = 1


# ---------------------------------------------------------------------------------------------- geometry
def _frame(shape: Shape, p: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """Object coordinates (u along the object's axis, v across, in units of the short side times the scale)
    of every pixel, and the pixels per unit."""
    yy, xx = grid(shape)
    unit = p["scale"] * min(shape)
    cy, cx = shape[0] / 2 + p["dy"] * min(shape), shape[1] / 2 + p["dx"] * min(shape)
    c, s = np.cos(p["angle"]), np.sin(p["angle"])
    u = ((xx - cx) * c + (yy - cy) * s) / unit
    v = (-(xx - cx) * s + (yy - cy) * c) / unit
    return u.astype(np.float32), v.astype(np.float32), float(unit)


def _box(u, v, u0, u1, v0, v1):
    """Signed distance (object units, < 0 inside) of an axis-aligned box."""
    return np.maximum(np.maximum(u0 - u, u - u1), np.maximum(v0 - v, v - v1))


def _pose(rng: np.random.Generator, angle: tuple[float, float], shift: float, scale: tuple[float, float]) -> dict:
    return {"angle": float(rng.uniform(*angle)), "dy": float(rng.uniform(-shift, shift)),
            "dx": float(rng.uniform(-shift, shift)), "scale": float(rng.uniform(*scale))}


def _composite(bg: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Paint (coverage H x W, colour H x W x 3) layers over ``bg`` in order."""
    out = bg
    for cov, colour in layers:
        out = out * (1 - cov[..., None]) + colour * cov[..., None]
    return out


def _finish(img: np.ndarray, shadow: np.ndarray, light: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    field, noise = light
    return (img * (1 - shadow)[..., None] * field[..., None] + noise[..., None]).astype(np.float32)


def _scene(render: Callable[..., tuple[np.ndarray, np.ndarray]], rng: np.random.Generator, shape: Shape,
           shadow_strength: float) -> Scene:
    """Draw the lighting once; the shadow is the good object's (so a re-render changes only the object)."""
    light = light_field(rng, shape, gain=(0.85, 1.15), tilt=0.15, vignette=(0.0, 0.3), noise=(0.5, 2.5))
    _, fg, _ = render()
    off = 0.04 * min(shape)
    shadow = ndimage.shift(ndimage.gaussian_filter(fg.astype(np.float32), 0.03 * min(shape)), (off, off * 0.6),
                           order=1, mode="constant") * shadow_strength

    def redraw(**changes) -> tuple[np.ndarray, np.ndarray]:
        colour, fg, _ = render(**changes)
        return _finish(colour, shadow, light), fg

    image, foreground = redraw()
    return Scene(image, foreground, redraw)


# ---------------------------------------------------------------------------------------------- screw
def _render_screw(shape: Shape, p: dict, thread_damage: tuple[float, float] | None = None, bend: float = 0.0,
                  chip: tuple[float, float, float] | None = None):
    u, v, unit = _frame(shape, p)
    px = 1.0 / unit                                             # one pixel in object units
    r0, pitch, amp = p["radius"], p["pitch"], p["thread"]
    u_head, u_neck, u_tip, u_bend = -0.36, -0.24, 0.36, 0.22
    # a bent tip: points beyond the bend are looked up in the straight screw rotated back by `bend`
    if bend:
        c, s = np.cos(bend), np.sin(bend)
        ub = u_bend + (u - u_bend) * c + v * s
        vb = -(u - u_bend) * s + v * c
        beyond = ub > u_bend
        u, v = np.where(beyond, ub, u), np.where(beyond, vb, v)
    taper = np.clip((u_tip - u) / 0.1, 0, 1)                    # the last 0.1 narrows to a point
    phase = ((u - u_neck) / pitch) % 1.0
    tri = 1 - np.abs(2 * phase - 1)                             # triangle wave: the thread's profile
    threaded = (u > u_neck + 0.03)
    flat = np.zeros_like(u, bool) if thread_damage is None else (u > thread_damage[0]) & (u < thread_damage[1])
    radius = r0 * taper + np.where(threaded & ~flat, amp * tri, 0.0) * taper - np.where(flat, 0.25 * amp, 0.0)
    shaft = np.maximum(np.abs(v) - radius, np.maximum(u_neck - u, u - u_tip))
    head = _box(u, v, u_head, u_neck, -p["head"], p["head"])
    head = np.maximum(head, np.hypot(np.maximum(u_head + 0.04 - u, 0), np.maximum(np.abs(v) - p["head"] + 0.04, 0))
                      - 0.04)                                   # rounded outer corners
    if chip is not None:
        cu, cv, cr = chip
        head = np.maximum(head, cr - np.hypot(u - cu, v - cv))
    cov_shaft, cov_head = coverage(shaft / px), coverage(head / px)
    # metal shading: a cylinder lit from above, a specular band, the thread's ridges
    rel = np.clip(v / np.maximum(radius, 1e-3), -1, 1)
    cyl = 0.5 + 0.5 * np.sqrt(1 - rel ** 2) + 0.35 * np.exp(-((rel + 0.35) / 0.18) ** 2)
    ridges = np.where(threaded & ~flat, 0.72 + 0.28 * np.cos(2 * np.pi * (u - 0.35 * v) / pitch) ** 2, 1.0)
    ridges = np.where(flat, 1.12, ridges)
    metal = p["metal"] * cyl * ridges
    hrel = np.clip(v / p["head"], -1, 1)
    head_shade = p["metal"] * (0.55 + 0.45 * np.sqrt(1 - hrel ** 2) + 0.25 * np.exp(-((hrel + 0.3) / 0.2) ** 2))
    tint = np.array([1.0, 0.98, 0.95], np.float32)
    bg = np.broadcast_to((p["bg"] * np.ones(shape, np.float32))[..., None] * np.array([1.0, 1.0, 0.98], np.float32),
                         (*shape, 3))
    img = _composite(bg, [(cov_shaft, metal[..., None] * tint), (cov_head, head_shade[..., None] * tint)])
    fg = np.maximum(cov_shaft, cov_head) >= 0.5
    return img, fg, (u, v)


def screw(rng: np.random.Generator, shape: Shape) -> Scene:
    """A screw seen from the side on a light matte background: a rounded head and a threaded shaft that tapers
    to a point; pose (any rotation within +-35 degrees of horizontal, either way round), lighting, thread pitch
    and metal tone vary."""
    flip = np.pi * rng.integers(0, 2)
    p = {**_pose(rng, (-0.6, 0.6), 0.06, (0.9, 1.08)), "radius": float(rng.uniform(0.055, 0.065)),
         "pitch": float(rng.uniform(0.05, 0.06)), "thread": float(rng.uniform(0.018, 0.024)),
         "head": float(rng.uniform(0.11, 0.13)), "metal": float(rng.uniform(120, 150)),
         "bg": float(rng.uniform(185, 210))}
    p["angle"] += flip
    return _scene(partial(_render_screw, shape, p), rng, shape, 0.25)


def _thread_damage(rng: np.random.Generator) -> dict:
    a = float(rng.uniform(-0.15, 0.18))
    return {"thread_damage": (a, a + float(rng.uniform(0.06, 0.11)))}


def _bent_tip(rng: np.random.Generator) -> dict:
    return {"bend": float(rng.choice([-1, 1]) * rng.uniform(0.25, 0.5))}


def _chipped_head(rng: np.random.Generator) -> dict:
    return {"chip": (float(rng.uniform(-0.37, -0.3)), float(rng.choice([-1, 1]) * rng.uniform(0.09, 0.13)),
                     float(rng.uniform(0.035, 0.055)))}


# ---------------------------------------------------------------------------------------------- pill
_PRINT = ((0.10, 0.13, -0.075, 0.075), (0.10, 0.20, -0.075, -0.05), (0.10, 0.18, -0.012, 0.012))  # an "F"


def _render_pill(shape: Shape, p: dict, chip: tuple[float, float] | None = None,
                 strokes: tuple[int, ...] = (0, 1, 2), print_shift: tuple[float, float] = (0.0, 0.0)):
    u, v, unit = _frame(shape, p)
    px = 1.0 / unit
    a, b = p["a"], p["b"]
    rho = np.hypot(u / a, v / b)
    body = (rho - 1) * b
    if chip is not None:                                        # a bite out of the rim
        phi, r = chip
        cu, cv = a * np.cos(phi), b * np.sin(phi)
        body = np.maximum(body, r - np.hypot(u - cu, v - cv))
    cov = coverage(body / px)
    dome = 0.8 + 0.2 * np.sqrt(np.clip(1 - rho ** 2, 0, 1)) + 0.08 * np.exp(-((u + 0.1) ** 2 + (v + 0.06) ** 2) / 0.01)
    groove = 1 - 0.12 * np.exp(-(u / 0.008) ** 2)                 # the score line across the minor axis
    white = p["white"] * (dome * groove)[..., None] * np.array([1.0, 0.985, 0.95], np.float32)
    speck = np.zeros(shape, np.float32)
    for su, sv, sr in p["speckles"]:
        speck = np.maximum(speck, coverage((np.hypot(u - su, v - sv) - sr) / px) * 0.55)
    red = np.array([175, 60, 55], np.float32)
    mark = np.zeros(shape, np.float32)
    du, dv = print_shift
    for k in strokes:
        u0, u1, v0, v1 = _PRINT[k]
        mark = np.maximum(mark, coverage(_box(u - du, v - dv, u0, u1, v0, v1) / px))
    bg = p["bg"] * (1 + 0.04 * np.cos(3 * u + 2 * v))[..., None] * np.array([0.95, 0.97, 1.0], np.float32)
    img = _composite(bg, [(cov, white), (cov * speck, np.broadcast_to(red * 0.8, (*shape, 3))),
                          (cov * mark, np.broadcast_to(red, (*shape, 3)))])
    return img, cov >= 0.5, (u, v)


def pill(rng: np.random.Generator, shape: Shape) -> Scene:
    """A white oval tablet seen from above on a dark background, with a score line, red speckles and a red
    printed "F"; pose (any rotation), lighting, the speckles and the tablet's tone vary."""
    p = {**_pose(rng, (0, 2 * np.pi), 0.05, (0.92, 1.06)), "a": float(rng.uniform(0.33, 0.36)),
         "b": float(rng.uniform(0.2, 0.22)), "white": float(rng.uniform(205, 230)), "bg": float(rng.uniform(30, 55))}
    n = int(rng.integers(6, 16))
    r = np.sqrt(rng.uniform(0, 0.8, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    p["speckles"] = [(float(0.33 * ri * np.cos(f)), float(0.2 * ri * np.sin(f)), float(rng.uniform(0.006, 0.012)))
                     for ri, f in zip(r, phi)]
    return _scene(partial(_render_pill, shape, p), rng, shape, 0.3)


def _chip(rng: np.random.Generator) -> dict:
    return {"chip": (float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.05, 0.08)))}


def _faulty_print(rng: np.random.Generator) -> dict:
    if rng.random() < 0.5:                                       # a stroke missing
        keep = [0, 1, 2]
        keep.pop(int(rng.integers(0, 3)))
        return {"strokes": tuple(keep)}
    return {"print_shift": (float(rng.uniform(0.03, 0.06) * rng.choice([-1, 1])),
                            float(rng.uniform(0.02, 0.05) * rng.choice([-1, 1])))}  # misregistered print


# ---------------------------------------------------------------------------------------------- cable
_INSULATION = ((60, 150, 70), (55, 95, 185), (140, 85, 50))   # green, blue, brown, clockwise


def _render_cable(shape: Shape, p: dict, order: tuple[int, ...] = (0, 1, 2), missing: int | None = None,
                  cut: tuple[int, float, float] | None = None):
    u, v, unit = _frame(shape, p)
    px = 1.0 / unit
    r = np.hypot(u, v)
    sheath = coverage((r - 0.42) / px)
    filler = coverage((r - 0.36) / px)
    layers = [(sheath, np.broadcast_to(np.array(p["sheath"], np.float32), (*shape, 3))),
              (filler, np.broadcast_to(np.array(p["filler"], np.float32), (*shape, 3)))]
    for k in range(3):
        phi = 2 * np.pi * k / 3
        cu, cv = 0.2 * np.cos(phi), 0.2 * np.sin(phi)
        d = np.hypot(u - cu, v - cv)
        if missing == k:                                          # an empty channel where the core was
            layers.append((coverage((d - 0.145) / px), np.broadcast_to(np.float32(p["filler"][0] * 0.35), (*shape, 3))))
            continue
        ins = coverage((d - 0.145) / px)
        if cut is not None and cut[0] == k:                       # a wedge of the insulation cut away
            ang = np.arctan2(v - cv, u - cu)
            wedge = np.abs(np.angle(np.exp(1j * (ang - cut[1])))) < cut[2]
            ins = np.where(wedge, coverage((d - 0.095) / px), ins)
        colour = np.array(_INSULATION[order[k]], np.float32) * p["tone"]
        layers.append((ins, np.broadcast_to(colour, (*shape, 3))))
        strands = 0.85 + 0.15 * np.cos(40 * (u - cu)) * np.cos(40 * (v - cv))
        copper = np.array([205, 135, 75], np.float32) * strands[..., None]
        layers.append((coverage((d - 0.09) / px), copper))
    bg = np.broadcast_to(np.float32(p["bg"]) * np.array([0.97, 1.0, 1.0], np.float32), (*shape, 3))
    img = _composite(bg, layers)
    return img, sheath >= 0.5, (u, v)


def cable(rng: np.random.Generator, shape: Shape) -> Scene:
    """A cut cable seen end-on: a dark sheath, light filler and three cores (green, blue, brown clockwise) with
    copper strands; pose (any rotation), lighting and the colours' tone vary."""
    p = {**_pose(rng, (0, 2 * np.pi), 0.04, (0.95, 1.05)), "tone": float(rng.uniform(0.9, 1.1)),
         "sheath": tuple(float(c) for c in np.array([55, 55, 60]) * rng.uniform(0.85, 1.15)),
         "filler": tuple(float(c) for c in np.array([200, 198, 190]) * rng.uniform(0.92, 1.05)),
         "bg": float(rng.uniform(140, 170))}
    return _scene(partial(_render_cable, shape, p), rng, shape, 0.2)


def _swapped(rng: np.random.Generator) -> dict:
    k = int(rng.integers(0, 3))
    order = [0, 1, 2]
    order[k], order[(k + 1) % 3] = order[(k + 1) % 3], order[k]
    return {"order": tuple(order)}


def _missing(rng: np.random.Generator) -> dict:
    return {"missing": int(rng.integers(0, 3))}


def _cut(rng: np.random.Generator) -> dict:
    return {"cut": (int(rng.integers(0, 3)), float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.5, 1.0)))}


# ---------------------------------------------------------------------------------------------- recipes
def structural(change: Callable[[np.random.Generator], dict]) -> Callable[..., Defect]:
    """A structural defect: re-render the scene with ``change(rng)``; the mask is exactly the pixels whose 8-bit
    value changed."""
    def draw(rng: np.random.Generator, img: np.ndarray, scene: Scene) -> Defect:
        target, _ = scene.redraw(**change(rng))
        before = np.clip(np.rint(img), 0, 255)
        after = np.clip(np.rint(target), 0, 255)
        return Defect(np.abs(after - before).max(axis=2) >= STRUCTURAL_MIN_DELTA, target, STRUCTURAL_MIN_DELTA)
    return draw


def on_object(draw: Callable[[np.random.Generator, np.ndarray], Defect]) -> Callable[..., Defect]:
    """A surface recipe of :mod:`lib.data.defects` restricted to the object's foreground."""
    def on(rng: np.random.Generator, img: np.ndarray, scene: Scene) -> Defect:
        d = draw(rng, img)
        return Defect(d.mask & scene.foreground, d.target, d.min_delta)
    return on


CATEGORIES: dict[str, CategorySpec] = {
    "screw": CategorySpec(screw, {
        "thread_damage": Recipe(structural(_thread_damage), "structural: a section of the thread flattened and "
                                "scraped (re-rendered)", scene=True),
        "bent_tip": Recipe(structural(_bent_tip), "structural: the tip bent by 14-29 degrees (re-rendered)", scene=True),
        "chipped_head": Recipe(structural(_chipped_head), "structural: a bite out of a corner of the head "
                               "(re-rendered)", scene=True),
        "scratch": Recipe(on_object(partial(scratch, bright=True, gain=(30, 60))), "surface: a thin bright "
                          "polyline on the metal, +30-60 grey levels", scene=True),
    }, kind="object"),
    "pill": CategorySpec(pill, {
        "crack": Recipe(on_object(partial(crack, dark=(0.45, 0.7))), "surface: a branching random walk on the "
                        "tablet, darkened to 45-70 %", scene=True),
        "chip": Recipe(structural(_chip), "structural: a bite out of the rim (re-rendered)", scene=True),
        "faulty_print": Recipe(structural(_faulty_print), "structural: a stroke of the print missing, or the "
                               "print misregistered (re-rendered)", scene=True),
        "contamination": Recipe(on_object(partial(contamination, colour=(150, 110, 70))), "surface: brown "
                                "particles and a fibre on the tablet", scene=True),
    }, kind="object"),
    "cable": CategorySpec(cable, {
        "swapped_cores": Recipe(structural(_swapped), "structural: two adjacent cores' colours swapped, the "
                                "wrong order (re-rendered)", scene=True),
        "missing_core": Recipe(structural(_missing), "structural: a core missing, an empty channel "
                               "(re-rendered)", scene=True),
        "cut_insulation": Recipe(structural(_cut), "structural: a wedge of a core's insulation cut away to the "
                                 "copper (re-rendered)", scene=True),
        "poke": Recipe(on_object(partial(spot, radius=(0.03, 0.06), dark=(0.55, 0.8))), "surface: a small dark "
                       "dent, darkened to 55-80 %", scene=True),
    }, kind="object"),
}
