"""A supervised defect detector for seed 000's Table 1: torchvision's FCOS (Tian et al., ICCV 2019) on a small
ResNet-18 trunk with an FPN, trained from scratch (no weights can be downloaded here), and its evaluation: recall
and precision at IoU 0.5 and mAP@0.5 (pycocotools' COCOeval with the IoU threshold set to 0.5).

Seed 000 trains YOLOv5 (ultralytics). The kit does not: YOLOv5 is AGPL-3.0 licensed, its training script
downloads pretrained weights and fonts at start, and it is a framework rather than a library call. FCOS is
anchor-free and one-stage like YOLOv5 and ships with torchvision. The paper does not say whether its YOLOv5
started from COCO-pretrained weights; with them every case would probably score higher (not measured here).

The detector is trained by the kit's one loop (:class:`lib.io.training.Trainer`, no state file: it trains in the
notebook); FCOS returns its three losses (classification, box regression, centre-ness) in training mode, and
the loop sums them. Random horizontal and vertical flips augment every batch.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torchvision
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import box_iou
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ..core.checks import check_float, check_int
from ..data.labels import Box, to_coco
from ..io.training import Trainer

__all__ = ["DetectorConfig", "build_detector", "train_detector", "Detections", "detect", "evaluate_detections"]


@dataclass
class DetectorConfig:
    """FCOS on a ResNet-18 trunk (layers 1-2) + FPN, trained from scratch with Adam."""

    image_size: int = 64
    fpn_channels: int = 64
    head_convs: int = 2
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    score_thresh: float = 0.25     # recall / precision count detections scoring at least this (YOLOv5's default conf)

    def __post_init__(self) -> None:
        for name in ("image_size", "fpn_channels", "head_convs", "steps", "batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("score_thresh", self.score_thresh, 0.0, 1.0)


def build_detector(num_classes: int, cfg: DetectorConfig) -> FCOS:
    """torchvision FCOS with ``num_classes`` defect classes (+ background), sized for ``cfg.image_size`` images:
    features at strides 4 and 8 (ResNet-18 layers 1-2) and two extra levels (P6, P7)."""
    trunk = torchvision.models.resnet18(weights=None)
    backbone = BackboneWithFPN(trunk, {"layer1": "0", "layer2": "1"}, [64, 128], cfg.fpn_channels,
                               extra_blocks=LastLevelP6P7(cfg.fpn_channels, cfg.fpn_channels))
    anchors = AnchorGenerator(sizes=((8,), (16,), (32,), (64,)), aspect_ratios=((1.0,),) * 4)
    head = FCOSHead(cfg.fpn_channels, 1, num_classes + 1, num_convs=cfg.head_convs)
    return FCOS(backbone, num_classes + 1, min_size=cfg.image_size, max_size=cfg.image_size,
                image_mean=[0.5] * 3, image_std=[0.25] * 3, anchor_generator=anchors, head=head,
                score_thresh=0.05, detections_per_img=20)


def _targets(boxes: Sequence[Sequence[Box]]) -> list[dict]:
    return [{"boxes": torch.tensor([b.xyxy() for b in bx], dtype=torch.float32).reshape(-1, 4),
             "labels": torch.tensor([b.cls + 1 for b in bx], dtype=torch.int64)} for bx in boxes]


def _flip(x: torch.Tensor, t: dict, horizontal: bool, vertical: bool) -> tuple[torch.Tensor, dict]:
    h, w = x.shape[-2:]
    b = t["boxes"].clone()
    if horizontal:
        x, b[:, [0, 2]] = x.flip(-1), w - b[:, [2, 0]]
    if vertical:
        x, b[:, [1, 3]] = x.flip(-2), h - b[:, [3, 1]]
    return x, {"boxes": b, "labels": t["labels"]}


def train_detector(images: np.ndarray, boxes: Sequence[Sequence[Box]], num_classes: int, cfg: DetectorConfig, *,
                   progress: bool = True, device: str | torch.device | None = "cpu") -> FCOS:
    """Train :func:`build_detector` on uint8 N×H×W×3 ``images`` with their ``boxes`` (one list per image, ``cls``
    0..num_classes−1) for ``cfg.steps`` batches. Deterministic for a seed on one device."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(boxes) or not len(images):
        raise ValueError(f"images must be uint8 N×H×W×3 with one box list each; got {images.dtype} {images.shape} "
                         f"and {len(boxes)} box lists")
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    targets = _targets(boxes)
    trainer = Trainer(cfg, None, data=(x_all,), device=device, progress=progress, desc="train FCOS")
    model = build_detector(num_classes, cfg).to(trainer.device)
    gen, dev, B = trainer.generator, trainer.device, cfg.batch_size

    def loss(nets, shard):
        idx = torch.randint(0, len(x_all), (B,), generator=gen)
        flips = torch.randint(0, 2, (B, 2), generator=gen)
        xs, ts = [], []
        for i, (fh, fv) in zip(idx.tolist(), flips.tolist()):
            x, t = _flip(x_all[i], targets[i], bool(fh), bool(fv))
            xs.append(x.to(dev))
            ts.append({k: v.to(dev) for k, v in t.items()})
        rows = shard.rows(B)
        return nets["model"](xs[rows], ts[rows])

    trainer.fit(loss, {"model": model}, [{"params": model.parameters(), "lr": cfg.lr}], steps=cfg.steps)
    return model.eval()


class Detections(NamedTuple):
    """Per image: ``boxes`` (K×4 x0, y0, x1, y1), ``scores`` (K) and ``labels`` (K, class indices from 0)."""

    boxes: list[np.ndarray]
    scores: list[np.ndarray]
    labels: list[np.ndarray]


@torch.no_grad()
def detect(model: FCOS, images: np.ndarray, batch_size: int = 64) -> Detections:
    """Run the detector on uint8 N×H×W×3 ``images``."""
    model.eval()
    dev = next(model.parameters()).device
    x_all = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float().div(255)
    out = Detections([], [], [])
    for s in range(0, len(x_all), batch_size):
        for d in model([x.to(dev) for x in x_all[s:s + batch_size]]):
            out.boxes.append(d["boxes"].cpu().numpy())
            out.scores.append(d["scores"].cpu().numpy())
            out.labels.append(d["labels"].cpu().numpy() - 1)
    return out


def _match(det: Detections, truth: Sequence[Sequence[Box]], score_thresh: float, iou: float
           ) -> tuple[np.ndarray, int]:
    """Greedy matching by score, class-aware, at IoU >= ``iou``: a found/missed flag per ground-truth box (in image
    order) and the number of detections scoring >= ``score_thresh``."""
    hits: list[bool] = []
    n_det = 0
    for b, s, l, gt in zip(det.boxes, det.scores, det.labels, truth):
        keep = s >= score_thresh
        order = np.argsort(-s[keep], kind="stable")
        b, l = b[keep][order], l[keep][order]
        n_det += len(b)
        used = np.zeros(len(gt), bool)
        if len(b) and len(gt):
            ious = box_iou(torch.from_numpy(b).float(), torch.tensor([g.xyxy() for g in gt])).numpy()
            cls = np.array([g.cls for g in gt])
            for k in range(len(b)):
                ok = (ious[k] >= iou) & ~used & (cls == l[k])
                if ok.any():
                    used[int(np.argmax(np.where(ok, ious[k], -1)))] = True
        hits += used.tolist()
    return np.array(hits, bool), n_det


def evaluate_detections(det: Detections, truth: Sequence[Sequence[Box]], classes: Sequence[str], *,
                        score_thresh: float = 0.25, iou: float = 0.5) -> dict[str, float]:
    """Recall and precision at IoU >= ``iou`` for detections scoring >= ``score_thresh`` (class-aware, greedy by
    score), and mAP@``iou`` over all scores with pycocotools' COCOeval (``iouThrs = [iou]``, all areas, 100
    detections). Precision is NaN when nothing is detected; ``hits`` flags each ground-truth box found (for
    bootstrapping recall over images)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(det.boxes) != len(truth):
        raise ValueError(f"{len(det.boxes)} detection lists for {len(truth)} images")
    hits, n_det = _match(det, truth, check_float("score_thresh", score_thresh, 0.0, 1.0),
                         check_float("iou", iou, 0.0, 1.0, lo_open=True))
    tp, n_gt = int(hits.sum()), len(hits)
    big = (1 << 16, 1 << 16)   # COCO needs an image size; the boxes were checked against the images already
    gt = to_coco([(f"{i}", big, bx) for i, bx in enumerate(truth)], classes)
    dets = [{"image_id": i + 1, "category_id": int(l) + 1, "bbox": [float(x0), float(y0), float(x1 - x0),
                                                                     float(y1 - y0)], "score": float(s)}
            for i, (bb, ss, ll) in enumerate(zip(det.boxes, det.scores, det.labels))
            for (x0, y0, x1, y1), s, l in zip(bb, ss, ll)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        if dets:
            ev = COCOeval(coco, coco.loadRes(dets), "bbox")
            ev.params.iouThrs = np.array([iou])
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            m_ap = float(max(ev.stats[0], 0.0))
        else:
            m_ap = 0.0
    return {"recall": tp / n_gt if n_gt else float("nan"), "precision": tp / n_det if n_det else float("nan"),
            "mAP50": m_ap, "detections": n_det, "true_positives": tp, "objects": n_gt, "hits": hits}
