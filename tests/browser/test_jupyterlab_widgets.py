"""The notebooks' explorers in a real JupyterLab, driven by headless Chromium.

A JupyterLab server is started on 127.0.0.1 (a free port, a random token, its own config, runtime,
settings and workspace folders; no news or update checks) and stopped at the end whatever happens.
For each notebook: open it, run every cell (``notebook:run-all-cells``, the Run menu's command), check
that no cell raised, then drag the explorer's first slider and check that its one figure is redrawn in
place (a new image, still exactly one); for notebook 04 also drag t_s past t_b and check that the
explorer refuses with a message instead of drawing.

Opt-in: ``KIT_LAB_NOTEBOOKS=default`` runs notebooks 01 and 04 (each executes in full: about 2 min on two
cores), ``=all`` also 02 and 03, or a list (``01,03``). Not yet in CI: in a parallel CI run (pytest-xdist,
one thread per worker) the run-all command was sent but no cell started, and the test waited out its limit.
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

import pytest

from lib.core.paths import BUILD, NOTEBOOKS

pytestmark = [pytest.mark.browser]

DEFAULT: tuple[str, ...] = ()   # opt-in until run-all is reliable under CI load (it did not start in a CI run)
ALL = ("01", "02", "03", "04")
RUN_TIMEOUT = 1500           # seconds for one notebook's run-all (a slow host takes ~3x this machine)
SHOTS = BUILD / "test-run" / "screenshots"


def _chosen() -> tuple[str, ...]:
    value = os.environ.get("KIT_LAB_NOTEBOOKS", "").strip()
    if not value:
        return DEFAULT
    if value == "default":
        return ("01", "04")
    return ALL if value == "all" else tuple(v.strip() for v in value.split(",") if v.strip())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, browser):
    """A JupyterLab server on loopback serving a fresh folder: yields (base URL, token, root folder)."""
    home = tmp_path_factory.mktemp("lab")
    root, settings = home / "root", home / "settings" / "@jupyterlab" / "apputils-extension"
    root.mkdir()
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTER_DATA_DIR=str(home / "data"), KIT_FIGURES_DIR=str(home / "figures"))
    log = open(home / "server.log", "w")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}"]
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}: {(home / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer on {base} in 120 s")
                time.sleep(0.3)
        yield base, token, root
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()


_STATE = """
const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!w || !w.sessionContext || !w.content) return ['loading', null, []];
const k = w.sessionContext.session && w.sessionContext.session.kernel;
const cells = w.content.widgets.filter(c => c.model.type === 'code');
const errors = [];
for (const c of cells) for (const o of c.model.outputs.toJSON())
  if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
return [k ? k.status : 'no kernel', cells.map(c => c.model.executionCount), errors];
"""

_MARK_EXPLORER = """
const w = window.jupyterapp.shell.currentWidget;
const i = w.content.widgets.findIndex(c => c.model.type === 'code' && c.model.outputs.toJSON().some(
  o => o.data && o.data['application/vnd.jupyter.widget-view+json']));
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


def _wait(browser, script: str, done, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = browser.driver.execute_script(script)
        if done(value):
            return value
        time.sleep(0.5)
    pytest.fail(f"{what}: not reached in {timeout:.0f} s (last state {value})")


def _drag(browser, handle_index: int, dx: int) -> None:
    from selenium.webdriver import ActionChains

    handles = browser.driver.find_elements("css selector", "[data-kit-explorer] .widget-slider .noUi-handle")
    assert len(handles) > handle_index, f"the explorer has {len(handles)} slider(s)"
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", handles[handle_index])
    ActionChains(browser.driver).click_and_hold(handles[handle_index]).move_by_offset(dx, 0).release().perform()


@pytest.mark.parametrize("number", ALL)
def test_the_explorer_redraws_its_one_figure_in_place_in_jupyterlab(browser, lab, number):
    if number not in _chosen():
        pytest.skip(f"notebook {number} runs in JupyterLab with KIT_LAB_NOTEBOOKS=all, =default (01 and 04) or "
                    f"a list such as 01,04 (each adds about 2 min)")
    base, token, root = lab
    source = next(NOTEBOOKS.glob(f"{number}_*.ipynb"))
    shutil.copy(source, root / source.name)
    t0 = time.monotonic()
    browser.driver.get(f"{base}/lab/tree/{source.name}?token={token}")
    _wait(browser, _STATE, lambda s: s[0] == "idle", 120, f"{source.name}: kernel ready")
    browser.driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    state = _wait(browser, _STATE, lambda s: s[2] or (s[0] == "idle" and s[1] and all(n is not None for n in s[1])),
                  RUN_TIMEOUT, f"{source.name}: every cell run")
    assert not state[2], f"{source.name} raised in JupyterLab: {state[2]}"
    ran = time.monotonic() - t0
    assert browser.driver.execute_script(_MARK_EXPLORER) >= 0, f"{source.name}: no cell shows an explorer"
    before = _wait(browser, _VIEW, lambda v: v and len(v["images"]) == 1, 60,
                   f"{source.name}: the explorer shows one figure")
    _drag(browser, 0, 8)       # a short slider: 8 px is a few steps (t_s stays below t_b in 04)
    after = _wait(browser, _VIEW, lambda v: v and v["readouts"] != before["readouts"] and v["images"] != before["images"],
                  120, f"{source.name}: the figure redrawn after the slider moved")
    assert len(after["images"]) == 1, f"{source.name}: {len(after['images'])} figures after one move (a stale one stays)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(SHOTS / f"lab_{number}.png")
    if number == "04":            # t_s is the first slider, t_b the second: t_s past t_b is refused, not drawn
        _drag(browser, 0, 400)
        refused = _wait(browser, _VIEW, lambda v: v and "not drawn" in v["status"], 60,
                        f"{source.name}: t_s > t_b refused")
        assert refused["images"] == after["images"], "the figure changed although the values were refused"
        browser.screenshot(SHOTS / "lab_04_refused.png")
    print(f"{source.name}: ran in JupyterLab in {ran:.0f} s; the explorer redrew in place")
