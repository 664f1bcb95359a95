"""lib.core.checks: every helper names the parameter, the value and the valid range."""

import math

import pytest
import torch

from lib.core.checks import (check_choice, check_finite, check_float, check_generator, check_images, check_int,
                             check_shape, check_size_multiple)


def test_check_int():
    assert check_int("t", 5, 0, 9) == 5 and check_int("t", torch.tensor(3), 0, 9) == 3
    for bad, msg in [(-1, r"t must be an integer in \[0, 9\], got -1"), (10, r"got 10"),
                     (2.0, r"got 2.0"), (200.7, r"got 200.7"), (True, r"got True"),
                     (torch.tensor(1.5), r"t must be an integer")]:
        with pytest.raises(ValueError, match=msg):
            check_int("t", bad, 0, 9)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1, got 0"):
        check_int("k", 0, 1)


def test_check_float():
    assert check_float("w", 2, 0.0) == 2.0
    for bad, msg in [(-0.5, r"w must be a finite number >= 0.0, got -0.5"), (math.nan, r"got nan"),
                     (math.inf, r"got inf"), ("1", r"w must be a number")]:
        with pytest.raises(ValueError, match=msg):
            check_float("w", bad, 0.0)
    with pytest.raises(ValueError, match=r"p must be a finite number in \(0, 1\], got 0"):
        check_float("p", 0, 0, 1, lo_open=True)


def test_check_choice_generator_and_shape():
    assert check_choice("init", "masked", ("masked", "noised")) == "masked"
    with pytest.raises(ValueError, match=r"init='zeros' is not one of \('masked', 'noised'\)"):
        check_choice("init", "zeros", ("masked", "noised"))
    g = torch.Generator()
    assert check_generator("generator", g) is g
    with pytest.raises(ValueError, match=r"generator must be a torch.Generator .*got int"):
        check_generator("generator", 0)
    x = torch.zeros(2, 3)
    assert check_shape("noise", x, (2, 3)) is x
    with pytest.raises(ValueError, match=r"noise must have the shape of x0, \(2, 4\), got \(2, 3\)"):
        check_shape("noise", x, (2, 4), like="x0")
    with pytest.raises(ValueError, match=r"noise must have the shape of x, \(2, 3\), got list"):
        check_shape("noise", [0], (2, 3))


def test_check_images_finite_and_size_multiple():
    x = torch.zeros(2, 3, 16, 24)
    assert check_images("x", x) is x
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    for arg, msg in [(bad, r"x holds 1 NaN or infinite"), (x[:0], r"x is an empty batch"),
                     (x[0], r"4-D batch"), (x.long(), r"floating tensor"), (x.numpy(), r"torch tensor")]:
        with pytest.raises(ValueError, match=msg):
            check_images("x", arg)
    with pytest.raises(ValueError, match="must have 1 channels"):
        check_images("x", x, channels=1)
    with pytest.raises(ValueError, match="holds 1 NaN"):
        check_finite("q", bad)
    assert check_size_multiple("x", x, 8) is x
    with pytest.raises(ValueError, match=r"x is 16×24, but this network down-samples by 16: .*multiples of 16"):
        check_size_multiple("x", x, 16)
