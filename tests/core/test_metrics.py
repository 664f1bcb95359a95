"""Tests of lib.core.metrics against hand-computed values and independent computations."""

import itertools
import warnings

import numpy as np
import pytest
import scipy.integrate
import skimage.measure
import torch

from lib.core.metrics import (
    best_f1_report,
    finite_scores,
    frechet_distance,
    image_auroc,
    pixel_ap,
    pixel_auroc,
    pro_auc,
    to_numpy,
)


# --------------------------------------------------------------- independent references


def slow_pro(maps, masks, fpr_limit):
    """PRO by brute force: one boolean mask per distinct threshold (no sorting tricks).

    Regions from skimage (connectivity=2, i.e. 8-connected), not scipy as in lib.
    """
    regions = [
        (i, skimage.measure.label(m, connectivity=2) == r)
        for i, m in enumerate(masks)
        for r in range(1, skimage.measure.label(m, connectivity=2).max() + 1)
    ]
    fpr, pro = [0.0], [0.0]  # threshold above the maximum: nothing predicted
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fpr.append(pred[~masks].mean())
        pro.append(np.mean([pred[i][r].mean() for i, r in regions]))
    fpr, pro = np.array(fpr), np.array(pro)
    i = int(np.argmax(fpr >= fpr_limit))  # first point at or beyond the limit (i >= 1)
    step = (fpr_limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
    pro_limit = pro[i - 1] + step * (pro[i] - pro[i - 1])
    x = np.append(fpr[:i], fpr_limit)
    y = np.append(pro[:i], pro_limit)
    return scipy.integrate.trapezoid(y, x) / fpr_limit


def pairwise_auroc(scores, labels):
    """P(anomalous score > normal score) + P(equal) / 2, over all pairs."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return (diff > 0).mean() + 0.5 * (diff == 0).mean()


def stepwise_ap(scores, labels):
    """sum_k (R_k - R_{k-1}) P_k over the distinct thresholds, high to low."""
    ap, prev_recall = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        pred = scores >= t
        tp = (pred & (labels == 1)).sum()
        recall, precision = tp / (labels == 1).sum(), tp / pred.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def random_masks(rng, n, size, blobs=3):
    """Masks made of random rectangles and single pixels (some touching diagonally)."""
    masks = np.zeros((n, size, size), bool)
    for m in masks:
        for _ in range(blobs):
            r, c = rng.integers(0, size - 2, 2)
            h, w = rng.integers(1, 4, 2)
            m[r : r + h, c : c + w] = True
    masks[0] = False  # one normal image
    return masks


# ------------------------------------------------------------------------------ PRO


def two_image_case():
    """Image 0: region R1 of 4 pixels; image 1: region R2 of 2 pixels; 26 normal pixels."""
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = True  # R1
    masks[1, 2, 1:3] = True  # R2
    maps = np.zeros((2, 4, 4))
    maps[0, :2, :2] = 0.9  # R1 fully covered at t = 0.9
    maps[1, 2, 1] = 0.9  # R2 half covered at t = 0.9 ...
    maps[1, 2, 2] = 0.1  # ... fully at t = 0.1
    maps[1, 0, 0] = 0.5  # one normal pixel
    return maps, masks


def test_pro_two_regions_by_hand():
    # Curve points (FPR, PRO), threshold by threshold:
    #   above max: (0, 0)
    #   t = 0.9:   (0, (1 + 1/2) / 2) = (0, 0.75)      <- region mean, not 5/6 of pixels
    #   t = 0.5:   (1/26, 0.75)
    #   t = 0.1:   (1/26, 1)
    #   t = 0:     (1, 1)
    # Area to 0.3 = 0.75 * 1/26 + 1 * (0.3 - 1/26) = 0.3 - 0.25/26, divided by 0.3.
    maps, masks = two_image_case()
    assert pro_auc(maps, masks) == pytest.approx(1 - 0.25 / 26 / 0.3, abs=1e-12)
    # fpr_limit = 1: area = 0.75/26 + (1 - 1/26) = 1 - 0.25/26.
    assert pro_auc(maps, masks, fpr_limit=1.0) == pytest.approx(1 - 0.25 / 26, abs=1e-12)
    # fpr_limit = 1/52 ends inside the first segment, where PRO = 0.75 throughout.
    assert pro_auc(maps, masks, fpr_limit=1 / 52) == pytest.approx(0.75, abs=1e-12)


def test_pro_is_8_connected_and_interpolates_a_tie_at_the_limit():
    # One region of 3 pixels: (0,0) touches (1,1) diagonally, (1,1) touches (1,2).
    # Only (0,0) scores 1; everything else (2 region pixels, 13 normal) scores 0.
    #   8-connected: one region, curve (0,0) -> (0, 1/3) -> (1, 1)   [tie group at 0]
    #   PRO at FPR 0.3 on the tie segment = 1/3 + 0.3 * 2/3 = 0.5333...
    #   area / 0.3 = (1/3 + 0.5333...) / 2 = 13/30.
    # (4-connected regions {(0,0)}, {(1,1),(1,2)} would give (0.5 + 0.65) / 2 = 0.575.)
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True
    maps = np.zeros((1, 4, 4))
    maps[0, 0, 0] = 1.0
    assert pro_auc(maps, masks) == pytest.approx(13 / 30, abs=1e-12)


def test_pro_perfect_map_is_one():
    masks = random_masks(np.random.default_rng(0), 4, 16)
    assert pro_auc(masks.astype(np.float32), masks) == pytest.approx(1.0, abs=1e-12)
    assert pro_auc(masks.astype(np.float32), masks, fpr_limit=0.01) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_pro_constant_map(fpr_limit):
    # Every pixel crosses at the one threshold: the curve is (0,0) -> (1,1), so PRO = FPR
    # on [0, fpr_limit], area = fpr_limit^2 / 2, normalised area = fpr_limit / 2.
    masks = random_masks(np.random.default_rng(1), 3, 10)
    constant = np.full(masks.shape, 0.7)
    assert pro_auc(constant, masks, fpr_limit) == pytest.approx(fpr_limit / 2, abs=1e-12)


@pytest.mark.parametrize("seed, fpr_limit", list(itertools.product(range(4), [0.3, 0.05, 1.0])))
def test_pro_matches_brute_force_with_ties(seed, fpr_limit):
    rng = np.random.default_rng(seed)
    masks = random_masks(rng, 3, 12)
    maps = np.round(rng.random(masks.shape) + 0.5 * masks, 1)  # ~15 distinct values: ties
    expected = slow_pro(maps, masks, fpr_limit)
    assert pro_auc(maps, masks, fpr_limit) == pytest.approx(expected, abs=1e-9)


def test_pro_matches_brute_force_without_ties_and_accepts_torch():
    rng = np.random.default_rng(7)
    masks = random_masks(rng, 3, 12)
    maps = rng.random(masks.shape) + 0.3 * masks
    expected = slow_pro(maps, masks, 0.3)
    maps_t = torch.from_numpy(maps).float()[:, None]  # N x 1 x H x W float32 tensor
    masks_t = torch.from_numpy(masks)[:, None]
    assert pro_auc(maps_t, masks_t) == pytest.approx(expected, abs=1e-6)


def test_pro_errors():
    maps, masks = two_image_case()
    with pytest.raises(ValueError, match="no anomalous pixel"):
        pro_auc(maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="no normal pixel"):
        pro_auc(maps, np.ones_like(masks))
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fpr_limit"):
            pro_auc(maps, masks, fpr_limit=bad)
    with pytest.raises(ValueError, match="shape"):
        pro_auc(maps[:, :3], masks)
    with pytest.raises(ValueError, match="N x H x W"):
        pro_auc(maps[0], masks[0])
    with pytest.raises(ValueError, match="binary"):
        pro_auc(maps, masks * 0.5)
    nan_maps = maps.copy()
    nan_maps[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        pro_auc(nan_maps, masks)


# ------------------------------------------------------------------ AUROC and AP


def test_image_auroc_against_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * labels, 1)  # many ties
    expected = pairwise_auroc(scores, labels)
    assert image_auroc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert image_auroc(1 - scores, labels) == pytest.approx(1 - expected, abs=1e-12)
    half = torch.tensor(scores, dtype=torch.float16)
    expected_half = pairwise_auroc(scores.astype(np.float16), labels)
    assert image_auroc(half, torch.tensor(labels)) == pytest.approx(expected_half, abs=1e-12)


def test_pixel_auroc_and_ap_against_definitions():
    rng = np.random.default_rng(1)
    masks = random_masks(rng, 3, 10)
    maps = np.round(rng.random(masks.shape) + 0.4 * masks, 2).astype(np.float32)
    auroc = pairwise_auroc(maps.ravel(), masks.ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(auroc, abs=1e-9)
    assert pixel_auroc(1 - maps, masks) == pytest.approx(1 - auroc, abs=1e-6)
    ap = stepwise_ap(maps.ravel(), masks.ravel())
    assert pixel_ap(maps, masks) == pytest.approx(ap, abs=1e-9)
    maps_t, masks_u8 = torch.from_numpy(maps)[:, None], masks[:, None].astype(np.uint8)
    assert pixel_ap(maps_t, masks_u8) == pytest.approx(ap, abs=1e-9)


def test_pixel_ap_is_stepwise_not_trapezoid():
    # Scores 0.9 (anomalous), 0.8 (normal), 0.7 (anomalous):
    # points (R, P) = (0.5, 1), (0.5, 0.5), (1, 2/3); step-wise AP = 0.5*1 + 0.5*2/3 = 5/6.
    maps = np.array([0.9, 0.8, 0.7]).reshape(1, 1, 3)
    masks = np.array([1, 0, 1]).reshape(1, 1, 3)
    assert pixel_ap(maps, masks) == pytest.approx(5 / 6, abs=1e-12)


def test_auroc_ap_errors():
    with pytest.raises(ValueError, match="labels are all normal"):
        image_auroc([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="labels are all anomalous"):
        image_auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="shape"):
        image_auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="NaN or inf"):
        image_auroc([0.1, np.inf], [0, 1])
    with pytest.raises(ValueError, match="binary"):
        image_auroc([0.1, 0.2], [0, 2])
    maps, masks = two_image_case()
    for fn in (pixel_auroc, pixel_ap):
        with pytest.raises(ValueError, match="masks are all normal"):
            fn(maps, np.zeros_like(masks))
        with pytest.raises(ValueError, match="shape"):
            fn(maps, masks[:1])
        with pytest.raises(ValueError, match="binary"):
            fn(maps, masks * 0.5)
        with pytest.raises(ValueError, match="NaN or inf"):
            fn(maps * np.nan, masks)


# --------------------------------------------------------------------- best F1


def test_best_f1_report_against_threshold_scan():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 300)
    scores = rng.random(300) + 0.5 * labels
    best = None
    for t in np.unique(scores):
        pred = scores >= t
        tp = (pred & (labels == 1)).sum()
        p, r = tp / pred.sum(), tp / labels.sum()
        f1 = 2 * p * r / (p + r) if tp else 0.0
        if best is None or f1 > best[0]:
            best = (f1, p, r, t)
    report = best_f1_report(scores, labels)
    assert set(report) == {"ap", "precision", "recall", "f1", "threshold"}
    assert report["f1"] == pytest.approx(best[0], abs=1e-12)
    assert report["precision"] == pytest.approx(best[1], abs=1e-12)
    assert report["recall"] == pytest.approx(best[2], abs=1e-12)
    assert report["threshold"] == best[3]
    assert report["ap"] == pytest.approx(stepwise_ap(scores, labels), abs=1e-12)


def test_best_f1_report_errors():
    with pytest.raises(ValueError, match="labels are all normal"):
        best_f1_report([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(ValueError, match="NaN or inf"):
        best_f1_report([0.1, np.nan, 0.3], [0, 1, 1])
    with pytest.raises(ValueError, match="shape"):
        best_f1_report([0.1, 0.3], [0, 1, 1])


# ------------------------------------------------------------- Fréchet distance


def test_frechet_distance_identical_sets_is_zero():
    a = np.random.default_rng(3).normal(size=(200, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_diagonal_closed_form():
    # Features whose sample covariance is exactly diagonal: mean + Q diag(sigma), with Q's
    # columns zero-mean and orthonormal, scaled by sqrt(N - 1). Then
    # d^2 = ||mu_a - mu_b||^2 + sum(var_a + var_b - 2 sqrt(var_a var_b)).
    rng = np.random.default_rng(4)
    n, d = 100, 6

    def features(mean, std):
        x = rng.normal(size=(n, d))
        q, _ = np.linalg.qr(x - x.mean(0))  # combinations of zero-mean columns: zero-mean
        return mean + np.sqrt(n - 1) * q * std

    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    std_a, std_b = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    a, b = features(mu_a, std_a), features(mu_b, std_b)
    np.testing.assert_allclose(np.cov(a, rowvar=False), np.diag(std_a**2), atol=1e-10)
    var_a, var_b = std_a**2, std_b**2
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum(var_a + var_b - 2 * np.sqrt(var_a * var_b))
    assert frechet_distance(a, b) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("n", [50, 5])  # 5 < D: singular covariances
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_frechet_distance_matches_pytorch_fid(n):
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(5)
    a = rng.normal(size=(n, 8))
    b = rng.normal(size=(n, 8)) @ rng.normal(size=(8, 8)) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its sqrtm(disp=False)
        expected = calculate_frechet_distance(
            a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
        )
    assert frechet_distance(torch.from_numpy(a), b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_errors():
    a = np.zeros((10, 4))
    with pytest.raises(ValueError, match="features_b has D=3"):
        frechet_distance(a, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(a, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="features_a must be N x D"):
        frechet_distance(np.zeros(10), a)
    with pytest.raises(ValueError, match="NaN or inf"):
        frechet_distance(a * np.nan, a)


# ------------------------------------------------------------------ input helpers


def test_to_numpy_and_finite_scores():
    assert to_numpy(torch.tensor([1.5], dtype=torch.bfloat16)).dtype == np.float32
    np.testing.assert_array_equal(to_numpy([[1, 2]]), np.array([[1, 2]]))
    assert finite_scores("s", torch.tensor([0.25, 1.0])).tolist() == [0.25, 1.0]
    with pytest.raises(ValueError, match="s must hold real-valued scores"):
        finite_scores("s", np.array([True, False]))
    with pytest.raises(ValueError, match="s contains NaN or inf"):
        finite_scores("s", [0.1, float("nan")])
