"""The MURA defect set of notebook 02 (seed 000 §4.1): defect images of the embedded ``display_panel`` with their
class, pixel mask and box, split into the generator's training set, the detector's few real images and a held-out
real test set.

Seed 000's data: "four kinds of spot mura and a kind of shapeless mura"; about 200 defect patches train the
DDPM, 15 of them train YOLOv5 (47 generated images are added), 10 more test it. The kit draws the same five
classes with :mod:`lib.data.panel`'s recipes (synthetic: it says so wherever it is shown) into an MVTec AD-layout
folder, so a real MVTec-layout category with these (or other) defect folders is read the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.checks import check_int
from .benchmark import default_data_dir, make_benchmark, read_card
from .labels import Box
from .loader import Category, DatasetError

__all__ = ["MURA_CLASSES", "MURA_COUNTS", "embedded_mura", "DefectSet", "defect_set", "split_defect_set",
           "defect_box", "box_patches"]

MURA_CLASSES = ("white_spot", "black_spot", "particle_spot", "seal_gap", "shapeless_mura")
"""The five MURA classes of seed 000 (Fig. 1 and §4.1), as the embedded ``display_panel`` names them."""

MURA_COUNTS = dict(n_train=60, n_test_good=20, n_test_defect=60)
"""Images of the embedded MURA set: 60 defect-free panels (the canvases generation paints on), 20 good test
panels, 60 defect images per class (300: seed 000's "around 200" for the generator plus a held-out test set)."""


def embedded_mura(size: int = 64, seed: int = 0, version: int = 3, root: str | os.PathLike | None = None) -> Path:
    """The MURA set folder ``<data dir>/embedded/mura_v{version}_size{size}_seed{seed}`` (one category,
    ``display_panel``, :data:`MURA_COUNTS`), generated if missing or made with another config."""
    root = Path(root) if root is not None else default_data_dir() / "embedded" / f"mura_v{version}_size{size}_seed{seed}"
    card = read_card(root)
    want = dict(size=size, seed=seed, categories=["display_panel"], **MURA_COUNTS, generator_version=str(version))
    if card is None or card.get("config") != want:
        make_benchmark(root, size=size, seed=seed, categories=["display_panel"], version=version, **MURA_COUNTS)
    return root


def defect_box(mask: np.ndarray, margin: int = 0) -> Box:
    """The box of one defect: the bounding box of its whole pixel mask, grown by ``margin`` pixels and clipped to
    the image (one box per defect image, as seed 000's position labels)."""
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if not len(ys):
        raise ValueError("the mask is empty: a defect image needs a non-empty ground-truth mask")
    h, w = mask.shape
    m = check_int("margin", margin, 0)
    return Box(0, max(0, int(xs.min()) - m), max(0, int(ys.min()) - m), min(w, int(xs.max()) + 1 + m),
               min(h, int(ys.max()) + 1 + m))


@dataclass
class DefectSet:
    """Defect images with one defect each: ``images`` uint8 N×H×W×3, ``masks`` bool N×H×W, ``classes`` int N
    (indices into ``names``) and the image ``paths``."""

    images: np.ndarray
    masks: np.ndarray
    classes: np.ndarray
    names: tuple[str, ...]
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.paths)

    def boxes(self, margin: int = 0) -> list[Box]:
        """One :func:`defect_box` per image, with its class."""
        return [Box(int(c), *_corners(defect_box(m, margin))) for m, c in zip(self.masks, self.classes)]

    def subset(self, index: Sequence[int] | np.ndarray) -> "DefectSet":
        """The images at ``index``, in that order."""
        index = np.asarray(index, int)
        return DefectSet(self.images[index], self.masks[index], self.classes[index], self.names,
                         [self.paths[i] for i in index])

    def counts(self) -> dict[str, int]:
        """Images per class name."""
        return {n: int((self.classes == i).sum()) for i, n in enumerate(self.names)}


def _corners(b: Box) -> tuple[int, int, int, int]:
    return b.x0, b.y0, b.x1, b.y1


def defect_set(category: Category, classes: Sequence[str] | None = None) -> DefectSet:
    """The anomalous test images of a loaded category as a :class:`DefectSet` (``classes``: the defect folders
    to use and their order; None: :data:`MURA_CLASSES` if the category has them all, else all its folders)."""
    have = category.defect_types
    if classes is None:
        classes = MURA_CLASSES if set(MURA_CLASSES) <= set(have) else tuple(have)
    missing = [c for c in classes if c not in have]
    if missing:
        raise DatasetError(f"{category.root} has no test/ folder for the classes {missing}; its defect folders are "
                           f"{have}. Pass classes= from those")
    t = category.test
    idx = [i for c in classes for i in range(len(t)) if t.defect_types[i] == c]
    cls = np.array([list(classes).index(t.defect_types[i]) for i in idx], int)
    empty = [str(t.paths[i]) for i in idx if not t.masks[i].any()]
    if empty:
        raise DatasetError(f"defect images without a ground-truth mask (empty or missing *_mask.png): {empty[:3]}; "
                           "each defect image needs its mask under ground_truth/<class>/")
    return DefectSet(t.images[idx], t.masks[idx], cls, tuple(classes), [t.paths[i] for i in idx])


def split_defect_set(ds: DefectSet, n_train: int, n_real: int) -> tuple[DefectSet, DefectSet, DefectSet]:
    """Per class, in file order: the first ``n_train`` images train the generator, the first ``n_real`` of those
    are the detector's few real images (seed 000: 15 of the ~200 patches), the rest is the held-out test set.
    Returns ``(generator_train, real_few, test)``."""
    n_train, n_real = check_int("n_train", n_train, 1), check_int("n_real", n_real, 1)
    if n_real > n_train:
        raise ValueError(f"n_real={n_real} must be <= n_train={n_train} (the few real images are part of the "
                         "generator's training images, as in seed 000 §4.1)")
    tr, real, test = [], [], []
    for c, name in enumerate(ds.names):
        idx = np.flatnonzero(ds.classes == c)
        if len(idx) <= n_train:
            raise ValueError(f"class {name!r} has {len(idx)} images; n_train={n_train} leaves none to test on. "
                             "Lower n_train or add images")
        tr += list(idx[:n_train])
        real += list(idx[:n_real])
        test += list(idx[n_train:])
    return ds.subset(tr), ds.subset(real), ds.subset(test)


def box_patches(images: np.ndarray, boxes: Sequence[Box], size: int = 16) -> np.ndarray:
    """The grey content of each image's box, resized to ``size``×``size`` (bilinear) and flattened: N×size² in
    [0, 1], the samples the kit's generation-quality measures compare."""
    from PIL import Image

    size = check_int("size", size, 2)
    out = []
    for im, b in zip(np.asarray(images), boxes):
        crop = Image.fromarray(np.asarray(im)[b.y0:b.y1, b.x0:b.x1]).convert("L").resize((size, size), Image.BILINEAR)
        out.append(np.asarray(crop, np.float32).reshape(-1) / 255.0)
    return np.stack(out)
