"""Wall-clock timing that waits for the accelerator: a `Stopwatch` for code blocks, `throughput` for a callable.

GPU kernels run asynchronously, so a clock read right after a call measures only the launch.
Both tools synchronise the device (:func:`lib.core.device.synchronize`, a no-op on the CPU)
before starting and before stopping the clock.

    clock = Stopwatch(device)
    for batch in batches:
        with clock:
            reconstruct(batch)
    clock.seconds / n_images          # seconds per image, summed over the timed blocks

Wall times depend on the machine and its load: the kit writes them to ``figures/tables/timing/``
and never compares or asserts them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import torch

from .checks import check_int
from .device import synchronize

__all__ = ["Stopwatch", "throughput", "matmul_ceiling"]


class Stopwatch:
    """Wall time summed over the ``with`` blocks it times, t = Σ (t_stop − t_start), device synchronised at each end.

    One lap per ``with`` block (``laps``, ``last``); ``seconds`` is their sum. ``device`` may be
    None or a CPU device (nothing to wait for), a CUDA or an MPS device. A stopwatch cannot time
    two blocks at once: nesting the same stopwatch raises ``RuntimeError``.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = device
        self.laps: list[float] = []
        self._started: float | None = None

    @property
    def seconds(self) -> float:
        """Total seconds of all timed blocks: the sum of ``laps`` (0.0 before the first)."""
        return float(sum(self.laps))

    @property
    def last(self) -> float:
        """Seconds of the most recent timed block."""
        if not self.laps:
            raise RuntimeError("Stopwatch.last: nothing timed yet; time a block with `with stopwatch: ...` first")
        return self.laps[-1]

    def __enter__(self) -> Stopwatch:
        if self._started is not None:
            raise RuntimeError("this Stopwatch is already timing a block; use a second Stopwatch for nested blocks")
        synchronize(self.device)
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:  # after an error the device may be unusable: do not wait on it
            synchronize(self.device)
        self.laps.append(time.perf_counter() - self._started)
        self._started = None


def throughput(fn: Callable[[], Any], n_images: int, warmup: int = 2, repeats: int = 5,
               device: str | torch.device | None = None) -> dict[str, Any]:
    """Images per second of ``fn()``: n_images / median seconds of ``repeats`` timed calls after ``warmup`` untimed.

    ``fn`` is a no-argument callable processing ``n_images`` images; each timed call is one lap
    of a :class:`Stopwatch` on ``device`` (CUDA and MPS are synchronised before starting and
    before stopping the clock). Returns {"seconds": median time per call, "images_per_s":
    n_images / median, "times": every timed call in seconds}.
    """
    if not callable(fn):
        raise ValueError("fn must be a callable taking no arguments, e.g. lambda: model(x).")
    n_images = check_int("n_images", n_images, 1)
    warmup = check_int("warmup", warmup, 0)
    repeats = check_int("repeats", repeats, 1)
    for _ in range(warmup):
        fn()
    clock = Stopwatch(device)
    for _ in range(repeats):
        with clock:
            fn()
    seconds = statistics.median(clock.laps)
    return {"seconds": seconds, "images_per_s": n_images / seconds, "times": list(clock.laps)}


def matmul_ceiling(device: str | torch.device | None = None, dtype: torch.dtype = torch.bfloat16, n: int = 8192,
                   repeats: int = 10) -> float:
    """TFLOP/s of an n×n×n matrix product on ``device`` (2n³ FLOPs over the median of ``repeats`` timed products of
    random data, 3 untimed first): the ceiling a benchmark reports its fraction of (measured, not a datasheet's)."""
    n, repeats = check_int("n", n, 1), check_int("repeats", repeats, 1)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    r = throughput(lambda: a @ b, 1, warmup=3, repeats=repeats, device=device)
    return 2 * n ** 3 / r["seconds"] / 1e12
