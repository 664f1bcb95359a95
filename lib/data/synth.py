"""Synthetic anomalies for training a segmentation network (DiffusionAD §IV-D, DRAEM).

DiffusionAD (seed 003, §IV-D) and DRAEM (thesis, seed 002, §3.1.3 / Fig. 3.2) train
their segmentation sub-network on *pseudo-anomalies* pasted into normal images:

1. **Shape.** 2-D Perlin noise with a random power-of-two scale per axis
   (2^0 ... 2^5), rotated by a random angle in ±90°, thresholded at 0.5
   (:func:`perlin_mask`). For objects it is multiplied by the object's foreground
   (:func:`foreground_mask`); for textures it is used as is.
2. **Appearance.** An anomaly source ``A``: a texture photograph (DTD in the papers;
   here :func:`anomaly_sources`, see below) with 3 random augmentations
   (:func:`augment`), or -- DiffusionAD, objects only, with probability 1/2 -- the
   image's own augmented copy shuffled on an 8 × 8 grid (:func:`grid_shuffle`).
3. **Blend** (:func:`synthesize`), with mask ``M`` and opacity β::

       DiffusionAD eq. (12):  S = M̄⊙N + (1−β)·M⊙A + β·M⊙N,     β ~ U[0.2, 0.8)
       DRAEM / thesis:        I_a = M̄⊙I + (1−β)·M⊙I + β·M⊙A,   β ∈ [0.1, 1.0]

   The two papers put β on *opposite* sides: DiffusionAD's β weights the normal
   image, the DRAEM paper's (and the thesis's) β weights the anomaly source, so
   β_DRAEM = 1 − β_DiffusionAD. ``synthesize(..., beta_on="image")`` (default) is
   DiffusionAD's convention, ``beta_on="source"`` the thesis's. (DRAEM's *code*
   writes it like DiffusionAD, β on the image, with β ~ U[0, 0.8) -- i.e.
   ``beta_range=(0.0, 0.8), beta_on="image"``.) The blend is an affine combination
   (weights sum to 1), so doing it in [−1, 1] instead of the authors' [0, 1] gives
   the same image.

Half of each training batch stays normal (:func:`synthesize_batch`).

Anomaly sources: a stand-in for DTD
-----------------------------------
The Describing Textures Dataset cannot be downloaded offline, so
:func:`anomaly_sources` uses photographs bundled with scikit-image (brick, grass,
gravel, rocket, coffee, a cat, an astronaut, ...). They are far fewer (≤ 13) and
less varied than DTD's 5640 textures; anything trained with them must be labelled
"DTD stand-in: scikit-image photographs", not "DTD". The embedded benchmark's
``brick``, ``grass`` and ``gravel`` categories are crops of
``skimage.data.brick/grass/gravel``, so pass ``exclude=<category>`` to keep a
category's own photograph out of its anomaly sources.

Randomness
----------
Every random draw comes from the ``torch.Generator`` passed in (a CPU generator),
in a fixed order, so the same generator state gives bit-identical output. Images
are float tensors in [−1, 1] (``lib.data.to_tensor``), shape (3, H, W) unless a
function says it accepts a batch (B, 3, H, W); H ≠ W is fine (e.g. 184 × 64).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

__all__ = [
    "perlin_noise", "perlin_mask", "foreground_mask", "augment", "AUGMENTATIONS",
    "AUTHORS_AUGMENTATIONS", "grid_shuffle", "SOURCE_PHOTOS", "anomaly_sources",
    "Synthetic", "synthesize", "synthesize_batch",
]


# ----------------------------------------------------------------------------------
# Small helpers for drawing from a generator
# ----------------------------------------------------------------------------------

def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One draw from U[low, high)."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """One integer draw from [low, high)."""
    return int(torch.randint(low, high, (1,), generator=generator))


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def _check_image(image: torch.Tensor, name: str = "image") -> None:
    if not torch.is_tensor(image) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{name} must be a float tensor 3 x H x W in [-1, 1], got "
                         f"{getattr(image, 'shape', type(image))}")


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 0..255 (same mapping as ``lib.data.to_uint8``)."""
    return ((image.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _from_uint8(image: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1] (same mapping as ``lib.data.to_tensor``)."""
    return image.float() / 127.5 - 1


# ----------------------------------------------------------------------------------
# Perlin noise and masks
# ----------------------------------------------------------------------------------

def _fade(t: torch.Tensor) -> torch.Tensor:
    return 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3


def perlin_noise(shape, res, generator: torch.Generator) -> torch.Tensor:
    """2-D gradient (Perlin) noise of ``shape`` (H, W) with ``res`` (ry, rx) lattice
    cells along each axis (an int means the same on both); float32 (H, W), values
    in about [−1, 1].

    DRAEM's ``rand_perlin_2d`` (Perlin 1985/2002 gradient noise): a random unit
    gradient at every lattice corner, the dot products with the offsets to the four
    corners of a pixel's cell, blended with the quintic fade 6t⁵ − 15t⁴ + 10t³ and
    scaled by √2. DRAEM needs H and W divisible by ``res``; here the noise is laid
    out on the padded size (ceil(H/ry)·ry, ceil(W/rx)·rx), so every cell has an
    integer number of pixels, and cropped to (H, W).
    """
    H, W = _pair(shape)
    ry, rx = _pair(res)
    if H < 1 or W < 1 or ry < 1 or rx < 1:
        raise ValueError(f"need positive shape and res, got shape={shape}, res={res}")
    dy, dx = math.ceil(H / ry), math.ceil(W / rx)          # pixels per cell (padded layout)
    angles = 2 * math.pi * torch.rand((ry + 1, rx + 1), generator=generator)
    grads = torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1)   # (ry+1, rx+1, 2)
    ys, xs = torch.arange(H), torch.arange(W)              # the crop of the padded grid
    iy, ix = ys // dy, xs // dx                             # cell of each pixel
    fy = ((ys % dy).float() / dy)[:, None].expand(H, W)     # position inside the cell
    fx = ((xs % dx).float() / dx)[None, :].expand(H, W)

    def corner(oy, ox):
        g = grads[(iy + oy)[:, None], (ix + ox)[None, :]]   # (H, W, 2)
        return g[..., 0] * (fy - oy) + g[..., 1] * (fx - ox)

    ty, tx = _fade(fy), _fade(fx)
    n0 = torch.lerp(corner(0, 0), corner(1, 0), ty)
    n1 = torch.lerp(corner(0, 1), corner(1, 1), ty)
    return math.sqrt(2) * torch.lerp(n0, n1, tx)


def perlin_mask(shape, generator: torch.Generator, min_scale: int = 0, max_scale: int = 6,
                threshold: float = 0.5, rotate: float = 90, *, foreground=None,
                max_tries: int = 50) -> torch.Tensor:
    """A binary Perlin-noise anomaly mask, float32 {0, 1} of shape (H, W).

    DRAEM / DiffusionAD: the lattice resolution is 2^ky × 2^kx with ky, kx drawn
    independently from [min_scale, max_scale) (the authors: 2^0 ... 2^5); the noise is
    rotated by an angle from U[−rotate, rotate) degrees (bilinear, corners filled
    with 0, the size kept), then binarised ``noise > threshold``.

    ``foreground`` (H, W) bool/float, optional: the mask is multiplied by it (objects,
    DiffusionAD's M = P ⊙ F). A mask can come out empty (coarse noise that never
    exceeds the threshold, or that misses the foreground); then the noise and angle
    are drawn again (the scales are kept, as in DiffusionAD's code), at most
    ``max_tries`` draws in all (the authors: 50). If every draw is empty the empty
    mask is returned; :func:`synthesize_batch` then labels that sample normal, like
    the authors' ``has_anomaly = 0``.

    The authors work at 256 × 256, where 2^5 cells are 8 pixels wide; at 64 × 64 the
    same scales give cells down to 2 pixels (speckle), ``max_scale=4`` keeps the
    authors' smallest cell size in pixels. The resolution is capped at size/2 per
    axis (a cell spans ≥ 2 pixels; Perlin noise vanishes at lattice points).
    """
    H, W = _pair(shape)
    if not 0 <= min_scale < max_scale:
        raise ValueError(f"need 0 <= min_scale < max_scale, got {min_scale}, {max_scale}")
    fg = None
    if foreground is not None:
        fg = torch.as_tensor(foreground).float()
        if fg.shape != (H, W):
            raise ValueError(f"foreground must be H x W = {(H, W)}, got {tuple(fg.shape)}")
    ky, kx = _randint(generator, min_scale, max_scale), _randint(generator, min_scale, max_scale)
    # Perlin noise is 0 at lattice points: with 1-pixel cells it would be 0 everywhere,
    # so a cell spans at least 2 pixels (only bites on images smaller than 2 * 2^k).
    res = (min(2 ** ky, max(1, H // 2)), min(2 ** kx, max(1, W // 2)))
    mask = torch.zeros(H, W)
    for _ in range(max(1, max_tries)):
        noise = perlin_noise((H, W), res, generator)
        angle = _uniform(generator, -rotate, rotate)
        if angle:
            noise = TF.rotate(noise[None], angle, interpolation=InterpolationMode.BILINEAR, fill=[0.0])[0]
        mask = (noise > threshold).float()
        if fg is not None:
            mask = mask * fg
        if mask.any():
            break
    return mask


def foreground_mask(image: torch.Tensor, method: str = "otsu") -> torch.Tensor:
    """Bool mask of the object in ``image`` (3, H, W) -> (H, W), or (B, 3, H, W) ->
    (B, H, W).

    ``method="otsu"`` (objects): Otsu's threshold (``skimage.filters.threshold_otsu``)
    on the grey image splits it in two; the side that holds most of the image
    *border* is taken as background (objects sit inside the frame), the other side
    is the foreground. A tie on the border falls back to "the foreground is the
    minority of pixels". A constant image (Otsu cannot split it) gives all ones.
    DiffusionAD instead loads precomputed foreground masks ([57], its ``DISthresh``
    folders); this is the offline stand-in.

    ``method="none"`` (textures): all ones -- the whole image may hold an anomaly.
    (DiffusionAD's code uses random foreground masks of the carpet class for
    textures; not reproduced.)
    """
    if image.ndim == 4:
        return torch.stack([foreground_mask(x, method) for x in image])
    _check_image(image)
    H, W = image.shape[-2:]
    if method == "none":
        return torch.ones(H, W, dtype=torch.bool)
    if method != "otsu":
        raise ValueError(f"method must be 'otsu' or 'none', got {method!r}")
    from skimage.filters import threshold_otsu

    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32)
    grey = (image.detach().float().cpu() * w[:, None, None]).sum(0).numpy()
    if grey.max() - grey.min() < 1e-6:
        return torch.ones(H, W, dtype=torch.bool)
    bright = grey > threshold_otsu(grey)
    border = np.concatenate([bright[0], bright[-1], bright[1:-1, 0], bright[1:-1, -1]])
    frac = border.mean()
    if frac != 0.5:
        fg = ~bright if frac > 0.5 else bright      # background = the border's side
    else:
        fg = bright if bright.mean() <= 0.5 else ~bright
    return torch.from_numpy(np.ascontiguousarray(fg))


# ----------------------------------------------------------------------------------
# Augmentations of the anomaly source (uint8 internally)
# ----------------------------------------------------------------------------------

def _posterize(u, g):      # imgaug Posterize(): keep 1..7 bits
    return TF.posterize(u, _randint(g, 1, 8))


def _sharpness(u, g):      # imgaug pillike.EnhanceSharpness(): factor U(0, 2)
    return TF.adjust_sharpness(u, _uniform(g, 0.0, 2.0))


def _solarize(u, g):       # imgaug Solarize(threshold=(32, 128)); always applied here
    return TF.solarize(u, float(_randint(g, 32, 129)))


def _equalize(u, g):       # imgaug pillike.Equalize()
    return TF.equalize(u)


def _brightness(u, g):     # imgaug MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30)), on RGB
    mul, add = _uniform(g, 0.8, 1.2), _uniform(g, -30.0, 30.0)
    return (u.float() * mul + add).round().clamp(0, 255).to(torch.uint8)


def _colour(u, g):         # imgaug AddToHueAndSaturation((-50, 50), per_channel=True): hue ± ~70°, saturation
    u = TF.adjust_hue(u, _uniform(g, -0.2, 0.2))
    return TF.adjust_saturation(u, _uniform(g, 0.6, 1.4))


def _autocontrast(u, g):   # imgaug pillike.Autocontrast()
    return TF.autocontrast(u)


def _gamma(u, g):          # imgaug GammaContrast((0.5, 2.0), per_channel=True)
    gam = torch.tensor([_uniform(g, 0.5, 2.0) for _ in range(3)])[:, None, None]
    return (255 * (u.float() / 255) ** gam).round().clamp(0, 255).to(torch.uint8)


def _invert(u, g):         # imgaug Invert()
    return TF.invert(u)


def _rotate(u, g):         # imgaug Affine(rotate=(-45, 45)), black corners
    return TF.rotate(u, _uniform(g, -45.0, 45.0), interpolation=InterpolationMode.BILINEAR, fill=[0.0])


_OPS: dict[str, Callable] = {
    "posterize": _posterize, "sharpness": _sharpness, "solarize": _solarize,
    "equalize": _equalize, "brightness": _brightness, "colour": _colour,
    "autocontrast": _autocontrast, "gamma": _gamma, "invert": _invert, "rotate": _rotate,
}
#: The set of DRAEM (thesis §3.1.3) / DiffusionAD §IV-D: {posterize, sharpness,
#: solarize, equalize, brightness change, colour change, auto-contrast}.
AUGMENTATIONS: tuple[str, ...] = ("posterize", "sharpness", "solarize", "equalize",
                                  "brightness", "colour", "autocontrast")
#: The authors' code (DRAEM and DiffusionAD) draws from 10: the 7 above plus gamma
#: contrast, invert and a ±45° rotation.
AUTHORS_AUGMENTATIONS: tuple[str, ...] = AUGMENTATIONS + ("gamma", "invert", "rotate")


def augment(image: torch.Tensor, generator: torch.Generator, n: int = 3,
            ops: Sequence[str] = AUGMENTATIONS) -> torch.Tensor:
    """Apply ``n`` distinct augmentations drawn at random from ``ops`` (default
    :data:`AUGMENTATIONS`, DRAEM's set; the authors pick 3), in random order.

    ``image`` (3, H, W) or (B, 3, H, W) in [−1, 1]; each image of a batch gets its own
    draw. The work is done on uint8 with ``torchvision.transforms.v2.functional``
    (so the result is quantised to 256 levels); returns float32 in [−1, 1]. Parameter
    ranges follow the authors' imgaug calls; brightness is applied to RGB instead of
    imgaug's lightness channel, and solarize is always applied (imgaug's p = 0.5).
    """
    if image.ndim == 4:
        return torch.stack([augment(x, generator, n, ops) for x in image])
    _check_image(image)
    unknown = [o for o in ops if o not in _OPS]
    if unknown:
        raise ValueError(f"unknown augmentations {unknown}; choose from {sorted(_OPS)}")
    if not 0 <= n <= len(ops):
        raise ValueError(f"n={n} distinct augmentations asked for, only {len(ops)} in ops")
    u = _to_uint8(image.detach().cpu())
    for i in torch.randperm(len(ops), generator=generator)[:n].tolist():
        u = _OPS[ops[i]](u, generator)
    return _from_uint8(u).to(image.device)


def grid_shuffle(image: torch.Tensor, generator: torch.Generator, grid: int = 8) -> torch.Tensor:
    """Cut ``image`` into grid × grid cells and put them back in a random order
    (DiffusionAD's self-augmentation of objects, §IV-D).

    ``image`` (3, H, W) or (B, 3, H, W), each image with its own permutation. Cells
    are (H // grid) × (W // grid) pixels; when H or W is not divisible by ``grid`` the
    cells tile the top-left (grid·(H // grid), grid·(W // grid)) region and the
    remaining < grid rows/columns at the bottom/right stay where they are, so the
    size and every pixel value are kept (the result is an exact permutation of cells).
    Note: the authors' code permutes 8 column strips and then 8 row strips (even and
    odd strips separately) rather than all 64 cells freely.
    """
    if image.ndim == 4:
        return torch.stack([grid_shuffle(x, generator, grid) for x in image])
    if image.ndim != 3:
        raise ValueError(f"image must be C x H x W or B x C x H x W, got {tuple(image.shape)}")
    C, H, W = image.shape
    ch, cw = H // grid, W // grid
    if grid < 1 or ch < 1 or cw < 1:
        raise ValueError(f"grid={grid} does not fit an image of {H} x {W}")
    region = image[:, :grid * ch, :grid * cw]
    cells = region.reshape(C, grid, ch, grid, cw).permute(1, 3, 0, 2, 4).reshape(grid * grid, C, ch, cw)
    cells = cells[torch.randperm(grid * grid, generator=generator).to(image.device)]
    out = image.clone()
    out[:, :grid * ch, :grid * cw] = cells.reshape(grid, grid, C, ch, cw).permute(2, 0, 3, 1, 4).reshape(
        C, grid * ch, grid * cw)
    return out


# ----------------------------------------------------------------------------------
# Anomaly sources: scikit-image photographs as a DTD stand-in
# ----------------------------------------------------------------------------------

#: skimage.data loaders bundled with scikit-image (no download). ``cat`` is the same
#: photo as ``chelsea`` and is left out.
SOURCE_PHOTOS: tuple[str, ...] = (
    "brick", "grass", "gravel", "rocket", "coffee", "chelsea", "astronaut", "camera",
    "coins", "moon", "hubble_deep_field", "immunohistochemistry", "retina",
)


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    a = np.asarray(getattr(skimage.data, name)())
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3]).astype(np.uint8)


@lru_cache(maxsize=32)
def _sources(size: tuple[int, int], exclude: frozenset) -> tuple[torch.Tensor, ...]:
    from PIL import Image

    H, W = size
    out = []
    for name in SOURCE_PHOTOS:
        if name in exclude:
            continue
        a = _photo(name)
        h, w = a.shape[:2]
        # centre crop to the aspect of (H, W), then resize (no distortion)
        if h * W > w * H:
            ch, cw = max(1, round(w * H / W)), w
        else:
            ch, cw = h, max(1, round(h * W / H))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        im = Image.fromarray(a[y0:y0 + ch, x0:x0 + cw]).resize((W, H), Image.BILINEAR)
        t = _from_uint8(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous())
        out.append(t)
    return tuple(out)


def anomaly_sources(size, exclude=None) -> list[torch.Tensor]:
    """Anomaly-source photographs, float32 (3, H, W) in [−1, 1], in the order of
    :data:`SOURCE_PHOTOS` -- a **stand-in for DTD** (the Describing Textures Dataset
    the papers use cannot be downloaded offline); label results trained with it
    "DTD stand-in (scikit-image photographs)".

    ``size``: int or (H, W); each photo is centre-cropped to that aspect ratio and
    resized bilinearly (the authors resize whole DTD images, distorting them).
    ``exclude``: a name or names to leave out -- pass the category, e.g.
    ``exclude="brick"``: the embedded benchmark's brick/grass/gravel are crops of
    ``skimage.data.brick/grass/gravel``, and a category's own photo must not be its
    anomaly source. Names that are not in :data:`SOURCE_PHOTOS` (other categories)
    are ignored. Results are cached per (size, exclude); the list is new on each
    call but the tensors are shared -- do not modify them in place.
    """
    H, W = _pair(size)
    if H < 1 or W < 1:
        raise ValueError(f"size must be positive, got {size}")
    ex = frozenset([exclude] if isinstance(exclude, str) else (exclude or ()))
    return list(_sources((H, W), ex))


# ----------------------------------------------------------------------------------
# Synthesis
# ----------------------------------------------------------------------------------

class Synthetic(NamedTuple):
    """A synthetic anomaly: ``image`` float32 (3, H, W) in [−1, 1]; ``mask`` float32
    {0, 1} (1, H, W), the pixels that were blended; ``beta`` the opacity drawn (in the
    convention of ``beta_on``)."""

    image: torch.Tensor
    mask: torch.Tensor
    beta: float


def synthesize(image: torch.Tensor, generator: torch.Generator, sources: Sequence[torch.Tensor],
               beta_range=(0.2, 0.8), mode: str = "texture", self_aug_prob: float = 0.5,
               foreground=None, min_scale: int = 0, max_scale: int = 6, *, beta_on: str = "image",
               n_aug: int = 3, grid: int = 8, ops: Sequence[str] = AUGMENTATIONS,
               max_tries: int = 50) -> Synthetic:
    """One synthetic anomaly in a normal ``image`` (3, H, W) in [−1, 1] (§IV-D).

    Mask ``M``: :func:`perlin_mask` (scales 2^min_scale ... 2^(max_scale−1)), times the
    foreground for ``mode="object"`` (``foreground`` (H, W) if given, else
    :func:`foreground_mask` (Otsu)); for ``mode="texture"`` the Perlin mask as is
    (times ``foreground`` only if one is passed).

    Source ``A``: ``mode="texture"``: a random photo of ``sources`` (see
    :func:`anomaly_sources`), augmented (``n_aug`` ops). ``mode="object"``: with
    probability ``self_aug_prob`` the image's own augmented copy shuffled on a
    ``grid`` × ``grid`` grid, else an augmented photo (DiffusionAD: 50/50); with no
    ``sources`` objects always use the self-augmentation.

    Blend, β ~ U[beta_range)::

        beta_on="image"  (DiffusionAD eq. 12, default, β ∈ [0.2, 0.8)):
            out = image·(1−M) + (1−β)·A·M + β·image·M
        beta_on="source" (DRAEM paper / thesis §3.1.3, β ∈ [0.1, 1.0]):
            out = image·(1−M) + (1−β)·image·M + β·A·M

    Pixels where M = 0 are returned bit-identical to the input. Draw order (fixed):
    mask, source choice, augmentation, grid shuffle, β.
    """
    _check_image(image)
    if mode not in ("texture", "object"):
        raise ValueError(f"mode must be 'texture' or 'object', got {mode!r}")
    if beta_on not in ("image", "source"):
        raise ValueError(f"beta_on must be 'image' (DiffusionAD) or 'source' (DRAEM), got {beta_on!r}")
    lo, hi = float(beta_range[0]), float(beta_range[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"beta_range must satisfy 0 <= low <= high <= 1, got {beta_range}")
    sources = list(sources or [])
    if mode == "texture" and not sources:
        raise ValueError("mode='texture' needs anomaly sources; pass lib.synth.anomaly_sources((H, W), "
                         "exclude=category)")
    H, W = image.shape[-2:]
    for s in sources:
        if tuple(s.shape) != (3, H, W):
            raise ValueError(f"every source must be 3 x {H} x {W} like the image, got {tuple(s.shape)}; "
                             f"build them with anomaly_sources(({H}, {W}))")
    if foreground is None and mode == "object":
        foreground = foreground_mask(image, "otsu")
    mask = perlin_mask((H, W), generator, min_scale, max_scale, foreground=foreground,
                       max_tries=max_tries).to(image.device)

    use_self = mode == "object" and (not sources or float(torch.rand((), generator=generator)) < self_aug_prob)
    if use_self:
        source = grid_shuffle(augment(image, generator, n_aug, ops), generator, grid)
    else:
        source = augment(sources[_randint(generator, 0, len(sources))], generator, n_aug, ops)
    source = source.to(device=image.device, dtype=image.dtype)

    beta = _uniform(generator, lo, hi)
    M = mask[None].to(image.dtype)
    if beta_on == "image":
        blended = image * (1 - M) + (1 - beta) * source * M + beta * image * M
    else:
        blended = image * (1 - M) + (1 - beta) * image * M + beta * source * M
    out = torch.where(M > 0, blended, image)       # exact outside the mask (no -0.0 / rounding)
    return Synthetic(out, M, beta)


def synthesize_batch(images: torch.Tensor, generator: torch.Generator, sources: Sequence[torch.Tensor],
                     anomaly_fraction: float = 0.5, **kw):
    """A training batch: the first ``B − floor(B·anomaly_fraction)`` images stay
    normal (empty masks), the rest get a synthetic anomaly from :func:`synthesize`
    (``**kw`` is passed on). The authors train on half normal, half synthetic
    (paper: batch 16 = 8 + 8; their code flips a coin per sample).

    ``images`` (B, 3, H, W) in [−1, 1]; a ``foreground`` in ``kw`` may be one (H, W)
    mask for all images or (B, H, W), one per image. Returns ``(images, masks,
    labels)``: float32 (B, 3, H, W), float32 {0, 1} (B, 1, H, W) and int64 (B,), the
    label 1 where the mask is non-empty (a sample whose every Perlin draw came out
    empty keeps label 0, like the authors' ``has_anomaly``).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B x 3 x H x W, got {tuple(images.shape)}")
    if not 0.0 <= anomaly_fraction <= 1.0:
        raise ValueError(f"anomaly_fraction must be in [0, 1], got {anomaly_fraction}")
    B, _, H, W = images.shape
    n_normal = B - int(math.floor(B * anomaly_fraction))
    fg = kw.pop("foreground", None)
    per_image = fg is not None and torch.as_tensor(fg).ndim == 3
    out = images.clone()
    masks = torch.zeros(B, 1, H, W, dtype=images.dtype, device=images.device)
    for i in range(n_normal, B):
        s = synthesize(images[i], generator, sources, foreground=fg[i] if per_image else fg, **kw)
        out[i], masks[i] = s.image, s.mask
    labels = masks.flatten(1).any(1).long()
    return out, masks, labels
