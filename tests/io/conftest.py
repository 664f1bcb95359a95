"""Fixtures of the io tests."""

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def tiny_data(tmp_path):
    """An MVTec-layout folder ``tmp_path/data`` with one category ``c``: 8 train and 2 test images, 16×16 noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 2)):
        d = tmp_path / "data" / "c" / split / "good"
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / f"{i:03d}.png")
    return tmp_path / "data"
