"""The papermill runner: order, parameters, failures named by notebook and cell, exit statuses, threads per
kernel, the environment record, table comparison."""

import json
import os

import nbformat as nbf
import pytest

from lib.tools import reproduce

# a cell that writes what the kernel sees: its profile and its thread settings
PROBE = ("import json, os, pathlib; pathlib.Path(f'{NAME}.json').write_text(json.dumps("
         "{'profile': profile, 'omp': os.environ.get('OMP_NUM_THREADS'), 'mkl': os.environ.get('MKL_NUM_THREADS'), "
         "'figures': os.environ.get('KIT_FIGURES_DIR')}))")


def _nb(path, *sources, params="profile = 'quick'"):
    cells = [nbf.v4.new_code_cell(params)]
    cells[0].metadata["tags"] = ["parameters"]
    cells += [nbf.v4.new_code_cell(s.replace("{NAME}", path.stem)) for s in sources]
    nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                    "language": "python"}})
    nbf.write(nb, path)


@pytest.fixture
def figs(tmp_path, monkeypatch):
    """Hermetic: every figure, table and environment record of these runs goes to a temporary folder."""
    monkeypatch.setenv("KIT_FIGURES_DIR", str(tmp_path / "figs"))
    return tmp_path / "figs"


def test_runs_in_order_and_names_failing_cell(tmp_path, figs):
    src = tmp_path / "nb"
    src.mkdir()
    _nb(src / "01_ok.ipynb", "import pathlib; pathlib.Path('ran.txt').write_text(profile)")
    _nb(src / "02_bad.ipynb", "x = 1", "raise RuntimeError('boom')")
    _nb(src / "03_after.ipynb", "import pathlib; pathlib.Path('after.txt').write_text('ran')")
    assert [p.name for p in reproduce.notebooks(source=src)] == ["01_ok.ipynb", "02_bad.ipynb", "03_after.ipynb"]
    res = reproduce.run("paper", only=["01"], build=tmp_path / "build", source=src)
    assert res[0]["notebook"] == "01_ok.ipynb" and (src / "ran.txt").read_text() == "paper"
    assert (tmp_path / "build" / "01_ok.ipynb").exists()
    with pytest.raises(reproduce.NotebookFailed) as e:
        reproduce.run("quick", build=tmp_path / "build", source=src)
    msg = str(e.value)
    assert "02_bad.ipynb" in msg and "cell 3" in msg and "RuntimeError" in msg and "boom" in msg
    assert str(tmp_path / "build" / "02_bad.ipynb") in msg
    assert not (src / "after.txt").exists(), "a failure stops the run before the next notebook"
    # the sources were not modified by execution
    assert all(c.get("outputs", []) == [] for c in nbf.read(src / "02_bad.ipynb", 4).cells if c.cell_type == "code")


def test_main_turns_errors_into_exit_statuses(tmp_path, figs, capsys):
    src = tmp_path / "nb"
    src.mkdir()
    _nb(src / "01_bad.ipynb", "raise ValueError('no good')")
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--source", str(src), "--build", str(tmp_path / "build")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "FAILED: 01_bad.ipynb, cell 2" in err and "ValueError: no good" in err
    for argv, code, words in ((["--only", "99"], 2, "no such notebook"), (["-p", "seed"], 2, "name=value"),
                              (["--jobs", "0"], 2, "--jobs 0"), (["--profile", "huge"], 2, "invalid choice"),
                              (["--compare", str(tmp_path / "x"), str(tmp_path / "y")], 2, "no tables")):
        with pytest.raises(SystemExit) as e:
            reproduce.main(argv + ["--source", str(src), "--build", str(tmp_path / "build")])
        assert e.value.code == code and words in capsys.readouterr().err, argv


def test_bad_arguments_raise_clear_errors_not_system_exit(tmp_path):
    with pytest.raises(ValueError, match=r"--only \['99'\]: no such notebook .*have: \["):
        reproduce.notebooks(["99"])
    with pytest.raises(FileNotFoundError, match="no numbered notebooks"):
        reproduce.notebooks(source=tmp_path)
    with pytest.raises(ValueError, match="'huge' is unknown; choose one of"):
        reproduce.run("huge", build=tmp_path)
    with pytest.raises(ValueError, match="--jobs 0: .*at least 1"):
        reproduce.run("quick", build=tmp_path, jobs=0)
    for bad in ("seed", "=3", "a b=1"):
        with pytest.raises(ValueError, match="name=value"):
            reproduce.parse_param(bad)
    assert reproduce.parse_param("seed=3") == ("seed", 3)
    assert reproduce.parse_param("categories=grass,brick") == ("categories", "grass,brick")
    assert reproduce.parse_param("data_root=/x=y") == ("data_root", "/x=y")
    with pytest.raises(FileNotFoundError, match="no tables"):
        reproduce.compare(tmp_path / "a", tmp_path / "b")
    assert issubclass(reproduce.NotebookFailed, reproduce.ReproduceError)
    assert not issubclass(reproduce.ReproduceError, SystemExit)


def test_kernel_threads():
    assert reproduce.kernel_threads(1, cpus=8, environ={}) == {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"}
    assert reproduce.kernel_threads(3, cpus=8, environ={})["OMP_NUM_THREADS"] == "2"
    assert reproduce.kernel_threads(4, cpus=2, environ={})["MKL_NUM_THREADS"] == "1"          # never 0
    mine = {"OMP_NUM_THREADS": "6", "MKL_NUM_THREADS": "1"}
    assert reproduce.kernel_threads(1, cpus=2, environ=mine) == mine                          # one job: yours
    assert reproduce.kernel_threads(2, cpus=8, environ=mine) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "1"}


def test_parallel_run_sets_threads_per_kernel_and_records_the_environment(tmp_path, figs, monkeypatch):
    src = tmp_path / "nb"
    src.mkdir()
    for name in ("01_a", "02_b"):
        _nb(src / f"{name}.ipynb", PROBE)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    res = reproduce.run("quick", build=tmp_path / "build", source=src, jobs=2, figures=tmp_path / "given")
    assert [r["notebook"] for r in res] == ["01_a.ipynb", "02_b.ipynb"]
    share = reproduce.kernel_threads(2, environ={})["OMP_NUM_THREADS"]
    for name in ("01_a", "02_b"):
        seen = json.loads((src / f"{name}.json").read_text())
        assert seen == {"profile": "quick", "omp": share, "mkl": "1", "figures": str(tmp_path / "given")}
    # the runner's own environment is left as it was
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["KIT_FIGURES_DIR"] == str(figs)
    record = json.loads((tmp_path / "given" / "tables" / "environment.json").read_text())["notebooks"]
    assert sorted(record) == ["01_a.ipynb", "02_b.ipynb"]
    r = record["01_a.ipynb"]
    assert r["parameters"] == {"profile": "quick"} and r["jobs"] == 2 and r["threads_per_kernel"] == share
    assert r["packages"]["torch"] and r["packages"]["papermill"] and r["python"] and r["cpu"]
    assert {"date", "git_commit", "platform", "gpu"} <= set(r)
    # a later run of one notebook keeps the other's record
    reproduce.run("quick", only=["02"], build=tmp_path / "build", source=src, figures=tmp_path / "given")
    again = json.loads((tmp_path / "given" / "tables" / "environment.json").read_text())["notebooks"]
    assert again["01_a.ipynb"] == r and again["02_b.ipynb"]["jobs"] == 1
    assert not list((tmp_path / "given" / "tables").glob("*.tmp"))


def test_compare_ignores_timings_and_the_environment_record(tmp_path):
    for d, v in (("a", "1"), ("b", "1"), ("c", "2")):
        (tmp_path / d / "tables" / "timing").mkdir(parents=True)
        (tmp_path / d / "tables" / "t.csv").write_text(f"x\n{v}\n")
        (tmp_path / d / "tables" / "timing" / "w.csv").write_text(f"s\n{d}\n")  # timings may differ
        (tmp_path / d / "tables" / "environment.json").write_text(json.dumps({"date": d}))
    assert reproduce.compare(tmp_path / "a", tmp_path / "b") == 0
    assert reproduce.compare(tmp_path / "a", tmp_path / "c") == 1


@pytest.mark.parametrize("path", sorted(reproduce.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.name)
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
