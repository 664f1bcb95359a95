"""Tests of lib.methods.baselines on tiny synthetic images."""

import numpy as np
import pytest
import torch

from lib.core.bootstrap import Estimate
from lib.data.loader import Category, Split
from lib.methods.baselines import BASELINES, Baseline, evaluate_baselines, nearest_neighbour, zscore


def images(n, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(100, 140, size=(n, size, size, 3), dtype=np.uint8)


def with_defect(x):
    x = x.copy()
    x[:, 2:4, 2:4] = 255
    return x


def test_zscore_bright_defect_scores_higher_and_shapes():
    train, test = images(10), images(4, seed=1)
    out = zscore(train, np.concatenate([test, with_defect(test)]))
    assert isinstance(out, Baseline)
    assert out.maps.shape == (8, 8, 8) and out.scores.shape == (8,)
    assert out.maps.dtype == np.float32 and out.scores.dtype == np.float32
    assert (out.scores[4:] > out.scores[:4]).all()
    assert out.maps[4:, 2:4, 2:4].min() > out.maps[4:, 5:, 5:].max()  # the map points at the defect
    mean = zscore(train, np.concatenate([test, with_defect(test)]), reduction="mean").scores
    assert (mean[4:] > mean[:4]).all()


def test_zscore_is_the_formula_and_floors_std():
    train = np.stack([np.full((2, 2, 3), 10, np.uint8), np.full((2, 2, 3), 20, np.uint8)])
    test = np.full((1, 2, 2, 3), 30, np.uint8)
    assert zscore(train, test).maps == pytest.approx(np.full((1, 2, 2), 3.0))  # (30 - 15) / 5
    flat = np.full((3, 2, 2, 3), 10, np.uint8)  # std 0 -> floored at 1 grey level
    assert zscore(flat, test).scores == pytest.approx([20.0])
    assert zscore(flat, test, min_std=4.0).scores == pytest.approx([5.0])


def test_nearest_neighbour_distance_zero_for_a_training_image():
    train = images(6)
    test = np.concatenate([train[2:3], with_defect(train[2:3])])
    out = nearest_neighbour(train, test, chunk=1)
    assert out.maps.shape == (2, 8, 8) and out.scores.shape == (2,)
    assert out.scores[0] == 0.0 and (out.maps[0] == 0).all()
    diff = with_defect(train[2:3]).astype(np.float32) - train[2:3]
    assert out.scores[1] == pytest.approx(np.sqrt((diff ** 2).sum()), rel=1e-5)
    assert out.maps[1] == pytest.approx(np.abs(diff).mean(axis=-1)[0])


def test_errors_on_bad_inputs():
    train = images(4)
    with pytest.raises(ValueError, match="test_images are"):
        zscore(train, images(2, size=6))
    with pytest.raises(ValueError, match="test_images are"):
        nearest_neighbour(train, images(2)[..., :2])
    with pytest.raises(ValueError, match="uint8"):
        zscore(train.astype(np.float32), images(2))
    with pytest.raises(ValueError, match="torch tensor"):
        nearest_neighbour(torch.zeros(2, 8, 8, 3), images(2))
    with pytest.raises(ValueError, match="N x H x W x C"):
        zscore(train[0], images(2))
    with pytest.raises(ValueError, match="at least 2"):
        zscore(train[:1], images(2))
    with pytest.raises(ValueError, match="reduction"):
        zscore(train, images(2), reduction="median")
    with pytest.raises(ValueError, match="lib.data.Category"):
        evaluate_baselines(train)


def split(x, masks, labels):
    return Split(x, masks, labels, ["good" if lab == 0 else "spot" for lab in labels], [None] * len(labels))


def test_evaluate_baselines_on_a_tiny_category():
    train = images(12)
    good, bad = images(6, seed=2), with_defect(images(6, seed=3))
    masks = np.zeros((12, 8, 8), bool)
    masks[6:, 2:4, 2:4] = True
    labels = np.r_[np.zeros(6, int), np.ones(6, int)]
    cat = Category("tiny", None, split(train, np.zeros((12, 8, 8), bool), np.zeros(12, int)),
                   split(np.concatenate([good, bad]), masks, labels))
    rows = evaluate_baselines(cat, n_boot=100)
    assert list(rows) == list(BASELINES) == ["z-score (per pixel)", "nearest neighbour (L2)"]
    for est in rows.values():
        assert set(est) == {"I", "P", "O", "A"}
        assert all(isinstance(e, Estimate) for e in est.values())
        assert est["I"].value == 1.0
