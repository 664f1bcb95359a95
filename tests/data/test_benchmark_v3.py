"""Benchmark version 3: harder categories, the object family (pose, foreground, structural defects), larger
test sets, and what the loader makes of them."""

import json

import numpy as np
import pytest
from PIL import Image

from lib import data
from lib.data import objects, panel

V3 = data.categories(3)
TYPES = data.defect_types(3)
PAIRS = [(c, d) for c in V3 for d in TYPES[c]]
SMALL = dict(size=32, n_train=3, n_test_good=2, n_test_defect=2, version=3)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return data.make_benchmark(tmp_path_factory.mktemp("v3") / "b", seed=0, **SMALL)


def test_registry_of_version_3():
    assert V3 == ("display_panel", "metal_strip", "brick", "grass", "gravel", "fabric", "screw", "pill", "cable")
    assert data.categories() == data.CATEGORIES == data.categories(data.DEFAULT_VERSION)
    assert [data.category_kind(c, 3) for c in V3] == ["texture"] * 6 + ["object"] * 3
    structural = {d for c in ("screw", "pill", "cable") for d, r in objects.CATEGORIES[c].defects.items()
                  if r.description.startswith("structural")}
    assert {"bent_tip", "thread_damage", "chip", "faulty_print", "swapped_cores", "missing_core"} <= structural
    with pytest.raises(ValueError, match=r"version=4: the benchmark has versions \(2, 3\)"):
        data.categories(4)
    with pytest.raises(ValueError, match="unknown category 'screw' in benchmark version 2"):
        data.render("screw", 0, version=2)


@pytest.mark.parametrize("category,defect", PAIRS)
def test_masks_are_pixel_exact(category, defect):
    structural = defect in objects.CATEGORIES.get(category, data.draw.CategorySpec(None, {})).defects and \
        objects.CATEGORIES[category].defects[defect].description.startswith("structural")
    floor = (objects.STRUCTURAL_MIN_DELTA if structural
             else panel.MIN_DELTA_MURA if category == "display_panel" else 6)
    for index in range(3):
        d = data.draw_image(category, index, defect, seed=5, size=48, version=3)
        assert d.mask.any() and d.mask.shape == d.defective.shape[:2]
        assert np.array_equal(d.defective[~d.mask], d.clean[~d.mask]), "a pixel outside the mask changed"
        delta = np.abs(d.defective.astype(int) - d.clean.astype(int)).max(axis=-1)
        assert delta[d.mask].min() >= floor
        if d.foreground is not None and not structural:
            assert not (d.mask & ~d.foreground).any(), "a surface defect left the object"


def test_objects_have_a_pose_and_a_foreground():
    for c in ("screw", "pill", "cable"):
        fgs = [data.draw_image(c, i, "good", seed=0, size=64, split="train", version=3).foreground for i in range(6)]
        areas = [f.mean() for f in fgs]
        assert all(0.05 < a < 0.7 for a in areas), (c, areas)
        assert len({f.tobytes() for f in fgs}) == 6, "every training image has its own pose"
        centroids = np.array([np.argwhere(f).mean(0) for f in fgs])
        assert centroids.std(0).max() > 0.5, "objects do not move"


def test_harder_normal_variation():
    """Version 3's normal images vary more than version 2's (per-pixel spread over training images)."""
    for c in ("display_panel", "fabric", "metal_strip"):
        spread = {v: np.stack([data.render(c, i, "good", 0, 32, "train", version=v)[0].astype(float)
                               for i in range(12)]).std(0).mean() for v in (2, 3)}
        assert spread[3] > spread[2], (c, spread)


def test_version_3_counts_and_layout(bench):
    card = json.loads((bench / "benchmark.json").read_text())
    assert card["config"]["generator_version"] == "3" and list(card["categories"]) == list(V3)
    assert card["categories"]["screw"]["kind"] == "object" and card["categories"]["brick"]["foreground"] is None
    fg = bench / "screw" / "foreground" / "train" / "good"
    assert sorted(p.name for p in fg.iterdir()) == ["000.png", "001.png", "002.png"]
    stored = np.asarray(Image.open(fg / "001.png"))
    assert set(np.unique(stored)) <= {0, 255}
    assert np.array_equal(stored == 255, data.draw_image("screw", 1, "good", 0, 32, "train", 3).foreground)
    assert not (bench / "brick" / "foreground").exists()
    readme = (bench / "README.md").read_text()
    assert "benchmark version 3" in readme and "| screw | object |" in readme


def test_default_counts_of_version_3(tmp_path):
    root = data.make_benchmark(tmp_path / "b", size=32, categories=["fabric", "metal_strip"], version=3)
    card = json.loads((root / "benchmark.json").read_text())
    for c, info in card["categories"].items():
        n = info["counts"]
        assert n["train/good"] == 80 and n["test/good"] == 40
        assert sum(v for k, v in n.items() if k.startswith("test/") and k != "test/good") >= 40


def test_loader_reads_kind_and_foreground(bench):
    screw = data.load_category(bench, "screw")
    assert screw.kind == "object" and screw.train.foreground.shape == screw.train.images.shape[:3]
    assert screw.train.foreground.dtype == bool and screw.test.foreground is None
    assert data.load_category(bench, "brick").kind == "texture"
    train, val = data.split_validation(screw.train, 0.34)
    assert len(val.foreground) == len(val) == 1
    resized = data.load_category(bench, "screw", image_size=16)
    assert resized.train.foreground.shape == (3, 16, 16)


def test_loader_kind_for_mvtec_names_and_unknown(tmp_path):
    for name in ("screw", "carpet", "mystery"):
        d = tmp_path / name / "train" / "good"
        d.mkdir(parents=True)
        (tmp_path / name / "test" / "good").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "000.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name / "test" / "good" / "000.png")
    assert [data.load_category(tmp_path, n).kind for n in ("screw", "carpet", "mystery")] == ["object", "texture", None]
    assert data.load_category(tmp_path, "screw").train.foreground is None


def test_incomplete_foreground_folder_is_refused(bench, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(bench / "pill", copy / "pill")
    (copy / "pill" / "foreground" / "train" / "good" / "002.png").unlink()
    with pytest.raises(data.DatasetError, match=r"holds foreground masks but none for .*002.png"):
        data.load_category(copy, "pill")


def test_version_3_is_deterministic_and_seeded(bench, tmp_path):
    again = data.make_benchmark(tmp_path / "again", seed=0, **SMALL)
    assert all(data.fingerprint(again / c) == data.fingerprint(bench / c) for c in V3)
    assert data.fingerprint(data.make_benchmark(tmp_path / "s1", seed=1, categories=["cable"], **SMALL)
                            / "cable") != data.fingerprint(bench / "cable")


def test_embedded_benchmark_version_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"size must be an integer in \[32, 1024\], got 16"):
        data.embedded_benchmark(size=16, version=3)
    root = data.embedded_benchmark(size=32, seed=2, version=3)
    assert root == tmp_path / "embedded" / "v3_size32_seed2"
    assert data.read_card(root)["config"]["generator_version"] == "3"
