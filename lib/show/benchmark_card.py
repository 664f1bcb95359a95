"""The dataset card figure: a grid of sample images, one row per category, ground-truth masks
outlined in red. It draws what it is given (``lib.data.benchmark_samples(root)``) and reads no files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

__all__ = ["save_benchmark_card"]


class _Row(Protocol):
    category: str
    kinds: Sequence[str]
    images: Sequence[np.ndarray]
    masks: Sequence[np.ndarray]


def save_benchmark_card(rows: Sequence[_Row], out_path: str | os.PathLike, name: str, synthetic: bool = True) -> Path:
    """Save a sample grid to ``out_path``: per row (``category``, ``kinds``, ``images``, ``masks``, e.g.
    ``lib.data.benchmark_samples(root)``) the images with their masks outlined in red, titled with the
    dataset ``name`` (labelled synthetic unless ``synthetic=False``); returns ``out_path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("rows is empty: pass at least one category's samples, e.g. lib.data.benchmark_samples(root)")
    ncol = max(len(r.kinds) for r in rows)
    ratios = [r.images[0].shape[0] / r.images[0].shape[1] for r in rows]
    fig = Figure(figsize=(1.8 * ncol, 1.8 * sum(ratios) + 0.6), dpi=120)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(rows), ncol, height_ratios=ratios)
    for r, row in enumerate(rows):
        for c, (kind, image, mask) in enumerate(zip(row.kinds, row.images, row.masks)):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([]), ax.set_yticks([])
            ax.imshow(image, interpolation="nearest")
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="red", linewidths=0.6)
            ax.set_title(kind, fontsize=7, pad=2)
            if c == 0:
                ax.set_ylabel(row.category, fontsize=8)
    title = f"Embedded benchmark (synthetic images): {name}" if synthetic else f"Dataset samples: {name}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, metadata={"Software": None})
    return out_path
