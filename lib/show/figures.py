"""Figure style and saving: every figure goes to ``figures/``, every table to
``figures/tables/`` as CSV and Markdown.

The output folder is ``figures/`` at the repository root unless the environment
variable ``KIT_FIGURES_DIR`` points elsewhere (the tests use that so a test run
never overwrites the committed figures).

Reproducibility: PNGs are written without timestamps or software metadata, and
tables are rounded to a fixed number of significant digits, so two runs on the same
machine give identical files. Wall-clock measurements change from run to run by
nature; save them with ``timing=True``: they go to ``figures/tables/timing/`` and
are left out of the identical-tables check (``python -m lib.reproduce --compare``).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["figures_dir", "savefig", "save_table", "show_images", "caption", "style"]

from ..core.paths import REPO


def figures_dir() -> Path:
    d = Path(os.environ.get("KIT_FIGURES_DIR") or REPO / "figures")
    (d / "tables").mkdir(parents=True, exist_ok=True)
    return d


def style() -> None:
    """The kit's matplotlib style (seaborn 'whitegrid', small fonts, fixed dpi)."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "savefig.bbox": "tight",
                         "image.interpolation": "nearest", "svg.hashsalt": "kit"})


def caption(text: str, synthetic: bool = True) -> str:
    """Title text with the honesty label the design asks for."""
    return f"{text}\n[synthetic embedded benchmark]" if synthetic else text


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def savefig(fig, name: str) -> Path:
    """Save ``fig`` as ``figures/<name>.png`` (no metadata, so identical reruns give identical files)."""
    path = figures_dir() / f"{name}.png"
    _write_atomic(path, lambda p: fig.savefig(p, format="png", metadata={"Software": None}))
    return path


def save_table(df: pd.DataFrame, name: str, caption_text: str = "", digits: int = 4,
               timing: bool = False) -> Path:
    """Save a table as ``figures/tables/<name>.csv`` and ``.md`` (rounded to ``digits``
    significant digits). ``timing=True`` puts wall-clock tables in ``tables/timing/``."""
    folder = figures_dir() / "tables" / ("timing" if timing else "")
    folder.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: float(f"{v:.{digits}g}") if np.isfinite(v) else v)
    _write_atomic(folder / f"{name}.csv", lambda p: out.to_csv(p, index=False))
    md = (f"{caption_text}\n\n" if caption_text else "") + out.to_markdown(index=False) + "\n"
    _write_atomic(folder / f"{name}.md", lambda p: p.write_text(md))
    return folder / f"{name}.csv"


def show_images(images, titles=None, nrow: int | None = None, size: float = 1.6, suptitle=None,
                cmap=None):
    """Grid of images (uint8 H×W×3 / H×W arrays or tensors in [−1, 1] C×H×W)."""
    import torch

    imgs = []
    for im in images:
        if isinstance(im, torch.Tensor):
            im = im.detach().cpu().float()
            if im.ndim == 3:
                im = im.permute(1, 2, 0)
            im = ((im.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
        imgs.append(np.squeeze(np.asarray(im)))
    n = len(imgs)
    nrow = nrow or 1
    ncol = int(np.ceil(n / nrow))
    fig, axes = plt.subplots(nrow, ncol, figsize=(size * ncol, size * nrow + (0.4 if suptitle else 0)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, im) in enumerate(zip(axes.flat, imgs)):
        ax.imshow(im, cmap=cmap or ("gray" if im.ndim == 2 else None), vmin=0 if im.dtype == np.uint8 else None,
                  vmax=255 if im.dtype == np.uint8 else None)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig
