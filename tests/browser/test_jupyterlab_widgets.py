"""The notebooks and their explorers in a real JupyterLab, driven by headless Chromium.

A JupyterLab server is started on 127.0.0.1 (a free port, a random token, its own config, runtime,
settings and workspace folders; no news or update checks; every cell rendered, no windowing) and stopped
at the end whatever happens.

``test_the_notebook_runs_and_its_explorer_redraws_in_jupyterlab`` (one per notebook named by
``KIT_LAB_NOTEBOOKS``, which CI sets to ``all``): open the committed notebook, run every cell
(``notebook:run-all-cells``, the Run menu's command), fail on any cell that raised, then drag the
explorer's first slider and check that its one figure is redrawn in place (a new image, still exactly
one); for notebook 04 also drag t_s past t_b and check that the explorer refuses with a message instead
of drawing. The notebook runs here *instead of* under nbval (conftest.py deselects its nbval cells), and
the executed copy goes to ``KIT_TEST_EXECUTED`` for the book, as nbval's would.

``test_the_lab_check_fails_on_a_deaf_explorer_and_on_a_stale_figure`` runs the same check on three tiny
notebooks written here: a working explorer passes, one whose slider is no longer observed fails (no
redraw), and one that draws each new figure beside the default one fails (two figures).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from lib.core.paths import BUILD, NOTEBOOKS
from lib.show.figures import notebook_parameters
from lib.tools.reproduce import environment, record_run

pytestmark = [pytest.mark.browser]

RUN_TIMEOUT = 1500           # seconds for one notebook's run-all (a slow host takes ~3x this machine)
SHOTS = BUILD / "test-run" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(folder: Path) -> None:
    """User settings: no news or update checks; the notebook renders every cell (no windowing), so a
    cell far down the page is in the document as soon as it has run."""
    for plugin, values in {
            "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
            "notebook-extension/tracker": {"windowingMode": "none"}}.items():
        path = folder / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(tmp_path_factory, browser):
    """A JupyterLab server on loopback serving a fresh folder: yields (base URL, token, root folder)."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "root"
    root.mkdir()
    _settings(home / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTER_DATA_DIR=str(home / "data"))
    log = open(home / "server.log", "w")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}"]
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}: {(home / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer on {base} in 180 s")
                time.sleep(0.3)
        yield base, token, root
    finally:
        try:   # leave the page before its server goes: its reconnect errors must not land in the next test's log
            browser.leave()
        finally:
            server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()


def end_sessions(lab) -> None:
    """Shut down every kernel the server runs (the REST API), so a finished notebook frees its memory and cores."""
    base, token, _ = lab
    auth = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/sessions", headers=auth), timeout=30) as r:
        sessions = json.load(r)
    for session in sessions:
        urllib.request.urlopen(urllib.request.Request(f"{base}/api/sessions/{session['id']}", method="DELETE",
                                                      headers=auth), timeout=60).close()


# every script finds its notebook panel by path (arguments[0]), never as "the current widget": a panel
# restored from an earlier test's workspace must not be the one that is run or read
_FIND = """
const app = window.jupyterapp;
const w = app ? Array.from(app.shell.widgets('main')).find(x => x.context && x.context.path === arguments[0]) : null;
"""

# [kernel status, number of cells, execution counts of the code cells, errors as "cell i: name: value"]
_STATE = _FIND + """
if (!w || !w.context.isReady || !w.sessionContext || !w.content) return ['loading', 0, [], []];
const k = w.sessionContext.session && w.sessionContext.session.kernel;
const cells = w.content.widgets;
const errors = [];     // read output types only: serialising every output (figures) each poll slows the page
cells.forEach((c, i) => { if (c.model.type !== 'code') return; const outs = c.model.outputs;
  for (let j = 0; j < outs.length; j++) if (outs.get(j).type === 'error') {
    const o = outs.get(j).toJSON(); errors.push('cell ' + i + ': ' + o.ename + ': ' + o.evalue); } });
return [k ? k.status : 'no kernel', cells.length,
        cells.filter(c => c.model.type === 'code').map(c => c.model.executionCount), errors];
"""

_RUN_ALL = _FIND + """
app.shell.activateById(w.id);
app.commands.execute('notebook:run-all-cells');
"""

_MARK_EXPLORER = _FIND + """
// the explorer: the cell whose widgets include a slider (tqdm's progress bars are widgets too)
const i = w.content.widgets.findIndex(c => c.model.type === 'code' && c.node.querySelector('.widget-slider .noUi-handle'));
if (i < 0) return -1;
w.content.activeCellIndex = i;
w.content.widgets[i].node.setAttribute('data-kit-explorer', '1');
w.content.scrollToItem(i, 'start');
return i;
"""

_VIEW = """
const cell = document.querySelector('[data-kit-explorer]');
if (!cell) return null;
const imgs = Array.from(cell.querySelectorAll('.jp-OutputArea-output img'));
return {images: imgs.map(i => i.src.length + ':' + i.src.slice(-48)),
        readouts: Array.from(cell.querySelectorAll('.widget-readout')).map(r => r.textContent),
        status: Array.from(cell.querySelectorAll('.widget-html')).map(h => h.textContent).join(' ')};
"""

_SAVE = _FIND + """
const done = arguments[arguments.length - 1];
w.context.save().then(() => done('saved'), e => done('failed: ' + e));
"""


def _poll(browser, script: str, done, timeout: float, *args, every: float = 0.5):
    """Evaluate ``script(*args)`` every ``every`` seconds until ``done(value)``; returns (reached, last value)."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        value = browser.driver.execute_script(script, *args)
        if done(value):
            return True, value
        if time.monotonic() > deadline:
            return False, value
        time.sleep(every)


def _wait(browser, script: str, done, timeout: float, what: str, *args, every: float = 0.5):
    reached, value = _poll(browser, script, done, timeout, *args, every=every)
    if not reached:
        pytest.fail(f"{what}: not reached in {timeout:.0f} s (last state {value})")
    return value


def _drag(browser, handle_index: int, dx: int) -> None:
    from selenium.webdriver import ActionChains

    handles = browser.driver.find_elements("css selector", "[data-kit-explorer] .widget-slider .noUi-handle")
    assert len(handles) > handle_index, f"the explorer has {len(handles)} slider(s)"
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", handles[handle_index])
    ActionChains(browser.driver).click_and_hold(handles[handle_index]).move_by_offset(dx, 0).release().perform()


def run_all(browser, lab, nb_path: Path, timeout: float = RUN_TIMEOUT) -> tuple[list, float]:
    """Open ``nb_path`` (already in the server's root) in JupyterLab and run every cell; returns (the errors
    the cells raised, seconds). Run-all is sent once the document and an idle kernel are ready, and sent
    again if no cell has started 60 s later (at most three times)."""
    base, token, _ = lab
    name = nb_path.name
    n_cells = len(nbformat.read(nb_path, as_version=4).cells)
    t0 = time.monotonic()
    browser.driver.get(f"{base}/lab/tree/{name}?reset&token={token}")     # reset: no earlier workspace
    _wait(browser, _STATE, lambda s: s[0] == "idle" and s[1] == n_cells, 300,
          f"{name}: the notebook's {n_cells} cells and an idle kernel", name)
    for _attempt in range(3):
        browser.driver.execute_script(_RUN_ALL, name)
        started, _ = _poll(browser, _STATE, lambda s: s[0] == "busy" or any(n is not None for n in s[2]) or s[3],
                           60, name)
        if started:
            break
    else:
        pytest.fail(f"{name}: run-all was sent three times and no cell started")
    state = _wait(browser, _STATE, lambda s: s[3] or (s[0] == "idle" and all(n is not None for n in s[2])),
                  timeout, f"{name}: every cell run", name, every=2.0)
    return state[3], time.monotonic() - t0


def check_explorer(browser, name: str, redraw_timeout: float = 120) -> dict:
    """Drag the explorer's first slider by 8 px and check that its one figure is redrawn in place;
    returns the view after the move. Fails (pytest.fail) when nothing is redrawn or a second figure shows."""
    _wait(browser, _MARK_EXPLORER, lambda i: i >= 0, 60, f"{name}: a cell with the explorer's slider", name)
    before = _wait(browser, _VIEW, lambda v: v and len(v["images"]) == 1, 60, f"{name}: the explorer shows one figure")
    _drag(browser, 0, 8)       # a short slider: 8 px is a few steps (t_s stays below t_b in 04)
    after = _wait(browser, _VIEW, lambda v: v and v["readouts"] != before["readouts"] and v["images"] != before["images"],
                  redraw_timeout, f"{name}: the figure redrawn after the slider moved")
    if len(after["images"]) != 1:
        pytest.fail(f"{name}: {len(after['images'])} figures after one move (a stale one stays)")
    return after


def _save_executed(browser, source: Path, copy: Path, seconds: float, errors: list) -> None:
    """Save the notebook from JupyterLab and put it, with its run record, where nbval's copy would go."""
    browser.driver.set_script_timeout(60)
    saved = browser.driver.execute_async_script(_SAVE, copy.name)
    assert saved == "saved", f"{copy.name}: JupyterLab could not save it ({saved})"
    folder = Path(os.environ["KIT_TEST_EXECUTED"])
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{source.name}.tmp"
    shutil.copy(copy, tmp)
    os.replace(tmp, folder / source.name)
    params = notebook_parameters(source)
    record_run(folder, {source.name: {
        "profile": params.get("profile"), "parameters": params, "seconds": round(seconds, 1),
        "status": f"failed ({errors[0]})" if errors else "passed", "figures": os.environ["KIT_FIGURES_DIR"],
        "executed_by": "JupyterLab (pytest, headless Chromium)",
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}, environment())


@pytest.mark.parametrize("number", [pytest.param(n, marks=pytest.mark.lab_notebook(n)) for n in ("01", "02", "03", "04")])
def test_the_notebook_runs_and_its_explorer_redraws_in_jupyterlab(browser, lab, number):
    source = next(NOTEBOOKS.glob(f"{number}_*.ipynb"))
    copy = lab[2] / source.name
    shutil.copy(source, copy)
    try:
        _run_and_explore(browser, lab, source, copy, number)
    finally:
        end_sessions(lab)


def _run_and_explore(browser, lab, source: Path, copy: Path, number: str) -> None:
    t0 = time.monotonic()
    try:
        errors, seconds = run_all(browser, lab, copy)
    except pytest.fail.Exception as e:      # still leave the executed copy (with what ran) for the book
        _save_executed(browser, source, copy, time.monotonic() - t0, [str(e).splitlines()[0]])
        raise
    _save_executed(browser, source, copy, seconds, errors)
    assert not errors, f"{source.name} raised in JupyterLab: {errors}"
    after = check_explorer(browser, source.name)
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(SHOTS / f"lab_{number}.png")
    if number == "04":            # t_s is the first slider, t_b the second: t_s past t_b is refused, not drawn
        _drag(browser, 0, 400)
        refused = _wait(browser, _VIEW, lambda v: v and "not drawn" in v["status"], 60,
                        f"{source.name}: t_s > t_b refused")
        assert refused["images"] == after["images"], "the figure changed although the values were refused"
        browser.screenshot(SHOTS / "lab_04_refused.png")
    print(f"{source.name}: ran in JupyterLab in {seconds:.0f} s; the explorer redrew in place")


_TINY_RENDER = """\
import matplotlib.pyplot as plt
from lib.show import widgets as W

def render(t):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, t]); ax.set_title(f"t = {t}")
    return fig
"""

_TINY_EXPLORERS = {
    "working": 'W.explorer(render, "lab_check_working", t=W.int_slider(50, 0, 100))',
    # the slider is shown but no longer observed: moving it redraws nothing
    "deaf": ('box = W.explorer(render, "lab_check_deaf", t=W.int_slider(50, 0, 100))\n'
             'for c in box.children[0].children:\n    c.unobserve_all()'),
    # the bug of the first explorers: each move draws a new figure below the controls, the default one stays
    "stale": ('import ipywidgets as widgets\nfrom IPython.display import display\n'
              'out, s = widgets.Output(), W.int_slider(50, 0, 100)\n'
              'display(widgets.VBox([s, out])); f = render(50); display(f); plt.close(f)\n'
              'def draw(change):\n    with out:\n        out.clear_output(wait=True); g = render(change.new); '
              'display(g); plt.close(g)\n'
              's.observe(draw, names="value")'),
}


def test_the_lab_check_fails_on_a_deaf_explorer_and_on_a_stale_figure(browser, lab):
    outcome = {}
    for kind, explorer in _TINY_EXPLORERS.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_TINY_RENDER),
                                             nbformat.v4.new_code_cell(explorer)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = lab[2] / f"lab_check_{kind}.ipynb"
        nbformat.write(nb, str(path))
        try:
            errors, _ = run_all(browser, lab, path, timeout=180)
            assert not errors, f"{path.name}: {errors}"
            check_explorer(browser, path.name, redraw_timeout=20)
            outcome[kind] = "passed"
        except pytest.fail.Exception as e:
            outcome[kind] = str(e)
        finally:
            end_sessions(lab)
    assert outcome["working"] == "passed", outcome
    assert "the figure redrawn after the slider moved: not reached" in outcome["deaf"], outcome
    assert "2 figures after one move" in outcome["stale"], outcome
