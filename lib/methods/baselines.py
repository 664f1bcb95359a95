"""Two trivial anomaly detectors that give every AUROC table a floor.

A diffusion method is worth its cost only where it beats what needs no training at all:

- :func:`zscore` — "z-score (per pixel)": how many training standard deviations each pixel of a
  test image lies from the training mean at that pixel,
  z_{hwc} = (x_{hwc} - mu_{hwc}) / max(sigma_{hwc}, min_std);
  map = max_c |z_{hwc}|, image score = max (or mean) of the map. Strong on aligned objects
  (a panel, a strip), weak on textures, whose pixels vary everywhere.
- :func:`nearest_neighbour` — "nearest neighbour (L2)": image score = ||x - x_NN||_2, the L2
  distance (grey levels 0…255, all pixels and channels) to the closest training image;
  map = |x - x_NN| averaged over the channels.

Images are what :func:`lib.data.load_category` returns in ``.train.images`` / ``.test.images``:
uint8 numpy arrays N x H x W x C (C = 3 for the kit's data). For [-1, 1] tensors use
``lib.data.to_uint8`` first. Both baselines are deterministic and run on the CPU in seconds.

    cat = data.load_category(root, "display_panel", image_size=64)
    rows = evaluate_baselines(cat)          # {"z-score (per pixel)": {"I": Estimate, ...}, ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from ..core.bootstrap import METRICS, Estimate, bootstrap_metrics
from ..core.checks import check_choice, check_float, check_int

__all__ = ["Baseline", "BASELINES", "zscore", "nearest_neighbour", "evaluate_baselines"]


class Baseline(NamedTuple):
    """A baseline's output: ``maps`` float32 N x H x W (higher = more anomalous) and ``scores`` float32 N."""

    maps: np.ndarray
    scores: np.ndarray


def _images(name: str, x: Any) -> np.ndarray:
    """``x`` if it is a uint8 numpy array N x H x W x C with N >= 1."""
    if isinstance(x, torch.Tensor):
        raise ValueError(f"{name} is a torch tensor; the baselines take uint8 numpy images N x H x W x C as "
                         f"lib.data.load_category returns them (convert with lib.data.to_uint8)")
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a uint8 numpy array N x H x W x C, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be N x H x W x C (e.g. split.images), got shape {x.shape}; "
                         f"add the batch axis with x[None] for a single image")
    if x.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8 (grey levels 0…255), got {x.dtype}; pass split.images "
                         f"or convert with lib.data.to_uint8")
    if x.shape[0] == 0:
        raise ValueError(f"{name} holds no image (shape {x.shape}); pass at least one")
    return x


def _pair(train_images: Any, test_images: Any, min_train: int = 1) -> tuple[np.ndarray, np.ndarray]:
    train = _images("train_images", train_images)
    test = _images("test_images", test_images)
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(f"train_images are {train.shape[1:]} (H x W x C) but test_images are {test.shape[1:]}; "
                         f"load both splits at the same image_size")
    if train.shape[0] < min_train:
        raise ValueError(f"train_images holds {train.shape[0]} image(s); this baseline needs at least "
                         f"{min_train} training images")
    return train, test


def _reduce(maps: np.ndarray, reduction: str) -> np.ndarray:
    flat = maps.reshape(maps.shape[0], -1)
    return (flat.max(axis=1) if reduction == "max" else flat.mean(axis=1)).astype(np.float32)


def zscore(train_images: np.ndarray, test_images: np.ndarray, *, reduction: str = "max",
           min_std: float = 1.0, chunk: int = 64) -> Baseline:
    """Per-pixel z-score map max_c |x_{hwc} - mu_{hwc}| / max(sigma_{hwc}, min_std) against the training images.

    mu and sigma: mean and (population) standard deviation of each pixel and channel over the
    training images, in grey levels; ``min_std`` (default 1 grey level) keeps pixels that never
    vary in training from dividing by 0. Image score = ``reduction`` ("max" or "mean") of the map.
    """
    train, test = _pair(train_images, test_images, min_train=2)
    reduction = check_choice("reduction", reduction, ("max", "mean"))
    min_std = check_float("min_std", min_std, 0.0, lo_open=True)
    chunk = check_int("chunk", chunk, 1)
    mu = train.mean(axis=0, dtype=np.float64)
    sigma = np.maximum(train.std(axis=0, dtype=np.float64), min_std)
    mu, inv = mu.astype(np.float32), (1.0 / sigma).astype(np.float32)
    maps = np.empty(test.shape[:3], dtype=np.float32)
    for i in range(0, test.shape[0], chunk):
        z = np.abs(test[i:i + chunk].astype(np.float32) - mu) * inv
        maps[i:i + chunk] = z.max(axis=-1)
    return Baseline(maps, _reduce(maps, reduction))


def nearest_neighbour(train_images: np.ndarray, test_images: np.ndarray, *, chunk: int = 64) -> Baseline:
    """Image score ||x - x_NN||_2 (grey levels) to the nearest training image; map = mean_c |x - x_NN|.

    Distances in float32 over all pixels and channels, computed exactly (no ||a||² + ||b||² - 2ab
    shortcut, so an image that equals a training image scores exactly 0), ``chunk`` test images
    at a time.
    """
    train, test = _pair(train_images, test_images)
    chunk = check_int("chunk", chunk, 1)
    ref = torch.from_numpy(train.reshape(train.shape[0], -1).astype(np.float32))
    maps = np.empty(test.shape[:3], dtype=np.float32)
    scores = np.empty(test.shape[0], dtype=np.float32)
    for i in range(0, test.shape[0], chunk):
        x = test[i:i + chunk].astype(np.float32)
        d = torch.cdist(torch.from_numpy(x.reshape(x.shape[0], -1)), ref,
                        compute_mode="donot_use_mm_for_euclid_dist")
        dist, nn = d.min(dim=1)
        scores[i:i + chunk] = dist.numpy()
        maps[i:i + chunk] = np.abs(x - train[nn.numpy()].astype(np.float32)).mean(axis=-1)
    return Baseline(maps, scores)


BASELINES = {"z-score (per pixel)": zscore, "nearest neighbour (L2)": nearest_neighbour}
"""The table row names and their functions."""


def evaluate_baselines(category: Any, *, metrics: Sequence[str] = METRICS, n_boot: int = 1000,
                       seed: int = 0, level: float = 0.95) -> dict[str, dict[str, Estimate]]:
    """Both baselines on a :class:`lib.data.Category`: {row name: {metric code: Estimate}}.

    Trained on ``category.train.images``, scored on ``category.test`` (its ``labels`` and
    ``masks``), each metric with its bootstrap interval (:func:`lib.core.bootstrap.bootstrap_metrics`,
    the same ``n_boot`` resamples and ``seed`` for both rows, so the rows are paired).
    """
    for part in ("train", "test"):
        if not hasattr(category, part) or not hasattr(getattr(category, part), "images"):
            raise ValueError(f"category must be a lib.data.Category (with .train and .test splits), got "
                             f"{type(category).__name__}; load it with lib.data.load_category(root, name)")
    test = category.test
    out = {}
    for name, fn in BASELINES.items():
        b = fn(category.train.images, test.images)
        out[name] = bootstrap_metrics(b.scores, test.labels, b.maps, test.masks, metrics=metrics,
                                      n_boot=n_boot, seed=seed, level=level)
    return out
