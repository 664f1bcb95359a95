"""Packaging: the commands a student uses after the README's install exist, and pyproject.toml, environment.yml,
the constraints file, the README and CI agree with each other."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.core.paths import REPO

BIN = Path(sys.executable).parent          # the environment's scripts (jupyter, papermill, accelerate)
CONSTRAINTS = REPO / "constraints-reproduce.txt"


def _norm(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements) -> set[str]:
    return {_norm(re.split(r"[<>=!~;\[ ]", r.strip(), maxsplit=1)[0]) for r in requirements}


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.mark.parametrize("argv, expect", [
    (["jupyter", "lab", "--version"], r"^\d+\.\d+"),
    (["papermill", "--version"], r"\d+\.\d+"),
    ([sys.executable, "-m", "lib.reproduce", "--help"], r"--jobs"),
    (["accelerate", "--help"], r"launch"),
], ids=["jupyter-lab", "papermill", "lib.reproduce", "accelerate"])
def test_installed_entry_points_run(argv, expect, tmp_path):
    """Run from outside the repository, so the installed package (not the working folder) answers."""
    exe = argv[0] if os.path.isabs(argv[0]) else str(BIN / argv[0]) if (BIN / argv[0]).exists() else shutil.which(argv[0])
    assert exe, f"{argv[0]} is not installed: python -m pip install -e . installs it"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([exe, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(expect, out.stdout, flags=re.M), out.stdout[-2000:]


def test_environment_yml_lists_every_dependency_of_pyproject():
    project = _pyproject()["project"]
    declared = _requirement_names(project["dependencies"]) | _requirement_names(project["optional-dependencies"]["test"])
    assert {"jupyterlab", "accelerate", "papermill", "diffusers", "torch"} <= declared
    yml = (REPO / "environment.yml").read_text()
    listed = {_norm(m) for m in re.findall(r"^\s*-\s+([A-Za-z][A-Za-z0-9_.-]*)\s*(?:[<>=!~]|$)", yml, flags=re.M)}
    assert declared - listed == set(), f"add to environment.yml: {sorted(declared - listed)}"


def test_constraints_pin_every_dependency_exactly():
    lines = [ln.strip() for ln in CONSTRAINTS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    bad = [ln for ln in lines if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*==[A-Za-z0-9_.+!-]+", ln)]
    assert not bad, f"not an exact pin: {bad}"
    pins = {_norm(ln.split("==")[0]): ln.split("==")[1] for ln in lines}
    assert len(pins) == len(lines), "a package is pinned twice"
    project = _pyproject()["project"]
    declared = _requirement_names(project["dependencies"]) | _requirement_names(project["optional-dependencies"]["test"])
    assert declared - set(pins) == set(), f"unpinned: {sorted(declared - set(pins))}"
    assert _norm(project["name"]) not in pins, "the kit itself is installed editable, never pinned"


def test_readme_commands_are_the_ones_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines() if "pip install" in ln]
    assert len(ci) == 1 and f"-c {CONSTRAINTS.name}" in ci[0]
    assert ci[0] in readme, "the README's test command must be the line CI runs"
    assert f"python -m pip install -e . -c {CONSTRAINTS.name} && python -m lib.reproduce" in readme
    assert not re.search(r"\bissues? #?\d+", readme, flags=re.I), "the README speaks of the project, not of issues"
    assert "../shared" not in readme and "shared/seeds" not in readme, "a clone has no shared/ folder"
