"""Condition maps of seed 000 (Liu et al., "Assigned MURA Defect Generation Based on Diffusion Model"), §3.3-3.4
and Algorithm 1, on numpy images.

Algorithm 1, line by line, and the function of each step here::

    3   img  <- GaussianBlur(img)              (optional; §3.3's 3×3 kernel)        gaussian_blur3
    4   bmsk <- random background boxes        (Fig. 4c's black boxes)             background_boxes
    5   fmsk <- foreground (defect) boxes      (Fig. 4c's white boxes)             labels.boxes_to_mask
    6   cond <- img·(1 − fmsk ∪ bmsk) + fmsk                                        context_map
    8-14 for each region r of fmsk: r̂ = Canny(r) ∪ threshold(normalise(r))         region_features
    7,16 condition_map <- dropout(cond, rate ~ U(0.4, 0.9))                         dropout

The kit's form differs from the printed algorithm in one place, on purpose: line 14 overwrites the region
with its features, so at a high dropout rate nothing would tell the network that the region is a defect box
(1) rather than a background box (0). The kit keeps line 6's map as one channel and the (dropped-out)
features r̂ as a second channel, zero outside the defect boxes. Line 8's "non-zero regions of cond" are read
as §3.4 describes them: "the mask regions that are used to generate defects" (the boxes of fmsk).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage
from skimage.feature import canny

from ..core.checks import check_float
from .labels import Box, check_box

__all__ = ["gaussian_blur3", "grey01", "context_map", "region_features", "paste_features", "dropout",
           "background_boxes"]


def grey01(image: np.ndarray) -> np.ndarray:
    """An image as float32 grey levels in [0, 1]: uint8 H×W×3 (channel mean) or H×W, or float in [0, 1]."""
    x = np.asarray(image)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    return x.mean(-1) if x.ndim == 3 else x


def gaussian_blur3(grey: np.ndarray, sigma: float = 0.8) -> np.ndarray:
    """Algorithm 1 line 3: a 3×3 Gaussian blur (σ = ``sigma``, radius 1, edges mirrored), seed 000 §3.3."""
    return ndimage.gaussian_filter(np.asarray(grey, np.float32), check_float("sigma", sigma, 0.0, lo_open=True),
                                   radius=1, mode="mirror")


def context_map(grey: np.ndarray, fmsk: np.ndarray, bmsk: np.ndarray) -> np.ndarray:
    """Algorithm 1 line 6: cond = img·(1 − fmsk ∪ bmsk) + fmsk — the image outside the boxes, 1 (white) in the
    defect boxes, 0 (black) in the background boxes (grey in [0, 1])."""
    fmsk, bmsk = np.asarray(fmsk, bool), np.asarray(bmsk, bool)
    return (np.asarray(grey, np.float32) * ~(fmsk | bmsk) + fmsk).astype(np.float32)


def region_features(region: np.ndarray, *, canny_sigma: float = 1.5, edge_quantiles: tuple[float, float] = (0.8, 0.9),
                    threshold: float = 0.75) -> np.ndarray:
    """Algorithm 1 lines 10-13 on one region r (grey): r̂ = c ∪ n with c = Canny(r) and n = [normalise(r) > τ].

    Normalisation is min-max over the region (the defect's contrast is a few grey levels, so absolute
    thresholds would see nothing); Canny's hysteresis thresholds are quantiles of the region's gradient
    magnitude (``edge_quantiles``) for the same reason; ``threshold`` is τ ("positions with high normalisation
    values are set to 1", §3.4). Returns a bool map of the region's shape."""
    r = np.asarray(region, np.float32)
    if r.ndim != 2 or min(r.shape) < 3:
        raise ValueError(f"region must be a grey H×W array of at least 3×3 pixels, got shape {r.shape}")
    check_float("threshold", threshold, 0.0, 1.0)
    lo, hi = r.min(), r.max()
    n = (r - lo) / (hi - lo) if hi > lo else np.zeros_like(r)
    c = canny(n, sigma=check_float("canny_sigma", canny_sigma, 0.0, lo_open=True), low_threshold=edge_quantiles[0],
              high_threshold=edge_quantiles[1], use_quantiles=True)
    return c | (n > threshold)


def paste_features(shape: tuple[int, int], boxes: Sequence[Box], features: Sequence[np.ndarray]) -> np.ndarray:
    """The feature channel: each box's feature image (resized to the box, nearest neighbour) pasted into an H×W
    zero map (Algorithm 1 line 14; at generation the stored feature image is pasted into the requested box)."""
    out = np.zeros(shape, np.float32)
    for i, (b, f) in enumerate(zip(boxes, features)):
        check_box(f"boxes[{i}]", b, shape)
        f = np.asarray(f, np.float32)
        zy, zx = b.height / f.shape[0], b.width / f.shape[1]
        g = ndimage.zoom(f, (zy, zx), order=0, grid_mode=True, mode="nearest") if (zy, zx) != (1, 1) else f
        out[b.y0:b.y1, b.x0:b.x1] = np.maximum(out[b.y0:b.y1, b.x0:b.x1], g[:b.height, :b.width] > 0.5)
    return out


def dropout(features: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Algorithm 1 line 16: every feature pixel is set to 0 with probability ``rate`` (seed 000 draws rate from
    U(0.4, 0.9) per image, line 7)."""
    rate = check_float("rate", rate, 0.0, 1.0)
    return (np.asarray(features, np.float32) * (rng.random(np.shape(features)) >= rate)).astype(np.float32)


def background_boxes(rng: np.random.Generator, shape: tuple[int, int], avoid: np.ndarray, n: int,
                     size: tuple[float, float] = (0.1, 0.3), tries: int = 20) -> list[Box]:
    """Algorithm 1 line 4: up to ``n`` random background boxes (sides ``size`` × the short side) that do not touch
    the ``avoid`` mask (the defect boxes): the regions the model must regenerate as normal background."""
    h, w = shape
    s = min(h, w)
    out: list[Box] = []
    avoid = ndimage.binary_dilation(np.asarray(avoid, bool), iterations=1)
    for _ in range(n):
        for _ in range(tries):
            bh, bw = (max(2, int(round(rng.uniform(*size) * s))) for _ in range(2))
            y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            if not avoid[y0:y0 + bh, x0:x0 + bw].any():
                out.append(Box(-1, x0, y0, x0 + bw, y0 + bh))
                break
    return out
