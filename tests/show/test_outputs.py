"""Where figures and tables go: figures/ with a notebook's committed parameters, build/figures/<notebook>/<name=value>/
with any other, KIT_FIGURES_DIR above both (lib.show.figures.use_outputs)."""

import json
import shutil
import subprocess

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat as nbf  # noqa: E402
import pandas as pd  # noqa: E402
import papermill as pm  # noqa: E402
import pytest  # noqa: E402

from lib.core.paths import NOTEBOOKS  # noqa: E402
from lib.show import figures as plots  # noqa: E402

PARAMS = 'profile = "quick"   # a comment\ndata_root = None\nseed = 0\nretrain = False\nw = 1.0\n'
DEFAULTS = {"profile": "quick", "data_root": None, "seed": 0, "retrain": False, "w": 1.0}


def _write_nb(path, params=PARAMS):
    cell = nbf.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nbf.write(nbf.v4.new_notebook(cells=[nbf.v4.new_markdown_cell("# t"), cell, nbf.v4.new_code_cell("x = 1")]), path)
    return path


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A notebook folder and figures/ and build/figures/ of a throw-away repository; KIT_FIGURES_DIR unset."""
    monkeypatch.delenv("KIT_FIGURES_DIR", raising=False)
    monkeypatch.setattr(plots, "FIGURES", tmp_path / "figures")
    monkeypatch.setattr(plots, "ELSEWHERE", tmp_path / "build" / "figures")
    monkeypatch.setattr(plots, "_chosen", None)
    (tmp_path / "nb").mkdir()
    _write_nb(tmp_path / "nb" / "01_x.ipynb")
    return tmp_path


def _save_both():
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    png = plots.savefig(fig, "f")
    plt.close(fig)
    return png, plots.save_table(pd.DataFrame({"a": [1.5]}), "t")


def test_default_parameters_write_figures_and_print_nothing(place, capsys):
    assert plots.notebook_parameters(place / "nb" / "01_x.ipynb") == DEFAULTS
    running = {**DEFAULTS, "w": 1, "__name__": "__main__", "other": object()}   # 1 == 1.0; non-parameters ignored
    assert plots.use_outputs("01_x", running, source=place / "nb") == place / "figures"
    assert capsys.readouterr().out == ""
    png, csv = _save_both()
    assert png == place / "figures" / "f.png" and csv == place / "figures" / "tables" / "t.csv"
    assert plots.outputs_for(place / "nb" / "01_x.ipynb", {"profile": "quick"}) == place / "figures"


def test_other_parameters_write_to_build_and_say_where(place, capsys):
    d = plots.use_outputs("01_x", {**DEFAULTS, "seed": 1}, source=place / "nb")
    assert d == place / "build" / "figures" / "01_x" / "seed=1"
    out = capsys.readouterr().out
    assert out.count("seed=1") == 2 and str(d) in out and "figures/ keeps the committed ones" in out
    png, csv = _save_both()
    assert png.parent == d and csv.parent == d / "tables"
    assert not (place / "figures").exists(), "the committed figures must stay untouched"
    assert plots.outputs_for(place / "nb" / "01_x.ipynb", {"seed": 1}) == d
    # back to the defaults in the same kernel: figures/ again
    assert plots.use_outputs("01_x", DEFAULTS, source=place / "nb") == place / "figures"


def test_kinds_of_values_and_folder_names(place, capsys):
    nb = place / "nb" / "01_x.ipynb"
    assert plots.outputs_for(nb, {"retrain": 0}).name == "retrain=0"          # 0 is not False
    assert plots.outputs_for(nb, {"seed": "0"}).name == "seed=0"              # the string "0" is not 0
    assert plots.outputs_for(nb, {"profile": "paper", "seed": 2}).name == "profile=paper,seed=2"
    a = plots.outputs_for(nb, {"data_root": "/data/mvtec ad"})
    b = plots.outputs_for(nb, {"data_root": "/data/mvtec_ad"})
    assert a.parent == b.parent == place / "build" / "figures" / "01_x"     # one folder, never a path escape
    assert a != b and a.name.startswith("data_root=_data_mvtec_ad-") and "/" not in a.name


def test_kit_figures_dir_wins(place, monkeypatch, capsys):
    monkeypatch.setenv("KIT_FIGURES_DIR", str(place / "mine"))
    assert plots.use_outputs("01_x", {**DEFAULTS, "seed": 1}, source=place / "nb") == place / "mine"
    assert capsys.readouterr().out == ""
    assert plots.outputs_for(place / "nb" / "01_x.ipynb", {"seed": 1}) == place / "mine"
    assert _save_both()[1] == place / "mine" / "tables" / "t.csv"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_an_edited_and_saved_parameters_cell_is_not_the_default(place):
    """JupyterLab autosaves: seed = 1 typed into the parameters cell must not overwrite the committed seed-0 tables."""
    nb = place / "nb" / "01_x.ipynb"
    git = ["git", "-C", str(place / "nb"), "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", nb.name], ["commit", "-q", "-m", "nb"]):
        subprocess.run(git + cmd, check=True, capture_output=True)
    _write_nb(nb, PARAMS.replace("seed = 0", "seed = 1"))
    assert plots.notebook_parameters(nb)["seed"] == 0
    assert plots.use_outputs("01_x", {**DEFAULTS, "seed": 1}, source=place / "nb").name == "seed=1"


def test_bad_notebooks(place):
    with pytest.raises(FileNotFoundError, match="02_missing"):
        plots.use_outputs("02_missing", DEFAULTS, source=place / "nb")
    _write_nb(place / "nb" / "03_y.ipynb", "seed = 0\nn = len('ab')\n")
    with pytest.raises(ValueError, match="parameter n = len"):
        plots.notebook_parameters(place / "nb" / "03_y.ipynb")
    nb = json.loads((place / "nb" / "01_x.ipynb").read_text())
    nb["cells"][1]["metadata"]["tags"] = []
    (place / "nb" / "04_z.ipynb").write_text(json.dumps(nb))
    with pytest.raises(ValueError, match="one code cell tagged 'parameters', found 0"):
        plots.notebook_parameters(place / "nb" / "04_z.ipynb")


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.name)
def test_every_notebook_chooses_its_outputs_right_after_its_parameters(path):
    """The committed notebooks: the parameters cell reads as papermill reads it, and the cell after it calls
    ``plots.use_outputs("<notebook>", globals())`` before anything is drawn."""
    assert list(plots.notebook_parameters(path)) == list(pm.inspect_notebook(str(path)))
    cells = nbf.read(path, as_version=4).cells
    i = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    setup = cells[i + 1].source
    assert f'plots.use_outputs("{path.stem}", globals())' in setup
    assert not any(w in setup.split("use_outputs")[0] for w in ("savefig", "save_table", "figures_dir"))
