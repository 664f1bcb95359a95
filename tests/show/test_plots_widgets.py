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


def test_explorer_redraws_one_figure_in_place_and_refuses_invalid_values(figdir, monkeypatch):
    from IPython.core import display_functions

    shown, updated = [], []
    real_display = display_functions.display

    class Handle:
        def update(self, obj):
            updated.append(obj)

    def fake_display(obj, display_id=None, **kw):
        shown.append(obj)
        return Handle() if display_id else None

    monkeypatch.setattr(widgets, "display", fake_display)
    calls = []

    def render(t_s, t_b):
        calls.append((t_s, t_b))
        return plt.figure()

    box = widgets.explorer(render, "order", check=lambda t_s, t_b: None if t_s <= t_b else f"t_s={t_s} > t_b={t_b}",
                           t_s=widgets.int_slider(2, 0, 10), t_b=widgets.int_slider(5, 0, 10))
    assert len(shown) == 2 and calls == [(2, 5)]            # the controls, then one figure
    box.children[0].children[0].value = 4
    assert len(updated) == 1 and len(shown) == 2            # the same figure, updated in place
    box.children[0].children[0].value = 8                   # t_s > t_b: refused and said so, nothing drawn
    assert len(updated) == 1 and "not drawn" in box.children[1].value and "t_s=8" in box.children[1].value
    box.children[0].children[1].value = 9
    assert len(updated) == 2 and box.children[1].value == ""
    with pytest.raises(ValueError, match="default values are invalid"):
        widgets.explorer(render, "bad", check=lambda t_s, t_b: "no", t_s=widgets.int_slider(2, 0, 10),
                         t_b=widgets.int_slider(5, 0, 10))
    assert real_display is display_functions.display
