"""Tests for lib.data: the embedded benchmark generator and the MVTec-layout loader."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lib import data
from lib.data import CATEGORIES, DEFECT_TYPES, DatasetError

SMALL = dict(image_size=32, n_train=3, n_test_good=2, n_test_defect=2)
PAIRS = [(c, d) for c in CATEGORIES for d in DEFECT_TYPES[c]]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return data.make_benchmark(tmp_path_factory.mktemp("bench") / "b", seed=0, **SMALL)


@pytest.fixture
def copy(bench, tmp_path):
    """A private copy of the benchmark that a test may damage."""
    return shutil.copytree(bench, tmp_path / "b")


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------- generator

def test_generation_is_deterministic(bench, tmp_path):
    again = data.make_benchmark(tmp_path / "again", seed=0, **SMALL)
    other = data.make_benchmark(tmp_path / "other", seed=1, **SMALL)
    assert data.fingerprint(again) == data.fingerprint(bench)
    assert data.fingerprint(other) != data.fingerprint(bench)


@pytest.mark.parametrize("category,defect", PAIRS)
@pytest.mark.parametrize("size", [32, 64])
def test_mask_is_exactly_the_changed_pixels(category, defect, size):
    for index in range(4):
        clean, img, mask = data.benchmark._render(category, index, defect, seed=3, size=size)
        assert mask.dtype == bool and mask.shape == img.shape[:2] == data.image_shape(category, size)
        assert mask.any(), "empty mask"
        assert np.array_equal(img[~mask], clean[~mask]), "a pixel outside the mask changed"
        delta = np.abs(img.astype(int) - clean.astype(int)).max(axis=-1)
        floor = 2 if category == "display_panel" else 6
        assert delta[mask].min() >= floor, "a mask pixel is not visibly changed"


def test_written_files_match_render(bench):
    for category, defect in [("display_panel", "seal_gap"), ("brick", "crack"), ("metal_strip", "scratch")]:
        _, img, mask = data.benchmark._render(category, 1, defect, seed=0, size=32)
        assert np.array_equal(np.asarray(Image.open(bench / category / "test" / defect / "001.png")), img)
        stored = np.asarray(Image.open(bench / category / "ground_truth" / defect / "001_mask.png"))
        assert stored.dtype == np.uint8 and set(np.unique(stored)) <= {0, 255}
        assert np.array_equal(stored == 255, mask)


def test_good_images_are_clean_and_train_differs_from_test():
    clean, img, mask = data.benchmark._render("gravel", 0, "good", seed=0, size=32)
    assert np.array_equal(clean, img) and not mask.any()
    train = data.benchmark._render("gravel", 0, "good", seed=0, size=32, split="train")[1]
    assert not np.array_equal(train, img)


def test_layout_and_card(bench):
    card = json.loads((bench / "benchmark.json").read_text())
    assert card["config"]["seed"] == 0 and list(card["categories"]) == list(CATEGORIES)
    assert (bench / "README.md").read_text().count("synthetic") >= 1
    for category in CATEGORIES:
        base = bench / category
        assert not (base / "ground_truth" / "good").exists()
        assert card["categories"][category]["defect_types"] == list(DEFECT_TYPES[category])
        for split, n in card["categories"][category]["counts"].items():
            assert len(list((base / split).glob("*.png"))) == n
        for defect in DEFECT_TYPES[category]:
            for img in (base / "test" / defect).glob("*.png"):
                mask = base / "ground_truth" / defect / f"{img.stem}_mask.png"
                assert Image.open(mask).mode == "L"
                assert Image.open(mask).size == Image.open(img).size
    w, h = Image.open(bench / "metal_strip" / "train" / "good" / "000.png").size
    assert (w, h) == (32, 88) and h % 8 == 0 and abs(h / w - 632 / 224) < 0.15
    assert data.image_shape("metal_strip", 224) == (632, 224)


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
    root = data.embedded_benchmark(image_size=32, seed=0)
    assert root == tmp_path / "embedded" / "size32_seed0"
    before = _mtimes(root)
    assert data.embedded_benchmark(image_size=32, seed=0) == root
    assert _mtimes(root) == before, "regenerated although the config matched"
    card = json.loads((root / "benchmark.json").read_text())
    card["config"]["n_train"] = 1
    (root / "benchmark.json").write_text(json.dumps(card))
    data.embedded_benchmark(image_size=32, seed=0)
    assert len(list((root / "brick" / "train" / "good").glob("*.png"))) == 60


def test_dataset_card_figure_is_deterministic(bench, tmp_path):
    a = data.dataset_card_figure(bench, tmp_path / "a.png")
    b = data.dataset_card_figure(bench, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()
    assert Image.open(a).size[0] > 400


# ---------------------------------------------------------------- loader

def test_load_generated_category(bench):
    cat = data.load_category(bench, "display_panel")
    assert cat.train.images.shape == (3, 32, 32, 3) and cat.train.images.dtype == np.uint8
    assert not cat.train.masks.any() and not cat.train.labels.any()
    n_def = 2 * len(DEFECT_TYPES["display_panel"])
    assert len(cat.test) == 2 + n_def and cat.test.labels.sum() == n_def
    assert cat.defect_types == sorted(DEFECT_TYPES["display_panel"])
    for m, label, kind in zip(cat.test.masks, cat.test.labels, cat.test.defect_types):
        assert m.any() == bool(label) and (kind == "good") == (label == 0)
    strip = data.load_category(bench, "metal_strip")
    assert strip.test.images.shape[1:] == (88, 32, 3)


def test_load_resizes(bench):
    cat = data.load_category(bench, "metal_strip", image_size=16)
    assert cat.train.images.shape[1:] == (16, 16, 3) and cat.test.masks.shape[1:] == (16, 16)
    cat = data.load_category(bench, "metal_strip", image_size=(48, 24))
    assert cat.test.images.shape[1:] == (48, 24, 3)
    assert set(np.unique(cat.test.masks)) <= {False, True} and cat.test.masks[cat.test.labels == 1].any()


def _write_grey_mvtec(root):
    """A tiny real-MVTec-like category: greyscale images, jpg/bmp, a 0/200 mask."""
    rng = np.random.default_rng(0)
    (root / "screw" / "train" / "good").mkdir(parents=True)
    (root / "screw" / "test" / "good").mkdir(parents=True)
    (root / "screw" / "test" / "bent").mkdir(parents=True)
    (root / "screw" / "ground_truth" / "bent").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / "screw/train/good" / f"{i:03d}.png")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / "screw/test/good/000.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / "screw/test/bent/000.bmp")
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 5:9] = 200
    Image.fromarray(mask).save(root / "screw/ground_truth/bent/000_mask.png")


def test_load_greyscale_as_three_channels(tmp_path):
    _write_grey_mvtec(tmp_path)
    cat = data.load_category(tmp_path, "screw")
    assert cat.train.images.shape == (2, 40, 40, 3)
    assert np.array_equal(cat.train.images[..., 0], cat.train.images[..., 2])
    assert cat.test.defect_types == ["bent", "good"] and list(cat.test.labels) == [1, 0]
    assert cat.test.masks[0].sum() == 40 and not cat.test.masks[1].any()
    small = data.load_category(tmp_path, "screw", image_size=20)
    assert small.test.masks[0].sum() == 10


def test_loader_leaves_folder_untouched(copy):
    before_fp, before_mtimes = data.fingerprint(copy), _mtimes(copy)
    for category in CATEGORIES:
        data.load_category(copy, category, image_size=16)
    assert data.fingerprint(copy) == before_fp
    assert _mtimes(copy) == before_mtimes


def test_error_corrupt_image(copy):
    path = copy / "grass" / "test" / "hole" / "001.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DatasetError, match="001.png.*corrupt or truncated"):
        data.load_category(copy, "grass")


def test_error_missing_mask(copy):
    (copy / "brick" / "ground_truth" / "crack" / "000_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"crack[/\\]000.png has no mask.*000_mask.png"):
        data.load_category(copy, "brick")


def test_error_mask_of_other_size(copy):
    path = copy / "fabric" / "ground_truth" / "stain" / "001_mask.png"
    Image.open(path).resize((16, 16)).save(path)
    with pytest.raises(DatasetError, match="001_mask.png is 16x16"):
        data.load_category(copy, "fabric")


def test_error_empty_category(copy):
    shutil.rmtree(copy / "gravel")
    (copy / "gravel").mkdir()
    with pytest.raises(DatasetError, match="gravel.*no train/ folder"):
        data.load_category(copy, "gravel")
    (copy / "gravel" / "train" / "good").mkdir(parents=True)
    (copy / "gravel" / "test").mkdir()
    with pytest.raises(DatasetError, match=r"train[/\\]good is missing or holds no images"):
        data.load_category(copy, "gravel")


def test_error_missing_category_lists_existing(copy, tmp_path):
    with pytest.raises(DatasetError, match="carpet does not exist.*brick, display_panel"):
        data.load_category(copy, "carpet")
    with pytest.raises(DatasetError, match="nowhere does not exist"):
        data.load_category(tmp_path / "nowhere", "brick")


def test_select_categories(bench, tmp_path):
    """The notebooks' `categories` parameter: None, a name, "a,b" (what papermill -p passes), a list."""
    assert data.select_categories(None, bench) == sorted(CATEGORIES)
    assert data.select_categories(None, bench, order=CATEGORIES) == list(CATEGORIES)
    assert data.select_categories("grass", bench) == ["grass"]          # not ['g', 'r', 'a', ...]
    assert data.select_categories(" grass, brick ,grass", bench) == ["grass", "brick"]
    assert data.select_categories(["fabric"], bench) == ["fabric"]
    with pytest.raises(DatasetError, match=r"categories=\['carpet'\].*the categories there are"):
        data.select_categories("carpet", bench)
    with pytest.raises(ValueError, match="categories=3"):
        data.select_categories(3, bench)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no category folders"):
        data.select_categories(None, tmp_path / "empty")


def test_all_zero_mask_warns(copy):
    path = copy / "grass" / "ground_truth" / "hole" / "000_mask.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    with pytest.warns(UserWarning, match="000_mask.png .* all zero"):
        data.load_category(copy, "grass")


def test_no_warning_on_clean_benchmark(bench):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.load_category(bench, "display_panel")


# ---------------------------------------------------------------- tensors

def test_tensor_round_trip(bench):
    images = data.load_category(bench, "brick").test.images
    x = data.to_tensor(images)
    assert x.dtype == torch.float32 and x.shape == (len(images), 3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(data.to_uint8(x), images)
    assert data.to_tensor(images[0]).shape == (3, 32, 32)
    assert np.array_equal(data.to_uint8(torch.full((1, 3, 2, 2), 5.0)), np.full((1, 2, 2, 3), 255, np.uint8))
