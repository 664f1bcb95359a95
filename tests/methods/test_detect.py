"""The Table 1 detector (torchvision FCOS) and its evaluation (recall / precision at IoU 0.5, COCO mAP@0.5)."""

import numpy as np
import pytest

from lib.core.bootstrap import UNRESOLVED, compare_over_seeds
from lib.data.labels import Box
from lib.methods import detect as D

CLASSES = ("a", "b")


def _det(*per_image):
    return D.Detections([np.array([d[0] for d in im], np.float32).reshape(-1, 4) for im in per_image],
                        [np.array([d[1] for d in im], np.float32) for im in per_image],
                        [np.array([d[2] for d in im], np.int64) for im in per_image])


def test_perfect_detections_score_one():
    truth = [[Box(0, 2, 2, 10, 10)], [Box(1, 20, 20, 30, 28)]]
    det = _det([([2, 2, 10, 10], 0.9, 0)], [([20, 20, 30, 28], 0.8, 1)])
    r = D.evaluate_detections(det, truth, CLASSES)
    assert r["recall"] == r["precision"] == 1 and np.isclose(r["mAP50"], 1)


def test_iou_class_and_score_rules():
    truth = [[Box(0, 0, 0, 10, 10)], [Box(1, 0, 0, 10, 10)], [Box(0, 0, 0, 10, 10)]]
    det = _det([([0, 0, 10, 4], 0.9, 0)],                 # IoU 0.4: a miss and a false positive
               [([0, 0, 10, 10], 0.9, 0)],                # right place, wrong class
               [([0, 0, 10, 10], 0.1, 0), ([1, 1, 10, 10], 0.9, 0)])   # one above the score threshold
    r = D.evaluate_detections(det, truth, CLASSES, score_thresh=0.25)
    assert r["hits"].tolist() == [False, False, True]
    assert r["detections"] == 3 and np.isclose(r["recall"], 1 / 3) and np.isclose(r["precision"], 1 / 3)
    none = D.evaluate_detections(_det([], [], []), truth, CLASSES)
    assert none["recall"] == 0 and np.isnan(none["precision"]) and none["mAP50"] == 0
    with pytest.raises(ValueError, match="2 detection lists for 3 images"):
        D.evaluate_detections(_det([], []), truth, CLASSES)


def test_fcos_trains_and_detects():
    rng = np.random.default_rng(0)
    images = np.full((6, 32, 32, 3), 120, np.uint8)
    boxes = []
    for i in range(6):
        x, y = rng.integers(2, 18, 2)
        images[i, y:y + 10, x:x + 10] = 220
        boxes.append([Box(0, int(x), int(y), int(x) + 10, int(y) + 10)])
    cfg = D.DetectorConfig(image_size=32, steps=3, batch_size=2)
    model = D.train_detector(images, boxes, 1, cfg, progress=False)
    det = D.detect(model, images)
    assert len(det.boxes) == 6 and all(b.shape[1] == 4 for b in det.boxes)
    again = D.detect(D.train_detector(images, boxes, 1, cfg, progress=False), images)
    assert all(np.allclose(a, b) for a, b in zip(det.scores, again.scores))     # seeded
    with pytest.raises(ValueError, match="uint8"):
        D.train_detector(images.astype(float), boxes, 1, cfg)


def test_seed_comparison_needs_every_seed():
    a = np.array([[1, 1, 1, 0, 1, 1, 1, 1], [1, 1, 0, 1, 1, 1, 1, 1]])
    b = np.array([[0, 0, 1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0, 1]])
    assert compare_over_seeds(a, b, names=("c", "a")).verdict == "c > a"
    mixed = np.array([[0, 0, 1, 0, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    assert compare_over_seeds(mixed, b).verdict == UNRESOLVED     # one seed does not agree
