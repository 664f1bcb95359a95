"""Bootstrap 95 % intervals for the kit's metrics, and paired comparisons of two methods.

A table cell such as "image AUROC 0.912" on 80 test images is one draw: another 80 images of
the same kind would give another number. The percentile bootstrap over the *test images*
(Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13) shows how far:

    resample the images with replacement (good and anomalous images separately, so every
    resample has both classes), recompute the metric, repeat B times; the interval is the
    (1 - level) / 2 and (1 + level) / 2 quantiles of the B values.

    est = bootstrap_metrics(scores, labels, maps, masks)      # {"I": Estimate, "P": ..., "O": ..., "A": ...}
    print(est["I"])                                           # 0.912 [0.871, 0.948]
    c = compare(scores_a, scores_b, labels, names=("self-aware", "basic"))
    c.verdict                                                 # "self-aware > basic" or "not resolved at this size"

A claim "A beats B" is supported only when the paired interval of value(A) - value(B), both
computed on the same resampled image sets, excludes 0 (:func:`compare`).

Metrics, as in :mod:`lib.core.metrics`: ``"I"`` image AUROC (scores / labels), ``"P"`` pixel
AUROC, ``"O"`` PRO-AUC up to FPR 0.3, ``"A"`` pixel AP (anomaly maps / masks).

Speed. A resample is a vector of multiplicities w_i (how often image i was drawn), so every
metric is computed from per-image statistics summed with the weights w:

- image AUROC: the Mann-Whitney statistic with weights, exact (ties count half);
- pixel AUROC and AP: the pixel scores are put on one grid of at most ``n_bins`` bins
  (quantiles of the normal and of the anomalous pixels, half each; the distinct scores
  themselves when there are fewer), each image contributes a histogram of its normal and
  of its anomalous pixels, and a resample's histograms are w-weighted sums;
- PRO: the same grid; per image the overlap of its regions summed, sum_R |{p in R: s_p >= t}| / |R|,
  and its number of regions, for every grid threshold t; the resample's PRO(t) is the
  w-weighted overlap divided by the w-weighted region count, FPR(t) comes from the normal
  histograms, and the curve is integrated to FPR 0.3 as :func:`lib.core.metrics.pro_auc`.

**Binning.** The point value of every metric is the exact one of :mod:`lib.core.metrics`.
The pixel metrics' resamples use the binned scores (pixels in one bin count as tied); the
binned full-sample value is within about 1e-3 of the exact one at 1024 bins (the tests check
1e-2 on random data), and every binned resample is shifted by (exact - binned full-sample
value), so the binning does not move the interval against the point value. Image AUROC is
not binned.

**Limits.** The percentile interval cannot reach beyond the values the resamples take: a method
that separates every test image perfectly gets 1.000 [1.000, 1.000], which says "perfect on
these images", not "perfect for sure". The interval reflects the choice of test images only,
not the training seed of the method (rerun with other seeds for that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import scipy.ndimage

from . import metrics
from .checks import check_choice, check_float, check_int
from .metrics import ArrayLike, as_nhw, finite_scores, to_numpy

__all__ = ["Estimate", "Comparison", "METRICS", "METRIC_NAMES", "UNRESOLVED", "bootstrap_metrics", "compare",
           "resample_weights", "weighted_image_auroc", "binned_pixel_metric", "metric_samples", "mean_estimate",
           "compare_means", "compare_over_seeds", "compare_scores_over_seeds", "compare_statistic", "by_defect_type"]

METRICS = ("I", "P", "O", "A")
"""The metric codes: image AUROC, pixel AUROC, PRO-AUC (FPR <= 0.3), pixel AP."""

METRIC_NAMES = {"I": "image AUROC", "P": "pixel AUROC", "O": "PRO (FPR ≤ 0.3)", "A": "pixel AP"}
"""Column titles for the metric codes."""

FPR_LIMIT = 0.3  # PRO is integrated to this FPR, as in MVTec AD and DiffusionAD (seed 003)


class Estimate(NamedTuple):
    """A point value with its bootstrap interval [low, high]."""

    value: float
    low: float
    high: float

    def format(self, digits: int = 3) -> str:
        """``"value [low, high]"`` with ``digits`` decimals, e.g. ``"0.912 [0.871, 0.948]"``."""
        digits = check_int("digits", digits, 0, 12)
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def __str__(self) -> str:
        """``"0.912 [0.871, 0.948]"`` (3 decimals)."""
        return self.format(3)


class Comparison(NamedTuple):
    """The paired bootstrap of value(A) - value(B) and what it supports: ``"A > B"``, ``"B > A"``
    (the interval of the difference excludes 0) or ``"not resolved at this size"``."""

    difference: Estimate
    verdict: str
    per_seed: tuple[float, ...] = ()     # over training seeds: each seed's own difference

    @property
    def resolved(self) -> bool:
        """True when the interval of the difference excludes 0."""
        return self.verdict != UNRESOLVED

    def __str__(self) -> str:
        """``"A > B (difference 0.041 [0.012, 0.070])"``, with the seeds' own differences when over seeds."""
        seeds = f"; per seed {', '.join(f'{d:+.3f}' for d in self.per_seed)}" if self.per_seed else ""
        return f"{self.verdict} (difference {self.difference}{seeds})"


UNRESOLVED = "not resolved at this size"


# --------------------------------------------------------------------------- inputs


def _labels(labels: ArrayLike) -> np.ndarray:
    """``labels`` as a bool vector (1 = anomalous image) holding both classes."""
    x = to_numpy(labels)
    if x.ndim != 1:
        raise ValueError(f"labels must be one label per image (a vector), got shape {x.shape}; "
                         f"flatten it or pass split.labels")
    if x.dtype != bool:
        if not np.issubdtype(x.dtype, np.number) or not ((x == 0) | (x == 1)).all():
            raise ValueError("labels must be binary (bool or 0/1, 1 = anomalous image); "
                             "threshold them first, e.g. labels > 0.5")
        x = x == 1
    if x.all() or not x.any():
        kind = "anomalous (1)" if x.all() else "normal (0)"
        raise ValueError(f"labels are all {kind} ({x.size} images); the bootstrap resamples good and "
                         f"anomalous images separately and needs at least one of each: use a test split "
                         f"with both classes")
    return x


def _scores(scores: ArrayLike, n: int, name: str = "scores") -> np.ndarray:
    """``scores`` as a float64 vector of ``n`` finite image scores."""
    s = finite_scores(name, scores).astype(np.float64)
    if s.shape != (n,):
        raise ValueError(f"{name} has shape {s.shape} but labels has {n} images; give one score per image "
                         f"(shape ({n},))")
    return s


def _maps(maps: ArrayLike, n: int, name: str = "maps") -> np.ndarray:
    """``maps`` as a finite float N x H x W array with N = ``n``."""
    m = as_nhw(finite_scores(name, maps), name)
    if m.shape[0] != n:
        raise ValueError(f"{name} has {m.shape[0]} maps (shape {m.shape}) but labels has {n} images; "
                         f"give one anomaly map per test image")
    return m


def _masks(masks: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    """``masks`` as a bool N x H x W array of ``shape`` with at least one anomalous pixel."""
    if masks is None:
        raise ValueError("masks is None, but pixel metrics (P, O, A) need the ground-truth masks: "
                         "pass masks=split.masks, or metrics=('I',)")
    m = as_nhw(to_numpy(masks), "masks")
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.number) or not ((m == 0) | (m == 1)).all():
            raise ValueError("masks must be binary (bool or 0/1); threshold them first, e.g. masks > 0.5")
        m = m == 1
    if m.shape != tuple(shape):
        raise ValueError(f"masks has shape {m.shape} but the anomaly maps have shape {tuple(shape)}; "
                         f"resize the maps to the mask resolution first")
    if not m.any():
        raise ValueError("masks has no anomalous pixel; pixel metrics need at least one defect region")
    if m.all():
        raise ValueError("masks has no normal pixel; pixel metrics need normal pixels too")
    return m


def _metric_list(metrics_: Sequence[str] | str, have_scores: bool, have_maps: bool) -> tuple[str, ...]:
    """The requested metric codes, the default tuple dropping what has no input."""
    if isinstance(metrics_, str):
        metrics_ = tuple(metrics_)  # "IP" -> ("I", "P")
    metrics_ = tuple(metrics_)
    if not metrics_:
        raise ValueError(f"metrics is empty; pick from {METRICS}, e.g. metrics=('I',)")
    for m in metrics_:
        check_choice("metrics", m, METRICS)
    if metrics_ == METRICS:  # the default: what the inputs allow
        metrics_ = tuple(m for m in metrics_ if (have_scores if m == "I" else have_maps))
        if not metrics_:
            raise ValueError("scores and maps are both None; pass image scores, anomaly maps or both")
        return metrics_
    if "I" in metrics_ and not have_scores:
        raise ValueError("metrics asks for 'I' (image AUROC) but scores is None; pass the image scores")
    if any(m != "I" for m in metrics_) and not have_maps:
        raise ValueError(f"metrics={metrics_} asks for pixel metrics but maps is None; pass the anomaly "
                         f"maps (and masks), or metrics=('I',)")
    return metrics_


def _check_boot(n_boot: int, level: float) -> tuple[int, float]:
    try:
        n_boot = check_int("n_boot", n_boot, 100)
    except ValueError as e:
        raise ValueError(f"{e}: fewer than 100 resamples give unstable interval ends; use n_boot >= 100 "
                         f"(1000, the default, for tables)") from None
    try:
        level = check_float("level", level, 0.0, 1.0, lo_open=True, hi_open=True)
    except ValueError as e:
        raise ValueError(f"{e}: level is the interval's coverage as a fraction, e.g. 0.95 for 95 %") from None
    return n_boot, level


# --------------------------------------------------------------------------- resampling


def resample_weights(labels: ArrayLike, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """The stratified resamples as multiplicities: row b, column i = how often image i is drawn.

    Good and anomalous images are drawn separately with replacement (n_good and n_anomalous
    draws each, from ``numpy.random.default_rng(seed)``), so every row has both classes and
    sums to N. Returns float64 ``n_boot`` x N.
    """
    labels = _labels(labels)
    n_boot = check_int("n_boot", n_boot, 1)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    n = labels.size
    rows = (np.arange(n_boot) * n)[:, None]
    counts = np.zeros(n_boot * n)
    for group in (np.flatnonzero(~labels), np.flatnonzero(labels)):
        picks = group[rng.integers(0, group.size, size=(n_boot, group.size))]
        counts += np.bincount((rows + picks).ravel(), minlength=n_boot * n)
    return counts.reshape(n_boot, n)


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval of the resample values (resamples without a defined value dropped)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no resample has a defined value (every resample lacks anomalous pixels); "
                         "check that the anomalous images' masks are not empty")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- weighted metrics


def _auroc_from_hist(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC = sum_k pos_k (neg_{<k} + neg_k / 2) / (P N) from counts on ascending score bins (rows: resamples)."""
    neg_below = np.cumsum(neg, axis=1) - neg
    num = np.einsum("bk,bk->b", pos, neg_below + 0.5 * neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / (pos.sum(axis=1) * neg.sum(axis=1))


def _ap_from_hist(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AP = sum_k (pos_k / P) * TP_k / (TP_k + FP_k), TP/FP the counts in bins >= k (step-wise, as scikit-learn)."""
    tp = np.cumsum(pos[:, ::-1], axis=1)[:, ::-1]
    fp = np.cumsum(neg[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pos > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        return np.einsum("bk,bk->b", pos, precision) / pos.sum(axis=1)


def _pro_from_hist(overlap: np.ndarray, n_regions: np.ndarray, neg: np.ndarray,
                   fpr_limit: float = FPR_LIMIT) -> np.ndarray:
    """PRO-AUC to ``fpr_limit`` from per-bin region overlap (summed 1/|R| weights), region counts and normal counts.

    Thresholds run from above the top bin down: point k = (FPR of bins >= k, PRO of bins >= k),
    starting at (0, 0); one bin is one tie group (a straight segment); trapezoids, the crossing
    segment cut at ``fpr_limit`` by linear interpolation, divided by ``fpr_limit``.
    """
    b = neg.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.cumsum(neg[:, ::-1], axis=1) / neg.sum(axis=1, keepdims=True)
        y = np.cumsum(overlap[:, ::-1], axis=1) / n_regions[:, None]
    zeros = np.zeros((b, 1))
    x = np.concatenate([zeros, x], axis=1)
    y = np.concatenate([zeros, y], axis=1)
    x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
    end = np.minimum(x1, fpr_limit)
    start = np.minimum(x0, fpr_limit)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(x1 > x0, (end - x0) / np.where(x1 > x0, x1 - x0, 1.0), 1.0)
    y_end = y0 + t * (y1 - y0)
    area = np.sum((end - start) * (y0 + y_end) / 2, axis=1)
    return area / fpr_limit


def _image_auroc_weighted(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUROC per row of ``weights`` (exact; equal scores count half)."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))  # tie groups
    w = weights[:, order]
    lab = labels[order]
    pos = np.add.reduceat(w * lab, starts, axis=1)
    neg = np.add.reduceat(w * ~lab, starts, axis=1)
    return _auroc_from_hist(pos, neg)


def _grid(maps: np.ndarray, masks: np.ndarray, n_bins: int) -> np.ndarray:
    """Ascending bin edges (data values): the distinct scores if at most ``n_bins``, else quantiles
    of the normal and of the anomalous pixels (``n_bins / 2`` each, merged)."""
    distinct = np.unique(maps)
    if distinct.size <= n_bins:
        return distinct[1:]
    q = np.linspace(0, 1, n_bins // 2 + 1)[1:-1]
    edges = [np.quantile(maps[~masks], q, method="inverted_cdf"),
             np.quantile(maps[masks], q, method="inverted_cdf")]
    return np.unique(np.concatenate(edges))


class _PixelStats:
    """Per-image sufficient statistics of one method's anomaly maps on a common score grid."""

    def __init__(self, maps: np.ndarray, masks: np.ndarray, n_bins: int, need_pro: bool):
        n = maps.shape[0]
        edges = _grid(maps, masks, n_bins)
        k = edges.size + 1
        bins = np.searchsorted(edges, maps.reshape(n, -1), side="right")  # bin k: edges[k-1] <= s < edges[k]
        flat = bins + (np.arange(n) * k)[:, None]
        m = masks.reshape(n, -1)
        self.pos = np.bincount(flat[m], minlength=n * k).reshape(n, k).astype(np.float64)
        self.neg = np.bincount(flat[~m], minlength=n * k).reshape(n, k).astype(np.float64)
        self.overlap = self.n_regions = None
        if need_pro:
            # every anomalous pixel weighs 1 / |its region| (8-connected), as in metrics.pro_auc
            eight = np.ones((3, 3), dtype=int)
            weight = np.zeros(m.shape)
            n_regions = np.zeros(n)
            for i, mask in enumerate(masks):
                if mask.any():
                    regions, n_regions[i] = scipy.ndimage.label(mask, structure=eight)
                    sizes = np.bincount(regions.ravel())
                    weight[i] = np.where(regions > 0, 1.0 / sizes[regions], 0.0).ravel()
            self.overlap = np.bincount(flat[m], weights=weight[m], minlength=n * k).reshape(n, k)
            self.n_regions = n_regions

    def values(self, metric: str, weights: np.ndarray) -> np.ndarray:
        """The binned metric of every row of ``weights``."""
        pos, neg = weights @ self.pos, weights @ self.neg
        if metric == "P":
            return _auroc_from_hist(pos, neg)
        if metric == "A":
            return _ap_from_hist(pos, neg)
        return _pro_from_hist(weights @ self.overlap, weights @ self.n_regions, neg)


_EXACT: dict[str, Callable[..., float]] = {"P": metrics.pixel_auroc, "O": metrics.pro_auc, "A": metrics.pixel_ap}


def _resample_values(metric: str, x: np.ndarray, labels: np.ndarray, masks: np.ndarray | None,
                     weights: np.ndarray, n_bins: int,
                     stats: _PixelStats | None = None) -> tuple[float, np.ndarray]:
    """(exact full-sample value, value of every resample) of one metric; binned pixel values are
    shifted by exact - binned full-sample value."""
    if metric == "I":
        return metrics.image_auroc(x, labels), _image_auroc_weighted(x, labels, weights)
    stats = stats or _PixelStats(x, masks, n_bins, need_pro=metric == "O")
    exact = _EXACT[metric](x, masks)
    binned_full = stats.values(metric, np.ones((1, x.shape[0])))[0]
    return exact, stats.values(metric, weights) + (exact - binned_full)


# --------------------------------------------------------------------------- public


def weighted_image_auroc(scores: ArrayLike, labels: ArrayLike, weights: ArrayLike) -> np.ndarray:
    """Image AUROC of every resample: sum_{i anom, j good} w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (W_anom W_good).

    ``weights``: B x N multiplicities (:func:`resample_weights`); a row of ones gives
    :func:`lib.core.metrics.image_auroc`. Exact (no binning). Returns B values.
    """
    labels = _labels(labels)
    s = _scores(scores, labels.size)
    w = finite_scores("weights", weights).astype(np.float64)
    if w.ndim != 2 or w.shape[1] != labels.size:
        raise ValueError(f"weights must be B x N with N = {labels.size} images, got shape {w.shape}; "
                         f"use resample_weights(labels, n_boot, seed)")
    return _image_auroc_weighted(s, labels, w)


def binned_pixel_metric(maps: ArrayLike, masks: ArrayLike, metric: str, weights: ArrayLike | None = None,
                        n_bins: int = 1024) -> np.ndarray:
    """A pixel metric ("P", "O" or "A") on scores binned to at most ``n_bins`` bins, for every resample.

    ``weights``: B x N image multiplicities (:func:`resample_weights`; None = one row of ones,
    the full-sample binned value). This is what the intervals of :func:`bootstrap_metrics` are
    made of, before the shift by (exact - binned full-sample value). Returns B values.
    """
    metric = check_choice("metric", metric, ("P", "O", "A"))
    n_bins = check_int("n_bins", n_bins, 16)
    m = as_nhw(finite_scores("maps", maps), "maps")
    k = _masks(masks, m.shape)
    w = np.ones((1, m.shape[0])) if weights is None else finite_scores("weights", weights).astype(np.float64)
    if w.ndim != 2 or w.shape[1] != m.shape[0]:
        raise ValueError(f"weights must be B x N with N = {m.shape[0]} maps, got shape {w.shape}; "
                         f"use resample_weights(labels, n_boot, seed)")
    return _PixelStats(m, k, n_bins, need_pro=metric == "O").values(metric, w)


def bootstrap_metrics(scores: ArrayLike | None, labels: ArrayLike, maps: ArrayLike | None = None,
                      masks: ArrayLike | None = None, *, metrics: Sequence[str] = METRICS,
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                      n_bins: int = 1024) -> dict[str, Estimate]:
    """Each metric with its percentile-bootstrap interval over the test images: {code: Estimate}.

    ``scores``: one image score per image (for ``"I"``); ``labels``: 1 = anomalous image;
    ``maps`` / ``masks``: N x H x W anomaly maps and ground truth (for ``"P"``, ``"O"``, ``"A"``).
    With the default ``metrics`` the pixel metrics are left out when ``maps`` is None (and
    ``"I"`` when ``scores`` is None); asked for explicitly, a missing input raises.

    Value = the exact metric of :mod:`lib.core.metrics` on all images. Interval = the
    ``(1 ∓ level) / 2`` quantiles over ``n_boot`` stratified resamples of the images (good and
    anomalous images drawn separately with replacement, ``numpy.random.default_rng(seed)``),
    the same resamples for every metric. The pixel metrics' resamples use scores binned on at
    most ``n_bins`` bins (see the module docstring): the interval is binned, the value exact.
    """
    labels = _labels(labels)
    n = labels.size
    n_boot, level = _check_boot(n_boot, level)
    n_bins = check_int("n_bins", n_bins, 16)
    codes = _metric_list(metrics, scores is not None, maps is not None)
    s = _scores(scores, n) if "I" in codes else None
    m = k = None
    if any(c != "I" for c in codes):
        m = _maps(maps, n)
        k = _masks(masks, m.shape)
    weights = resample_weights(labels, n_boot, seed)
    stats = (_PixelStats(m, k, n_bins, need_pro="O" in codes) if m is not None else None)
    out = {}
    for code in codes:
        value, boot = _resample_values(code, s if code == "I" else m, labels, k, weights, n_bins, stats)
        out[code] = Estimate(float(value), *_percentile(boot, level))
    return out


def compare(a: ArrayLike, b: ArrayLike, labels: ArrayLike, masks: ArrayLike | None = None, *,
            metric: str = "I", n_boot: int = 1000, seed: int = 0, level: float = 0.95,
            names: tuple[str, str] = ("A", "B"), n_bins: int = 1024) -> Comparison:
    """Paired bootstrap of Δ = value(a) - value(b) for two methods on the same test images.

    ``a``, ``b``: image scores (``metric="I"``) or anomaly maps (``"P"``, ``"O"``, ``"A"``, with
    ``masks``). Both are evaluated on the same ``n_boot`` stratified resamples, so the interval
    of Δ reflects only how differently the two methods rank the same images. Verdict:
    ``"<names[0]> > <names[1]>"`` when the interval lies above 0, the reverse when below,
    otherwise ``"not resolved at this size"``.
    """
    labels = _labels(labels)
    n = labels.size
    n_boot, level = _check_boot(n_boot, level)
    n_bins = check_int("n_bins", n_bins, 16)
    metric = check_choice("metric", metric, METRICS)
    if (not isinstance(names, (tuple, list)) or len(names) != 2
            or not all(isinstance(x, str) and x for x in names)):
        raise ValueError(f"names must be two non-empty strings (method a, method b), got {names!r}")
    if metric == "I":
        xa, xb = _scores(a, n, "a"), _scores(b, n, "b")
        mk = None
    else:
        xa, xb = _maps(a, n, "a"), _maps(b, n, "b")
        if xa.shape != xb.shape:
            raise ValueError(f"a has shape {xa.shape} but b has shape {xb.shape}; compare maps of the same "
                             f"test images at the same resolution")
        mk = _masks(masks, xa.shape)
    weights = resample_weights(labels, n_boot, seed)
    va, boot_a = _resample_values(metric, xa, labels, mk, weights, n_bins)
    vb, boot_b = _resample_values(metric, xb, labels, mk, weights, n_bins)
    diff = Estimate(float(va - vb), *_percentile(boot_a - boot_b, level))
    if diff.low > 0:
        verdict = f"{names[0]} > {names[1]}"
    elif diff.high < 0:
        verdict = f"{names[1]} > {names[0]}"
    else:
        verdict = UNRESOLVED
    return Comparison(diff, verdict)


def by_defect_type(scores: ArrayLike, defect_types: Sequence[str], *, good: str = "good", n_boot: int = 1000,
                   seed: int = 0, level: float = 0.95) -> dict[str, Estimate]:
    """Image AUROC of each defect type against all good test images, with its interval: {type: Estimate}.

    For type d the test set is the good images plus the images of type d (labels 0 / 1), resampled as
    :func:`bootstrap_metrics` does; the types come in order of first appearance. Shows *which* defects a
    method misses where the category's AUROC mixes them all.
    """
    types = [str(d) for d in defect_types]
    s = _scores(scores, len(types))
    is_good = np.array([d == good for d in types])
    if not is_good.any() or is_good.all():
        raise ValueError(f"defect_types needs both {good!r} images and defective ones; got the types "
                         f"{sorted(set(types))}")
    out = {}
    for d in dict.fromkeys(t for t in types if t != good):
        keep = is_good | np.array([t == d for t in types])
        out[d] = bootstrap_metrics(s[keep], (~is_good[keep]).astype(int), metrics=("I",), n_boot=n_boot, seed=seed,
                                   level=level)["I"]
    return out


# --------------------------------------------------------------------------- means over categories


def metric_samples(x: ArrayLike, labels: ArrayLike, masks: ArrayLike | None = None, *, metric: str = "I",
                   n_boot: int = 1000, seed: int = 0, n_bins: int = 1024) -> tuple[float, np.ndarray]:
    """(exact value, its ``n_boot`` resampled values) of one metric: ``x`` = image scores (``"I"``) or maps."""
    labels = _labels(labels)
    n_boot = check_int("n_boot", n_boot, 100)
    metric = check_choice("metric", metric, METRICS)
    if metric == "I":
        v, k = _scores(x, labels.size), None
    else:
        v = _maps(x, labels.size)
        k = _masks(masks, v.shape)
    value, boot = _resample_values(metric, v, labels, k, resample_weights(labels, n_boot, seed), n_bins)
    return float(value), boot


def mean_estimate(groups: Sequence[tuple], *, metric: str = "I", n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95, n_bins: int = 1024) -> Estimate:
    """The mean of one metric over several test sets (e.g. categories) with its interval: mean_k value_k, the
    categories resampled independently (seed + k) and the k-th resamples averaged.
    ``groups``: one ``(x, labels)`` or ``(x, labels, masks)`` per category."""
    n_boot, level = _check_boot(n_boot, level)
    got = [metric_samples(*g, metric=metric, n_boot=n_boot, seed=seed + k, n_bins=n_bins) for k, g in enumerate(groups)]
    if not got:
        raise ValueError("groups is empty: pass one (x, labels[, masks]) per category")
    return Estimate(float(np.mean([v for v, _ in got])), *_percentile(np.mean([b for _, b in got], axis=0), level))


def compare_means(a: Sequence[ArrayLike], b: Sequence[ArrayLike], labels: Sequence[ArrayLike],
                  masks: Sequence[ArrayLike] | None = None, *, metric: str = "I", n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95, names: tuple[str, str] = ("A", "B"), n_bins: int = 1024) -> Comparison:
    """Paired bootstrap of Δ = mean_k value(a_k) - mean_k value(b_k) over several categories k (each resampled
    independently, both methods on the same resamples); verdict as :func:`compare`."""
    if not (len(a) == len(b) == len(labels)) or not a or (masks is not None and len(masks) != len(a)):
        raise ValueError(f"a, b, labels (and masks) need one entry per category; got {len(a)}, {len(b)}, "
                         f"{len(labels)}" + ("" if masks is None else f", {len(masks)}"))
    n_boot, level = _check_boot(n_boot, level)
    va, vb, ba, bb = [], [], [], []
    for k in range(len(a)):
        mk = None if masks is None else masks[k]
        for x, vals, boots in ((a[k], va, ba), (b[k], vb, bb)):
            v, s = metric_samples(x, labels[k], mk, metric=metric, n_boot=n_boot, seed=seed + k, n_bins=n_bins)
            vals.append(v)
            boots.append(s)
    diff = Estimate(float(np.mean(va) - np.mean(vb)),
                    *_percentile(np.mean(ba, axis=0) - np.mean(bb, axis=0), level))
    verdict = (f"{names[0]} > {names[1]}" if diff.low > 0 else f"{names[1]} > {names[0]}" if diff.high < 0
               else UNRESOLVED)
    return Comparison(diff, verdict)


# --------------------------------------------------------------------------- any statistic of test items


def _seed_verdict(per_seed: np.ndarray, boots: np.ndarray, level: float, names: tuple[str, str]) -> Comparison:
    """Resolved only when the interval of the seed-mean Δ excludes 0 and every seed's own Δ has that sign."""
    diff = Estimate(float(per_seed.mean()), *_percentile(boots, level))
    seeds = tuple(float(d) for d in per_seed)
    if diff.low > 0 and (per_seed > 0).all():
        return Comparison(diff, f"{names[0]} > {names[1]}", seeds)
    if diff.high < 0 and (per_seed < 0).all():
        return Comparison(diff, f"{names[1]} > {names[0]}", seeds)
    return Comparison(diff, UNRESOLVED, seeds)


def compare_over_seeds(a: ArrayLike, b: ArrayLike, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                       names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Δ = mean(a) − mean(b) for per-item outcomes of two methods on the same test items, one row per training
    seed (S×N each, e.g. 1 where an object was detected): the test items are resampled (the same resample for
    every seed and both methods) and Δ averaged over seeds. The verdict is resolved only when the interval
    excludes 0 *and* every seed's own Δ has that sign, so a claim never rests on one lucky seed."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.shape != b.shape or a.shape[1] < 2:
        raise ValueError(f"a and b must be seeds × items of the same shape (>= 2 items), got {a.shape} and {b.shape}")
    n_boot, level = _check_boot(n_boot, level)
    idx = np.random.default_rng(seed).integers(0, a.shape[1], (n_boot, a.shape[1]))
    boots = (a[:, idx].mean(-1) - b[:, idx].mean(-1)).mean(0)
    return _seed_verdict(a.mean(1) - b.mean(1), boots, level, names)


def compare_scores_over_seeds(metric, a: ArrayLike, b: ArrayLike, labels: ArrayLike, *, n_boot: int = 1000,
                              seed: int = 0, level: float = 0.95, names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Δ = mean over seeds of metric(a_s, y) − metric(b_s, y) for a score metric such as AP (``a``, ``b``: seeds ×
    test images of scores, ``labels`` the images' labels): the test images are resampled (the same resample for
    every seed and both methods; resamples with one class only are drawn again). Resolved as
    :func:`compare_over_seeds`: the interval excludes 0 and every seed's own Δ has that sign."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    y = np.asarray(labels).astype(int)
    if a.shape != b.shape or a.shape[1] != len(y):
        raise ValueError(f"a and b must be seeds × images of the same shape with one label per image, got "
                         f"{a.shape}, {b.shape} and {len(y)} labels")
    n_boot, level = _check_boot(n_boot, level)
    rng = np.random.default_rng(seed)
    boots = []
    while len(boots) < n_boot:
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        boots.append(np.mean([metric(sa[idx], y[idx]) - metric(sb[idx], y[idx]) for sa, sb in zip(a, b)]))
    per_seed = np.array([metric(sa, y) - metric(sb, y) for sa, sb in zip(a, b)])
    return _seed_verdict(per_seed, np.asarray(boots), level, names)


def compare_statistic(statistic, a: Sequence, b: Sequence, reference: Sequence, *, n_boot: int = 200,
                      seed: int = 0, level: float = 0.95, names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Δ = statistic(a, reference) − statistic(b, reference) for a two-sample statistic (e.g. a distance between
    generated and real samples), bootstrapped by resampling the rows of ``a``, ``b`` and ``reference`` (the
    same reference resample for both). A *smaller* distance is better, so the verdict names the method with the
    smaller value: "A < B" when the interval of Δ lies below 0."""
    a, b, ref = np.asarray(a), np.asarray(b), np.asarray(reference)
    n_boot, level = _check_boot(n_boot, level)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        r = ref[rng.integers(0, len(ref), len(ref))]
        boots.append(statistic(a[rng.integers(0, len(a), len(a))], r) - statistic(b[rng.integers(0, len(b), len(b))], r))
    diff = Estimate(float(statistic(a, ref) - statistic(b, ref)), *_percentile(np.array(boots), level))
    verdict = (f"{names[0]} < {names[1]}" if diff.high < 0 else f"{names[1]} < {names[0]}" if diff.low > 0
               else UNRESOLVED)
    return Comparison(diff, verdict)
