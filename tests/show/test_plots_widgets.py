import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lib.show import figures as plots, widgets  # noqa: E402


@pytest.fixture
def figdir(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_FIGURES_DIR", str(tmp_path))
    return tmp_path


def test_tables_csv_md_and_timing_folder(figdir):
    df = pd.DataFrame({"a": [1.23456789, 2.0], "b": ["x", "y"]})
    plots.save_table(df, "t", "caption")
    plots.save_table(df, "w", timing=True)
    assert (figdir / "tables" / "t.csv").read_text() == "a,b\n1.235,x\n2.0,y\n"
    assert (figdir / "tables" / "t.md").read_text().startswith("caption\n\n|")
    assert (figdir / "tables" / "timing" / "w.csv").exists()


def test_savefig_is_byte_identical(figdir):
    def draw():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        return fig
    a = plots.savefig(draw(), "f").read_bytes()
    b = plots.savefig(draw(), "f").read_bytes()
    assert a == b and a[:4] == b"\x89PNG"


def test_explorer_renders_static_default_and_reacts(figdir):
    calls = []

    def render(t, w):
        calls.append((t, w))
        fig, ax = plt.subplots()
        ax.set_title(f"{t} {w}")
        return fig

    box = widgets.explorer(render, "ex", t=widgets.int_slider(5, 0, 10), w=widgets.float_slider(1.0, 0, 2, 0.5))
    assert calls == [(5, 1.0)] and (figdir / "ex.png").exists()
    box.children[0].children[0].value = 7          # moving a slider re-renders with the new value
    assert calls[-1] == (7, 1.0)
    with pytest.raises(ValueError, match="control"):
        widgets.explorer(render, "none")
    assert isinstance(box, ipywidgets.VBox)
