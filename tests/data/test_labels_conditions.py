"""Detection labels (YOLO ↔ COCO ↔ mask) and Algorithm 1's condition-map steps on crafted images (seed 000 §3.4)."""

import numpy as np
import pytest

from lib.data import conditions as C
from lib.data.labels import (Box, LabelError, boxes_to_mask, from_coco, from_yolo, mask_to_boxes, to_coco, to_yolo)


def test_labels_round_trip_mask_yolo_coco():
    shape = (48, 64)
    boxes = [Box(0, 3, 4, 13, 20), Box(2, 30, 0, 64, 9), Box(1, 40, 30, 41, 31)]
    mask = boxes_to_mask(boxes, shape)
    back = mask_to_boxes(mask)
    assert {(b.x0, b.y0, b.x1, b.y1) for b in back} == {(b.x0, b.y0, b.x1, b.y1) for b in boxes}
    assert from_yolo(to_yolo(boxes, shape), shape) == boxes
    coco = to_coco([("a.png", shape, boxes), ("b.png", shape, [])], ["w", "b", "p"])
    assert from_coco(coco) == {"a.png": boxes, "b.png": []}
    assert np.array_equal(boxes_to_mask(from_coco(coco)["a.png"], shape), mask)
    assert [a["category_id"] for a in coco["annotations"]] == [1, 3, 2]


def test_label_errors_name_the_problem():
    with pytest.raises(LabelError, match="not inside"):
        to_yolo([Box(0, 60, 0, 70, 5)], (48, 64))
    with pytest.raises(LabelError, match="size 0"):
        boxes_to_mask([Box(0, 5, 5, 5, 9)], (48, 64))
    with pytest.raises(LabelError, match="labels.txt, line 2"):
        from_yolo("0 0.5 0.5 0.1 0.1\n0 0.5 zero\n", (48, 64), where="labels.txt")
    with pytest.raises(LabelError, match="class index 3"):
        to_coco([("a.png", (8, 8), [Box(3, 0, 0, 2, 2)])], ["a", "b"])
    with pytest.raises(LabelError, match="not a COCO"):
        from_coco({"images": []})


def test_context_map_is_algorithm_1_line_6():
    grey = np.full((10, 10), 0.4, np.float32)
    fmsk = np.zeros((10, 10), bool)
    fmsk[1:4, 1:4] = True
    bmsk = np.zeros((10, 10), bool)
    bmsk[6:9, 6:9] = True
    cond = C.context_map(grey, fmsk, bmsk)
    assert (cond[fmsk] == 1).all() and (cond[bmsk] == 0).all()
    assert np.allclose(cond[~(fmsk | bmsk)], 0.4)


def test_region_features_find_the_square_edges_and_bright_positions():
    r = np.full((24, 24), 0.5, np.float32)
    r[8:16, 8:16] = 0.56                      # a faint bright square: 15 grey levels
    f = C.region_features(r, canny_sigma=1.0, threshold=0.75)
    assert f[8:16, 8:16].mean() > 0.9         # thresholded normalised intensity: the square
    assert not f[:4].any() and not f[:, :4].any()   # flat background: no edges, below τ
    edges_only = C.region_features(r, canny_sigma=1.0, threshold=1.0)
    ring = np.zeros_like(edges_only)
    ring[6:18, 6:18] = True
    ring[10:14, 10:14] = False
    assert edges_only.any() and (edges_only <= ring).all()   # Canny marks the border of the square only
    with pytest.raises(ValueError, match="threshold"):
        C.region_features(r, threshold=1.5)


def test_gaussian_blur3_is_a_normalised_3x3_kernel():
    x = np.zeros((9, 9), np.float32)
    x[4, 4] = 1
    y = C.gaussian_blur3(x)
    assert np.isclose(y.sum(), 1, atol=1e-6) and (y[3:6, 3:6] > 0).all()
    assert y[:3].sum() == 0 and y[:, 6:].sum() == 0


def test_dropout_rate_and_paste():
    rng = np.random.default_rng(0)
    f = np.ones((100, 100), np.float32)
    assert C.dropout(f, 0.0, rng).sum() == f.sum() and C.dropout(f, 1.0, rng).sum() == 0
    assert abs(C.dropout(f, 0.6, rng).mean() - 0.4) < 0.03
    feat = np.zeros((4, 4), bool)
    feat[0, 0] = feat[3, 3] = True
    pasted = C.paste_features((20, 20), [Box(0, 2, 2, 10, 10)], [feat])
    assert pasted[2:4, 2:4].all() and pasted[8:10, 8:10].all() and pasted.sum() == 8
    boxes = C.background_boxes(rng, (32, 32), avoid=np.pad(np.ones((8, 8), bool), ((0, 24), (0, 24))), n=3)
    m = boxes_to_mask([Box(0, b.x0, b.y0, b.x1, b.y1) for b in boxes], (32, 32))
    assert not m[:9, :9].any()
