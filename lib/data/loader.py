"""A loader for any MVTec AD-layout folder (the embedded benchmark or the real MVTec AD)::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png
    <root>/<category>/foreground/train/good/000.png      (optional: the object's mask, 0/255)

``load_category(root, category)`` reads one category into numpy arrays, checks it, and raises
``DatasetError`` naming the offending file (or parameter) and the fix. It never writes into the
dataset folder, and it never leaves it: a category is a sub-folder of ``root`` by name (no path
separators, no ``..``, no link that points outside).

A category has a ``kind``, MVTec AD's split of classes into "object" and "texture": read from the benchmark's
``benchmark.json`` when the root has one, else from the class name for MVTec AD's fifteen classes (``MVTEC_KINDS``),
else None (unknown). Foreground masks (an optional ``foreground/<split>/<kind>/`` folder, one mask per image, the
same file stem) load into ``Split.foreground``; without them methods estimate one (``lib.data.synth``).

Images load as 8-bit RGB: greyscale as three equal channels, 16-bit greyscale scaled to 8 bits
(round(v / 257)). Masks are binarised: 8-bit masks at > 127, 16-bit masks at > 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "MVTEC_KINDS", "DatasetError", "Split", "Category", "load_category", "list_categories",
           "select_categories", "split_validation", "to_tensor", "to_uint8", "fingerprint", "read_kind",
           "load_split"]

PathLike = Union[str, os.PathLike]  # a folder given as a str or a Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

MVTEC_KINDS: dict[str, str] = {
    **{c: "object" for c in ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush",
                             "transistor", "zipper")},
    **{c: "texture" for c in ("carpet", "grid", "leather", "tile", "wood")},
}
"""MVTec AD's classes and their kind (Bergmann et al., CVPR 2019: ten objects, five textures)."""


class DatasetError(ValueError):
    """A dataset folder is missing, incomplete or corrupt, or a category name points outside it; the
    message names the offending file, folder or parameter and says how to fix it."""


@dataclass
class Split:
    """One split: ``images`` uint8 N x H x W x 3, ``masks`` bool N x H x W (all False
    for good images), ``labels`` int64 0 (good) / 1 (anomalous), ``defect_types``
    ('good' or the defect folder name), ``paths`` of the image files and ``foreground`` (bool N x H x W, the
    object's mask) when the dataset ships one for every image of the split, else None."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    defect_types: list[str]
    paths: list[Path]
    foreground: np.ndarray | None = None

    def __len__(self) -> int:
        """Number of images."""
        return len(self.paths)


@dataclass
class Category:
    """A category of an MVTec AD-layout dataset: ``train`` (good only) and ``test``; ``kind`` is "object",
    "texture" or None (unknown)."""

    name: str
    root: Path
    train: Split
    test: Split
    kind: str | None = None

    @property
    def defect_types(self) -> list[str]:
        """The test split's defect folder names, sorted ('good' left out)."""
        return sorted({d for d in self.test.defect_types if d != "good"})


def split_validation(split: Split, fraction: float) -> tuple[Split, Split]:
    """Hold out the last ``round(fraction·N)`` images of a (train) split as a validation set.

    Deterministic (file order), so a checkpoint trained on the first part and a notebook that
    uses the held-out part agree on which images are which. The thesis (seed 002 §4.1) holds out
    20% of the normal training images. ``fraction = 0`` returns ``(split, empty split)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction={fraction} must be in [0, 1), e.g. 0.2 for the thesis' 20% validation set")
    n_val = int(round(fraction * len(split)))
    k = len(split) - n_val

    def part(sl):
        return Split(split.images[sl], split.masks[sl], split.labels[sl], split.defect_types[sl],
                     split.paths[sl], None if split.foreground is None else split.foreground[sl])

    return part(slice(0, k)), part(slice(k, len(split)))


# ----------------------------------------------------------------------------------
# Roots and category names: every category stays inside its root
# ----------------------------------------------------------------------------------

def _check_root(root: PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist; generate the embedded benchmark with "
                           "lib.data.embedded_benchmark() or make_benchmark(root), or point root at an "
                           "MVTec AD-layout folder.")
    return root


def _inside_root(root: Path, name: str) -> bool:
    return (root / name).resolve().is_relative_to(root.resolve())


def _category_dir(root: Path, name, parameter: str) -> Path:
    """``root / name`` if ``name`` is a plain folder name whose folder lies inside ``root``."""
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if (not isinstance(name, str) or name in ("", ".", "..") or any(s in name for s in separators)
            or Path(name).is_absolute()):
        raise DatasetError(f"{parameter}={name!r} is not a category name: a category is a sub-folder of the "
                           f"dataset root {root}, named without path separators or '..'. Pass the folder's "
                           f"name, or pass the folder that holds it as the root.")
    if not _inside_root(root, name):
        raise DatasetError(f"{parameter}={name!r}: {root / name} resolves to {(root / name).resolve()}, "
                           f"outside the dataset root {root.resolve()} (a link?). Copy the category into "
                           "the root, or pass the folder that really holds it as the root.")
    return root / name


def list_categories(root: PathLike) -> list[str]:
    """Sub-folders of ``root`` that look like categories (they hold ``train/``); a link that points
    outside ``root`` is left out with a warning."""
    root = _check_root(root)
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir())
    outside = [n for n in found if not _inside_root(root, n)]
    if outside:
        warnings.warn(f"{root}: {outside} point outside the dataset root and are not loaded as categories; "
                      "copy them into the root instead of linking them.", stacklevel=2)
    return [n for n in found if n not in outside]


def select_categories(categories: str | Sequence[str] | None, root: PathLike,
                      order: Sequence[str] = ()) -> list[str]:
    """The notebooks' ``categories`` parameter → category names found in ``root``.

    ``None`` → every category of ``root``, alphabetically (those named in ``order`` first); a
    string → one name or several separated by commas (``"grass"``, ``"grass,brick"``; what
    ``papermill -p categories grass`` passes); a list or tuple → those names. An unknown name, or one
    that is not a plain folder name (``../x``, an absolute path), raises :class:`DatasetError`
    naming the parameter and the categories that exist."""
    root = Path(root)
    available = list_categories(root)
    if not available:
        raise DatasetError(f"no category folders (with a train/ sub-folder) in {root}")
    if categories is None or (isinstance(categories, (str, list, tuple)) and len(categories) == 0):
        return [c for c in order if c in available] + [c for c in available if c not in order]
    if isinstance(categories, str):
        categories = [c.strip() for c in categories.split(",") if c.strip()]
    if not isinstance(categories, (list, tuple)) or not all(isinstance(c, str) for c in categories):
        raise ValueError(f"categories={categories!r}: give None, a name, a comma-separated string "
                         f"or a list of names from {available}")
    for c in categories:
        _category_dir(root, c, "categories")
    unknown = [c for c in categories if c not in available]
    if unknown:
        raise DatasetError(f"categories={list(categories)!r}: {unknown} not found in {root}; "
                           f"the categories there are {available}")
    return list(dict.fromkeys(categories))


# ----------------------------------------------------------------------------------
# Reading images and masks
# ----------------------------------------------------------------------------------

def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def _to_8bit(im: Image.Image, path: Path, mask: bool) -> Image.Image:
    """A 16-bit greyscale image (Pillow modes I;16*, or I holding 0..65535) as 8-bit L: round(v / 257)
    for an image, 255 where v > 0 for a mask."""
    v = np.asarray(im)
    if v.size and (v.min() < 0 or v.max() > 65535):
        raise DatasetError(f"cannot read image {path}: a 32-bit integer image with values {v.min()}..{v.max()}, "
                           "outside the 16-bit range 0..65535 this loader scales to 8 bits. Convert it to "
                           "an 8- or 16-bit image.")
    v = v.astype(np.uint32)
    return Image.fromarray(np.where(v > 0, 255, 0).astype(np.uint8) if mask else ((v + 128) // 257).astype(np.uint8))


def _open(path: Path, mask: bool = False) -> Image.Image:
    """Read an image fully (read-only) as 8-bit RGB, or 8-bit L for a mask; corrupt files raise DatasetError."""
    try:
        with open(path, "rb") as f, Image.open(f) as im:
            im.verify()
        with open(path, "rb") as f, Image.open(f) as im:
            im.load()
            if im.mode == "F":
                raise DatasetError(f"cannot read image {path}: it holds 32-bit floating-point pixels; the "
                                   "loader reads 8- and 16-bit images. Convert it to an 8- or 16-bit PNG.")
            if im.mode == "I" or im.mode.startswith("I;16"):
                im = _to_8bit(im, path, mask)
            return im.convert("L" if mask else "RGB")
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image {path}: {e}. The file is corrupt or truncated; "
                           "replace it (re-download or regenerate the dataset) or delete it.") from e


def _resize(im: Image.Image, size, resample) -> Image.Image:
    if size is None:
        return im
    h, w = (size, size) if isinstance(size, int) else size
    return im if im.size == (w, h) else im.resize((w, h), resample)


def _find_mask(category_dir: Path, defect: str, image: Path) -> Path:
    folder = category_dir / "ground_truth" / defect
    candidates = [folder / f"{image.stem}_mask{ext}" for ext in IMAGE_EXTENSIONS]
    for c in candidates:
        if c.is_file():
            return c
    raise DatasetError(f"anomalous test image {image} has no mask: expected {candidates[0]} "
                       f"(or another of {', '.join(IMAGE_EXTENSIONS)}). Add the mask, or move the "
                       "image to test/good if it is not anomalous.")


def _load_mask(path: Path, image: Path, native_size, size, warn_empty: bool = True) -> np.ndarray:
    m = _open(path, mask=True)
    if m.size != native_size:
        raise DatasetError(f"mask {path} is {m.size[0]}x{m.size[1]} (W x H) but its image {image} is "
                           f"{native_size[0]}x{native_size[1]}; regenerate the mask at the image's size.")
    mask = np.asarray(_resize(m, size, Image.NEAREST)) > 127
    if warn_empty and not mask.any():
        warnings.warn(f"mask {path} of anomalous image {image} is all zero; the pixel metrics will "
                      "treat the image as defect-free there.", stacklevel=4)
    return mask


def _load_split(category_dir: Path, split: str, size, masks_root: Path | None = None) -> Split:
    folder = category_dir / split
    images, masks, labels, kinds, paths, native = [], [], [], [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and p.name != "ground_truth"):
        for path in _image_files(sub):
            im = _open(path)
            native.append(im.size)
            image = np.asarray(_resize(im, size, Image.BILINEAR))
            if sub.name == "good":
                mask = np.zeros(image.shape[:2], bool)
            else:
                mask = _load_mask(_find_mask(masks_root or category_dir, sub.name, path), path, im.size, size)
            images.append(image)
            masks.append(mask)
            labels.append(int(sub.name != "good"))
            kinds.append(sub.name)
            paths.append(path)
    if not paths:
        raise DatasetError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its sub-folders; "
                           f"expected {folder}/good/*.png. Regenerate or re-download the category.")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        odd = next(p for p, a in zip(paths, images) if a.shape != images[0].shape)
        raise DatasetError(f"images of {folder} differ in size ({paths[0]} is {images[0].shape[:2]}, "
                           f"{odd} is not); pass image_size=... to load_category to resize them.")
    return Split(np.stack(images), np.stack(masks), np.asarray(labels, np.int64), kinds, paths,
                 _load_foreground(category_dir, split, paths, native, size))


def _load_foreground(category_dir: Path, split: str, paths: list[Path], native: list, size) -> np.ndarray | None:
    """``foreground/<split>/<kind>/<stem>.<ext>`` for every image of the split, or None when the split has no
    foreground folder; one that covers only some of the images raises, naming the first image without one."""
    folder = category_dir / "foreground" / split
    if not folder.is_dir():
        return None
    out = []
    for path, native_size in zip(paths, native):
        sub = folder / path.parent.name
        found = [sub / f"{path.stem}{ext}" for ext in IMAGE_EXTENSIONS if (sub / f"{path.stem}{ext}").is_file()]
        if not found:
            raise DatasetError(f"{folder} holds foreground masks but none for {path} (expected "
                               f"{sub / (path.stem + '.png')}); add it, or remove the foreground folder.")
        out.append(_load_mask(found[0], path, native_size, size, warn_empty=False))
    return np.stack(out)


def load_split(folder: PathLike, image_size: int | tuple[int, int] | None = None) -> Split:
    """Load an extra split laid out like a category: ``<folder>/<kind>/*`` (``good`` or a defect type) with masks in
    ``<folder>/ground_truth/<kind>/<stem>_mask.*``, e.g. the KSDD2 converter's ``positives_train/``; sizes and checks
    as :func:`load_category`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} does not exist or is not a folder")
    return _load_split(folder, ".", image_size, masks_root=folder)


def read_kind(root: PathLike, name: str) -> str | None:
    """A category's kind without loading it: "object" / "texture" from ``<root>/benchmark.json``, else MVTec AD's
    class names (``MVTEC_KINDS``), else None."""
    root = Path(root)
    try:
        card = json.loads((root / "benchmark.json").read_text())
        kind = card["categories"][name]["kind"]
        return kind if kind in ("object", "texture") else None
    except (OSError, ValueError, KeyError, TypeError):
        return MVTEC_KINDS.get(name)


def load_category(root: PathLike, category: str, image_size: int | tuple[int, int] | None = None) -> Category:
    """Load ``<root>/<category>`` of an MVTec AD-layout folder.

    ``category`` is the name of a sub-folder of ``root`` (no path separators, no ``..``).
    ``image_size``: None keeps the native size (a split's images must then share
    one size), an int resizes to a square of that side, an (H, W) tuple to that shape; images
    bilinear, masks nearest. Greyscale images load as 3 channels, 16-bit ones scaled to 8 bits;
    masks ``ground_truth/<defect>/<stem>_mask.<ext>`` are binarised at > 127 (16-bit: > 0). The
    folder is only read, never written.
    """
    root = _check_root(root)
    category_dir = _category_dir(root, category, "category")
    if not category_dir.is_dir():
        raise DatasetError(f"category folder {category_dir} does not exist; categories in {root}: "
                           f"{', '.join(list_categories(root)) or '(none)'}. Check the name.")
    for split in ("train", "test"):
        if not (category_dir / split).is_dir():
            raise DatasetError(f"category {category_dir} has no {split}/ folder (empty or incomplete "
                               "category); regenerate or re-download it.")
    if not (category_dir / "train" / "good").is_dir() or not _image_files(category_dir / "train" / "good"):
        raise DatasetError(f"{category_dir / 'train' / 'good'} is missing or holds no images; a category "
                           "needs defect-free training images there. Regenerate or re-download it.")
    return Category(category, category_dir, _load_split(category_dir, "train", image_size),
                    _load_split(category_dir, "test", image_size), read_kind(root, category))


# ----------------------------------------------------------------------------------
# Tensors and fingerprints
# ----------------------------------------------------------------------------------

def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 (or one H x W x 3) -> float32 N x 3 x H x W (or 3 x H x W)
    in [-1, 1], the range the diffusion models work in."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N x) H x W x 3, got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).float() / 127.5 - 1
    return x.movedim(-1, -3).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Inverse of ``to_tensor``: values in [-1, 1] (clamped) -> uint8 (N x) H x W x 3."""
    x = ((x.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def fingerprint(path: PathLike) -> str:
    """sha256 over the sorted relative paths and bytes of every file under ``path``
    (a dataset or a category folder); recorded in training manifests."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"cannot fingerprint {path}: not a folder.")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()
