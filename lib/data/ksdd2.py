"""A KSDD2-like split of the embedded ``metal_strip`` for notebook 05 (seed 001 §IV-A).

KSDD2 (the DIAG paper's data) has 246 positive and 2085 negative training images and 110 positive and 894 negative
test images, resized to 224 wide × 632 tall. The kit's ``metal_strip`` is drawn at that aspect (64 × 184 at size 64)
with three defect types (scratch, spot, contamination) and a pixel mask per defect; :func:`embedded_strip`
generates one folder with :data:`STRIP_COUNTS` and :func:`ksdd2_split` splits its defective images into the
training positives I_p (their masks are DIAG's expert masks) and held-out test positives. Synthetic: say so
wherever it is shown. A real KSDD2 converted to the MVTec AD layout keeps its own training positives
(``positives_train/``), which :func:`ksdd2_split` uses as I_p.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.checks import check_int
from .benchmark import default_data_dir, make_benchmark, read_card
from .loader import Category, DatasetError, load_split

__all__ = ["STRIP_COUNTS", "KSDD2_COUNTS", "embedded_strip", "Ksdd2Split", "ksdd2_split"]

#: the paper's dataset (seed 001 §IV-A)
KSDD2_COUNTS = {"train/negative": 2085, "train/positive": 246, "test/negative": 894, "test/positive": 110}
#: the embedded folder: 200 training negatives, 100 test negatives, 36 defective images per type (108)
STRIP_COUNTS = dict(n_train=200, n_test_good=100, n_test_defect=36)
N_POSITIVE_TRAIN = 20        # per defect type: the training positives I_p (60); the other 16 per type are test


def embedded_strip(size: int = 64, seed: int = 0, version: int = 3, root: str | os.PathLike | None = None) -> Path:
    """The folder ``<data dir>/embedded/strip_v{version}_size{size}_seed{seed}`` (one category, ``metal_strip``,
    :data:`STRIP_COUNTS`), generated if missing or made with another config."""
    root = (Path(root) if root is not None
            else default_data_dir() / "embedded" / f"strip_v{version}_size{size}_seed{seed}")
    card = read_card(root)
    want = dict(size=size, seed=seed, categories=["metal_strip"], **STRIP_COUNTS, generator_version=str(version))
    if card is None or card.get("config") != want:
        make_benchmark(root, size=size, seed=seed, categories=["metal_strip"], version=version, **STRIP_COUNTS)
    return root


@dataclass
class Ksdd2Split:
    """DIAG's sets: ``negatives`` I_n (uint8 N×H×W×3), ``positives`` I_p with ``positive_masks`` (the expert masks)
    and ``positive_types``; the ``test`` images with ``test_labels`` (1 = defective), ``test_masks`` and
    ``test_types``."""

    negatives: np.ndarray
    positives: np.ndarray
    positive_masks: np.ndarray
    positive_types: list[str]
    test: np.ndarray
    test_labels: np.ndarray
    test_masks: np.ndarray
    test_types: list[str]

    def counts(self) -> dict[str, int]:
        """The split's sizes, named as :data:`KSDD2_COUNTS`."""
        return {"train/negative": len(self.negatives), "train/positive": len(self.positives),
                "test/negative": int((self.test_labels == 0).sum()), "test/positive": int(self.test_labels.sum())}


def ksdd2_split(cat: Category, n_positive_train: int = N_POSITIVE_TRAIN) -> Ksdd2Split:
    """Split ``cat``: its training images are I_n. A real KSDD2 converted by ``lib.data.convert`` ships its training
    positives in ``<category>/positives_train/``: they are I_p and the whole test split is the test set (the
    paper's 246 / 110). Otherwise (the embedded strip) the first ``n_positive_train`` defective test images per
    defect type (file order) are I_p, the rest and the good test images are the test set."""
    k = check_int("n_positive_train", n_positive_train, 1)
    test = cat.test
    if (cat.root / "positives_train").is_dir():
        pos = load_split(cat.root / "positives_train", image_size=tuple(cat.train.images.shape[1:3]))
        return Ksdd2Split(cat.train.images, pos.images, pos.masks, list(pos.defect_types), test.images, test.labels,
                          test.masks, list(test.defect_types))
    pos_train, held = [], []
    for d in cat.defect_types:
        idx = [i for i, t in enumerate(test.defect_types) if t == d]
        if len(idx) <= k:
            raise DatasetError(f"{cat.root}: defect type {d!r} has {len(idx)} images; n_positive_train={k} must "
                               f"leave some for the test set (lower it, or generate more defective images)")
        pos_train += idx[:k]
        held += idx[k:]
    good = [i for i, t in enumerate(test.defect_types) if t == "good"]
    if not good:
        raise DatasetError(f"{cat.root}: no good test images; the test set needs negatives")
    keep = good + held
    return Ksdd2Split(cat.train.images, test.images[pos_train], test.masks[pos_train],
                      [test.defect_types[i] for i in pos_train], test.images[keep], test.labels[keep],
                      test.masks[keep], [test.defect_types[i] for i in keep])
