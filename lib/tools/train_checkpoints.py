"""Train the committed quick-profile checkpoints of notebooks 03 and 04 from their profiles, on this machine.

    python -m lib.tools.train_checkpoints                 # everything, on the best device, 2 jobs at a time
    python -m lib.tools.train_checkpoints --print         # only print the commands, in order
    python -m lib.tools.train_checkpoints --only ddpm --device cpu --jobs 1

What runs, in this order (each command is exactly the one ``pretrained()`` shows for a missing checkpoint: the
profiles in ``lib.methods`` are the one definition, this tool only schedules them):

1. notebook 03's DDPM (``lib.methods.ddpm``, profile ``thesis-quick``) and notebook 04's DiffusionAD model
   (``lib.methods.diffusionad``, profile ``quick``) -- one model shared by all categories where the profile says so;
2. one learned map per category (``lib.methods.learned_map``, profile ``quick``), each as soon as its DDPM exists.

``--jobs`` commands run side by side, each with one thread (``OMP_NUM_THREADS=1``: several torch processes on few
cores otherwise slow each other down many times over). A training whose resumable state in ``build/train`` has the
same config continues where it stopped. Logs: ``build/logs/train_<checkpoint>.log``, each ending with its wall time.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from ..core.paths import BUILD, CHECKPOINTS, REPO
from ..io.checkpoints import checkpoint_path
from ..io.training import TrainingCommand
from ..methods import ddpm, diffusionad, learned_map

__all__ = ["Job", "plan", "run_plan", "main"]

KINDS = ("ddpm", "diffusionad", "learned_map")


class Job(NamedTuple):
    """One training command and the checkpoint names it needs before it can start."""

    kind: str
    command: TrainingCommand
    needs: tuple[str, ...] = ()


def plan(categories: list[str] | None = None, only: tuple[str, ...] = KINDS) -> list[Job]:
    """The training jobs of the quick profiles in dependency order (each checkpoint once: a shared model is one job)."""
    from ..data.benchmark import categories as benchmark_categories

    version = ddpm.PROFILES["thesis-quick"].data_version
    cats = categories or benchmark_categories(version)
    jobs: dict[str, Job] = {}
    for c in cats:
        d = ddpm.training_command(c, "thesis-quick")
        if "ddpm" in only:
            jobs.setdefault(d.name, Job("ddpm", d))
        if "diffusionad" in only:
            a = diffusionad.training_command(c, "quick")
            jobs.setdefault(a.name, Job("diffusionad", a))
    if "learned_map" in only:
        for c in cats:
            m = learned_map.training_command(c, "quick")
            needs = (ddpm.training_command(c, "thesis-quick").name,)
            jobs.setdefault(m.name, Job("learned_map", m, needs))
    return list(jobs.values())


def run_plan(jobs: list[Job], device: str | None, n_jobs: int, log_dir: Path) -> dict[str, float]:
    """Run ``jobs``, ``n_jobs`` at a time, one thread each, a job only once the checkpoints it needs exist; returns
    each job's wall time. A failed job stops the queue (the running ones finish) and raises ``RuntimeError``
    naming its log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    pending, running, done, failed = list(jobs), {}, {}, []
    t_all = time.perf_counter()
    while pending or running:
        for job in list(pending):
            if failed or len(running) >= n_jobs:
                break
            if any(n in running or any(j.command.name == n for j in pending) for n in job.needs):
                continue                     # what it needs is still to be trained by this plan
            missing = [n for n in job.needs if n not in done and not checkpoint_path(CHECKPOINTS, n).exists()]
            if missing:
                raise RuntimeError(f"{job.command.name} needs {missing}, which neither exist in {CHECKPOINTS} "
                                   "nor are trained by this plan; train them first (--only ddpm)")
            # the shown command (paths relative to the repository, run from there): the manifest records it as is
            argv = [sys.executable, *shlex.split(job.command.shown)[1:]]
            argv += ["--device", device] if device else []
            log = open(log_dir / f"train_{job.command.name}.log", "w")
            log.write(job.command.shown + (f" --device {device}" if device else "") + "\n")
            log.flush()
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
            running[job.command.name] = (proc, log, time.perf_counter())
            pending.remove(job)
            print(f"started  {job.command.name} ({job.kind}; {job.command.cost})", flush=True)
        time.sleep(2)
        for name, (proc, log, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            dt = time.perf_counter() - t0
            log.write(f"\nwall {dt:.1f} s, exit status {proc.returncode}\n")
            log.close()
            del running[name]
            if proc.returncode:
                failed.append(name)
                print(f"FAILED   {name} after {dt:.0f} s: see {log.name}", flush=True)
            else:
                done[name] = dt
                print(f"finished {name} in {dt:.0f} s", flush=True)
    if failed:
        raise RuntimeError(f"training failed: {', '.join(failed)}; logs in {log_dir}")
    print(f"all {len(done)} trainings finished in {time.perf_counter() - t_all:.0f} s")
    return done


def parser() -> argparse.ArgumentParser:
    """The ``python -m lib.tools.train_checkpoints`` argument parser."""
    p = argparse.ArgumentParser(prog="python -m lib.tools.train_checkpoints", description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: each command's best available)")
    p.add_argument("--jobs", type=int, default=2, help="commands side by side, one thread each (default 2)")
    p.add_argument("--only", default=",".join(KINDS), help=f"comma-separated subset of {', '.join(KINDS)}")
    p.add_argument("--categories", default=None, help="comma-separated categories (default: the profile's benchmark)")
    p.add_argument("--log-dir", type=Path, default=BUILD / "logs")
    p.add_argument("--print", action="store_true", help="print the commands (one a line, in order) and exit")
    return p


def main(argv: list[str] | None = None) -> None:
    """Plan the trainings from the profiles, then print or run them."""
    p = parser()
    a = p.parse_args(argv)
    only = tuple(k.strip() for k in a.only.split(",") if k.strip())
    if not only or set(only) - set(KINDS):
        p.error(f"--only {a.only!r}: choose from {', '.join(KINDS)}")
    if a.jobs < 1:
        p.error(f"--jobs {a.jobs}: give at least 1")
    try:
        jobs = plan(a.categories.split(",") if a.categories else None, only)
    except ValueError as e:
        p.error(str(e))
    if a.print:
        for j in jobs:
            print(j.command.shown + (f" --device {a.device}" if a.device else ""))
        return
    try:
        run_plan(jobs, a.device, a.jobs, a.log_dir)
    except RuntimeError as e:
        p.exit(1, f"{p.prog}: error: {e}\n")


if __name__ == "__main__":
    main()
