"""lib.data.convert: KSDD2, VisA, DAGM 2007 and BTAD into the MVTec layout, MVTec AD / MPDD validated only, on tiny
synthetic trees in each source layout; the source is never modified and an interrupted conversion leaves nothing."""

import importlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib import data
from lib.data import DatasetError

convert_module = importlib.import_module("lib.data.convert")


def _img(path: Path, value: int = 100, shape=(8, 12), mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full(shape, value, np.uint8)
    a[0, 0] = 255 - value
    Image.fromarray(a, mode).save(path)
    return path


def _mask(path: Path, box=None, value: int = 255, shape=(8, 12)) -> Path:
    """A mask file: ``value`` inside ``box`` (rows, cols slices), 0 elsewhere; box None: all zero."""
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(shape, np.uint8)
    if box is not None:
        m[box] = value
    Image.fromarray(m).save(path)
    return path


BOX = (slice(2, 4), slice(3, 6))   # 6 pixels


def _unchanged(src: Path):
    """The source's fingerprint, to compare after converting."""
    return data.fingerprint(src)


# ----------------------------------------------------------------------------------
# KSDD2
# ----------------------------------------------------------------------------------

def _ksdd2(root: Path) -> Path:
    for split, ids in (("train", (10000, 10001, 10002)), ("test", (20000, 20001))):
        for i in ids:
            _img(root / split / f"{i}.png", 50 + i % 7)
            _mask(root / split / f"{i}_GT.png", BOX if i % 2 else None)
    return root


def test_ksdd2(tmp_path):
    src = _ksdd2(tmp_path / "KolektorSDD2")
    before = _unchanged(src)
    out = data.convert_dataset("ksdd2", src, tmp_path / "mvtec")
    assert data.fingerprint(src) == before and data.list_categories(out) == ["ksdd2"]
    cat = data.load_category(out, "ksdd2")
    assert len(cat.train) == 2 and not cat.train.labels.any()          # the two negatives
    assert cat.test.labels.tolist() == [1, 0] and cat.test.defect_types == ["defect", "good"]
    assert cat.test.masks[0].sum() == 6 and not cat.test.masks[1].any()
    pos = out / "ksdd2" / "positives_train"
    assert [p.name for p in (pos / "defect").iterdir()] == ["10001.png"]
    assert (pos / "ground_truth" / "defect" / "10001_mask.png").is_file()
    assert "positives_train" in (out / "README.md").read_text()


def test_ksdd2_image_without_mask_is_named(tmp_path):
    src = _ksdd2(tmp_path / "k")
    (src / "test" / "20001_GT.png").unlink()
    with pytest.raises(DatasetError, match=r"20001\.png has no mask .*20001_GT\.png"):
        data.convert_ksdd2(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------
# VisA
# ----------------------------------------------------------------------------------

def _visa(root: Path, extra_row: str = "") -> Path:
    rows = ["object,split,label,image,mask"]
    for obj in ("candle", "pcb1"):
        d = root / obj / "Data"
        for i in range(3):
            _img(d / "Images" / "Normal" / f"{i:04d}.JPG", 90 + i)
            rows.append(f"{obj},{'train' if i < 2 else 'test'},normal,{obj}/Data/Images/Normal/{i:04d}.JPG,")
        _img(d / "Images" / "Anomaly" / "000.JPG", 30)
        m = np.zeros((8, 12), np.uint8)
        m[1:3, 1:3], m[5:7, 8:10] = 1, 2          # two anomalous instances, labelled 1 and 2
        (d / "Masks" / "Anomaly").mkdir(parents=True)
        Image.fromarray(m).save(d / "Masks" / "Anomaly" / "000.png")
        rows.append(f"{obj},test,anomaly,{obj}/Data/Images/Anomaly/000.JPG,{obj}/Data/Masks/Anomaly/000.png")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows + ([extra_row] if extra_row else [])) + "\n")
    return root


def test_visa(tmp_path):
    src = _visa(tmp_path / "VisA")
    before = _unchanged(src)
    out = data.convert_dataset("visa", tmp_path, tmp_path / "visa_mvtec")   # finds VisA/ one level down
    assert data.fingerprint(src) == before and data.list_categories(out) == ["candle", "pcb1"]
    cat = data.load_category(out, "candle")
    assert len(cat.train) == 2 and sorted(cat.test.defect_types) == ["bad", "good"]
    bad = cat.test.defect_types.index("bad")
    assert cat.test.masks[bad].sum() == 8            # both instances, binarised (values 1 and 2 -> 255)
    card = (out / "README.md").read_text()
    assert "Multi-instance" in card and "candle" in card and "1cls.csv" in card


@pytest.mark.parametrize("row, match", [
    ("candle,test,anomaly,../../../etc/passwd,candle/Data/Masks/Anomaly/000.png", "outside"),
    ("candle,train,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png", "training"),
    ("candle,test,normal,candle/Data/Images/Normal/9999.JPG,", "missing"),
])
def test_visa_bad_rows_are_refused(tmp_path, row, match):
    src = _visa(tmp_path / "VisA", row)
    with pytest.raises(DatasetError, match=match):
        data.convert_visa(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------
# DAGM 2007
# ----------------------------------------------------------------------------------

def _ellipse(shape=(8, 12)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - 4) / 2.5) ** 2 + ((xx - 6) / 4) ** 2 <= 1


def _dagm(root: Path, with_index: bool = True) -> Path:
    for k in (1, 2):
        for split in ("Train", "Test"):
            d = root / f"Class{k}" / split
            lines = ["1"]
            for i, defective in ((1, 0), (2, 1), (3, 0)):
                _img(d / f"{i:04d}.PNG", 40 * i, mode="L")
                lines.append(f"{i}\t{defective}\t{i:04d}.PNG\t0\t{f'{i:04d}_label.PNG' if defective else 0}")
                if defective:
                    (d / "Label").mkdir(parents=True, exist_ok=True)
                    Image.fromarray(_ellipse().astype(np.uint8) * 255).save(d / "Label" / f"{i:04d}_label.PNG")
            if with_index:
                (d / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    (root / "Class1_def").mkdir()   # the 2007 release's extra folder, not a class
    return root


@pytest.mark.parametrize("with_index", [True, False])
def test_dagm(tmp_path, with_index):
    src = _dagm(tmp_path / "DAGM", with_index)
    before = _unchanged(src)
    out = data.convert_dataset("dagm", src, tmp_path / "dagm_mvtec")
    assert data.fingerprint(src) == before and data.list_categories(out) == ["class1", "class2"]
    cat = data.load_category(out, "class2")
    assert len(cat.train) == 2 and cat.test.labels.sum() == 1
    assert (cat.test.masks[cat.test.labels == 1][0] == _ellipse()).all()
    assert (out / "class2" / "positives_train" / "defect" / "0002.PNG").is_file()
    card = (out / "README.md").read_text()
    assert "weak" in card and "ellipse" in card


def test_dagm_index_naming_a_missing_file(tmp_path):
    src = _dagm(tmp_path / "DAGM")
    (src / "Class1" / "Test" / "0003.PNG").unlink()
    with pytest.raises(DatasetError, match=r"Labels\.txt lists 0003\.PNG"):
        data.convert_dagm(src, tmp_path / "out")


# ----------------------------------------------------------------------------------
# BTAD, MPDD / MVTec AD
# ----------------------------------------------------------------------------------

def _category(d: Path, good: str, defect: str, ext: str, mask_name: str, mode: str | None = None) -> None:
    """One category in an MVTec-like layout: two training images, a good and an anomalous test image (0003)."""
    for i, split in enumerate(("train", "train", "test")):
        _img(d / split / good / f"000{i}{ext}", 10 * (i + 1), mode=mode)
    _img(d / "test" / defect / f"0003{ext}", 40, mode=mode)
    _mask(d / "ground_truth" / defect / mask_name, BOX)


def _btad(root: Path) -> Path:
    for c in ("01", "03"):
        _category(root / "BTech_Dataset_transformed" / c, "ok", "ko", ".bmp", "0003.png", mode="L")
    return root


def test_btad(tmp_path):
    src = _btad(tmp_path / "btad")
    before = _unchanged(src)
    out = data.convert_dataset("btad", src, tmp_path / "btad_mvtec")
    assert data.fingerprint(src) == before and data.list_categories(out) == ["01", "03"]
    cat = data.load_category(out, "03")
    assert len(cat.train) == 2 and cat.test.defect_types == ["good", "ko"] and cat.test.masks[1].sum() == 6
    assert (out / "03" / "ground_truth" / "ko" / "0003_mask.png").is_file()


def _mpdd(root: Path) -> Path:
    _category(root / "MPDD" / "bracket_black", "good", "hole", ".png", "0003_mask.png")
    return root


def test_mpdd_is_validated_only(tmp_path):
    src = _mpdd(tmp_path / "raw")
    before = _unchanged(src)
    out = data.convert_dataset("mvtec", src, tmp_path / "unused")
    assert out == src / "MPDD" and not (tmp_path / "unused").exists() and data.fingerprint(src) == before
    assert data.load_category(out, "bracket_black").test.labels.tolist() == [0, 1]
    (out / "bracket_black" / "ground_truth" / "hole" / "0003_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"hole/0003\.png has no mask"):
        data.convert_dataset("mvtec", src, tmp_path / "unused")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="does not hold MVTec AD-layout categories"):
        data.convert_dataset("mvtec", empty, tmp_path / "unused")


# ----------------------------------------------------------------------------------
# Once, atomically; and through fetch with a dropped archive
# ----------------------------------------------------------------------------------

def test_conversion_runs_once_and_an_interrupted_one_leaves_nothing(tmp_path, monkeypatch):
    src, dst = _ksdd2(tmp_path / "k"), tmp_path / "out"
    calls = []
    real = convert_module._write_mask

    def failing(mask, path):
        calls.append(path)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(convert_module, "_write_mask", failing)
    with pytest.raises(KeyboardInterrupt):
        data.convert_dataset("ksdd2", src, dst)
    assert calls and not dst.exists() and [p.name for p in tmp_path.iterdir()] == ["k"]
    with pytest.raises(DatasetError):
        data.list_categories(dst)
    monkeypatch.setattr(convert_module, "_write_mask", real)
    data.convert_dataset("ksdd2", src, dst)
    stamp = (dst / data.CONVERTED_MARKER).stat().st_mtime_ns
    data.convert_dataset("ksdd2", src, dst)
    assert (dst / data.CONVERTED_MARKER).stat().st_mtime_ns == stamp


def test_fetch_converts_a_dropped_ksdd2_archive(tmp_path):
    src = _ksdd2(tmp_path / "src")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(src.rglob("*.png")):
            z.write(p, p.relative_to(src).as_posix())
    root = tmp_path / "datasets"
    archive = root / "ksdd2" / "downloads" / "KolektorSDD2.zip"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(buf.getvalue())
    with pytest.warns(UserWarning, match="publishes no sha256"):
        out = data.fetch("ksdd2", root, progress=False)       # no network: the archive is already there
    assert out == root / "ksdd2" / "mvtec" and data.resolve_data_root("ksdd2", root) == out
    assert len(data.load_category(out, "ksdd2", image_size=8).test) == 2


def test_a_converted_ksdd2_keeps_its_own_training_positives(tmp_path):
    from lib.data.ksdd2 import ksdd2_split
    out = data.convert_dataset("ksdd2", _ksdd2(tmp_path / "KolektorSDD2"), tmp_path / "mvtec")
    split = ksdd2_split(data.load_category(out, "ksdd2"))
    assert split.counts() == {"train/negative": 2, "train/positive": 1, "test/negative": 1, "test/positive": 1}
    assert split.positive_types == ["defect"] and split.positive_masks[0].sum() == 6
    small = ksdd2_split(data.load_category(out, "ksdd2", image_size=(4, 6)))     # resized like the category
    assert small.positives.shape == (1, 4, 6, 3) and small.positive_masks.shape == (1, 4, 6)


def test_conversion_is_redone_when_another_archive_was_extracted(tmp_path):
    src, dst = _ksdd2(tmp_path / "raw"), tmp_path / "out"
    (src / data.MARKER).write_text('{"sha256": "' + "a" * 64 + '"}')
    data.convert_dataset("ksdd2", src, dst)
    assert data.read_marker(dst, data.CONVERTED_MARKER)["source_sha256"] == "a" * 64
    stamp = (dst / data.CONVERTED_MARKER).stat().st_mtime_ns
    data.convert_dataset("ksdd2", src, dst)
    assert (dst / data.CONVERTED_MARKER).stat().st_mtime_ns == stamp          # same archive: kept
    (src / data.MARKER).write_text('{"sha256": "' + "b" * 64 + '"}')
    data.convert_dataset("ksdd2", src, dst)
    assert data.read_marker(dst, data.CONVERTED_MARKER)["source_sha256"] == "b" * 64
