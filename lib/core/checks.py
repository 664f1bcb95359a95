"""Range checks for the public entry points: each raises ``ValueError`` naming the parameter,
the value it got and the valid range, so bad input never wraps around or fails deep inside a library.

    check_int("t_s", t_s, 0, diffusion.T - 1)
    check_float("w", w, 0.0)
    check_images("x", x)
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Iterable

import torch

__all__ = ["check_int", "check_float", "check_choice", "check_images", "check_finite", "check_size_multiple",
           "check_generator", "check_shape", "check_multiple"]


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi] (either bound may be None); bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer{_range(lo, hi)}, got {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be an integer{_range(lo, hi)}, got {value}")
    return value


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a finite float in [lo, hi] (open ends with ``lo_open``/``hi_open``); NaN and inf are refused."""
    if isinstance(value, bool) or not isinstance(value, Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value)
        else:
            raise ValueError(f"{name} must be a number{_range(lo, hi, lo_open, hi_open)}, got {value!r}")
    value = float(value)
    bad = (not math.isfinite(value)
           or (lo is not None and (value <= lo if lo_open else value < lo))
           or (hi is not None and (value >= hi if hi_open else value > hi)))
    if bad:
        raise ValueError(f"{name} must be a finite number{_range(lo, hi, lo_open, hi_open)}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {choices}")
    return value


def check_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` if it holds no NaN or infinite value."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} holds {bad} NaN or infinite value(s); fix the input (a corrupt image, "
                         "or an earlier step that diverged)")
    return x


def check_images(name: str, x: Any, channels: int | None = None) -> torch.Tensor:
    """``x`` as an N×C×H×W floating tensor with N ≥ 1, finite values and (optionally) C = ``channels``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor N×C×H×W, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D batch N×C×H×W, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (0 images, shape {tuple(x.shape)}); pass at least one image")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor in [-1, 1], got dtype {x.dtype}")
    return check_finite(name, x)


def check_size_multiple(name: str, x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` if its height and width are multiples of ``multiple`` (a UNet's total down-sampling)."""
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(f"{name} is {h}×{w}, but this network down-samples by {multiple}: height and width "
                         f"must be multiples of {multiple} (resize or crop the images, e.g. to "
                         f"{max(multiple, h // multiple * multiple)}×{max(multiple, w // multiple * multiple)})")
    return x


def check_generator(name: str, generator: Any) -> torch.Generator:
    """``generator`` if it is a ``torch.Generator`` (every random draw of a sampler comes from it)."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator (all noise is drawn from it, so a seed fixes the "
                         f"result), got {type(generator).__name__}; pass e.g. torch.Generator().manual_seed(0)")
    return generator


def check_shape(name: str, x: Any, shape: tuple[int, ...], like: str = "x") -> torch.Tensor:
    """``x`` if it is a tensor of exactly ``shape`` (the shape of the tensor named ``like``)."""
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(shape):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must have the shape of {like}, {tuple(shape)}, got {got}")
    return x


def check_multiple(name: str, value: Any, multiple: int, why: str = "") -> int:
    """``value`` as a positive int that is a multiple of ``multiple`` (e.g. an image size and a UNet's
    down-sampling 2^(levels−1); ``why`` says where the multiple comes from)."""
    value = check_int(name, value, 1)
    if value % multiple:
        raise ValueError(f"{name}={value} must be a positive multiple of {multiple}{f' ({why})' if why else ''}, "
                         f"e.g. {max(multiple, value // multiple * multiple)}")
    return value


def _range(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" {'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f" {'<' if hi_open else '<='} {hi}"
    return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
