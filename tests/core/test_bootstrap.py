"""Tests of lib.core.bootstrap: intervals around the exact metrics, paired comparisons, input errors."""

import numpy as np
import pytest
import torch

from lib.core.bootstrap import (Comparison, Estimate, binned_pixel_metric, bootstrap_metrics, compare,
                                resample_weights, weighted_image_auroc)
from lib.core.metrics import image_auroc, pixel_ap, pixel_auroc, pro_auc


def synthetic(n_good=20, n_bad=20, size=32, signal=1.0, seed=0):
    """Maps = noise + ``signal`` inside rectangular defects; scores = the maps' maxima."""
    rng = np.random.default_rng(seed)
    n = n_good + n_bad
    labels = np.r_[np.zeros(n_good, int), np.ones(n_bad, int)]
    masks = np.zeros((n, size, size), bool)
    for i in range(n_good, n):
        y, x = rng.integers(1, size - 10, 2)
        masks[i, y:y + rng.integers(2, 9), x:x + rng.integers(2, 9)] = True
    maps = rng.normal(size=masks.shape) + signal * masks
    return maps.reshape(n, -1).max(axis=1), labels, maps, masks


def test_estimate_formats():
    e = Estimate(0.91234, 0.8714, 0.94849)
    assert str(e) == "0.912 [0.871, 0.948]"
    assert e.format(2) == "0.91 [0.87, 0.95]"
    assert e.value == 0.91234 and tuple(e) == (0.91234, 0.8714, 0.94849)


def test_point_values_are_the_exact_metrics_and_intervals_contain_them():
    scores, labels, maps, masks = synthetic()
    est = bootstrap_metrics(scores, labels, maps, masks, n_boot=300)
    assert list(est) == ["I", "P", "O", "A"]
    assert est["I"].value == image_auroc(scores, labels)
    assert est["P"].value == pixel_auroc(maps, masks)
    assert est["O"].value == pro_auc(maps, masks)
    assert est["A"].value == pixel_ap(maps, masks)
    for e in est.values():
        assert e.low <= e.value <= e.high and e.low < e.high


def test_pixel_metrics_left_out_without_maps_and_explicit_request_raises():
    scores, labels, maps, masks = synthetic()
    assert list(bootstrap_metrics(scores, labels, n_boot=100)) == ["I"]
    assert list(bootstrap_metrics(None, labels, maps, masks, n_boot=100)) == ["P", "O", "A"]
    assert list(bootstrap_metrics(scores, labels, maps, masks, metrics="IA", n_boot=100)) == ["I", "A"]
    with pytest.raises(ValueError, match="maps is None"):
        bootstrap_metrics(scores, labels, metrics=("P",), n_boot=100)
    with pytest.raises(ValueError, match="masks is None"):
        bootstrap_metrics(scores, labels, maps, n_boot=100)


def test_accepts_torch_tensors():
    scores, labels, maps, masks = synthetic()
    a = bootstrap_metrics(scores, labels, maps, masks, n_boot=100)
    b = bootstrap_metrics(torch.tensor(scores), torch.tensor(labels), torch.tensor(maps)[:, None],
                          torch.tensor(masks)[:, None], n_boot=100)
    for k in a:
        assert a[k] == pytest.approx(b[k])


def test_fewer_images_give_wider_intervals():
    def width(n, code):  # mean over three data sets: one interval's width is itself noisy at 10 images
        est = [bootstrap_metrics(*synthetic(n, n, seed=s), metrics=(code,), n_boot=300)[code] for s in range(3)]
        return np.mean([e.high - e.low for e in est])

    for code in ("I", "P"):
        assert width(10, code) > 1.8 * width(80, code)  # sqrt(8) ~ 2.8 expected


def test_deterministic_per_seed():
    data = synthetic()
    a = bootstrap_metrics(*data, n_boot=200, seed=3)
    assert a == bootstrap_metrics(*data, n_boot=200, seed=3)
    assert a != bootstrap_metrics(*data, n_boot=200, seed=4)


def test_resamples_are_stratified():
    labels = np.r_[np.zeros(7, int), np.ones(3, int)]
    w = resample_weights(labels, 500, seed=0)
    assert w.shape == (500, 10)
    assert (w[:, :7].sum(axis=1) == 7).all() and (w[:, 7:].sum(axis=1) == 3).all()
    assert (w == np.round(w)).all() and w.min() >= 0


def test_weighted_image_auroc_equals_the_auroc_of_the_resampled_images():
    scores, labels, _, _ = synthetic(12, 9)
    scores = np.round(scores, 1)  # with ties
    w = resample_weights(labels, 100, seed=5)
    got = weighted_image_auroc(scores, labels, w)
    for b in range(0, 100, 17):
        idx = np.repeat(np.arange(labels.size), w[b].astype(int))
        assert got[b] == pytest.approx(image_auroc(scores[idx], labels[idx]), abs=1e-12)


@pytest.mark.parametrize("kind", ["noise", "tied", "few values"])
def test_binned_full_sample_agrees_with_the_exact_metric(kind):
    _, labels, maps, masks = synthetic(30, 30, size=48, seed=7)
    if kind == "tied":
        maps = np.maximum(maps - 1.0, 0.0)  # most pixels exactly 0
    if kind == "few values":
        maps = np.round(maps, 1)  # fewer distinct values than bins: exact
    tol = 1e-9 if kind == "few values" else 1e-2
    for code, exact in (("P", pixel_auroc), ("O", pro_auc), ("A", pixel_ap)):
        assert binned_pixel_metric(maps, masks, code)[0] == pytest.approx(exact(maps, masks), abs=tol), code


def test_binned_resample_matches_exact_metric_on_resampled_images():
    _, labels, maps, masks = synthetic(15, 15, seed=2)
    w = resample_weights(labels, 5, seed=1)
    for code, exact in (("P", pixel_auroc), ("O", pro_auc), ("A", pixel_ap)):
        got = binned_pixel_metric(maps, masks, code, w)
        for b in range(5):
            idx = np.repeat(np.arange(labels.size), w[b].astype(int))
            assert got[b] == pytest.approx(exact(maps[idx], masks[idx]), abs=1e-2), code


def test_clearly_better_method_is_resolved():
    scores, labels, maps, masks = synthetic(30, 30, signal=3.0, seed=4)
    _, _, weak_maps, _ = synthetic(30, 30, signal=0.3, seed=4)
    rng = np.random.default_rng(0)
    weak_scores = scores + rng.normal(scale=3.0, size=scores.shape)
    c = compare(scores, weak_scores, labels, n_boot=500, names=("self-aware", "basic"))
    assert isinstance(c, Comparison) and c.resolved and c.verdict == "self-aware > basic"
    assert c.difference.low > 0
    assert c.difference.value == pytest.approx(image_auroc(scores, labels) - image_auroc(weak_scores, labels))
    r = compare(weak_maps, maps, labels, masks, metric="P", n_boot=300)
    assert r.verdict == "B > A" and r.difference.high < 0
    assert compare(maps, weak_maps, labels, masks, metric="O", n_boot=300).verdict == "A > B"
    assert compare(maps, weak_maps, labels, masks, metric="A", n_boot=300).verdict == "A > B"


def test_identical_distributions_are_not_resolved():
    _, labels, maps, masks = synthetic(20, 20, signal=1.0, seed=8)
    rng = np.random.default_rng(1)
    a = labels * 1.0 + rng.normal(size=labels.size)
    b = labels * 1.0 + rng.normal(size=labels.size)
    c = compare(a, b, labels, n_boot=500)
    assert c.verdict == "not resolved at this size" and not c.resolved
    assert c.difference.low < 0 < c.difference.high
    same = compare(a, a, labels, n_boot=200)
    assert same.difference == Estimate(0.0, 0.0, 0.0) and not same.resolved
    noise = rng.normal(scale=0.01, size=maps.shape)  # two maps of one distribution
    assert compare(maps, maps + noise, labels, masks, metric="P", n_boot=200).verdict == "not resolved at this size"


def test_errors_name_the_argument():
    scores, labels, maps, masks = synthetic()
    with pytest.raises(ValueError, match="labels are all normal"):
        bootstrap_metrics(scores, np.zeros_like(labels))
    with pytest.raises(ValueError, match="labels are all anomalous"):
        compare(scores, scores, np.ones_like(labels))
    with pytest.raises(ValueError, match="n_boot.*>= 100"):
        bootstrap_metrics(scores, labels, n_boot=50)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_metrics(scores, labels, n_boot=200.0)
    for level in (0.0, 1.0, 95):
        with pytest.raises(ValueError, match="level.*0.95"):
            bootstrap_metrics(scores, labels, level=level)
    with pytest.raises(ValueError, match=r"scores has shape \(39,\)"):
        bootstrap_metrics(scores[:-1], labels)
    with pytest.raises(ValueError, match="maps has 39 maps"):
        bootstrap_metrics(scores, labels, maps[:-1], masks[:-1])
    with pytest.raises(ValueError, match="masks has shape"):
        bootstrap_metrics(scores, labels, maps, masks[:, :-1])
    with pytest.raises(ValueError, match="a has shape"):
        compare(maps, maps[:, :-1], labels, masks, metric="P")
    with pytest.raises(ValueError, match="b has shape"):
        compare(scores, scores[:-1], labels)
    with pytest.raises(ValueError, match="metric='X'"):
        compare(scores, scores, labels, metric="X")
    with pytest.raises(ValueError, match="names"):
        compare(scores, scores, labels, names=("only one",))
    with pytest.raises(ValueError, match="binary"):
        bootstrap_metrics(scores, labels * 2)
    with pytest.raises(ValueError, match="no anomalous pixel"):
        bootstrap_metrics(scores, labels, maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="weights must be B x N"):
        weighted_image_auroc(scores, labels, np.ones(labels.size))
    with pytest.raises(ValueError, match="metric='I'"):
        binned_pixel_metric(maps, masks, "I")


def test_mean_estimate_and_compare_means():
    from lib.core.bootstrap import compare_means, mean_estimate, metric_samples
    rng = np.random.default_rng(0)
    groups, good, bad = [], [], []
    for k in range(3):
        y = np.r_[np.zeros(30), np.ones(30)].astype(int)
        good.append(y * 2.0 + rng.normal(0, 1, 60))    # clearly separates
        bad.append(rng.normal(0, 1, 60))               # chance
        groups.append((good[-1], y))
    est = mean_estimate(groups, n_boot=300)
    vals = [metric_samples(g, y, n_boot=300)[0] for g, y in groups]
    assert abs(est.value - np.mean(vals)) < 1e-12 and est.low <= est.value <= est.high
    labels = [g[1] for g in groups]
    c = compare_means(good, bad, labels, n_boot=300, names=("good", "chance"))
    assert c.verdict == "good > chance" and c.resolved
    same = compare_means(bad, [b + 1e-9 * rng.normal(size=60) for b in bad], labels, n_boot=300)
    assert same.verdict == "not resolved at this size"
    with pytest.raises(ValueError, match="one entry per category"):
        compare_means(good, bad[:2], labels)


def test_compare_scores_over_seeds_needs_every_seed():
    from sklearn.metrics import average_precision_score as sk_ap

    def average_precision_score(scores, labels):               # metric(scores, labels), as the kit's metrics
        return sk_ap(labels, scores)

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(40), np.ones(20)].astype(int)
    good = np.stack([y + rng.normal(0, 0.5, len(y)) for _ in range(3)])
    bad = np.stack([rng.normal(0, 1, len(y)) for _ in range(3)])
    from lib.core import bootstrap as B
    v = B.compare_scores_over_seeds(average_precision_score, good, bad, y, n_boot=200, seed=0, names=("good", "bad"))
    assert v.resolved and v.verdict == "good > bad" and v.difference.value > 0
    mixed = np.stack([good[0], bad[1], bad[2]])
    w = B.compare_scores_over_seeds(average_precision_score, mixed, np.stack([bad[0], good[1], good[2]]), y,
                                    n_boot=200, seed=0)
    assert not w.resolved
    assert len(w.per_seed) == 3 and w.per_seed[0] > 0 > w.per_seed[1]       # the seeds that disagree are shown
    assert "per seed +" in str(w) and str(w).count(", ") >= 2
    with pytest.raises(ValueError, match="one label per image"):
        B.compare_scores_over_seeds(average_precision_score, good, bad, y[:10])


def test_by_defect_type_scores_each_type_against_the_good_images():
    from lib.core.bootstrap import by_defect_type
    rng = np.random.default_rng(0)
    types = ["good"] * 30 + ["seen"] * 15 + ["missed"] * 15
    scores = np.r_[rng.normal(size=30), rng.normal(3, 1, 15), rng.normal(size=15)]
    est = by_defect_type(scores, types, n_boot=300)
    assert list(est) == ["seen", "missed"]
    good = np.array(types) == "good"
    for d, e in est.items():
        keep = good | (np.array(types) == d)
        assert e.value == pytest.approx(image_auroc(scores[keep], (~good[keep]).astype(int)))
        assert e.low <= e.value <= e.high
    assert est["seen"].low > 0.9 and est["missed"].low < 0.5 < est["missed"].high
    with pytest.raises(ValueError, match="good"):
        by_defect_type(scores[30:], types[30:])
    with pytest.raises(ValueError):
        by_defect_type(scores[:10], types)
