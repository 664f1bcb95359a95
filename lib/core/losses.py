"""Losses of DiffusionAD's segmentation sub-network (seed 003; ``paper-settings.md``).

The authors train the segmentation net with ``5 × focal(α = 0.5, γ = 4) + smooth L1``
on the predicted anomaly map against the synthetic mask (plus the diffusion noise
loss). :class:`lib.models.SegmentationUNet` returns logits, so::

    loss = 5 * focal_loss(logits, mask) + smooth_l1_map_loss(torch.sigmoid(logits), mask)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["focal_loss", "smooth_l1_map_loss"]


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.5, gamma: float = 4.0,
               reduction: str = "mean") -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017) on the sigmoid probabilities of ``logits``::

        FL = −α_t (1 − p_t)^γ log p_t,
        p = σ(logit),  p_t = p if y = 1 else 1 − p,  α_t = α if y = 1 else 1 − α.

    DiffusionAD: α = 0.5, γ = 4, weighted 5× in the total loss. Computed stably from
    ``binary_cross_entropy_with_logits`` (BCE = −log p_t, p_t = exp(−BCE),
    1 − p_t = −expm1(−BCE)), so large logits neither overflow nor give log 0. For
    soft targets y ∈ [0, 1], α_t = α·y + (1 − α)(1 − y) and p_t = exp(−BCE).
    γ = 0 gives the α_t-weighted BCE. The authors' ``BinaryFocalLoss`` multiplies by a
    constant α instead of α_t (the same at their α = 0.5) and takes probabilities
    (``F.binary_cross_entropy``, log clamped at −100) instead of logits.

    ``logits`` and ``target`` share a shape (e.g. B × 1 × H × W); ``reduction``:
    ``"mean"`` (the authors), ``"sum"`` or ``"none"``.
    """
    target = target.to(logits.dtype)
    if target.shape != logits.shape:
        raise ValueError(f"target shape {tuple(target.shape)} != logits shape {tuple(logits.shape)}")
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    one_minus_pt = -torch.expm1(-bce)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return _reduce(alpha_t * one_minus_pt.pow(gamma) * bce, reduction)


def smooth_l1_map_loss(probs: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """DiffusionAD's smooth-L1 term: ``F.smooth_l1_loss(probs, target)`` (β = 1) on the
    anomaly **probabilities** ``probs = torch.sigmoid(logits)``, not on logits.

    With |p − y| ≤ 1 it is 0.5 (p − y)² per pixel, i.e. half the squared error.
    Raises ValueError if ``probs`` leaves [0, 1] (logits passed by mistake).
    """
    target = target.to(probs.dtype)
    if target.shape != probs.shape:
        raise ValueError(f"target shape {tuple(target.shape)} != probs shape {tuple(probs.shape)}")
    if probs.numel() and (probs.min() < 0 or probs.max() > 1):
        raise ValueError("probs must lie in [0, 1]; pass torch.sigmoid(logits), not the logits")
    return F.smooth_l1_loss(probs, target, reduction=reduction)
