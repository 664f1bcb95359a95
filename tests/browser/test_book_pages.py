"""The HTML book (lib.book) opened in headless Chromium: every page loads offline, with no console
error and no failed or outside request, every figure loads and every table is there.

The book is rendered from the notebooks this test session executed under nbval (conftest.py writes
them to ``KIT_TEST_EXECUTED``; these tests run after the notebooks), else from ``build/executed/``
(``python -m lib.reproduce``). It goes to ``build/book/``, its screenshots to ``build/book/screenshots/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from lib.core.paths import BUILD, NOTEBOOKS
from lib.tools import book

pytestmark = [pytest.mark.browser]


def _executed() -> Path:
    for folder in (Path(os.environ["KIT_TEST_EXECUTED"]), BUILD / "executed"):
        if any(folder.glob("[0-9][0-9]_*.ipynb")):
            return folder
    msg = ("no executed notebooks: run the whole suite (python -m pytest runs the notebooks first) "
           "or python -m lib.reproduce")
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def built_book() -> tuple[Path, dict]:
    executed = _executed()
    if os.environ.get("CI") and executed == Path(os.environ["KIT_TEST_EXECUTED"]):
        ran = {p.name for p in executed.glob("[0-9][0-9]_*.ipynb")}
        assert ran == {p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}, f"the suite executed only {sorted(ran)}"
    out = BUILD / "book"
    book.build(executed, out)
    return out, json.loads((out / "book.json").read_text())


@pytest.mark.after_notebooks
def test_every_book_page_loads_offline_with_its_figures_and_tables(browser, built_book, served):
    out, manifest = built_book
    problems = {}
    with served(out) as base:
        for page in manifest["pages"]:
            expect = manifest["notebooks"].get(page, {})
            report = browser.open(f"{base}/{page}")
            browser.screenshot(out / "screenshots" / f"{Path(page).stem}.png")
            found = report.problems(figures=expect.get("figures"), tables=expect.get("tables"))
            if found:
                problems[page] = found
            if page in manifest["notebooks"]:
                assert report.images >= 1, f"{page}: no figure at all"
    assert not problems, f"book pages with problems: {problems}"
    assert len(list((out / "screenshots").glob("*.png"))) == len(manifest["pages"])


@pytest.mark.after_notebooks
def test_the_paper_vs_kit_page_shows_every_table_the_run_wrote(browser, built_book, served):
    out, manifest = built_book
    assert any(n.endswith("_claims") for n in manifest["tables"]), "no claims table in the run"
    with served(out) as base:
        browser.open(f"{base}/tables.html")
        shown = browser.driver.execute_script(
            "return Array.from(document.querySelectorAll('section.kit-table')).map("
            "s => [s.dataset.name, s.querySelectorAll('tbody tr').length])")
    rows = dict(shown)
    assert sorted(rows) == sorted(manifest["tables"])
    assert all(n > 0 for n in rows.values()), {k: v for k, v in rows.items() if not v}


def _tiny_book(tmp: Path) -> Path:
    """A book of one small executed notebook with a figure and a table (for the checks' own tests)."""
    import matplotlib

    matplotlib.use("Agg")
    import base64
    import io

    import matplotlib.pyplot as plt
    import pandas as pd

    fig = plt.figure(figsize=(2, 2))
    plt.plot([0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("plot()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(buf.getvalue()).decode(),
                                                                 "text/plain": "<Figure>"}),
                    nbformat.v4.new_output("display_data", data={"text/html": pd.DataFrame({"a": [1]}).to_html(),
                                                                 "text/plain": "table"})]
    nb.cells = [nbformat.v4.new_markdown_cell("# 99 — a check of the checks\n\nwith $x_t$"), cell]
    (tmp / "executed").mkdir()
    nbformat.write(nb, str(tmp / "executed" / "99_check.ipynb"))
    book.build(tmp / "executed", tmp / "book")
    return tmp / "book"


def test_the_page_check_fails_on_a_missing_figure_and_on_a_web_request(browser, served, tmp_path):
    out = _tiny_book(tmp_path)
    expect = json.loads((out / "book.json").read_text())["notebooks"]["99_check.html"]
    with served(out) as base:
        assert browser.open(f"{base}/99_check.html").problems(**expect) == []
        figure = next((out / "99_check_files").iterdir())
        moved = figure.rename(figure.with_suffix(".gone"))
        broken = browser.open(f"{base}/99_check.html").problems(**expect)
        assert any("did not load" in p for p in broken) and any("HTTP 404" in p for p in broken), broken
        moved.rename(figure)
        page = out / "99_check.html"
        page.write_text(page.read_text().replace("</main>", '<script src="https://cdn.example.org/x.js"></script></main>'))
        outside = browser.open(f"{base}/99_check.html").problems(**expect)
        assert any("outside loopback" in p and "cdn.example.org" in p for p in outside), outside
        shutil.rmtree(out / "99_check_files")
        gone = browser.open(f"{base}/99_check.html").problems(**expect)
        assert gone, "a page whose figures are all missing passed the check"
