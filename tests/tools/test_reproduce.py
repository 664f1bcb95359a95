"""The papermill runner: order, parameters, failures named by notebook and cell, table comparison."""

import nbformat as nbf
import pytest

from lib.tools import reproduce


def _nb(path, *sources, params="profile = 'quick'"):
    cells = [nbf.v4.new_code_cell(params)]
    cells[0].metadata["tags"] = ["parameters"]
    cells += [nbf.v4.new_code_cell(s) for s in sources]
    nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                    "language": "python"}})
    nbf.write(nb, path)


def test_runs_in_order_and_names_failing_cell(tmp_path, capsys):
    src = tmp_path / "nb"
    src.mkdir()
    _nb(src / "01_ok.ipynb", "import pathlib; pathlib.Path('ran.txt').write_text(profile)")
    _nb(src / "02_bad.ipynb", "x = 1", "raise RuntimeError('boom')")
    assert [p.name for p in reproduce.notebooks(source=src)] == ["01_ok.ipynb", "02_bad.ipynb"]
    res = reproduce.run("paper", only=["01"], build=tmp_path / "build", source=src)
    assert res[0]["notebook"] == "01_ok.ipynb" and (src / "ran.txt").read_text() == "paper"
    assert (tmp_path / "build" / "01_ok.ipynb").exists()
    with pytest.raises(SystemExit) as e:
        reproduce.run("quick", build=tmp_path / "build", source=src)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "02_bad.ipynb" in err and "cell 3" in err and "RuntimeError" in err and "boom" in err
    # the sources were not modified by execution
    assert all(c.get("outputs", []) == [] for c in nbf.read(src / "02_bad.ipynb", 4).cells if c.cell_type == "code")


def test_bad_arguments(tmp_path):
    with pytest.raises(SystemExit, match="no such notebook"):
        reproduce.notebooks(["99"])
    with pytest.raises(SystemExit, match="unknown"):
        reproduce.run("huge", build=tmp_path)
    with pytest.raises(SystemExit, match="name=value"):
        reproduce._parse_param("seed")
    assert reproduce._parse_param("seed=3") == ("seed", 3)


def test_compare(tmp_path):
    for d, v in (("a", "1"), ("b", "1"), ("c", "2")):
        (tmp_path / d / "tables" / "timing").mkdir(parents=True)
        (tmp_path / d / "tables" / "t.csv").write_text(f"x\n{v}\n")
        (tmp_path / d / "tables" / "timing" / "w.csv").write_text(f"s\n{d}\n")  # timings may differ
    assert reproduce.compare(tmp_path / "a", tmp_path / "b") == 0
    assert reproduce.compare(tmp_path / "a", tmp_path / "c") == 1


@pytest.mark.parametrize("path", sorted(reproduce.REPO.joinpath("notebooks").glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda p: p.name)
def test_committed_notebooks_are_clean_and_their_parameters_visible_to_papermill(path):
    """No outputs committed; one `parameters` cell whose every knob papermill can read
    (`papermill --help-notebook`; an '=' inside a comment used to hide a parameter)."""
    import re

    import papermill as pm

    nb = nbf.read(path, as_version=4)
    assert not any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    names = re.findall(r"^(\w+)\s*=", params[0].source, flags=re.M)
    assert names and list(pm.inspect_notebook(str(path))) == names
