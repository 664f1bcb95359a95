"""Assigned MURA generation (seed 000 §3.4, §4): a defect of a chosen class at a chosen position and size, painted
by the masked DDPM into a defect-free image, with its labels (a YOLO txt, a COCO json and the pixel mask).

The class is carried by the condition map: a stored feature image of that class is picked from the model's
feature bank at random, resized to the requested box and pasted there (Algorithm 1 at generation). Outside the
box the output is the input image, byte for byte. The "pixel mask" of a generated defect is its box — the pixels
the generator was allowed to change; the kit does not pretend to know a finer outline.

    gen = generate(model, canvases, "white_spot", position=(32, 20), size=16, n=4, seed=0)
    gen.write("build/generated/white")            # images/, labels/ (YOLO), masks/, annotations.json (COCO)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..core.checks import check_int
from ..data.labels import Box, LabelError, boxes_to_mask, to_coco, to_yolo, write_json_atomic
from .masked_ddpm import MaskedDDPM, generate_in_boxes

__all__ = ["Assigned", "assigned_box", "generate", "sample_layout", "generate_layout"]


@dataclass
class Assigned:
    """Generated defect images and their labels: ``images`` uint8 N×H×W×3, ``canvases`` (the inputs), ``masks``
    bool N×H×W (the generated boxes), ``boxes`` (one list per image), ``classes`` (the class names the box indices
    point into) and the ``conditions`` the network saw (N×2×H×W in [0, 1])."""

    images: np.ndarray
    canvases: np.ndarray
    masks: np.ndarray
    boxes: list[list[Box]]
    classes: tuple[str, ...]
    conditions: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def yolo(self, i: int) -> str:
        """Image ``i``'s YOLO txt (``<class> <cx> <cy> <w> <h>``, normalised)."""
        return to_yolo(self.boxes[i], self.images.shape[1:3])

    def coco(self, names: Sequence[str] | None = None) -> dict:
        """The COCO detection dict of all images (file names ``images/<i>.png`` unless ``names``)."""
        names = names or [f"images/{i:04d}.png" for i in range(len(self))]
        return to_coco([(n, self.images.shape[1:3], b) for n, b in zip(names, self.boxes)], self.classes)

    def write(self, folder: str | os.PathLike) -> Path:
        """Write ``images/``, ``labels/`` (YOLO), ``masks/`` and ``annotations.json`` (COCO) into a new ``folder``,
        built in a temporary sibling and moved into place; an existing non-empty folder is refused."""
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()):
            raise FileExistsError(f"{folder} exists and is not empty; pass a new folder (generation never "
                                  "overwrites files)")
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for sub in ("images", "labels", "masks"):
            (tmp / sub).mkdir(parents=True)
        for i, (im, m) in enumerate(zip(self.images, self.masks)):
            Image.fromarray(im).save(tmp / "images" / f"{i:04d}.png")
            Image.fromarray(m.astype(np.uint8) * 255).save(tmp / "masks" / f"{i:04d}.png")
            (tmp / "labels" / f"{i:04d}.txt").write_text(self.yolo(i))
        write_json_atomic(tmp / "annotations.json", self.coco())
        (tmp / "classes.txt").write_text("".join(c + "\n" for c in self.classes))
        if folder.exists():
            folder.rmdir()
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, folder)
        return folder


def assigned_box(position: tuple[int, int], size: int | tuple[int, int], shape: tuple[int, int], cls: int = 0) -> Box:
    """The box of a request: centre ``position`` = (x, y) and ``size`` = w or (w, h) in pixels, inside ``shape``
    (H, W); a box outside the image or a size of zero raises ``ValueError`` naming the parameter."""
    w, h = (size, size) if np.ndim(size) == 0 else tuple(size)
    w, h = check_int("size (width)", w, 1), check_int("size (height)", h, 1)
    try:
        x, y = position
    except (TypeError, ValueError):
        raise ValueError(f"position must be (x, y), the box centre in pixels; got {position!r}") from None
    x, y = check_int("position x", x), check_int("position y", y)
    box = Box(cls, x - w // 2, y - h // 2, x - w // 2 + w, y - h // 2 + h)
    H, W = shape
    if box.x0 < 0 or box.y0 < 0 or box.x1 > W or box.y1 > H:
        raise ValueError(f"position={position}, size={size} asks for the box x {box.x0}..{box.x1}, y {box.y0}..{box.y1}, "
                         f"which is not inside the {W}×{H} image; move the centre or shrink the size so that "
                         f"w/2 <= x <= {W} - w/2 and h/2 <= y <= {H} - h/2")
    return box


def _class_index(model: MaskedDDPM, defect_class: str) -> int:
    if defect_class not in model.classes:
        raise ValueError(f"defect class {defect_class!r} is unknown to {model.path.name}; choose one of "
                         f"{list(model.classes)}")
    return model.classes.index(defect_class)


def _canvases(canvases: np.ndarray) -> np.ndarray:
    canvases = np.asarray(canvases)
    if canvases.dtype != np.uint8 or canvases.ndim != 4 or canvases.shape[-1] != 3 or not len(canvases):
        raise ValueError(f"canvases must be defect-free uint8 images N×H×W×3 (N >= 1), got {canvases.dtype} "
                         f"{canvases.shape}")
    return canvases


def generate_layout(model: MaskedDDPM, canvases: np.ndarray, layout: Sequence[tuple[int, Box]], *, seed: int = 0,
                    num_steps: int = 20, switch_t: int = 20, progress: bool = False, batch_size: int = 32,
                    device=None) -> Assigned:
    """One generated image per ``(canvas index, box)`` of ``layout`` (``box.cls`` indexes ``model.classes``); the
    feature image of the box's class is picked from the bank with ``seed + i``."""
    canvases = _canvases(canvases)
    shape = canvases.shape[1:3]
    images, boxes, feats = [], [], []
    for i, (k, b) in enumerate(layout):
        k = check_int(f"layout[{i}] canvas", k, 0, len(canvases) - 1)
        if not 0 <= b.cls < len(model.classes):
            raise ValueError(f"layout[{i}]: class index {b.cls} is not in 0..{len(model.classes) - 1}")
        try:
            boxes_to_mask([b], shape)
        except LabelError as e:
            raise ValueError(f"layout[{i}]: {e}") from None
        images.append(canvases[k])
        boxes.append([b])
        rng = np.random.default_rng(seed + i)
        feats.append([model.bank.pick(model.classes[b.cls], rng)] if model.bank is not None else [np.zeros((1, 1))])
    out = generate_in_boxes(model, np.stack(images), boxes, feats, seed=seed, num_steps=num_steps, switch_t=switch_t,
                            progress=progress, batch_size=batch_size, device=device)
    return Assigned(out.images, np.stack(images), out.masks, boxes, model.classes, out.conditions)


def generate(model: MaskedDDPM, canvases: np.ndarray, defect_class: str, position: tuple[int, int],
             size: int | tuple[int, int], n: int = 1, seed: int = 0, **kw) -> Assigned:
    """``n`` images with a ``defect_class`` defect in the box of centre ``position`` = (x, y) and ``size`` (w or
    (w, h)) pixels, painted into canvases picked at random (``seed``) from ``canvases`` (defect-free uint8
    N×H×W×3). Keyword arguments go to :func:`generate_layout` (sampler steps, progress)."""
    canvases = _canvases(canvases)
    n = check_int("n", n, 1)
    box = assigned_box(position, size, canvases.shape[1:3], _class_index(model, defect_class))
    picks = np.random.default_rng(seed).integers(0, len(canvases), n)
    return generate_layout(model, canvases, [(int(k), box) for k in picks], seed=seed, **kw)


def sample_layout(boxes: Sequence[Box], n: int, n_canvases: int, seed: int = 0) -> list[tuple[int, Box]]:
    """``n`` (canvas, box) requests for a generated training set: classes in turn (balanced), each box drawn from
    the real training boxes of its class (so positions and sizes follow the real ones: seal gaps stay on the
    border), canvases at random."""
    n, n_canvases = check_int("n", n, 1), check_int("n_canvases", n_canvases, 1)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Box]] = {}
    for b in boxes:
        by_class.setdefault(b.cls, []).append(b)
    classes = sorted(by_class)
    if not classes:
        raise ValueError("boxes is empty: sample_layout needs the real training boxes")
    out = []
    for i in range(n):
        pool = by_class[classes[i % len(classes)]]
        out.append((int(rng.integers(n_canvases)), pool[int(rng.integers(len(pool)))]))
    return out
