"""Detection labels of defect images: boxes from pixel masks and back, YOLO txt and COCO json.

A box is ``(x0, y0, x1, y1)`` in pixels, half-open (the pixels ``x0 <= x < x1``, ``y0 <= y < y1``), with a
class index into a list of class names. Conversions (each the inverse of the other on boxes that do not
overlap):

- mask ↔ boxes: :func:`mask_to_boxes` (one box per 8-connected component) / :func:`boxes_to_mask`;
- YOLO ↔ boxes: one ``<class> <cx> <cy> <w> <h>`` line per box, coordinates normalised by the image's
  width and height (ultralytics' txt format): :func:`to_yolo` / :func:`from_yolo`;
- COCO ↔ boxes: ``images`` / ``annotations`` (``bbox = [x, y, w, h]`` in pixels, ``category_id`` from 1) /
  ``categories``: :func:`to_coco` / :func:`from_coco` (the format pycocotools evaluates).

Files are written atomically (a temporary sibling, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["Box", "mask_to_boxes", "boxes_to_mask", "check_box", "to_yolo", "from_yolo", "to_coco", "from_coco",
           "write_text_atomic", "LabelError"]


class LabelError(ValueError):
    """A label file or a box is malformed; the message names the file or the parameter and the fix."""


@dataclass(frozen=True)
class Box:
    """One labelled box: class index ``cls`` and pixel corners ``x0 <= x < x1``, ``y0 <= y < y1``."""

    cls: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def xyxy(self) -> list[float]:
        """``[x0, y0, x1, y1]`` as floats (torchvision's detection format)."""
        return [float(self.x0), float(self.y0), float(self.x1), float(self.y1)]


def check_box(name: str, box: Box, shape: tuple[int, int]) -> Box:
    """``box`` if it is non-empty and inside an image of ``shape`` (H, W); else ``LabelError`` naming ``name``."""
    h, w = shape
    if box.width <= 0 or box.height <= 0:
        raise LabelError(f"{name} = {box} has size {box.width}×{box.height}; a box needs a width and a height "
                         "of at least one pixel")
    if box.x0 < 0 or box.y0 < 0 or box.x1 > w or box.y1 > h:
        raise LabelError(f"{name} = {box} is not inside the {w}×{h} (W×H) image; keep 0 <= x0 < x1 <= {w} and "
                         f"0 <= y0 < y1 <= {h}")
    return box


def mask_to_boxes(mask: np.ndarray, cls: int = 0) -> list[Box]:
    """One box per 8-connected component of a bool H×W ``mask`` (its tight bounding box), in raster order."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise LabelError(f"mask must be H×W, got shape {mask.shape}")
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return [Box(cls, sl[1].start, sl[0].start, sl[1].stop, sl[0].stop) for sl in ndimage.find_objects(labels)
            if sl is not None]


def boxes_to_mask(boxes: Iterable[Box], shape: tuple[int, int]) -> np.ndarray:
    """A bool H×W mask that is True inside every box."""
    mask = np.zeros(shape, bool)
    for i, b in enumerate(boxes):
        check_box(f"boxes[{i}]", b, shape)
        mask[b.y0:b.y1, b.x0:b.x1] = True
    return mask


def to_yolo(boxes: Iterable[Box], shape: tuple[int, int]) -> str:
    """The YOLO txt of ``boxes`` in an image of ``shape`` (H, W): ``<cls> <cx> <cy> <w> <h>`` per line, normalised."""
    h, w = shape
    lines = []
    for i, b in enumerate(boxes):
        check_box(f"boxes[{i}]", b, shape)
        lines.append(f"{b.cls} {(b.x0 + b.x1) / 2 / w:.6f} {(b.y0 + b.y1) / 2 / h:.6f} {b.width / w:.6f} "
                     f"{b.height / h:.6f}")
    return "".join(line + "\n" for line in lines)


def from_yolo(text: str, shape: tuple[int, int], where: str = "YOLO text") -> list[Box]:
    """Boxes from a YOLO txt (see :func:`to_yolo`), rounded to whole pixels; ``where`` names the file in errors."""
    h, w = shape
    boxes = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            cls, cx, cy, bw, bh = int(parts[0]), *map(float, parts[1:])
            if len(parts) != 5:
                raise ValueError
        except (ValueError, IndexError):
            raise LabelError(f"{where}, line {n}: {line!r} is not '<class> <cx> <cy> <w> <h>' (YOLO format)") from None
        x0, x1 = round((cx - bw / 2) * w), round((cx + bw / 2) * w)
        y0, y1 = round((cy - bh / 2) * h), round((cy + bh / 2) * h)
        boxes.append(check_box(f"{where}, line {n}", Box(cls, x0, y0, x1, y1), shape))
    return boxes


def to_coco(images: Sequence[tuple[str, tuple[int, int], Sequence[Box]]], classes: Sequence[str]) -> dict:
    """A COCO detection dict from ``(file_name, (H, W), boxes)`` per image and the class names (ids from 1)."""
    out = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    for image_id, (file_name, shape, boxes) in enumerate(images, 1):
        out["images"].append({"id": image_id, "file_name": str(file_name), "height": int(shape[0]),
                              "width": int(shape[1])})
        for b in boxes:
            check_box(f"{file_name}: box", b, shape)
            if not 0 <= b.cls < len(classes):
                raise LabelError(f"{file_name}: class index {b.cls} is not in 0..{len(classes) - 1} ({list(classes)})")
            out["annotations"].append({"id": len(out["annotations"]) + 1, "image_id": image_id,
                                       "category_id": b.cls + 1, "bbox": [b.x0, b.y0, b.width, b.height],
                                       "area": b.width * b.height, "iscrowd": 0})
    return out


def from_coco(coco: dict, where: str = "COCO json") -> dict[str, list[Box]]:
    """``{file_name: boxes}`` from a COCO detection dict (see :func:`to_coco`)."""
    try:
        shapes = {im["id"]: (im["file_name"], (im["height"], im["width"])) for im in coco["images"]}
        out: dict[str, list[Box]] = {name: [] for name, _ in shapes.values()}
        for a in coco["annotations"]:
            name, shape = shapes[a["image_id"]]
            x, y, bw, bh = (round(v) for v in a["bbox"])
            out[name].append(check_box(f"{where}, annotation {a['id']}",
                                       Box(int(a["category_id"]) - 1, x, y, x + bw, y + bh), shape))
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, LabelError):
            raise
        raise LabelError(f"{where} is not a COCO detection dict ({type(e).__name__}: {e}); it needs images "
                         "(id, file_name, height, width) and annotations (id, image_id, category_id, bbox)") from None
    return out


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and ``os.replace`` (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    """:func:`write_text_atomic` of ``json.dumps(obj, indent=1)``."""
    return write_text_atomic(path, json.dumps(obj, indent=1) + "\n")


__all__ += ["write_json_atomic"]
