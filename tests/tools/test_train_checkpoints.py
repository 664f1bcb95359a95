"""python -m lib.tools.train_checkpoints: the plan is the profiles' commands in dependency order; the runner
starts what is ready, one thread each, and names the log of what failed."""

import shlex
import sys

import pytest

from lib.io.training import TrainingCommand
from lib.methods import ddpm, diffusionad, learned_map
from lib.tools import train_checkpoints as TC


def test_the_plan_is_the_profiles_commands_shared_models_once_then_the_maps():
    jobs = TC.plan()
    kinds = [j.kind for j in jobs]
    assert kinds == ["ddpm", "diffusionad"] + ["learned_map"] * 9
    assert jobs[0].command == ddpm.training_command("display_panel", "thesis-quick")
    assert jobs[1].command == diffusionad.training_command("cable", "quick")
    for j in jobs[2:]:
        assert j.needs == (jobs[0].command.name,)
        category = j.command.argv[j.command.argv.index("--category") + 1]
        assert j.command == learned_map.training_command(category, "quick")
    assert [j.kind for j in TC.plan(["screw"], ("learned_map",))] == ["learned_map"]


def test_print_shows_each_command_once_and_they_parse(capsys):
    TC.main(["--print", "--device", "cpu", "--categories", "screw,pill"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.endswith("--device cpu") for line in lines)
    for line in lines:
        argv = shlex.split(line)
        module = {m.MODULE: m for m in (ddpm, diffusionad, learned_map)}[argv[2]]
        assert module.parser().parse_args(argv[3:]).device == "cpu"


def test_bad_options_are_refused(capsys):
    for argv, match in ((["--only", "gan"], "--only 'gan'"), (["--jobs", "0"], "--jobs 0"),
                        (["--categories", "nut", "--print"], "category='nut'")):
        with pytest.raises(SystemExit):
            TC.main(argv)
        assert match in capsys.readouterr().err


def _job(name, argv, needs=()):
    # a stand-in job: any module's command line (here the tool's own --print, or a failing --jobs 0); the runner
    # runs the shown command (relative paths, from the repository), which the manifests then record
    shown = shlex.join(["python", "-m", "lib.tools.train_checkpoints", *argv])
    return TC.Job("ddpm", TrainingCommand(name, "lib.tools.train_checkpoints", shown, ["--absolute"], {}, "", ""), needs)


def test_the_runner_waits_for_what_a_job_needs_and_names_the_failed_log(tmp_path, capsys):
    ok = _job("a_ok", ["--print", "--categories", "screw"])
    after = _job("b_after", ["--print", "--categories", "pill"], needs=("a_ok",))
    times = TC.run_plan([after, ok], None, 2, tmp_path)     # b waits for a though it comes first
    assert list(times) == ["a_ok", "b_after"]
    log = (tmp_path / "train_b_after.log").read_text()
    assert log.startswith("python -m lib.tools.train_checkpoints --print --categories pill\n")
    assert "exit status 0" in log and "--category pill" in log
    with pytest.raises(RuntimeError, match="training failed: c_bad"):
        TC.run_plan([_job("c_bad", ["--jobs", "0"])], None, 1, tmp_path)
    assert "exit status 2" in (tmp_path / "train_c_bad.log").read_text()
    with pytest.raises(RuntimeError, match=r"d_orphan needs \['nowhere'\]"):
        TC.run_plan([_job("d_orphan", ["--print"], needs=("nowhere",))], None, 1, tmp_path)
