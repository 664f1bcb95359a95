"""Benchmark lib.core.metrics.pro_auc: speed, memory and exactness at MVTec-like scale.

500 anomaly maps of 256 x 256 (smoothed noise plus a smoothed copy of the mask) and
random elliptical blob masks on every other image, seeded. Reports:
  - the time and the peak extra memory (tracemalloc) of pro_auc;
  - the difference to an independent unbinned computation on the full set: PRO(t) is the
    true-positive rate when every anomalous pixel weighs 1 / |its region|, so
    scikit-learn's weighted roc_curve (all distinct thresholds) gives the exact curve,
    with regions from skimage.measure.label (8-connected);
  - the difference to a brute-force loop over every distinct threshold (boolean masks
    per threshold) on 20 maps quantised to steps of 0.01 (unquantised float maps have
    one threshold per pixel, too many for the loop);
  - for information, the difference to a 1000-threshold binned curve (anomalib-style).

Run:  python benchmarks/bench_pro.py
"""

import resource
import time
import tracemalloc

import numpy as np
import scipy.integrate
import scipy.ndimage
import skimage.measure
from sklearn.metrics import roc_curve

from lib.core.metrics import pro_auc

N, SIZE, FPR_LIMIT, SEED = 500, 256, 0.3, 0


def make_data(n=N, size=SIZE, seed=SEED):
    rng = np.random.default_rng(seed)
    maps = np.empty((n, size, size), np.float32)
    masks = np.zeros((n, size, size), bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        if i % 2:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(16, size - 16, 2)
                ry, rx = rng.uniform(2, 20, 2)
                masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        noise = scipy.ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=4)
        signal = scipy.ndimage.gaussian_filter(masks[i].astype(np.float64), sigma=3)
        maps[i] = noise / noise.std() + 2 * signal
    return maps, masks


def area_to_limit(fpr, pro, limit):
    """Trapezoid area of a curve given point by point, PRO interpolated at `limit`."""
    i = int(np.argmax(fpr >= limit))  # first point at or beyond the limit
    step = (limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
    pro_limit = pro[i - 1] + step * (pro[i] - pro[i - 1])
    x, y = np.append(fpr[:i], limit), np.append(pro[:i], pro_limit)
    return scipy.integrate.trapezoid(y, x) / limit


def region_labels(masks):
    """Global region ids (0 = normal) from skimage's 8-connected labelling."""
    labels = np.zeros(masks.shape, np.int64)
    offset = 0
    for i, m in enumerate(masks):
        lab, k = skimage.measure.label(m, connectivity=2, return_num=True)
        labels[i] = np.where(lab > 0, lab + offset, 0)
        offset += k
    return labels, offset


def reference_weighted_roc(maps, masks, limit):
    labels, n_regions = region_labels(masks)
    sizes = np.bincount(labels.ravel())
    weight = np.where(masks, 1.0 / sizes[labels], 1.0).ravel()
    fpr, pro, _ = roc_curve(
        masks.ravel(), maps.ravel(), sample_weight=weight, drop_intermediate=False
    )
    return area_to_limit(fpr, pro, limit), n_regions


def reference_brute_force(maps, masks, limit):
    labels, n_regions = region_labels(masks)
    labels = labels.ravel()
    sizes = np.bincount(labels, minlength=n_regions + 1)[1:]
    scores, normal = maps.ravel(), ~masks.ravel()
    fpr, pro = [0.0], [0.0]
    for t in np.unique(scores)[::-1]:
        pred = scores >= t
        fpr.append(pred[normal].mean())
        per_region = np.bincount(labels[pred], minlength=n_regions + 1)[1:] / sizes
        pro.append(per_region.mean())
    return area_to_limit(np.array(fpr), np.array(pro), limit), len(fpr) - 1


def reference_binned(maps, masks, limit, n_thresholds=1000):
    labels, n_regions = region_labels(masks)
    sizes = np.bincount(labels.ravel())
    thresholds = np.linspace(maps.min(), maps.max(), n_thresholds)
    edges = np.append(thresholds, np.inf)
    normal_counts, _ = np.histogram(maps[~masks], bins=edges)
    region_weight, _ = np.histogram(maps[masks], bins=edges, weights=1.0 / sizes[labels[masks]])
    # counts at or above each threshold, thresholds from high to low
    fpr = np.cumsum(normal_counts[::-1]) / normal_counts.sum()
    pro = np.cumsum(region_weight[::-1]) / n_regions
    return area_to_limit(np.append(0.0, fpr), np.append(0.0, pro), limit)


def main():
    maps, masks = make_data()
    print(f"data: {N} maps of {SIZE}x{SIZE} float32 ({maps.nbytes / 2**20:.0f} MiB), "
          f"{masks.any(axis=(1, 2)).sum()} with defects, {masks.mean():.2%} anomalous pixels, "
          f"{np.unique(maps).size:,} distinct scores")

    start = time.perf_counter()
    value = pro_auc(maps, masks, FPR_LIMIT)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    pro_auc(maps, masks, FPR_LIMIT)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"pro_auc (fpr_limit={FPR_LIMIT}) = {value:.6f} in {seconds:.2f} s; "
          f"peak extra memory {peak / 2**20:.0f} MiB (tracemalloc); process peak RSS so far "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")

    start = time.perf_counter()
    ref, n_regions = reference_weighted_roc(maps, masks, FPR_LIMIT)
    print(f"reference, sklearn weighted roc_curve (all thresholds, {n_regions} regions) = "
          f"{ref:.6f} [{time.perf_counter() - start:.1f} s]; |difference| = {abs(value - ref):.2e}")

    sub_maps, sub_masks = np.round(maps[:20], 2), masks[:20]
    sub_value = pro_auc(sub_maps, sub_masks, FPR_LIMIT)
    start = time.perf_counter()
    ref, n_thresholds = reference_brute_force(sub_maps, sub_masks, FPR_LIMIT)
    print(f"reference, brute-force loop on 20 maps rounded to 0.01 ({n_thresholds} "
          f"thresholds) = {ref:.6f} [{time.perf_counter() - start:.1f} s]; pro_auc there = {sub_value:.6f}; "
          f"|difference| = {abs(sub_value - ref):.2e}")

    start = time.perf_counter()
    ref = reference_binned(maps, masks, FPR_LIMIT)
    print(f"for information, binned with 1000 thresholds = {ref:.6f} "
          f"[{time.perf_counter() - start:.1f} s]; |difference| = {abs(value - ref):.2e}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"process peak RSS with the references: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
