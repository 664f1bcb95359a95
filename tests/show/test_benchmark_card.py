"""lib.show.benchmark_card: the dataset card figure draws the rows it is given."""

import ast
import inspect
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lib import data
from lib.show import benchmark_card
from lib.show.benchmark_card import save_benchmark_card


def _rows():
    rng = np.random.default_rng(0)
    mask = np.zeros((24, 16), bool)
    mask[5:9, 3:7] = True
    return [SimpleNamespace(category="square", kinds=("good", "dent"),
                            images=[rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)] * 2,
                            masks=[np.zeros((16, 16), bool), mask[:16]]),
            SimpleNamespace(category="tall", kinds=("good",), images=[np.zeros((24, 16, 3), np.uint8)],
                            masks=[mask])]


def test_card_is_deterministic_and_labelled(tmp_path):
    a = save_benchmark_card(_rows(), tmp_path / "a.png", "demo")
    b = save_benchmark_card(_rows(), tmp_path / "sub" / "b.png", "demo")
    assert a == tmp_path / "a.png" and a.read_bytes() == b.read_bytes()
    real = save_benchmark_card(_rows(), tmp_path / "c.png", "demo", synthetic=False)
    assert real.read_bytes() != a.read_bytes()                      # another title
    w, h = Image.open(a).size
    assert w > 300 and h > w                                       # two columns, a tall second row
    with pytest.raises(ValueError, match="rows is empty"):
        save_benchmark_card([], tmp_path / "d.png", "demo")


def test_card_of_a_generated_benchmark(tmp_path):
    root = data.make_benchmark(tmp_path / "b", size=32, categories=["display_panel", "metal_strip"],
                               n_train=1, n_test_good=1, n_test_defect=1)
    out = save_benchmark_card(data.benchmark_samples(root), tmp_path / "card.png", root.name)
    assert Image.open(out).size[0] > 400


def test_show_imports_only_core():
    tree = ast.parse(inspect.getsource(benchmark_card))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if "data" in m or m.startswith("lib.") and not m.startswith("lib.core")]
