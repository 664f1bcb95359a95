"""lib.data.loader: reading any MVTec AD-layout folder, its checks, tensors and fingerprints."""

import re
import shutil
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lib import data
from lib.data import CATEGORIES, DEFECT_TYPES, DatasetError


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return data.make_benchmark(tmp_path_factory.mktemp("bench") / "b", seed=0, size=32, n_train=3,
                               n_test_good=2, n_test_defect=2)


@pytest.fixture
def copy(bench, tmp_path):
    """A private copy of the benchmark that a test may damage."""
    return shutil.copytree(bench, tmp_path / "b")


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


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


def _category(root, name="screw", defect="bent"):
    for sub in ("train/good", "test/good", f"test/{defect}", f"ground_truth/{defect}"):
        (root / name / sub).mkdir(parents=True)
    return root / name


def _write_grey_mvtec(root):
    """A tiny real-MVTec-like category: greyscale images, jpg/bmp, a 0/200 mask."""
    rng = np.random.default_rng(0)
    base = _category(root)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(base / "train/good" / f"{i:03d}.png")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(base / "test/good/000.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(base / "test/bent/000.bmp")
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 5:9] = 200
    Image.fromarray(mask).save(base / "ground_truth/bent/000_mask.png")


def test_load_greyscale_as_three_channels(tmp_path):
    _write_grey_mvtec(tmp_path)
    cat = data.load_category(tmp_path, "screw")
    assert cat.train.images.shape == (2, 40, 40, 3)
    assert np.array_equal(cat.train.images[..., 0], cat.train.images[..., 2])
    assert cat.test.defect_types == ["bent", "good"] and list(cat.test.labels) == [1, 0]
    assert cat.test.masks[0].sum() == 40 and not cat.test.masks[1].any()
    small = data.load_category(tmp_path, "screw", image_size=20)
    assert small.test.masks[0].sum() == 10


# ---------------------------------------------------------------- 16-bit images

def _png16_rgb(path, a):
    """Write a 16-bit RGB PNG (Pillow cannot write one): IHDR bit depth 16, colour type 2."""
    h, w, _ = a.shape
    raw = b"".join(b"\0" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_images_are_scaled_to_8_bits(tmp_path):
    base = _category(tmp_path)
    v = np.arange(0, 65536, 64, dtype=np.uint16).reshape(32, 32)           # every grey level of 16 bits
    for path in (base / "train/good/000.png", base / "test/good/000.png", base / "test/bent/000.png"):
        Image.fromarray(v).save(path)
    assert Image.open(base / "train/good/000.png").mode == "I;16"
    mask = np.zeros((32, 32), np.uint16)
    mask[4:8, 4:12] = 1                                                     # a 0/1 label image
    mask[20:24, 0:2] = 255                                                  # 0/255 stored as 16 bit
    Image.fromarray(mask).save(base / "ground_truth/bent/000_mask.png")
    cat = data.load_category(tmp_path, "screw")
    expected = np.rint(v / 257).astype(np.uint8)
    assert np.array_equal(cat.train.images[0, ..., 0], expected), "16-bit image not scaled by 1/257"
    assert np.array_equal(cat.train.images[0, ..., 2], expected)
    assert cat.train.images.min() == 0 and cat.train.images.max() == 255 and len(np.unique(cat.train.images)) > 200
    assert np.array_equal(cat.test.masks[0], mask > 0), "16-bit mask: every non-zero pixel is defect"
    assert data.load_category(tmp_path, "screw", image_size=16).test.masks[0].sum() == 10


def test_16bit_colour_and_32bit_images(tmp_path):
    base = _category(tmp_path)
    v = np.random.default_rng(0).integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    for path in (base / "train/good/000.png", base / "test/good/000.png"):
        _png16_rgb(path, v)                                   # Pillow reads it at its high byte
    got = data.load_category(tmp_path, "screw").train.images[0]
    assert np.abs(got.astype(int) - np.rint(v / 257)).max() <= 1
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(base / "train/good/000.tif")
    with pytest.raises(DatasetError, match=r"000.tif: a 32-bit integer image with values 70000..70000"):
        data.load_category(tmp_path, "screw")
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(base / "train/good/000.tif")
    with pytest.raises(DatasetError, match=r"000.tif: it holds 32-bit floating-point pixels"):
        data.load_category(tmp_path, "screw")


# ---------------------------------------------------------------- every category stays inside its root

@pytest.mark.parametrize("name", ["../outside", "..", ".", "", "a/b", "sub\\x", "/abs/cat", None, 3])
def test_category_names_stay_inside_root(tmp_path, name):
    root = tmp_path / "root"
    _write_grey_mvtec(tmp_path)                               # a loadable category next to (outside) the root
    root.mkdir()
    shutil.copytree(tmp_path / "screw", root / "screw")
    with pytest.raises(DatasetError, match=r"category=.* is not a category name.*without path separators"):
        data.load_category(root, name)
    if isinstance(name, str):
        with pytest.raises(DatasetError, match=r"categories=.* is not a category name"):
            data.select_categories([name], root)


def test_absolute_and_dotdot_paths_to_real_categories_are_refused(tmp_path):
    _write_grey_mvtec(tmp_path / "outside")
    (tmp_path / "root").mkdir()
    _write_grey_mvtec(tmp_path / "root")
    for name in ("../outside/screw", str(tmp_path / "outside" / "screw")):
        with pytest.raises(DatasetError, match=re.escape(f"category={name!r} is not a category name")):
            data.load_category(tmp_path / "root", name)
        with pytest.raises(DatasetError, match=re.escape(f"categories={name!r} is not a category name")):
            data.select_categories(name, tmp_path / "root")
    assert data.load_category(tmp_path / "root", "screw").train.images.shape == (2, 40, 40, 3)


def test_linked_category_outside_root_is_refused(tmp_path):
    _write_grey_mvtec(tmp_path / "outside")
    (tmp_path / "root").mkdir()
    try:
        (tmp_path / "root" / "linked").symlink_to(tmp_path / "outside" / "screw", target_is_directory=True)
    except OSError:
        pytest.skip("no symlinks on this file system")
    with pytest.raises(DatasetError, match=r"category='linked'.*outside the dataset root"):
        data.load_category(tmp_path / "root", "linked")
    with pytest.warns(UserWarning, match=r"\['linked'\] point outside the dataset root"):
        assert data.list_categories(tmp_path / "root") == []


def test_ddpm_cli_refuses_category_outside_data_root(tmp_path, bench, capsys):
    """`python -m lib.methods.ddpm --category ../x` goes through load_category: an error (exit status
    2 with the loader's message), before any training."""
    from lib.methods import ddpm

    shutil.copytree(bench / "grass", tmp_path / "x")          # a real category next to the root
    state, export = tmp_path / "state", tmp_path / "export"
    argv = ["--data", str(bench), "--name", "escape", "--steps", "1", "--batch-size", "2",
            "--state-dir", str(state), "--export-dir", str(export), "--device", "cpu"]
    for category in ("../x", str(tmp_path / "x")):
        with pytest.raises(SystemExit) as e:
            ddpm.main(argv + ["--category", category])
        assert e.value.code == 2
        assert f"category={category!r} is not a category name" in capsys.readouterr().err
    assert not state.exists() and not export.exists(), "training started"


def test_list_categories_of_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="nowhere does not exist"):
        data.list_categories(tmp_path / "nowhere")


# ---------------------------------------------------------------- read-only, clear errors

def test_loader_leaves_folder_untouched(copy):
    before_fp, before_mtimes = data.fingerprint(copy), _mtimes(copy)
    for category in CATEGORIES:
        data.load_category(copy, category, image_size=16)
    data.select_categories(None, copy)
    data.benchmark_samples(copy)
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


def test_split_validation(bench):
    train = data.load_category(bench, "brick").train
    fit, val = data.split_validation(train, 0.34)
    assert len(fit) == 2 and len(val) == 1 and val.paths == train.paths[2:]
    assert len(data.split_validation(train, 0.0)[1]) == 0
    with pytest.raises(ValueError, match=r"fraction=1.0 must be in \[0, 1\)"):
        data.split_validation(train, 1.0)


# ---------------------------------------------------------------- tensors

def test_tensor_round_trip(bench):
    images = data.load_category(bench, "brick").test.images
    x = data.to_tensor(images)
    assert x.dtype == torch.float32 and x.shape == (len(images), 3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(data.to_uint8(x), images)
    assert data.to_tensor(images[0]).shape == (3, 32, 32)
    assert np.array_equal(data.to_uint8(torch.full((1, 3, 2, 2), 5.0)), np.full((1, 2, 2, 3), 255, np.uint8))
    with pytest.raises(ValueError, match="expected uint8"):
        data.to_tensor(images.astype(np.float32))
