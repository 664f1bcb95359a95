"""Re-execute every notebook in order with papermill and regenerate every figure and table.

    python -m lib.reproduce                      # profile "quick" (CPU), all notebooks
    python -m lib.reproduce --profile paper      # GPU, papers' sizes
    python -m lib.reproduce --only 01 -p seed=1  # one notebook, a parameter override
    python -m lib.reproduce --compare figures /tmp/other-figures   # identical tables?

Executed copies go to ``build/executed/`` (never over the sources in ``notebooks/``);
figures and tables land in ``figures/`` (or ``--figures DIR``). On failure it names
the notebook and the cell, and exits with status 1.
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import json
import os
import sys
import time
from pathlib import Path

from ..core.paths import REPO
NOTEBOOKS = REPO / "notebooks"
PROFILES = ("quick", "paper")


def notebooks(only: list[str] | None = None, source: Path = NOTEBOOKS) -> list[Path]:
    found = sorted(Path(source).glob("[0-9][0-9]_*.ipynb"))
    if only:
        chosen = [nb for nb in found if any(nb.name.startswith(o) or nb.stem == o for o in only)]
        missing = [o for o in only if not any(nb.name.startswith(o) or nb.stem == o for nb in found)]
        if missing:
            raise SystemExit(f"--only {missing}: no such notebook in {source} "
                             f"(have: {[nb.stem for nb in found]})")
        return chosen
    return found


def _parse_param(text: str):
    if "=" not in text:
        raise SystemExit(f"-p {text!r}: write parameters as name=value, e.g. -p seed=1")
    key, value = text.split("=", 1)
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def run(profile: str = "quick", only: list[str] | None = None, params: dict | None = None,
        build: Path = REPO / "build" / "executed", figures: Path | None = None,
        source: Path = NOTEBOOKS) -> list[dict]:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    if profile not in PROFILES:
        raise SystemExit(f"--profile {profile!r} is unknown; choose one of {PROFILES}")
    if figures is not None:
        os.environ["KIT_FIGURES_DIR"] = str(Path(figures).resolve())
    build.mkdir(parents=True, exist_ok=True)
    todo = notebooks(only, source)
    results = []
    t_all = time.perf_counter()
    for i, nb in enumerate(todo, 1):
        out = build / nb.name
        print(f"[{i}/{len(todo)}] {nb.name} (profile={profile}) ...", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out), parameters={"profile": profile, **(params or {})},
                                cwd=str(source), progress_bar=sys.stderr.isatty(),
                                kernel_name="python3")
        except PapermillExecutionError as e:
            print(f"FAILED: {nb.name}, cell {e.cell_index} (execution count {e.exec_count}): "
                  f"{e.ename}: {e.evalue}\n  executed copy with the traceback: {out}", file=sys.stderr)
            raise SystemExit(1) from None
        dt = time.perf_counter() - t0
        results.append({"notebook": nb.name, "profile": profile, "seconds": round(dt, 1)})
        print(f"[{i}/{len(todo)}] {nb.name} done in {dt:.1f} s -> {out.relative_to(REPO) if out.is_relative_to(REPO) else out}",
              flush=True)
    print(f"all {len(todo)} notebook(s) done in {time.perf_counter() - t_all:.1f} s; figures in "
          f"{os.environ.get('KIT_FIGURES_DIR') or REPO / 'figures'}")
    (build / "reproduce.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def compare(a: Path, b: Path) -> int:
    """Compare the result tables (not ``tables/timing/``) of two figure folders; return #differences."""
    ta, tb = Path(a) / "tables", Path(b) / "tables"
    names = sorted({p.name for p in ta.glob("*.csv")} | {p.name for p in tb.glob("*.csv")})
    if not names:
        raise SystemExit(f"no tables found in {ta} or {tb}")
    diff = [n for n in names if not ((ta / n).exists() and (tb / n).exists()
                                     and filecmp.cmp(ta / n, tb / n, shallow=False))]
    for n in names:
        print(f"{'DIFFERENT' if n in diff else 'identical'}  {n}")
    print(f"{len(names) - len(diff)}/{len(names)} tables identical")
    return len(diff)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--only", nargs="*", help="notebook numbers or names, e.g. 01")
    p.add_argument("-p", "--param", action="append", default=[], help="name=value passed to papermill")
    p.add_argument("--build", type=Path, default=REPO / "build" / "executed")
    p.add_argument("--figures", type=Path, default=None, help="write figures/tables here instead of figures/")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("DIR_A", "DIR_B"))
    a = p.parse_args(argv)
    if a.compare:
        raise SystemExit(1 if compare(*a.compare) else 0)
    run(a.profile, a.only, dict(_parse_param(x) for x in a.param), a.build, a.figures)


if __name__ == "__main__":
    main()
