"""Tables and plots of bootstrap intervals (lib.show.figures.ci_table, plot_ci)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lib.core.bootstrap import Estimate  # noqa: E402
from lib.show import figures as plots  # noqa: E402

ROWS = {"z-score (per pixel)": {"category": "brick", "I": Estimate(0.91234, 0.8714, 0.94849), "n": 18},
        "nearest neighbour (L2)": {"category": "brick", "I": Estimate(0.5, 0.4, 0.6), "n": 18}}


def test_ci_table_formats_estimates_and_keeps_other_cells(tmp_path, monkeypatch):
    df = plots.ci_table(ROWS)
    assert list(df.columns) == ["method", "category", "image AUROC", "n"]
    assert df["image AUROC"].tolist() == ["0.912 [0.871, 0.948]", "0.500 [0.400, 0.600]"]
    assert df["n"].tolist() == [18, 18] and df["method"].iloc[1] == "nearest neighbour (L2)"
    assert plots.ci_table(ROWS, 2, metric_names=False)["I"].iloc[0] == "0.91 [0.87, 0.95]"
    monkeypatch.setenv("KIT_FIGURES_DIR", str(tmp_path))
    plots.save_table(df, "ci")
    back = pd.read_csv(tmp_path / "tables" / "ci.csv")
    assert back.equals(df)  # the strings pass save_table unchanged (quoted in the CSV: they hold commas)
    assert "| 0.912 [0.871, 0.948] |" in (tmp_path / "tables" / "ci.md").read_text()


def test_ci_table_from_a_dataframe_keeps_its_index():
    frame = pd.DataFrame({"I": [Estimate(0.9, 0.8, 1.0)], "note": ["x"]}, index=pd.Index(["m"], name="model"))
    df = plots.ci_table(frame)
    assert df.to_dict("records") == [{"model": "m", "image AUROC": "0.900 [0.800, 1.000]", "note": "x"}]


@pytest.mark.parametrize("kind", ["bar", "point"])
def test_plot_ci_draws_one_errorbar_series_per_row(kind):
    rows = {name: {**cells, "P": Estimate(0.7, 0.6, 0.8)} for name, cells in ROWS.items()}
    fig = plots.plot_ci(rows, kind=kind, title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["image AUROC", "pixel AUROC"]
    assert len(ax.containers) == (4 if kind == "bar" else 2)  # bar: BarContainer + ErrorbarContainer per row
    plt.close(fig)
    with pytest.raises(ValueError, match="no Estimate"):
        plots.plot_ci({"m": {"n": 1}})
    with pytest.raises(ValueError, match="kind"):
        plots.plot_ci(rows, kind="pie")
