"""Data layer: the embedded benchmark, the MVTec-layout loader, synthetic training anomalies."""

from .benchmark import *  # noqa: F401,F403
from .benchmark import __all__ as _benchmark_all

__all__ = list(_benchmark_all)
