"""Shared pytest set-up.

- Figures and tables of a test run go to a temporary folder, never over the committed figures/
  (the kernels nbval starts inherit ``KIT_FIGURES_DIR``).
- The notebooks nbval executes are written, with their outputs, to ``KIT_TEST_EXECUTED``
  (default ``build/test-run/executed/``, with ``run.json``): the browser tests render that run as the
  HTML book, so CI executes every notebook once for both, and a notebook that fails leaves its
  executed copy with the traceback.
- Tests marked ``after_notebooks`` (the book's browser tests) run after the notebooks. Run side by side
  (``pytest -n auto``, pytest-xdist) the order across workers is not kept, so CI runs them as a second
  step: ``KIT_LAB_NOTEBOOKS=all python -m pytest -n auto --dist loadfile -m "not after_notebooks" &&
  python -m pytest -m after_notebooks``
  (``--dist loadfile``: a notebook's cells share one kernel, so they must all run on the same worker).
- Under pytest-xdist each worker (and every kernel or server it starts) gets an equal share of the
  cores as ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` unless they are set, so workers do not oversubscribe.
- ``KIT_LAB_NOTEBOOKS`` (``all``, or a list such as ``01,04``; unset: none) names the notebooks that run in
  JupyterLab (tests/browser/test_jupyterlab_widgets.py: every cell, then the explorer's slider) *instead of*
  under nbval, so each notebook still executes once per run and lands in ``KIT_TEST_EXECUTED``.
- ``--dist loadfile`` keeps a file's tests on one worker; here each JupyterLab notebook is a unit of its own
  and the long units (the notebooks) are queued first, longest first, so two workers finish together.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

os.environ.setdefault("KIT_FIGURES_DIR", tempfile.mkdtemp(prefix="kit-test-figures-"))
os.environ.setdefault("KIT_TEST_EXECUTED", str(Path(__file__).resolve().parent / "build" / "test-run" / "executed"))
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _share)

LAB_NOTEBOOKS = ("01", "02", "03", "04")       # the notebooks with an explorer (05 has none)
# notebooks by run time, longest first (serial papermill on 2 cores, 2026-12-04: 03 188 s, 02 145 s, 05 141 s,
# 01 123 s, 04 98 s); it only orders the work queue, so a stale order costs wall time, never a result
LONG_FIRST = ("03", "02", "05", "01", "04")

_runs: dict[Path, dict] = {}      # notebook path -> {"seconds", "failed", "count"}
_environment: dict = {}           # lib.tools.reproduce.environment(), taken once
_parameters: dict[Path, dict] = {}   # notebook path -> its committed parameters, read once


def pytest_configure(config):
    dist = getattr(config.option, "dist", "no")
    if getattr(config.option, "numprocesses", None) and dist not in ("loadfile", "loadscope", "loadgroup", "no"):
        raise pytest.UsageError(f"--dist {dist}: a notebook's cells share one kernel and must run on one worker; "
                                f"add --dist loadfile (e.g. python -m pytest -n auto --dist loadfile)")
    config.addinivalue_line("markers", "after_notebooks: runs after every notebook (it reads what they wrote)")
    config.addinivalue_line("markers", "browser: needs Debian's chromium and chromium-driver")
    config.addinivalue_line("markers", "lab_notebook(number): runs that notebook in JupyterLab (KIT_LAB_NOTEBOOKS)")


def lab_notebooks() -> tuple[str, ...]:
    """The notebooks ``KIT_LAB_NOTEBOOKS`` sends to JupyterLab: ``all``, a list (``01,04``), or none when unset."""
    value = os.environ.get("KIT_LAB_NOTEBOOKS", "").strip()
    if value in ("", "none"):
        return ()
    chosen = LAB_NOTEBOOKS if value == "all" else tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = sorted(set(chosen) - set(LAB_NOTEBOOKS))
    if unknown:
        raise pytest.UsageError(f"KIT_LAB_NOTEBOOKS={value!r}: {', '.join(unknown)} have no explorer to test in "
                                f"JupyterLab; use 'all' or a comma-separated list of {', '.join(LAB_NOTEBOOKS)}")
    return chosen


def _notebook_number(item) -> str | None:
    """'03' for a cell of notebooks/03_*.ipynb or a test marked ``lab_notebook("03")``, else None."""
    mark = item.get_closest_marker("lab_notebook")
    if mark:
        return mark.args[0]
    return Path(str(item.parent.fspath)).name[:2] if _is_nbval_cell(item) else None


def pytest_collection_modifyitems(session, config, items):
    """Run each notebook once (in JupyterLab if ``KIT_LAB_NOTEBOOKS`` names it, else under nbval), queue the
    notebooks first, longest first, and move the ``after_notebooks`` tests behind every notebook."""
    in_lab = lab_notebooks()
    drop = [it for it in items if _is_nbval_cell(it) and _notebook_number(it) in in_lab]
    drop += [it for it in items if it.get_closest_marker("lab_notebook") and _notebook_number(it) not in in_lab]
    if drop:
        config.hook.pytest_deselected(items=drop)
        gone = set(map(id, drop))
        items[:] = [it for it in items if id(it) not in gone]

    def rank(pair):
        i, it = pair
        number = _notebook_number(it)
        if it.get_closest_marker("after_notebooks"):
            return (2, 0, i)
        if number in LONG_FIRST:
            return (0, LONG_FIRST.index(number), i)
        return (1, 0, i)

    items[:] = [it for _, it in sorted(enumerate(items), key=rank)]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with each JupyterLab notebook its own unit, queued in collection order (long first)."""
    if getattr(config.option, "dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongFirstLoadFile(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if "test_jupyterlab_widgets.py::test_the_notebook_runs" in nodeid:
                return nodeid
            return super()._split_scope(nodeid)

    config.option.loadscopereorder = False      # keep the collection order: the long notebooks first
    return LongFirstLoadFile(config, log)


def _is_nbval_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item, "test_outputs")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """After each notebook cell nbval ran, store its outputs in the notebook and write the executed copy."""
    outcome = yield
    if call.when != "call" or not _is_nbval_cell(item):
        return
    report = outcome.get_result()
    path = Path(str(item.parent.fspath))
    run = _runs.setdefault(path, {"seconds": 0.0, "failed": None, "count": 0})
    run["seconds"] += call.duration
    run["count"] += 1
    item.cell.outputs = list(item.test_outputs or [])
    item.cell.execution_count = run["count"]
    for out in item.cell.outputs:
        if out.get("output_type") == "execute_result":
            out["execution_count"] = run["count"]
    if report.failed and run["failed"] is None:
        run["failed"] = item.name
    _write_executed(path, item.parent.nb, run)


def _write_executed(path: Path, nb, run: dict) -> None:
    import nbformat

    from lib.show.figures import notebook_parameters
    from lib.tools.reproduce import environment, record_run

    folder = Path(os.environ["KIT_TEST_EXECUTED"])
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    tmp = target.with_name(f".{target.name}.tmp")
    nbformat.write(nb, str(tmp))
    os.replace(tmp, target)
    if not _environment:
        _environment.update(environment())
    if path not in _parameters:
        _parameters[path] = notebook_parameters(path)
    params = _parameters[path]
    record_run(folder, {path.name: {"profile": params.get("profile"), "parameters": params,
                                    "seconds": round(run["seconds"], 1),
                                    "status": f"failed ({run['failed']})" if run["failed"] else "passed",
                                    "figures": os.environ["KIT_FIGURES_DIR"], "executed_by": "nbval (pytest)",
                                    "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}},
               _environment)
