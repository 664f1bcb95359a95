"""The papers' evaluation metrics.

- Anomaly detection and localisation, as DiffusionAD (seed 003) reports them:
  `image_auroc`, `pixel_auroc`, `pro_auc` (MVTec AD per-region overlap), `pixel_ap`.
- The detection report of DIAG (seed 001, §IV-A): `best_f1_report`
  (AP, and precision/recall at the best-F1 threshold).
- Generation quality: `frechet_distance` between two feature sets; the FID of DIAG Table III
  (its Inception network and weights policy) is :mod:`lib.core.fid`.

Speed is measured by :mod:`lib.core.timing` (`Stopwatch`, `throughput`).

Inputs may be numpy arrays or torch tensors of any float dtype. Anomaly maps and
masks are N x H x W or N x 1 x H x W; masks are binary (bool or 0/1). A higher score
means "more anomalous", and a score counts as anomalous at threshold t when score >= t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

__all__ = [
    "ArrayLike",
    "image_auroc",
    "pixel_auroc",
    "pro_auc",
    "pixel_ap",
    "best_f1_report",
    "frechet_distance",
    "sliced_wasserstein",
    "two_sample_classifier",
    "to_numpy",
    "finite_scores",
    "as_nhw",
]

ArrayLike = np.ndarray | torch.Tensor | Sequence
"""What every metric accepts: a numpy array, a torch tensor (any dtype, any device) or a nested sequence."""


# --------------------------------------------------------------------------- inputs


def to_numpy(x: ArrayLike) -> np.ndarray:
    """``x`` as a numpy array: tensors detached and moved to the CPU (bfloat16 as float32), the rest via np.asarray."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:  # numpy has no bfloat16
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def finite_scores(name: str, x: ArrayLike) -> np.ndarray:
    """``x`` as a real-valued numpy array with no NaN or inf; ``ValueError`` naming ``name`` otherwise."""
    x = to_numpy(x)
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{name} must hold real-valued scores, got dtype {x.dtype}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; replace or drop those scores first.")
    return x


def _binary(x: ArrayLike, name: str) -> np.ndarray:
    x = to_numpy(x)
    if x.dtype != bool:
        if not ((x == 0) | (x == 1)).all():
            raise ValueError(
                f"{name} must be binary (bool or 0/1); threshold it first, e.g. {name} > 0.5."
            )
        x = x == 1
    return x


def _scores_and_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    scores = finite_scores("scores", scores)
    labels = _binary(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores has shape {scores.shape} but labels has shape {labels.shape}; "
            "give one score per label."
        )
    return scores.ravel(), labels.ravel()


def as_nhw(x: np.ndarray, name: str) -> np.ndarray:
    """N x H x W or N x 1 x H x W as N x H x W (``name`` for the error)."""
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"{name} must be N x H x W or N x 1 x H x W, got shape {x.shape}.")
    return x


def _maps_and_masks(anomaly_maps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    maps = as_nhw(finite_scores("anomaly_maps", anomaly_maps), "anomaly_maps")
    masks = as_nhw(_binary(masks, "masks"), "masks")
    if maps.shape != masks.shape:
        raise ValueError(
            f"anomaly_maps has shape {maps.shape} but masks has shape {masks.shape}; "
            "resize the maps to the mask resolution first."
        )
    return maps, masks


def _require_both_classes(labels: np.ndarray, name: str) -> None:
    if labels.all() or not labels.any():
        kind = "anomalous (1)" if labels.all() else "normal (0)"
        raise ValueError(
            f"{name} are all {kind}; AUROC and AP need at least one normal (0) "
            "and one anomalous (1) sample."
        )


# ----------------------------------------------------------- detection / localisation


def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image AUROC = P(s_anomalous > s_normal) + P(tie) / 2 over the image scores (DiffusionAD, seed 003).

    scores: one score per image; labels: 1 = anomalous image. Computed by
    scikit-learn's `roc_auc_score` (ties count half).
    """
    scores, labels = _scores_and_labels(scores, labels)
    _require_both_classes(labels, "labels")
    return float(roc_auc_score(labels, scores))


def pixel_auroc(anomaly_maps: ArrayLike, masks: ArrayLike) -> float:
    """Pixel AUROC = P(s_anomalous > s_normal) + P(tie) / 2 over all pixels of all images (DiffusionAD, seed 003)."""
    maps, masks = _maps_and_masks(anomaly_maps, masks)
    _require_both_classes(masks, "masks")
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


def pixel_ap(anomaly_maps: ArrayLike, masks: ArrayLike) -> float:
    """Pixel AP = sum_k (R_k - R_{k-1}) P_k over all pixels of all images (DiffusionAD, seed 003).

    Step-wise, as scikit-learn's `average_precision_score` (no trapezoid interpolation).
    """
    maps, masks = _maps_and_masks(anomaly_maps, masks)
    _require_both_classes(masks, "masks")
    return float(average_precision_score(masks.ravel(), maps.ravel()))


def best_f1_report(scores: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """AP, and precision/recall at the threshold maximising F1 = 2PR / (P + R) (DIAG, seed 001, §IV-A).

    F1 over the points of scikit-learn's `precision_recall_curve`
    (one per distinct score; a sample is predicted anomalous when score >= threshold).
    DIAG's code comment says F2 but the code computes F1, as done here.
    scores/labels may have any (equal) shape, e.g. image scores or flattened pixel maps.

    Returns {"ap", "precision", "recall", "f1", "threshold"} as floats.
    """
    scores, labels = _scores_and_labels(scores, labels)
    _require_both_classes(labels, "labels")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the final (P=1, R=0) has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return {
        "ap": float(average_precision_score(labels, scores)),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "f1": float(f1[best]),
        "threshold": float(thresholds[best]),
    }


def pro_auc(anomaly_maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3) -> float:
    """PRO-AUC = (1 / fpr_limit) ∫_0^fpr_limit PRO(FPR) dFPR, the per-region-overlap curve's area (MVTec AD).

    The localisation metric of MVTec AD, reported by DiffusionAD (seed 003).
    Regions are the 8-connected components of each ground-truth mask. At threshold t
    (pixel anomalous when score >= t):
      PRO(t) = mean over all regions R of all images of |{p in R : score_p >= t}| / |R|,
      FPR(t) = fraction of all normal pixels of all images with score >= t.
    The curve is exact: it has a point for every distinct score (no binning) and starts
    at (FPR 0, PRO 0), the threshold above the maximum score. Pixels with equal scores
    enter together, so a tie between normal and anomalous pixels is one straight
    (diagonal) segment. The curve is integrated with the trapezoid rule from FPR 0 to
    `fpr_limit`, the PRO at `fpr_limit` being linearly interpolated on the segment that
    crosses it (also when that segment is a tie group straddling the limit), and divided
    by `fpr_limit`: a perfect map scores 1.0, a constant map `fpr_limit / 2`.
    """
    maps, masks = _maps_and_masks(anomaly_maps, masks)
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}.")
    if not masks.any():
        raise ValueError("masks has no anomalous pixel; PRO needs at least one defect region.")
    if masks.all():
        raise ValueError("masks has no normal pixel; PRO needs normal pixels for its FPR axis.")

    # Give every anomalous pixel the weight 1 / |its region|: then K * PRO(t) is the
    # total weight of the anomalous pixels scoring >= t (K = number of regions).
    eight_connected = np.ones((3, 3), dtype=int)
    region_sizes, n_regions = [], 0
    for mask in masks:
        regions, k = scipy.ndimage.label(mask, structure=eight_connected)
        region_sizes.append(np.bincount(regions.ravel())[regions[mask]])
        n_regions += k
    anomalous = maps[masks]  # same (C) order as the concatenated sizes
    order = np.argsort(anomalous, kind="stable")
    anomalous = anomalous[order]
    weight = 1.0 / np.concatenate(region_sizes)[order]
    weight_below = np.concatenate(([0.0], np.cumsum(weight)))  # [i]: weight of first i scores

    # The FPR axis only moves at distinct normal scores u_1 > u_2 > ...; x_j is the FPR
    # once all normal pixels >= u_j are in. Only the u_j up to the first x_j >= fpr_limit
    # matter: those are the normal scores >= the ceil(fpr_limit * n)-th largest.
    normal = maps[~masks]
    n_top = min(normal.size, math.ceil(fpr_limit * normal.size))
    cutoff = np.partition(normal, normal.size - n_top)[normal.size - n_top]
    u, counts = np.unique(normal[normal >= cutoff], return_counts=True)
    u, counts = u[::-1], counts[::-1]
    x = np.cumsum(counts) / normal.size
    x_prev = np.concatenate(([0.0], x[:-1]))

    # Segment j runs from (x_{j-1}, PRO just above u_j) to (x_j, PRO at u_j): at u_j the
    # tied normal and anomalous pixels enter together. Vertical steps (anomalous pixels
    # between two normal scores) add no area.
    total = weight_below[-1]
    pro_above = (total - weight_below[np.searchsorted(anomalous, u, side="right")]) / n_regions
    pro_at = (total - weight_below[np.searchsorted(anomalous, u, side="left")]) / n_regions

    # Keep the segments up to the one that crosses fpr_limit, and end that one at the
    # limit, interpolating its PRO linearly.
    end = min(int(np.searchsorted(x, fpr_limit, side="left")), x.size - 1) + 1
    x, x_prev, pro_above, pro_at = x[:end], x_prev[:end], pro_above[:end], pro_at[:end]
    t = (fpr_limit - x_prev[-1]) / (x[-1] - x_prev[-1])
    pro_at[-1] = pro_above[-1] + t * (pro_at[-1] - pro_above[-1])
    x[-1] = fpr_limit
    area = np.sum((x - x_prev) * (pro_above + pro_at) / 2)
    return float(area / fpr_limit)


# ------------------------------------------------------------- Fréchet distance


def frechet_distance(features_a: ArrayLike, features_b: ArrayLike) -> float:
    """Fréchet distance d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrt(S_a S_b)) of two N x D feature sets.

    mu and S are the sample means and covariances (np.cov, N - 1) of Gaussians fitted to
    the features, exactly as pytorch-fid's `calculate_frechet_distance`:
    if sqrt(S_a S_b) is not finite, 1e-6 is added to both diagonals; a small imaginary
    part from numerical error is dropped (a large one raises). Written out here because
    pytorch-fid passes the `disp` argument that SciPy >= 1.16 deprecates.
    """
    a = finite_scores("features_a", features_a).astype(np.float64)
    b = finite_scores("features_b", features_b).astype(np.float64)
    for name, f in (("features_a", a), ("features_b", b)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"{name} must be N x D with N >= 2 samples, got shape {f.shape}.")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"features_a has D={a.shape[1]} but features_b has D={b.shape[1]}; "
            "use the same feature extractor for both."
        )
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))

    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(cov_a.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"sqrt(S_a S_b) has an imaginary component {np.abs(covmean.imag).max():.3g}; "
                "use more samples than feature dimensions."
            )
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


# ------------------------------------------------- generation quality without Inception weights


def sliced_wasserstein(features_a: ArrayLike, features_b: ArrayLike, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance SW_1 = E_θ W_1(θᵀa, θᵀb) of two N x D sample sets, θ uniform on the unit
    sphere (``n_projections`` directions drawn with ``seed``); each 1-D W_1 is scipy's ``wasserstein_distance``
    between the projected samples (the sets may differ in size). A substitute for FID where no Inception weights
    exist (it is not FID and is never printed as FID)."""
    from scipy.stats import wasserstein_distance

    a = finite_scores("features_a", features_a).astype(np.float64)
    b = finite_scores("features_b", features_b).astype(np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 1:
        raise ValueError(f"features_a and features_b must be N x D with the same D, got {a.shape} and {b.shape}")
    theta = np.random.default_rng(seed).normal(size=(a.shape[1], int(n_projections)))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    pa, pb = a @ theta, b @ theta
    return float(np.mean([wasserstein_distance(pa[:, k], pb[:, k]) for k in range(theta.shape[1])]))


def two_sample_classifier(features_a: ArrayLike, features_b: ArrayLike, folds: int = 5, seed: int = 0
                          ) -> dict[str, float]:
    """Classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017): the out-of-fold accuracy of a standardised
    logistic regression telling set a from set b (stratified ``folds``-fold cross-validation, shuffled with
    ``seed``), and the one-sided binomial p-value of that many correct answers under chance (0.5 on balanced
    sets; the majority share otherwise). Accuracy near chance: the sets cannot be told apart by this classifier."""
    from scipy.stats import binomtest
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a = finite_scores("features_a", features_a).astype(np.float64)
    b = finite_scores("features_b", features_b).astype(np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < folds:
        raise ValueError(f"features_a and features_b must be N x D with the same D and at least folds={folds} "
                         f"samples each, got {a.shape} and {b.shape}")
    x = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a), int), np.ones(len(b), int)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    pred = cross_val_predict(clf, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    correct = int((pred == y).sum())
    chance = max(len(a), len(b)) / len(y)
    return {"accuracy": correct / len(y), "chance": chance, "n": len(y),
            "p_value": float(binomtest(correct, len(y), chance, alternative="greater").pvalue)}
