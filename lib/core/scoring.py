"""Anomaly scoring in one place: pixel anomaly maps from an image and its reconstruction, and the
image score that reduces a map to one number.

Sources:
  * seed 002 (the thesis) ch. 3 and §3.1.3: the reconstruction error |x̂ − x|, the multi-scale
    reconstruction-error map, the learned map (a segmentation net on (x, x̂), after DRAEM) and the
    image score max(map);
  * seed 003 (DiffusionAD): the segmentation sub-network's map M̂ = sigmoid(seg(x ⊕ x̂)) and the image
    score of the authors' code, the mean of the top-50 map values.

The reduction of :func:`image_score` is a required named argument, so each method states its paper's
choice where it is used: ``reduction="max"`` for the thesis, ``reduction="topk", k=50`` for DiffusionAD.

Maps are (B, H, W) tensors; images (B, C, H, W) in [-1, 1].
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .checks import check_choice, check_finite, check_images, check_int, check_shape

__all__ = ["REDUCTIONS", "reconstruction_error", "multiscale_error_map", "segmentation_map", "image_score"]

REDUCTIONS = ("max", "topk")


def _pair(x: torch.Tensor, x_hat: torch.Tensor) -> None:
    """x a finite image batch, x_hat (its reconstruction) finite and of the same shape."""
    check_images("x", x)
    check_finite("x_hat", check_shape("x_hat", x_hat, x.shape, like="x"))


def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Seed 002 ch. 3: the pixel-wise anomaly map |x̂ − x|, averaged over channels → (B, H, W)."""
    _pair(x, x_hat)
    return (x_hat - x).abs().mean(dim=1)


def multiscale_error_map(x: torch.Tensor, x_hat: torch.Tensor, scales: Sequence[float] = (1, 1 / 2, 1 / 4, 1 / 8),
                         filter_size: int = 21) -> torch.Tensor:
    """Seed 002 §3.1.3, "Multi-Scale Reconstruction Error Anomaly Map":

        Err(x, x̂) = ( 1/N_L Σ_{l ∈ L} Err(x, x̂)_l ) * f_{s×s},     L = {1, 1/2, 1/4, 1/8}

    For each scale l: x and x̂ are *downsampled first* (``F.interpolate(mode="area")``, i.e. the mean
    of each l⁻¹×l⁻¹ block; size round(l·H) × round(l·W), at least 1), the error there is
    |x̂_l - x_l| averaged over channels (the absolute "reconstruction error" |x̂ - x| of ch. 3 —
    the thesis cites [6] without saying abs or squared), and it is upsampled back to H × W
    (``mode="bilinear"``, ``align_corners=False``).  The scales' maps are averaged, then smoothed by
    the s×s mean filter f (``avg_pool2d``, stride 1, padding s//2, ``count_include_pad=False``, so
    border pixels average only the pixels inside the image).  s must be odd; the thesis gives no s —
    21 is the mean filter of RIAD [65] re-implementations, sized for 256×256 images (scale it down for
    small images).  Returns (B, H, W); the thesis' image score is ``image_score(map, reduction="max")``.
    """
    _pair(x, x_hat)
    if isinstance(filter_size, bool) or not isinstance(filter_size, int) or filter_size < 1 or filter_size % 2 == 0:
        raise ValueError(f"filter_size must be an odd int >= 1, got {filter_size!r}")
    if len(scales) == 0 or any(not 0 < l <= 1 for l in scales):
        raise ValueError(f"scales must be a non-empty sequence of numbers in (0, 1], got {scales!r}")
    H, W = x.shape[-2:]
    total = torch.zeros(x.shape[0], 1, H, W, dtype=x.dtype, device=x.device)
    for l in scales:
        size = (max(1, round(H * l)), max(1, round(W * l)))
        if size == (H, W):
            err = (x_hat - x).abs().mean(dim=1, keepdim=True)
        else:
            xs = F.interpolate(x, size=size, mode="area")
            xh = F.interpolate(x_hat, size=size, mode="area")
            err = F.interpolate((xh - xs).abs().mean(dim=1, keepdim=True), size=(H, W), mode="bilinear",
                                align_corners=False)
        total = total + err
    total = total / len(scales)
    if filter_size > 1:
        total = F.avg_pool2d(total, filter_size, stride=1, padding=filter_size // 2, count_include_pad=False)
    return total[:, 0]


@torch.no_grad()
def segmentation_map(seg: torch.nn.Module, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """The learned anomaly map M̂ = sigmoid(seg(concat(x, x̂)))[:, 0] ∈ [0, 1] → (B, H, W): DiffusionAD's
    segmentation sub-network (seed 003 §IV-C) and the thesis' learned map (seed 002 §3.1.3, after DRAEM).

    ``seg`` maps the 6-channel pair to logits (:class:`lib.core.nets.SegmentationUNet`); no gradients.
    """
    _pair(x, x_hat)
    return torch.sigmoid(seg(torch.cat([x, x_hat], dim=1)))[:, 0]


def image_score(anomaly_map: torch.Tensor, *, reduction: str, k: int = 50) -> torch.Tensor:
    """Image-level anomaly score of a (B, H, W) map → (B,):

        ``reduction="max"``:  s = max_ij A_ij                      (seed 002 §3.1.3, the thesis)
        ``reduction="topk"``: s = mean of the k largest A_ij        (DiffusionAD, authors' code: k = 50)

    k ≥ 1 (a map with fewer than k pixels averages all of them); ``k`` is ignored for "max".
    No data-dependent checks, so it runs inside ``torch.compile`` (``lib.tools.bench``).
    """
    check_choice("reduction", reduction, REDUCTIONS)
    if not isinstance(anomaly_map, torch.Tensor) or anomaly_map.ndim != 3 or anomaly_map.shape[0] == 0:
        raise ValueError(f"anomaly_map must be a (B, H, W) tensor with B >= 1, got "
                         f"{tuple(anomaly_map.shape) if isinstance(anomaly_map, torch.Tensor) else type(anomaly_map)}")
    flat = anomaly_map.flatten(1)
    if reduction == "max":
        return flat.amax(dim=1)
    k = check_int("k", k, 1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(1)
