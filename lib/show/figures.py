"""Figure style and saving: every figure goes to the figures folder as PNG, every table to its
``tables/`` subfolder as CSV and Markdown.

Where they go (:func:`figures_dir`), first match wins:

1. ``KIT_FIGURES_DIR`` when set (``python -m lib.reproduce --figures DIR`` sets it; the tests
   set it so a test run never overwrites the committed figures);
2. ``build/figures/<notebook>/<name=value,...>/`` when the notebook runs with parameters that
   differ from its committed ``parameters`` cell (:func:`use_outputs`, called once by every
   notebook right after its parameters; it prints that folder), so ``papermill ... -p seed 1``
   never overwrites the committed seed-0 tables;
3. ``figures/`` at the repository root.

Reproducibility: PNGs are written without timestamps or software metadata, and
tables are rounded to a fixed number of significant digits, so two runs on the same
machine give identical files. Wall-clock measurements change from run to run by
nature; save them with ``timing=True``: they go to ``figures/tables/timing/`` and
are left out of the identical-tables check (``python -m lib.reproduce --compare``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["figures_dir", "use_outputs", "outputs_for", "notebook_parameters", "savefig", "save_table",
           "show_images", "caption", "style"]

from ..core.paths import BUILD, FIGURES, NOTEBOOKS, REPO

ELSEWHERE = BUILD / "figures"           # runs with other parameters: <ELSEWHERE>/<notebook>/<name=value,...>/
_chosen: Path | None = None             # the folder use_outputs chose in this process (None: FIGURES)


def figures_dir() -> Path:
    """The folder figures and tables go to: ``KIT_FIGURES_DIR``, else the one :func:`use_outputs`
    chose, else ``figures/`` (created with its ``tables/`` subfolder)."""
    d = Path(os.environ.get("KIT_FIGURES_DIR") or _chosen or FIGURES)
    (d / "tables").mkdir(parents=True, exist_ok=True)
    return d


def _committed_source(path: Path) -> str:
    """The notebook's text as committed (``git show HEAD:``), else as on disk: an edited and
    autosaved parameters cell does not count as the default."""
    try:
        out = subprocess.run(["git", "-C", str(path.parent), "show", f"HEAD:./{path.name}"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            return out.stdout
    except (OSError, subprocess.SubprocessError):
        pass
    return path.read_text(encoding="utf-8")


def notebook_parameters(path: Path | str) -> dict[str, Any]:
    """The defaults a notebook's ``parameters`` cell assigns (name → value, in cell order), read
    with :mod:`ast` from the committed version of the file (the file on disk if it is not in git)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"notebook {path} not found: use_outputs needs the committed notebook "
                                f"to read its default parameters")
    nb = json.loads(_committed_source(path))
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"
             and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected one code cell tagged 'parameters', found {len(cells)}")
    src = cells[0]["source"]
    defaults: dict[str, Any] = {}
    for node in ast.parse("".join(src) if isinstance(src, list) else src).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) and node.value is not None else None
        if not isinstance(target, ast.Name):
            continue
        try:
            defaults[target.id] = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError):
            raise ValueError(f"{path}: parameter {target.id} = {ast.unparse(node.value)} is not a literal; "
                             f"a parameters cell assigns plain values (derive the rest after it)") from None
    return defaults


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind: 1 == 1.0, but True is not 1 and "0" is not 0."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b
    return type(a) is type(b) and a == b


def _slug(changed: Mapping[str, Any]) -> str:
    """``name=value,...`` as one safe folder name (a hash is added where characters were replaced)."""
    def text(v: Any) -> str:
        return "+".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    raw = ",".join(f"{k}={text(v)}" for k, v in changed.items())
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", raw)
    if safe != raw or len(safe) > 100:
        safe = safe[:100] + "-" + hashlib.sha1(repr(sorted(changed.items())).encode()).hexdigest()[:8]
    return safe


def _elsewhere(path: Path, params: Mapping[str, Any]) -> tuple[dict[str, Any], Path | None]:
    """The parameters whose value in ``params`` differs from the committed default (names absent
    from ``params`` count as default) and the folder they send the outputs to (None: figures/)."""
    changed = {k: params[k] for k, v in notebook_parameters(path).items() if k in params and not _same(params[k], v)}
    return changed, (ELSEWHERE / path.stem / _slug(changed) if changed else None)


def outputs_for(notebook: Path | str, params: Mapping[str, Any]) -> Path:
    """The folder a run of ``notebook`` (a path to its ``.ipynb``) with ``params`` writes to:
    ``KIT_FIGURES_DIR`` if set; ``figures/`` with the committed defaults; otherwise
    ``build/figures/<notebook>/<name=value,...>/`` naming the parameters that differ."""
    if os.environ.get("KIT_FIGURES_DIR"):
        return Path(os.environ["KIT_FIGURES_DIR"])
    return _elsewhere(Path(notebook), params)[1] or FIGURES


def use_outputs(notebook: str, params: Mapping[str, Any], source: Path | str | None = None) -> Path:
    """Call once right after a notebook's parameters, e.g. ``plots.use_outputs("03_self_aware_inpainting",
    globals())``: with non-default parameters its figures and tables go to ``build/figures/...``
    (printed once), never over the committed ones; returns :func:`figures_dir`."""
    global _chosen
    path = Path(source or NOTEBOOKS) / f"{notebook}.ipynb"
    changed, _chosen = _elsewhere(path, params)
    d = figures_dir()
    if changed and not os.environ.get("KIT_FIGURES_DIR"):
        shown = d.relative_to(REPO) if d.is_relative_to(REPO) else d
        print(f"parameters differ from the committed notebook ({', '.join(f'{k}={v!r}' for k, v in changed.items())}): "
              f"figures and tables go to {shown}/ (figures/ keeps the committed ones; set KIT_FIGURES_DIR to choose)")
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


# ----------------------------------------------------------------------------------
# Tables and plots of bootstrap intervals (lib.core.bootstrap.Estimate)
# ----------------------------------------------------------------------------------

from ..core.bootstrap import METRIC_NAMES, Estimate  # noqa: E402


def _ci_frame(rows: Mapping[str, Mapping[str, Any]] | pd.DataFrame, index_name: str) -> pd.DataFrame:
    """``rows`` as a DataFrame with the row names in the column ``index_name`` (a dict of dicts:
    outer keys are rows; a DataFrame with a non-default index gets it as that column)."""
    if isinstance(rows, pd.DataFrame):
        df = rows.copy()
        if not isinstance(df.index, pd.RangeIndex):
            df = df.rename_axis(df.index.name or index_name).reset_index()
        return df
    if not isinstance(rows, Mapping):
        raise ValueError(f"rows must be a dict {{row name: {{column: Estimate or value}}}} or a DataFrame, "
                         f"got {type(rows).__name__}")
    records = []
    for name, cells in rows.items():
        if not isinstance(cells, Mapping):
            raise ValueError(f"rows[{name!r}] must be a dict {{column: Estimate or value}}, got "
                             f"{type(cells).__name__}")
        records.append({index_name: name, **cells})
    return pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=[index_name])


def ci_table(rows: Mapping[str, Mapping[str, Any]] | pd.DataFrame, digits: int = 3, *,
             index_name: str = "method", metric_names: bool = True) -> pd.DataFrame:
    """A table with every :class:`~lib.core.bootstrap.Estimate` cell as ``"0.912 [0.871, 0.948]"``.

    ``rows``: {row name: {column: Estimate or any value}} (e.g. what ``bootstrap_metrics`` or
    ``evaluate_baselines`` return) or a DataFrame holding Estimates; other cells are kept as they
    are. Row names become the first column ``index_name``; with ``metric_names`` the metric codes
    "I", "P", "O", "A" become "image AUROC" etc. The strings pass :func:`save_table` unchanged.
    """
    df = _ci_frame(rows, index_name)
    for col in df.columns:
        df[col] = df[col].map(lambda v: v.format(digits) if isinstance(v, Estimate) else v)
    if metric_names:
        df = df.rename(columns={k: v for k, v in METRIC_NAMES.items() if k in df.columns})
    return df


def plot_ci(rows: Mapping[str, Mapping[str, Any]] | pd.DataFrame, ax=None, *, kind: str = "bar",
            index_name: str = "method", chance: float | None = 0.5, ylabel: str = "value",
            title: str | None = None, ylim: tuple[float, float] | None = None):
    """Grouped bars (``kind="bar"``) or points (``"point"``) with the bootstrap intervals as error bars.

    ``rows`` as for :func:`ci_table`: one group per column (metric), one colour per row (method);
    only :class:`~lib.core.bootstrap.Estimate` cells are drawn. ``chance`` draws a dashed line
    (0.5: a random AUROC; None: none). Returns the figure.
    """
    if kind not in ("bar", "point"):
        raise ValueError(f"kind={kind!r} is not one of ('bar', 'point')")
    df = _ci_frame(rows, index_name)
    names = df[index_name].astype(str).tolist() if index_name in df.columns else [str(i) for i in df.index]
    cols = [c for c in df.columns if c != index_name and df[c].map(lambda v: isinstance(v, Estimate)).any()]
    if not cols:
        raise ValueError("rows holds no Estimate cell to plot; pass what bootstrap_metrics returns")
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(3.0, 1.1 * len(cols) * max(1, len(names)) ** 0.5 + 1.5), 3.0))
    fig = ax.figure
    width = 0.8 / max(1, len(names))
    x = np.arange(len(cols))
    for j, name in enumerate(names):
        cells = [df[c].iloc[j] for c in cols]
        ok = [isinstance(e, Estimate) for e in cells]
        xs = x[ok] + (j - (len(names) - 1) / 2) * width
        est = [e for e, good in zip(cells, ok) if good]
        vals = np.array([e.value for e in est])
        err = np.array([[e.value - e.low for e in est], [e.high - e.value for e in est]]).clip(min=0)
        if kind == "bar":
            ax.bar(xs, vals, width * 0.9, yerr=err, capsize=3, label=name)
        else:
            ax.errorbar(xs, vals, yerr=err, fmt="o", capsize=3, label=name)
    if chance is not None:
        ax.axhline(chance, color="0.4", ls="--", lw=0.8)
    ax.set_xticks(x, [METRIC_NAMES.get(c, str(c)) for c in cols])
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title, fontsize=9)
    if len(names) > 1:
        ax.legend(fontsize=7, loc="best")
    return fig


__all__ += ["ci_table", "plot_ci"]
