"""Re-execute every notebook in order with papermill and regenerate every figure and table.

    python -m lib.reproduce                      # profile "quick" (CPU), all notebooks, one at a time
    python -m lib.reproduce --jobs 3             # three notebooks side by side, the CPU threads split between them
    python -m lib.reproduce --profile paper      # GPU, papers' sizes
    python -m lib.reproduce --only 01 -p seed=1  # one notebook, a parameter override
    python -m lib.reproduce --compare figures /tmp/other-figures   # identical tables?
    python -m lib.reproduce --book               # then render the static HTML book into build/book/ (lib.book)

Executed copies go to ``build/executed/`` (never over the sources in ``notebooks/``). Figures
and tables land in ``figures/`` when a notebook runs with its committed parameters, in
``build/figures/<notebook>/<name=value,...>/`` when any differs (``--profile paper``, ``-p seed=1``;
the start line says where), or in ``--figures DIR``. The versions the run used are recorded next
to the tables (``tables/environment.json``). A failed notebook is named with its cell (exit
status 1); a usage error exits with status 2. ``build/executed/run.json`` records the run (environment,
and per notebook its parameters, time, status and figures folder) for the book.

Threads: each kernel gets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = cores // jobs (at least 1;
a value you set yourself is kept, and with ``--jobs`` > 1 capped at that share), so notebooks
run side by side do not oversubscribe the CPU.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import filecmp
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.paths import BUILD, FIGURES, NOTEBOOKS, REPO
from ..show.figures import outputs_for
from .book import BookError
from .book import build as build_book

__all__ = ["ReproduceError", "UsageError", "MissingInput", "NotebookFailed", "NOTEBOOKS", "PROFILES",
           "THREAD_VARIABLES", "PACKAGES", "notebooks", "parse_param", "kernel_threads", "environment",
           "record_environment", "record_run", "run", "compare", "main"]

PROFILES = ("quick", "paper")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
PACKAGES = ("torch", "torchvision", "diffusers", "accelerate", "numpy", "scipy", "scikit-learn", "scikit-image",
            "pandas", "matplotlib", "seaborn", "pillow", "pytorch-fid", "papermill", "nbclient", "ipykernel",
            "jupyterlab")


class ReproduceError(Exception):
    """Something :func:`run` or :func:`compare` cannot do; ``main`` turns it into an exit status."""


class UsageError(ReproduceError, ValueError):
    """A bad argument (``--only``, ``-p``, ``--profile``, ``--jobs``): exit status 2."""


class MissingInput(UsageError, FileNotFoundError):
    """No notebooks or no tables where the arguments point: exit status 2."""


class NotebookFailed(ReproduceError, RuntimeError):
    """A notebook raised: names the notebook, the cell and the executed copy with the traceback (exit status 1)."""

    def __init__(self, notebook: str, cell: int, exec_count: int | None, error: str, executed: Path):
        self.notebook, self.cell, self.executed = notebook, cell, executed
        super().__init__(f"FAILED: {notebook}, cell {cell} (execution count {exec_count}): {error}\n"
                         f"  executed copy with the traceback: {executed}")


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it."""
    path = Path(path)
    return str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else str(path)


def notebooks(only: list[str] | None = None, source: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` of ``source`` in order, or those ``only`` names (number or stem)."""
    found = sorted(Path(source).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise MissingInput(f"no numbered notebooks (NN_name.ipynb) in {source}")
    if only:
        chosen = [nb for nb in found if any(nb.name.startswith(o) or nb.stem == o for o in only)]
        missing = [o for o in only if not any(nb.name.startswith(o) or nb.stem == o for nb in found)]
        if missing:
            raise UsageError(f"--only {missing}: no such notebook in {source} "
                             f"(have: {[nb.stem for nb in found]})")
        return chosen
    return found


def parse_param(text: str) -> tuple[str, Any]:
    """``"name=value"`` → ``(name, value)``; the value is a Python literal where it parses as one, else the text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise UsageError(f"-p {text!r}: write parameters as name=value, e.g. -p seed=1")
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def _cpu_count() -> int:
    """Cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def kernel_threads(jobs: int, cpus: int | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` for each of ``jobs`` kernels run side by side:
    ``max(1, cpus // jobs)``; a value already set is kept with one job and capped at that share with more."""
    environ = os.environ if environ is None else environ
    share = max(1, (cpus or _cpu_count()) // jobs)
    out = {}
    for var in THREAD_VARIABLES:
        mine = environ.get(var, "").strip()
        if jobs == 1 and mine:
            out[var] = mine
        else:
            out[var] = str(min(int(mine), share) if mine.isdigit() and int(mine) > 0 else share)
    return out


@contextlib.contextmanager
def _environ(updates: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the kernels started inside the block, then restore them."""
    old = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _git_describe() -> str:
    """The repository's commit (40 hex digits, ``-dirty`` with uncommitted changes), or ``unknown``."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _accelerator() -> dict[str, Any]:
    """The GPU torch sees (name, CUDA version), or none."""
    try:
        import torch
        if torch.cuda.is_available():
            return {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "cuda": torch.version.cuda}
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return {"gpu": "Apple MPS", "gpus": 1, "cuda": None}
    except Exception as e:      # a broken driver must not stop the record
        return {"gpu": f"unknown ({type(e).__name__}: {e})", "gpus": None, "cuda": None}
    return {"gpu": None, "gpus": 0, "cuda": None}


def environment() -> dict[str, Any]:
    """What a run ran with: date (UTC), git commit, Python, platform, CPU, GPU and the versions of :data:`PACKAGES`."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": _git_describe(),
            "python": platform.python_version(), "platform": platform.platform(), "cpu": _cpu_name(),
            "cpu_count": _cpu_count(), **_accelerator(), "packages": versions}


def _merge_notebooks(path: Path, entries: Mapping[str, Mapping[str, Any]], header: Mapping[str, Any]) -> Path:
    """Merge ``{notebook: record}`` into the ``notebooks`` of the JSON file ``path`` (other notebooks' records
    stay), with ``header``'s keys in front; under a file lock (test workers write side by side), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(f".{path.name}.lock")):
        try:
            old = json.loads(path.read_text()).get("notebooks", {})
        except (OSError, ValueError, AttributeError):
            old = {}
        data = {**header, "notebooks": dict(sorted({**old, **entries}.items()))}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    """An exclusive lock on ``lock`` for the block (``fcntl``; where it does not exist, no lock)."""
    try:
        import fcntl
    except ImportError:          # Windows: one process at a time is the user's job
        yield
        return
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def record_environment(folder: Path, entries: Mapping[str, Mapping[str, Any]]) -> Path:
    """Merge ``{notebook: record}`` into ``<folder>/tables/environment.json`` (atomically; other notebooks' records stay)."""
    return _merge_notebooks(Path(folder) / "tables" / "environment.json", entries, {
        "written_by": "python -m lib.reproduce; not compared by --compare (dates and versions differ by nature)"})


def record_run(build: Path, entries: Mapping[str, Mapping[str, Any]], environment_: Mapping[str, Any] | None = None) -> Path:
    """Merge ``{notebook: record}`` into ``<build>/run.json``, the run record the book reads: the environment
    once, then per notebook its profile, parameters, seconds, status, figures folder and runner."""
    return _merge_notebooks(Path(build) / "run.json", entries, {
        "written_by": "python -m lib.reproduce or the test suite's notebook run; read by python -m lib.book",
        "environment": dict(environment_ or environment())})


def run(profile: str = "quick", only: list[str] | None = None, params: dict | None = None,
        build: Path = BUILD / "executed", figures: Path | None = None,
        source: Path = NOTEBOOKS, jobs: int = 1) -> list[dict]:
    """Execute the notebooks with papermill (``jobs`` at a time) and record the environment next to
    their tables; raises :class:`NotebookFailed` naming the first failing notebook and cell."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    if profile not in PROFILES:
        raise UsageError(f"--profile {profile!r} is unknown; choose one of {PROFILES}")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise UsageError(f"--jobs {jobs!r}: give a whole number of notebooks to run at a time, at least 1")
    todo = notebooks(only, source)
    parameters = {"profile": profile, **(params or {})}
    build = Path(build)
    build.mkdir(parents=True, exist_ok=True)
    env = kernel_threads(jobs)
    if figures is not None:
        env["KIT_FIGURES_DIR"] = str(Path(figures).resolve())
    stop, lock = threading.Event(), threading.Lock()
    results: dict[Path, dict] = {}
    label = ", ".join(f"{k}={v}" for k, v in parameters.items())

    def execute(i: int, nb: Path, folder: Path) -> None:
        if stop.is_set():
            return
        out = build / nb.name
        where = "" if folder == FIGURES else f"; figures and tables -> {_shown(folder)}"
        print(f"[{i}/{len(todo)}] {nb.name} ({label}{where}) ...", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out), parameters=parameters, cwd=str(source),
                                progress_bar=jobs == 1 and sys.stderr.isatty(), kernel_name="python3")
        except PapermillExecutionError as e:
            stop.set()
            with lock:
                results[nb] = {"notebook": nb.name, "profile": profile, "parameters": parameters,
                               "seconds": round(time.perf_counter() - t0, 1), "status": f"failed in cell {e.cell_index}",
                               "figures": str(folder), "executed_by": "papermill"}
            raise NotebookFailed(nb.name, e.cell_index, e.exec_count, f"{e.ename}: {e.evalue}", out) from None
        dt = time.perf_counter() - t0
        with lock:
            results[nb] = {"notebook": nb.name, "profile": profile, "parameters": parameters, "seconds": round(dt, 1),
                           "status": "passed", "figures": str(folder), "executed_by": "papermill"}
            record_environment(folder, {nb.name: {"profile": profile, "parameters": parameters,
                                                  "threads_per_kernel": env[THREAD_VARIABLES[0]], "jobs": jobs,
                                                  "seconds": round(dt, 1), **environment()}})
        print(f"[{i}/{len(todo)}] {nb.name} done in {dt:.1f} s -> {_shown(out)}", flush=True)

    t_all = time.perf_counter()
    with _environ(env):
        folders = {nb: outputs_for(nb, parameters) for nb in todo}
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(execute, i, nb, folders[nb]) for i, nb in enumerate(todo, 1)]
            errors = [f.exception() for f in futures]
    failed = [e for e in errors if e is not None]
    done = [results[nb] for nb in todo if nb in results]
    if done:
        record_run(build, {r["notebook"]: {k: v for k, v in r.items() if k != "notebook"} for r in done})
    if failed:
        raise failed[0]
    places = sorted({_shown(folders[nb]) for nb in todo})
    print(f"all {len(todo)} notebook(s) done in {time.perf_counter() - t_all:.1f} s; figures and tables in "
          f"{', '.join(places)}; versions in {', '.join(str(Path(p) / 'tables' / 'environment.json') for p in places)}")
    return done


def compare(a: Path, b: Path) -> int:
    """Compare the result tables (``tables/*.csv``, not ``tables/timing/`` nor ``environment.json``) of two
    figure folders; print one line per table and return the number of differences."""
    ta, tb = Path(a) / "tables", Path(b) / "tables"
    names = sorted({p.name for p in ta.glob("*.csv")} | {p.name for p in tb.glob("*.csv")})
    if not names:
        raise MissingInput(f"no tables (*.csv) found in {ta} or {tb}")
    diff = [n for n in names if not ((ta / n).exists() and (tb / n).exists()
                                     and filecmp.cmp(ta / n, tb / n, shallow=False))]
    for n in names:
        print(f"{'DIFFERENT' if n in diff else 'identical'}  {n}")
    print(f"{len(names) - len(diff)}/{len(names)} tables identical")
    return len(diff)


def main(argv: list[str] | None = None) -> None:
    """The command line: errors become a message on stderr and exit status 2 (usage) or 1 (a failed notebook)."""
    p = argparse.ArgumentParser(prog="python -m lib.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--only", nargs="*", help="notebook numbers or names, e.g. 01")
    p.add_argument("-p", "--param", action="append", default=[], help="name=value passed to papermill")
    p.add_argument("--jobs", type=int, default=1, help="notebooks run at a time (default 1); threads are split")
    p.add_argument("--build", type=Path, default=BUILD / "executed", help="where the executed copies go")
    p.add_argument("--figures", type=Path, default=None, help="write figures/tables here (sets KIT_FIGURES_DIR)")
    p.add_argument("--source", type=Path, default=NOTEBOOKS, help="the folder of the notebooks (default notebooks/)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("DIR_A", "DIR_B"))
    p.add_argument("--book", nargs="?", type=Path, const=BUILD / "book", default=None, metavar="DIR",
                   help="after the run, render the executed notebooks as a static HTML book (default build/book)")
    a = p.parse_args(argv)
    try:
        if a.compare:
            if compare(*a.compare):
                raise SystemExit(1)
            return
        run(a.profile, a.only, dict(parse_param(x) for x in a.param), a.build, a.figures, a.source, a.jobs)
        if a.book is not None:
            build_book(a.build, a.book)
    except NotebookFailed as e:
        print(e, file=sys.stderr)
        raise SystemExit(1) from None
    except ReproduceError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except BookError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
