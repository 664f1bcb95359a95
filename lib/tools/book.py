"""A static HTML book of the executed notebooks, readable offline without installing anything.

    python -m lib.reproduce --book               # run every notebook, then render build/book/
    python -m lib.book                           # render build/book/ from build/executed/ as it is
    python -m lib.book --executed DIR --out DIR  # another run's executed copies

The book has an index page (the learning path 01 → 05 and the run's metadata: date, commit,
profile, machine, time per notebook), one page per notebook with its figures and tables, a page of
the paper-vs-kit tables (every notebook's claims table, then every result table the run wrote), and
navigation between them. Nothing is fetched from the web when a page opens: nbconvert's lab template
is used without its require.js, MathJax, mermaid and widget-manager scripts; the markdown's LaTeX is
turned into MathML (which browsers draw natively) by ``latex2mathml``; figures are written next to the
pages as PNG files; ipywidgets explorers appear as their static default figure with a note.

The run's metadata comes from ``<executed>/run.json``, written by ``python -m lib.reproduce`` and by
the test suite's notebook run (``conftest.py``); the tables come from the figures folder it records.
The book is written into a temporary folder and moved into place, so an interrupted build never
leaves a half book behind.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat

from ..core.paths import BUILD, FIGURES, REPO

__all__ = ["BOOK", "EXECUTED", "RUN_RECORD", "WIDGET_VIEW", "BookError", "read_run", "markdown_math",
           "markdown_html", "static_notebook", "notebook_title", "build", "main"]

BOOK = BUILD / "book"
EXECUTED = BUILD / "executed"
RUN_RECORD = "run.json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
TEMPLATES = Path(__file__).with_name("book_template")

CSS = """
body { margin: 0; }
.kit-nav { display: flex; gap: 1.2em; flex-wrap: wrap; align-items: center; padding: 0.6em 1.5em;
  background: #f3f5f7; border-bottom: 1px solid #d0d7de; border-top: 1px solid #d0d7de;
  font-family: system-ui, sans-serif; font-size: 14px; }
.kit-nav a { color: #0b5cad; text-decoration: none; }
.kit-nav .kit-here { font-weight: 600; }
.kit-banner { margin: 1em 1.5em; padding: 0.6em 1em; background: #fffbe6; border: 1px solid #e8d48a;
  font-family: system-ui, sans-serif; font-size: 13px; }
.kit-widget-note { font-family: system-ui, sans-serif; font-size: 13px; color: #57606a; font-style: italic; }
.kit-page { max-width: 72em; margin: 0 auto; padding: 1em 1.5em 3em; font-family: system-ui, sans-serif;
  line-height: 1.45; }
.kit-page table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
.kit-page th, .kit-page td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left;
  vertical-align: top; }
.kit-page th { background: #f3f5f7; }
.kit-page code, .kit-page pre { font-family: ui-monospace, monospace; font-size: 12px; }
.kit-page pre { background: #f6f8fa; padding: 0.6em; overflow-x: auto; }
.kit-agrees { background: #e6f4ea; }
.kit-contradicts { background: #fde7e9; }
.kit-unresolved { background: #f1f1f1; }
.kit-tex { color: #57606a; }
math[display="block"] { margin: 0.6em 0; }
"""


class BookError(Exception):
    """The book cannot be built from what is there (no executed notebooks, an unreadable one)."""


# ---------------------------------------------------------------------------------------------
# Markdown with math, without MathJax
# ---------------------------------------------------------------------------------------------

_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)
_MATH = re.compile(r"\$\$(?P<block>.+?)\$\$|(?<![\\$\w])\$(?=[^\s$])(?P<inline>[^$\n]+?)(?<=\S)\$(?![\w$])", re.S)


def _mathml(tex: str, display: bool) -> str:
    """``tex`` as a MathML element (latex2mathml), or the TeX in a code span where it does not convert."""
    from latex2mathml.converter import convert

    try:
        return convert(tex.strip(), display="block" if display else "inline")
    except Exception:   # an expression latex2mathml does not know: show the source rather than fail
        delim = "$$" if display else "$"
        return f'<code class="kit-tex">{html.escape(delim + tex + delim)}</code>'


def markdown_math(text: str, start: int = 0) -> tuple[str, dict[str, tuple[str, str]]]:
    """Replace ``$…$`` and ``$$…$$`` outside code with placeholder words; returns the text and
    ``{placeholder: (MathML, TeX)}`` to put back after the markdown is rendered."""
    found: dict[str, tuple[str, str]] = {}

    def swap(m: re.Match) -> str:
        key = f"KITMATH{start + len(found)}X"
        block = m.group("block")
        tex = block if block is not None else m.group("inline")
        found[key] = (_mathml(tex, block is not None), tex.strip())
        return key

    parts = _CODE.split(text)
    return "".join(p if i % 2 else _MATH.sub(swap, p) for i, p in enumerate(parts)), found


_TAG = re.compile(r"(<[^>]*>)")
_KEY = re.compile(r"KITMATH\d+X")


def _put_back(rendered: str, found: Mapping[str, tuple[str, str]]) -> str:
    """Placeholders in text become MathML; inside a tag (a heading's id, an anchor's href) the bare TeX
    letters, so that attributes stay valid."""
    def in_tag(m: re.Match) -> str:
        tex = found.get(m.group(0), ("", m.group(0)))[1]
        return re.sub(r"[^A-Za-z0-9_-]+", "", tex.replace("\\", ""))

    parts = _TAG.split(rendered)
    return "".join(_KEY.sub(in_tag, part) if i % 2 else _KEY.sub(lambda m: found.get(m.group(0), (m.group(0),))[0], part)
                   for i, part in enumerate(parts))


def markdown_html(text: str) -> str:
    """Markdown → HTML the way the book renders it (nbconvert's markdown filter, math as MathML)."""
    from nbconvert.filters import markdown2html_mistune

    swapped, found = markdown_math(text)
    return _put_back(markdown2html_mistune(swapped), found)


# ---------------------------------------------------------------------------------------------
# Notebooks
# ---------------------------------------------------------------------------------------------

def static_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` without live widgets: the widget state is dropped and every widget view becomes
    a one-line note (the explorer's default figure, displayed right after it, stays)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.metadata.pop("widgets", None)
    note = ("<p class=\"kit-widget-note\">Interactive controls (ipywidgets) were here: open the notebook in "
            "JupyterLab to move them. The figure below is their default view.</p>")
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if WIDGET_VIEW in out.get("data", {}):
                out["data"] = {"text/html": note, "text/plain": "[interactive controls]"}
    return nb


def notebook_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The first markdown heading of ``nb`` (without the ``#``), else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return fallback


def _summary(nb: nbformat.NotebookNode) -> str:
    """The first paragraph after the title, as markdown."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            paras = [p.strip() for p in cell.source.split("\n\n") if p.strip() and not p.lstrip().startswith("#")]
            return paras[0] if paras else ""
    return ""


def read_run(executed: Path) -> dict[str, Any]:
    """``<executed>/run.json`` (the run's environment and per-notebook records), or ``{}`` where absent."""
    try:
        data = json.loads((Path(executed) / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _nav(pages: list[tuple[str, str]], here: str) -> str:
    """The navigation bar: index, each notebook, the tables page, and previous / next."""
    names = [p for p, _ in pages]
    i = names.index(here) if here in names else -1
    links = [f'<a href="{_esc(p)}"{" class=kit-here" if p == here else ""}>{_esc(label)}</a>' for p, label in pages]
    prev_next = []
    if i > 0:
        prev_next.append(f'<a href="{_esc(names[i - 1])}" rel="prev">← previous</a>')
    if 0 <= i < len(names) - 1:
        prev_next.append(f'<a href="{_esc(names[i + 1])}" rel="next">next →</a>')
    return f'<nav class="kit-nav">{" ".join(links)}<span style="flex:1"></span>{" ".join(prev_next)}</nav>'


def _record_line(rec: Mapping[str, Any]) -> str:
    if not rec:
        return "run record: not found (the executed copy came without run.json)"
    params = rec.get("parameters") or {}
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "the committed parameters"
    return (f"executed by {_esc(rec.get('executed_by', '?'))} with profile <b>{_esc(rec.get('profile', '?'))}</b> "
            f"({_esc(shown)}) in {_esc(rec.get('seconds', '?'))} s; status: {_esc(rec.get('status', '?'))}")


def _render_notebook(path: Path, out: Path, nav: str, rec: Mapping[str, Any]) -> tuple[Path, int, int]:
    """Write ``<out>/<stem>.html`` and its figures (``<stem>_files/``); returns (page, figures, tables)."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExtractOutputPreprocessor

    try:
        nb = static_notebook(nbformat.read(str(path), as_version=4))
    except Exception as e:
        raise BookError(f"{path}: not a readable notebook ({type(e).__name__}: {e}); re-run it with "
                        f"python -m lib.reproduce --only {path.stem[:2]}") from None
    found: dict[str, tuple[str, str]] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source, more = markdown_math(cell.source, start=len(found))
            found.update(more)
        for o in cell.get("outputs", []):
            if "text/markdown" in o.get("data", {}):
                o["data"]["text/markdown"], more = markdown_math(o["data"]["text/markdown"], start=len(found))
                found.update(more)
    resources = {"unique_key": path.stem, "output_files_dir": f"{path.stem}_files", "outputs": {},
                 "kit_book_css": CSS, "kit_nav": nav,
                 "kit_banner": f'<div class="kit-banner">{_record_line(rec)}</div>'}
    extract = ExtractOutputPreprocessor(output_filename_template="{cell_index}_{index}{extension}")
    nb, resources = extract.preprocess(nb, resources)
    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATES)], template_name="kit_book")
    exporter.log.setLevel(logging.ERROR)    # "alternative text is missing": figures get nbconvert's default alt
    body, resources = exporter.from_notebook_node(nb, resources)
    body = _put_back(body, found)
    for name, data in resources.get("outputs", {}).items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    page = out / f"{path.stem}.html"
    page.write_text(body, encoding="utf-8")
    n_tables = sum("<table" in "".join(o.get("data", {}).get("text/html", ""))
                   for c in nb.cells for o in c.get("outputs", []))
    return page, len(resources.get("outputs", {})), n_tables


# ---------------------------------------------------------------------------------------------
# Tables page and index
# ---------------------------------------------------------------------------------------------

def _status_class(text: str) -> str:
    t = text.lower()
    if "contradicts" in t:
        return "kit-contradicts"
    if "not resolved" in t:
        return "kit-unresolved"
    if "agrees" in t or t.strip() == "holds":
        return "kit-agrees"
    return ""


def _table_html(csv: Path) -> str:
    """One result table (``tables/<name>.csv``) with the caption from its ``.md`` twin."""
    import pandas as pd

    df = pd.read_csv(csv, keep_default_na=False)
    md = csv.with_suffix(".md")
    caption = ""
    if md.exists():
        lines = md.read_text(encoding="utf-8").split("\n|", 1)[0].strip()
        caption = "" if lines.startswith("|") else lines
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    rows = []
    for row in df.itertuples(index=False):
        cells = []
        for col, v in zip(df.columns, row):
            cls = _status_class(str(v)) if str(col).lower() == "status" else ""
            cells.append(f'<td class="{cls}">{_esc(v)}</td>' if cls else f"<td>{_esc(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<p>{markdown_html(caption)}</p>" if caption else ""
    return (f'<section class="kit-table" data-name="{_esc(csv.stem)}"><h3 id="{_esc(csv.stem)}">{_esc(csv.stem)}</h3>'
            f'{cap}<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _page(title: str, nav: str, content: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1.0"><link rel="icon" href="data:,"><title>{_esc(title)}</title>'
            f'<style>{CSS}</style></head><body>{nav}<main class="kit-page">{content}</main>{nav}</body></html>\n')


def _tables(folders: list[Path], stems: list[str]) -> tuple[str, list[str]]:
    """The paper-vs-kit page's content and the names of the tables on it."""
    csvs: dict[str, Path] = {}
    for folder in folders:
        for csv in sorted((Path(folder) / "tables").glob("*.csv")):
            if csv.stem[:2] in {s[:2] for s in stems}:
                csvs.setdefault(csv.stem, csv)
    claims = [csvs[n] for n in sorted(csvs) if n.endswith("_claims")]
    rest = [csvs[n] for n in sorted(csvs) if not n.endswith("_claims")]
    parts = ["<h1>Paper vs kit</h1>",
             "<p>Every claims table first: what the paper says, what this run measured (with its 95 % bootstrap "
             "interval) and whether the kit's uncertainty resolves it. Then every result table the run wrote, "
             "grouped by notebook. All numbers were computed by this run; on the synthetic embedded benchmark "
             "unless a table says otherwise.</p>", "<h2>Claims</h2>"]
    parts += [_table_html(c) for c in claims] or ["<p>No claims tables were written by this run.</p>"]
    for stem in stems:
        mine = [c for c in rest if c.stem[:2] == stem[:2]]
        if mine:
            parts.append(f'<h2>{_esc(stem)}</h2>')
            parts += [_table_html(c) for c in mine]
    return "".join(parts), [c.stem for c in claims + rest]


def _index(entries: list[dict[str, Any]], run: Mapping[str, Any]) -> str:
    env = run.get("environment") or {}
    steps = []
    for e in entries:
        rec = e["record"]
        secs = f"{rec['seconds']} s" if "seconds" in rec else "time not recorded"
        steps.append(f'<li><a href="{_esc(e["page"])}"><b>{_esc(e["title"])}</b></a> '
                     f'<small>({secs}, {_esc(rec.get("status", "status not recorded"))})</small>'
                     f'<div>{markdown_html(e["summary"])}</div></li>')
    pk = env.get("packages") or {}
    facts = [("date (UTC)", env.get("date")), ("commit", env.get("git_commit")),
             ("profile", ", ".join(sorted({str(e["record"].get("profile", "?")) for e in entries}))),
             ("executed by", ", ".join(sorted({str(e["record"].get("executed_by", "?")) for e in entries}))),
             ("machine", f'{env.get("cpu", "?")}, {env.get("cpu_count", "?")} cores; GPU: {env.get("gpu") or "none"}'),
             ("platform", f'{env.get("platform", "?")}, Python {env.get("python", "?")}'),
             ("versions", ", ".join(f"{k} {v}" for k, v in pk.items() if v))]
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in facts)
    times = "".join(f'<tr><td><a href="{_esc(e["page"])}">{_esc(e["stem"])}</a></td>'
                    f'<td>{_esc(e["record"].get("seconds", "?"))}</td><td>{_esc(e["record"].get("status", "?"))}</td>'
                    f'<td>{e["figures"]}</td><td>{e["tables"]}</td></tr>' for e in entries)
    total = sum(float(e["record"].get("seconds", 0) or 0) for e in entries)
    return ("<h1>Diffusion models for industrial visual inspection — the executed notebooks</h1>"
            "<p>A reproducible study and teaching kit. Every figure and number on these pages was computed by the "
            "run described below (<code>python -m lib.reproduce --book</code>); most run on the kit's synthetic "
            "embedded benchmark with small models, and the pages label where that is so. The interactive "
            "explorers appear as their default figure: open the notebooks in JupyterLab to move them.</p>"
            f'<h2>Learning path</h2><ol>{"".join(steps)}</ol>'
            '<p><a href="tables.html"><b>Paper vs kit</b></a>: every claims table and result table of the run.</p>'
            f"<h2>The run</h2><table>{rows}</table>"
            "<table><thead><tr><th>notebook</th><th>seconds</th><th>status</th><th>figures</th><th>tables shown</th>"
            f"</tr></thead><tbody>{times}</tbody></table><p>Total: {total:.0f} s.</p>")


def build(executed: Path = EXECUTED, out: Path = BOOK) -> list[Path]:
    """Render every executed notebook ``NN_*.ipynb`` of ``executed`` into ``out`` (index.html, one page per
    notebook, tables.html); the folder is replaced whole, atomically. Returns the pages written."""
    executed, out = Path(executed), Path(out)
    notebooks = sorted(executed.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise BookError(f"no executed notebooks (NN_name.ipynb) in {executed}: run python -m lib.reproduce first "
                        f"(or point --executed at a folder of executed copies)")
    run = read_run(executed)
    records = run.get("notebooks") or {}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        nbs = {p: nbformat.read(str(p), as_version=4) for p in notebooks}
        pages = [("index.html", "Index")] + [(f"{p.stem}.html", p.stem[:2]) for p in notebooks] + \
                [("tables.html", "Paper vs kit")]
        entries = []
        for p in notebooks:
            rec = records.get(p.name) or {}
            page, n_fig, n_tab = _render_notebook(p, tmp, _nav(pages, f"{p.stem}.html"), rec)
            entries.append({"stem": p.stem, "page": page.name, "title": notebook_title(nbs[p], p.stem),
                            "summary": _summary(nbs[p]), "record": rec, "figures": n_fig, "tables": n_tab})
            print(f"book: {p.name} -> {page.name} ({n_fig} figures, {n_tab} tables)", flush=True)
        folders = [Path(r["figures"]) for r in records.values() if r.get("figures")]
        folders = list(dict.fromkeys(folders)) or [FIGURES]
        content, names = _tables(folders, [p.stem for p in notebooks])
        (tmp / "tables.html").write_text(_page("Paper vs kit", _nav(pages, "tables.html"), content), encoding="utf-8")
        (tmp / "index.html").write_text(_page("The executed notebooks", _nav(pages, "index.html"),
                                              _index(entries, run)), encoding="utf-8")
        manifest = {"pages": [p for p, _ in pages], "tables": names,
                    "notebooks": {e["page"]: {"figures": e["figures"], "tables": e["tables"]} for e in entries},
                    "executed": str(executed), "run": run.get("environment", {})}
        (tmp / "book.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    print(f"book: {len(pages)} pages in {shown}/ — open {shown}/index.html in a browser (no network needed)")
    return [out / p for p, _ in pages]


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.book``: errors become a message on stderr and exit status 2."""
    p = argparse.ArgumentParser(prog="python -m lib.book", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--executed", type=Path, default=EXECUTED, help="the executed notebooks (default build/executed)")
    p.add_argument("--out", type=Path, default=BOOK, help="where the book goes (default build/book)")
    a = p.parse_args(argv)
    try:
        build(a.executed, a.out)
    except BookError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
