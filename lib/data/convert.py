"""Converters from the real datasets' own layouts into the MVTec AD layout ``lib.data.loader`` reads.

Each converter reads a source folder (an extracted archive) and writes a *separate* folder, once; the source is
never modified. The new folder is built in a temporary sibling and moved into place in one rename, with a marker
(``.converted.json``) that records what it was built from, so an interrupted conversion never leaves a folder that
looks complete. Every converted folder gets a ``README.md`` dataset card (counts, licence, caveats).

    KSDD2      train/ and test/ with <id>.png and <id>_GT.png (positives: a non-empty mask)
               -> ksdd2/{train/good, test/good, test/defect, ground_truth/defect}; the training positives go to
                  ksdd2/positives_train/ (the loader's train/ holds good images only)
    VisA       <object>/Data/{Images,Masks}/... and split_csv/1cls.csv
               -> <object>/{train/good, test/good, test/bad, ground_truth/bad}; masks binarised (they hold
                  instance labels 1, 2, ...)
    DAGM 2007  Class<k>/{Train,Test}/ with Label/Labels.txt and <id>_label.PNG (weak, elliptical labels)
               -> class<k>/... as KSDD2
    BTAD       <nn>/{train/ok, test/ok, test/ko, ground_truth/ko/<id>.png} -> <nn>/ with good / ko and _mask names
    MVTec AD, MPDD  already in the layout: validated only (``check_layout``), nothing is written

Masks are written as 8-bit PNGs holding 0 and 255 (source value > 0 -> 255).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Union

import numpy as np
from PIL import Image

from .loader import IMAGE_EXTENSIONS, DatasetError, list_categories

__all__ = ["CONVERTERS", "MARKER", "CONVERTED_MARKER", "atomic_folder", "read_marker", "check_layout",
           "find_layout_root", "convert_dataset", "convert_ksdd2", "convert_visa", "convert_dagm", "convert_btad"]

PathLike = Union[str, os.PathLike]

MARKER = ".extracted.json"          # written by lib.data.fetch into a finished extraction
CONVERTED_MARKER = ".converted.json"  # written into a finished conversion
CONVERTER_VERSION = 1


# ----------------------------------------------------------------------------------
# Folders that appear complete or not at all
# ----------------------------------------------------------------------------------

def read_marker(folder: PathLike, marker: str) -> dict | None:
    """The JSON marker ``folder/marker`` of a finished extraction or conversion, or None when absent or unreadable."""
    try:
        value = json.loads((Path(folder) / marker).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _remove_stale(target: Path) -> None:
    """Delete left-overs of killed runs (``.<name>.tmp-*`` / ``.<name>.old-*`` siblings of ``target``)."""
    if target.parent.is_dir():
        for p in target.parent.glob(f".{target.name}.[to][ml][pd]-*"):
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(target: PathLike, marker: str, record: dict) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``target`` to fill; on success write ``record`` as ``marker`` into it and
    rename it to ``target`` (replacing an older ``target``); on any error delete it, leaving ``target`` untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        (tmp / marker).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if target.exists() or target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------------
# Small readers and writers
# ----------------------------------------------------------------------------------

def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def _read_mask(path: Path) -> np.ndarray:
    """A mask file as bool (> 0); a corrupt one raises DatasetError naming it."""
    try:
        with Image.open(path) as im:
            m = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot read mask {path}: {e}. Re-download the dataset (the archive is damaged).") from e
    return (m.max(axis=-1) if m.ndim == 3 else m) > 0


def _write_mask(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _inside(base: Path, relative: str, what: str) -> Path:
    """``base / relative`` for a relative path read from a dataset's own index file, refused if it leaves ``base``."""
    p = (base / relative)
    if Path(relative).is_absolute() or ".." in Path(relative.replace("\\", "/")).parts \
            or not p.resolve().is_relative_to(base.resolve()):
        raise DatasetError(f"{what} names {relative!r}, which lies outside {base}; the index file is damaged or "
                           "not from this dataset. Re-download it.")
    return p


def _card(folder: Path, title: str, lines: list[str]) -> None:
    (folder / "README.md").write_text(f"# {title} (converted to the MVTec AD layout)\n\n" + "\n".join(lines) + "\n")


def _find(src: Path, test: Callable[[Path], bool], what: str, depth: int = 3) -> Path:
    """The shallowest folder at or below ``src`` (at most ``depth`` levels) for which ``test`` holds."""
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"source folder {src} does not exist; extract the dataset first "
                           "(python -m lib.data fetch NAME).")
    level = [src]
    for _ in range(depth + 1):
        for d in level:
            if test(d):
                return d
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
    raise DatasetError(f"{src} does not hold {what} (searched {depth} levels down); is this the right archive?")


# ----------------------------------------------------------------------------------
# The MVTec layout: validation
# ----------------------------------------------------------------------------------

def _is_mvtec_root(d: Path) -> bool:
    return any((c / "train" / "good").is_dir() for c in d.iterdir() if c.is_dir())


def find_layout_root(src: PathLike) -> Path:
    """The folder at or below ``src`` whose sub-folders are MVTec-layout categories (they hold ``train/good``)."""
    return _find(Path(src), _is_mvtec_root, "MVTec AD-layout categories (<category>/train/good/)")


def check_layout(root: PathLike) -> list[str]:
    """Check an MVTec AD-layout folder without loading its images: every category (``list_categories``) has images
    in ``train/good`` and a ``test/`` folder, and every anomalous test image has its ``ground_truth`` mask; returns
    the categories, raises DatasetError naming the first offending file or folder."""
    root = Path(root)
    categories = list_categories(root)
    if not categories:
        raise DatasetError(f"{root} holds no categories (sub-folders with train/good/); is this the right folder?")
    for name in categories:
        cat = root / name
        if not _images(cat / "train" / "good"):
            raise DatasetError(f"{cat / 'train' / 'good'} holds no images; the category is incomplete. "
                               "Re-download or re-convert the dataset.")
        if not (cat / "test").is_dir():
            raise DatasetError(f"category {cat} has no test/ folder; re-download or re-convert the dataset.")
        for sub in sorted(p for p in (cat / "test").iterdir() if p.is_dir() and p.name != "good"):
            for image in _images(sub):
                masks = [cat / "ground_truth" / sub.name / f"{image.stem}_mask{e}" for e in IMAGE_EXTENSIONS]
                if not any(m.is_file() for m in masks):
                    raise DatasetError(f"anomalous test image {image} has no mask: expected {masks[0]}. "
                                       "Re-download the dataset, or move the image to test/good.")
    return categories


# ----------------------------------------------------------------------------------
# KSDD2 and DAGM 2007: good / positive images with masks, in two splits
# ----------------------------------------------------------------------------------

def _write_binary_split(cat: Path, split: str, items: list[tuple[Path, Path | None]]) -> dict[str, int]:
    """Write (image, mask or None) pairs of one split: negatives to ``<split>/good``; positives (a non-empty mask)
    to ``test/defect`` + ``ground_truth/defect`` (test) or ``positives_train/`` (train)."""
    counts = {"good": 0, "defect": 0}
    for image, mask_file in items:
        mask = _read_mask(mask_file) if mask_file is not None else None
        if mask is None or not mask.any():
            _copy(image, cat / split / "good" / image.name)
            counts["good"] += 1
            continue
        base = cat if split == "test" else cat / "positives_train"
        folder = "test/defect" if split == "test" else "defect"
        _copy(image, base / folder / image.name)
        _write_mask(mask, base / "ground_truth" / "defect" / f"{image.stem}_mask.png")
        counts["defect"] += 1
    return counts


def _ksdd2_split(folder: Path) -> list[tuple[Path, Path | None]]:
    items = []
    for image in _images(folder):
        if image.stem.endswith("_GT"):
            continue
        mask = folder / f"{image.stem}_GT.png"
        if not mask.is_file():
            raise DatasetError(f"KSDD2 image {image} has no mask {mask}; every KSDD2 image has one (all zero for "
                               "a negative). Re-download the dataset.")
        items.append((image, mask))
    if not items:
        raise DatasetError(f"{folder} holds no KSDD2 images (<id>.png with <id>_GT.png); is this KSDD2?")
    return items


def convert_ksdd2(src: PathLike, dst: PathLike) -> Path:
    """KSDD2 (``train/``, ``test/`` with ``<id>.png`` and ``<id>_GT.png``) -> ``dst/ksdd2`` in the MVTec layout;
    training positives go to ``ksdd2/positives_train/``. Returns ``dst``."""
    base = _find(Path(src), lambda d: any((d / "train").glob("*_GT.png")) and (d / "test").is_dir(),
                 "KSDD2's train/ and test/ folders with *_GT.png masks")
    with atomic_folder(dst, CONVERTED_MARKER, _record("ksdd2", base)) as tmp:
        cat = tmp / "ksdd2"
        n = {s: _write_binary_split(cat, s, _ksdd2_split(base / s)) for s in ("train", "test")}
        _card(tmp, "KolektorSDD2 (KSDD2)", [
            "Source: Bozic, Tabernik, Skocaj, \"Mixed supervision for surface-defect detection: from weakly to fully",
            "supervised learning\", Computers in Industry 2021; https://www.vicos.si/resources/kolektorsdd2/",
            "Licence: CC BY-NC-SA 4.0 (non-commercial).", "",
            "One category, `ksdd2`. Images differ slightly in size: load with `image_size=`.",
            f"- train/good: {n['train']['good']} negatives",
            f"- positives_train/: {n['train']['defect']} training positives with masks "
            "(kept out of train/, which holds good images only)",
            f"- test/good: {n['test']['good']}, test/defect: {n['test']['defect']} with ground_truth/defect masks",
        ])
    return Path(dst)


def _dagm_labels(split: Path) -> list[tuple[Path, Path | None]]:
    """(image, label file or None) of one DAGM split, from ``Label/Labels.txt`` (id, defective 0/1, image, 0,
    label file); without it, from the ``Label/<id>_label.PNG`` files present."""
    label_dir = next((d for d in (split / "Label", split / "label") if d.is_dir()), split / "Label")
    index = label_dir / "Labels.txt"
    items = []
    if index.is_file():
        for line in index.read_text(errors="replace").splitlines():
            f = line.split()
            if len(f) < 3 or f[1] not in ("0", "1"):
                continue  # the header line
            image = _inside(split, f[2], str(index))
            if f[1] == "1" and (len(f) < 5 or f[4] == "0"):
                raise DatasetError(f"{index}: {f[2]} is marked defective but no label file is listed; "
                                   "re-download the class.")
            label = _inside(label_dir, f[4], str(index)) if f[1] == "1" else None
            if not image.is_file() or (label is not None and not label.is_file()):
                raise DatasetError(f"{index} lists {f[2]}{' / ' + f[4] if label else ''}, which is missing; "
                                   "re-download the class.")
            items.append((image, label))
    else:
        for image in _images(split):
            label = next((p for p in _images(label_dir) if p.stem.lower() == f"{image.stem}_label".lower()), None)
            items.append((image, label))
    if not items:
        raise DatasetError(f"{split} holds no DAGM images; is this a DAGM 2007 class folder?")
    return items


def convert_dagm(src: PathLike, dst: PathLike) -> Path:
    """DAGM 2007 (``Class<k>/Train``, ``Class<k>/Test`` with ``Label/``) -> ``dst/class<k>`` in the MVTec layout;
    the labels are weak (ellipses around the defects), which the dataset card says. Returns ``dst``."""
    pattern = re.compile(r"class(\d+)", re.I)

    def classes(d: Path) -> list[Path]:
        return [c for c in d.iterdir() if c.is_dir() and pattern.fullmatch(c.name) and (c / "Train").is_dir()]

    base = _find(Path(src), lambda d: bool(classes(d)), "DAGM 2007 class folders (Class1/Train, Class1/Test)")
    rows = []
    with atomic_folder(dst, CONVERTED_MARKER, _record("dagm", base)) as tmp:
        for c in sorted(classes(base), key=lambda c: int(pattern.fullmatch(c.name).group(1))):
            name = c.name.lower()
            n = {s: _write_binary_split(tmp / name, s.lower(), _dagm_labels(c / s)) for s in ("Train", "Test")}
            rows.append(f"| {name} | {n['Train']['good']} | {n['Train']['defect']} | {n['Test']['good']} | "
                        f"{n['Test']['defect']} |")
        _card(tmp, "DAGM 2007", [
            "Source: Wieler, Hahn, \"Weakly Supervised Learning for Industrial Optical Inspection\", DAGM 2007;",
            "https://zenodo.org/records/12750201. Licence: CC BY 4.0 (see the record).", "",
            "**The labels are weak:** each defect is marked by a coarse ellipse around it, not a pixel-accurate",
            "outline, so pixel metrics (pixel AUROC, PRO) measured on these masks are approximate; image-level",
            "metrics are unaffected. Images are synthetic greyscale textures (loaded as three equal channels).", "",
            "| category | train/good | positives_train | test/good | test/defect |", "|---|---|---|---|---|", *rows,
        ])
    return Path(dst)


# ----------------------------------------------------------------------------------
# VisA and BTAD
# ----------------------------------------------------------------------------------

VISA_MULTI_INSTANCE = ("candle", "capsules", "macaroni1", "macaroni2")
"""VisA's objects with several instances per image (the authors' "multiple instances" group)."""


def convert_visa(src: PathLike, dst: PathLike) -> Path:
    """VisA (``split_csv/1cls.csv`` and ``<object>/Data/...``) -> ``dst/<object>`` in the MVTec layout (``good`` and
    ``bad``, masks binarised from VisA's instance labels). Returns ``dst``."""
    base = _find(Path(src), lambda d: (d / "split_csv" / "1cls.csv").is_file(), "VisA's split_csv/1cls.csv")
    index = base / "split_csv" / "1cls.csv"
    counts: dict[str, dict[str, int]] = {}
    with atomic_folder(dst, CONVERTED_MARKER, _record("visa", base)) as tmp, open(index, newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                obj, split, label, image_rel, mask_rel = (row[k].strip() for k in
                                                          ("object", "split", "label", "image", "mask"))
            except (KeyError, AttributeError) as e:
                raise DatasetError(f"{index} line {i}: expected the columns object, split, label, image, mask; "
                                   "re-download VisA.") from e
            if split not in ("train", "test") or label not in ("normal", "anomaly") or not obj.isidentifier():
                raise DatasetError(f"{index} line {i}: object={obj!r} split={split!r} label={label!r} is not a "
                                   "VisA row (split train/test, label normal/anomaly); re-download VisA.")
            if split == "train" and label == "anomaly":
                raise DatasetError(f"{index} line {i}: an anomalous training image ({image_rel}); the 1cls split "
                                   "trains on normal images only. Use split_csv/1cls.csv from the archive.")
            image = _inside(base, image_rel, f"{index} line {i}")
            if not image.is_file():
                raise DatasetError(f"{index} line {i} lists {image}, which is missing; re-download VisA.")
            kind = "good" if label == "normal" else "bad"
            _copy(image, tmp / obj / split / kind / image.name)
            if kind == "bad":
                mask = _inside(base, mask_rel, f"{index} line {i}") if mask_rel else None
                if mask is None or not mask.is_file():
                    raise DatasetError(f"{index} line {i}: anomalous image {image} has no mask file "
                                       f"({mask_rel or 'none listed'}); re-download VisA.")
                _write_mask(_read_mask(mask), tmp / obj / "ground_truth" / "bad" / f"{image.stem}_mask.png")
            c = counts.setdefault(obj, {"train": 0, "test/good": 0, "test/bad": 0})
            c["train" if split == "train" else f"test/{kind}"] += 1
        if not counts:
            raise DatasetError(f"{index} lists no images; re-download VisA.")
        _card(tmp, "VisA", [
            "Source: Zou et al., \"SPot-the-Difference Self-Supervised Pre-training for Anomaly Detection and",
            "Segmentation\", ECCV 2022; https://github.com/amazon-science/spot-diff. Split: split_csv/1cls.csv.",
            "Licence: CC BY 4.0 per the authors' README (anomalib's docs say CC BY-NC-SA 4.0: check before "
            "commercial use).", "",
            f"Multi-instance categories (several objects per image): {', '.join(VISA_MULTI_INSTANCE)}; the masks",
            "mark every anomalous instance. Images are large and may differ in size within a category:",
            "load with `image_size=`.", "",
            "| category | train/good | test/good | test/bad |", "|---|---|---|---|",
            *(f"| {o} | {c['train']} | {c['test/good']} | {c['test/bad']} |" for o, c in sorted(counts.items())),
        ])
    return Path(dst)


def convert_btad(src: PathLike, dst: PathLike) -> Path:
    """BTAD (``<nn>/train/ok``, ``test/ok``, ``test/ko``, ``ground_truth/ko/<id>.png``) -> ``dst/<nn>`` in the
    MVTec layout (``ok`` -> ``good``; masks renamed ``<id>_mask.png`` and binarised). Returns ``dst``."""
    def cats(d: Path) -> list[Path]:
        return sorted(c for c in d.iterdir() if c.is_dir() and (c / "train" / "ok").is_dir())

    base = _find(Path(src), lambda d: bool(cats(d)), "BTAD's categories (01/train/ok/)")
    with atomic_folder(dst, CONVERTED_MARKER, _record("btad", base)) as tmp:
        for c in cats(base):
            for split in ("train", "test"):
                for sub in sorted(p for p in (c / split).iterdir() if p.is_dir()):
                    kind = "good" if sub.name == "ok" else sub.name
                    for image in _images(sub):
                        _copy(image, tmp / c.name / split / kind / image.name)
                        if kind == "good":
                            continue
                        found = [p for p in _images(c / "ground_truth" / sub.name) if p.stem == image.stem]
                        if split == "train" or not found:
                            raise DatasetError(f"BTAD image {image} is anomalous but has no mask "
                                               f"{c / 'ground_truth' / sub.name / (image.stem + '.png')}"
                                               f"{' (or is in train/)' if split == 'train' else ''}; "
                                               "re-download BTAD.")
                        _write_mask(_read_mask(found[0]), tmp / c.name / "ground_truth" / kind /
                                    f"{image.stem}_mask.png")
        _card(tmp, "BTAD (beanTech Anomaly Detection)", [
            "Source: Mishra et al., \"VT-ADL: A Vision Transformer Network for Image Anomaly Detection and",
            "Localization\", ISIE 2021; http://avires.dimi.uniud.it/papers/btad/btad.zip. Licence: CC BY-SA 4.0.", "",
            "Renamed only: ok -> good, ground_truth/ko/<id>.png -> ground_truth/ko/<id>_mask.png (binarised).",
            f"Categories: {', '.join(c.name for c in cats(base))}.",
        ])
    return Path(dst)


def _source_sha256(folder: Path) -> str | None:
    """The sha256 of the archive ``folder`` was extracted from (the nearest ``.extracted.json`` in it or above it),
    or None for a folder the kit did not extract."""
    for p in (folder, *folder.resolve().parents):
        found = read_marker(p, MARKER)
        if found:
            return found.get("sha256")
    return None


def _record(layout: str, base: Path) -> dict:
    return {"converter": layout, "version": CONVERTER_VERSION, "source": str(base),
            "source_sha256": _source_sha256(base)}


def _validate_only(src: PathLike, dst: PathLike | None = None) -> Path:
    """MVTec AD and MPDD: already in the layout; check it and return the folder that holds the categories."""
    root = find_layout_root(src)
    check_layout(root)
    return root


CONVERTERS: dict[str, Callable[..., Path]] = {
    "mvtec": _validate_only, "ksdd2": convert_ksdd2, "visa": convert_visa, "dagm": convert_dagm,
    "btad": convert_btad,
}
"""Layout name -> converter ``(src, dst) -> MVTec-layout folder``; ``mvtec`` validates and writes nothing."""


def convert_dataset(layout: str, src: PathLike, dst: PathLike) -> Path:
    """Convert the extracted dataset ``src`` of the given ``layout`` (a key of ``CONVERTERS``) into ``dst`` once
    (skipped when ``dst`` holds a finished conversion of the same source, extracted from the same archive),
    validate the result with ``check_layout`` and return the MVTec-layout folder."""
    if layout not in CONVERTERS:
        raise ValueError(f"layout={layout!r} is not one of {sorted(CONVERTERS)}")
    if layout == "mvtec":
        return _validate_only(src)
    done = read_marker(dst, CONVERTED_MARKER)
    if not (done and done.get("converter") == layout and done.get("version") == CONVERTER_VERSION
            and Path(done.get("source", "")).resolve().is_relative_to(Path(src).resolve())
            and done.get("source_sha256") == _source_sha256(Path(src))):   # another archive extracted since
        CONVERTERS[layout](src, dst)
    check_layout(dst)
    return Path(dst)
