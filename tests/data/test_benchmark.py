"""lib.data.benchmark and its category families: the embedded benchmark generator and its card."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from lib import data
from lib.data import CATEGORIES, DEFECT_TYPES, draw, panel, strip, textures

SMALL = dict(size=32, n_train=3, n_test_good=2, n_test_defect=2)
PAIRS = [(c, d) for c in CATEGORIES for d in DEFECT_TYPES[c]]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return data.make_benchmark(tmp_path_factory.mktemp("bench") / "b", seed=0, **SMALL)


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_registry_is_built_from_the_families():
    assert CATEGORIES == ("display_panel", "metal_strip", "brick", "grass", "gravel", "fabric")
    assert [list(f) for f in data.FAMILIES] == [["display_panel"], ["metal_strip"],
                                               ["brick", "grass", "gravel", "fabric"]]
    for family in (panel, strip, textures):
        for name, spec in family.CATEGORIES.items():
            assert isinstance(spec, draw.CategorySpec) and DEFECT_TYPES[name] == tuple(spec.defects)
    assert DEFECT_TYPES["metal_strip"] == ("scratch", "spot", "contamination")
    assert set(data.RECIPES) == {d for ds in DEFECT_TYPES.values() for d in ds}
    assert data.RECIPES["seal_gap"].startswith("MURA (seed 000 Fig. 1)")


def test_generation_is_deterministic(bench, tmp_path):
    again = data.make_benchmark(tmp_path / "again", seed=0, **SMALL)
    other = data.make_benchmark(tmp_path / "other", seed=1, **SMALL)
    assert data.fingerprint(again) == data.fingerprint(bench)
    assert data.fingerprint(other) != data.fingerprint(bench)


def _pixel_digest(folder):
    """sha256 over the sorted relative paths, shapes and decoded pixels of every PNG under ``folder``."""
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.png")):
        a = np.asarray(Image.open(f))
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:16]


def test_known_pixels(bench):
    """The generator's output is pinned (every category and defect type): the decoded pixels of this
    small benchmark, from the generator before lib.data was split into modules. Pixels, not PNG bytes,
    so another Pillow/zlib version that encodes the same image differently still passes; the committed
    checkpoints' manifests pin the size-64 benchmark's bytes (their data fingerprint)."""
    assert {c: _pixel_digest(bench / c) for c in CATEGORIES} == {
        "display_panel": "4a8a975f9207252e", "metal_strip": "50b2298d3f8e1536", "brick": "3f313eba9bba52a8",
        "grass": "210fc3c8c745037e", "gravel": "42074ca100572dcb", "fabric": "d71ea78ecd273316"}


@pytest.mark.parametrize("category,defect", PAIRS)
@pytest.mark.parametrize("size", [32, 64])
def test_mask_is_exactly_the_changed_pixels(category, defect, size):
    for index in range(4):
        clean, img, mask = data.render(category, index, defect, seed=3, size=size)
        assert mask.dtype == bool and mask.shape == img.shape[:2] == data.image_shape(category, size)
        assert mask.any(), "empty mask"
        assert np.array_equal(img[~mask], clean[~mask]), "a pixel outside the mask changed"
        delta = np.abs(img.astype(int) - clean.astype(int)).max(axis=-1)
        floor = panel.MIN_DELTA_MURA if category == "display_panel" else 6
        assert delta[mask].min() >= floor, "a mask pixel is not visibly changed"


def test_written_files_match_render(bench):
    for category, defect in [("display_panel", "seal_gap"), ("brick", "crack"), ("metal_strip", "scratch")]:
        _, img, mask = data.render(category, 1, defect, seed=0, size=32)
        assert np.array_equal(np.asarray(Image.open(bench / category / "test" / defect / "001.png")), img)
        stored = np.asarray(Image.open(bench / category / "ground_truth" / defect / "001_mask.png"))
        assert stored.dtype == np.uint8 and set(np.unique(stored)) <= {0, 255}
        assert np.array_equal(stored == 255, mask)


def test_good_images_are_clean_and_train_differs_from_test():
    clean, img, mask = data.render("gravel", 0, "good", seed=0, size=32)
    assert np.array_equal(clean, img) and not mask.any()
    train = data.render("gravel", 0, "good", seed=0, size=32, split="train")[1]
    assert not np.array_equal(train, img)


def test_render_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown category 'carpet'"):
        data.render("carpet", 0)
    with pytest.raises(ValueError, match="'brick' has no test defect 'scratch'"):
        data.render("brick", 0, "scratch")
    with pytest.raises(ValueError, match="no test defect 'crack'"):
        data.render("brick", 0, "crack", split="train")


def test_layout_and_card(bench):
    card = json.loads((bench / "benchmark.json").read_text())
    assert card["config"]["seed"] == 0 and card["config"]["size"] == 32
    assert list(card["categories"]) == list(CATEGORIES)
    assert data.read_card(bench) == card
    assert (bench / "README.md").read_text().count("synthetic") >= 1
    assert "short side" in (bench / "README.md").read_text()
    for category in CATEGORIES:
        base = bench / category
        assert not (base / "ground_truth" / "good").exists()
        assert card["categories"][category]["defect_types"] == list(DEFECT_TYPES[category])
        assert card["categories"][category]["shape"] == list(data.image_shape(category, 32))
        for split, n in card["categories"][category]["counts"].items():
            assert len(list((base / split).glob("*.png"))) == n
        for defect in DEFECT_TYPES[category]:
            for img in (base / "test" / defect).glob("*.png"):
                mask = base / "ground_truth" / defect / f"{img.stem}_mask.png"
                assert Image.open(mask).mode == "L"
                assert Image.open(mask).size == Image.open(img).size
    w, h = Image.open(bench / "metal_strip" / "train" / "good" / "000.png").size
    assert (w, h) == (32, 88) and h % 8 == 0 and abs(h / w - 632 / 224) < 0.15
    assert data.image_shape("metal_strip", 224) == (632, 224) and data.image_shape("brick", 40) == (40, 40)


@pytest.mark.parametrize("kwargs,match", [
    (dict(size=4), r"size must be an integer in \[8, 1024\], got 4"),
    (dict(size=2048), r"size must be an integer in \[8, 1024\], got 2048"),
    (dict(size=64.0), r"size must be an integer.*got 64.0"),
    (dict(seed=-1), r"seed must be an integer >= 0, got -1"),
    (dict(n_train=0), r"n_train must be an integer in \[1, 1000\], got 0"),
    (dict(n_test_good=-1), r"n_test_good must be an integer in \[0, 1000\], got -1"),
    (dict(n_test_defect=1001), r"n_test_defect must be an integer in \[0, 1000\], got 1001"),
    (dict(categories=["carpet"]), r"unknown categories \['carpet'\]"),
])
def test_make_benchmark_range_checks(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.make_benchmark(tmp_path / "b", **{**SMALL, **kwargs})
    assert not (tmp_path / "b").exists()


def test_embedded_benchmark_range_checks(tmp_path):
    with pytest.raises(ValueError, match="size must be"):
        data.embedded_benchmark(size=7, root=tmp_path / "e")
    with pytest.raises(ValueError, match="seed must be"):
        data.embedded_benchmark(seed=-2, root=tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_make_benchmark_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        data.make_benchmark(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_make_benchmark_replaces_its_own_folder(tmp_path):
    root = data.make_benchmark(tmp_path / "b", seed=0, categories=["grass"], **SMALL)
    data.make_benchmark(root, seed=1, categories=["grass"], **SMALL)
    assert json.loads((root / "benchmark.json").read_text())["config"]["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["b"], "temporary folders left behind"


def test_embedded_benchmark_default_location(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_DATA_DIR", str(tmp_path))
    root = data.embedded_benchmark(size=32, seed=0)
    assert root == tmp_path / "embedded" / "size32_seed0"
    before = _mtimes(root)
    assert data.embedded_benchmark(size=32, seed=0) == root
    assert _mtimes(root) == before, "regenerated although the config matched"
    card = json.loads((root / "benchmark.json").read_text())
    card["config"]["n_train"] = 1
    (root / "benchmark.json").write_text(json.dumps(card))
    data.embedded_benchmark(size=32, seed=0)
    assert len(list((root / "brick" / "train" / "good").glob("*.png"))) == 60


def test_benchmark_samples(bench):
    rows = data.benchmark_samples(bench)
    assert [r.category for r in rows] == list(CATEGORIES)
    for row in rows:
        assert row.kinds == ("good",) + DEFECT_TYPES[row.category]
        assert len(row.images) == len(row.masks) == len(row.kinds)
        assert not row.masks[0].any() and all(m.any() for m in row.masks[1:])
    strip_row = rows[CATEGORIES.index("metal_strip")]
    assert strip_row.images[0].shape == (88, 32, 3)
    _, img, mask = data.render("brick", 1, "crack", seed=0, size=32)
    last = data.benchmark_samples(bench, index=5)[CATEGORIES.index("brick")]       # fewer: the last one
    assert np.array_equal(last.images[1], img) and np.array_equal(last.masks[1], mask)
    with pytest.raises(ValueError, match="index must be an integer >= 0"):
        data.benchmark_samples(bench, index=-1)
