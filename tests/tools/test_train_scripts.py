"""scripts/train_v3_checkpoints.sh and scripts/device_train_v3.sh: valid bash; the version-3 training commands
(``PRINT_ONLY=1``) parse with the methods' own command lines, train on benchmark version 3, pick DiffusionAD's
mode from the category's kind and point each learned map at its category's DDPM."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.core.paths import CHECKPOINTS, REPO, TRAIN_STATE
from lib.data import embedded_benchmark
from lib.data.benchmark import categories, category_kind
from lib.io.cli import config_from_args
from lib.methods import ddpm, diffusionad, learned_map

SCRIPTS = REPO / "scripts"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="the training scripts need bash")


def _commands(*cats: str, **env: str) -> list[list[str]]:
    """The commands train_v3_checkpoints.sh would run (one python start for the plan, nothing trained)."""
    out = subprocess.run([BASH, str(SCRIPTS / "train_v3_checkpoints.sh"), "cuda", *cats], cwd=REPO, text=True,
                         capture_output=True, env={**os.environ, "PRINT_ONLY": "1", "PYTHON": sys.executable, **env})
    assert out.returncode == 0, out.stderr
    return [shlex.split(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize("name", ["train_v3_checkpoints.sh", "device_train_v3.sh"])
def test_the_scripts_are_valid_bash(name):
    subprocess.run([BASH, "-n", str(SCRIPTS / name)], check=True)


def test_the_v3_commands_train_every_category_of_version_3_with_the_methods_clis():
    cmds = _commands(DDPM_STEPS="3000", AD_STEPS="3500")
    cats = categories(3)
    assert len(cmds) == 3 * len(cats)
    data = embedded_benchmark(size=64, version=3).relative_to(REPO)
    for i, c in enumerate(cats):
        d, m, a = cmds[3 * i:3 * i + 3]
        assert [x[1:3] for x in (d, m, a)] == [["-m", ddpm.MODULE], ["-m", learned_map.MODULE],
                                               ["-m", diffusionad.MODULE]]
        assert all(x[-2:] == ["--device", "cuda"] for x in (d, m, a))
        da, ma, aa = ddpm.parser().parse_args(d[3:]), learned_map.parser().parse_args(m[3:]), \
            diffusionad.parser().parse_args(a[3:])
        assert da.data == ma.data == aa.data == data and da.category == ma.category == aa.category == c
        # the DDPM of notebook 03 (thesis-quick's recipe on the lean UNet), 20 % held out, float16 export
        assert config_from_args(ddpm.TrainConfig, da) == ddpm.TrainConfig(
            preset="lean", image_size=64, schedule="sigmoid", steps=3000, batch_size=32)
        assert da.val_fraction == 0.2 and da.export_half and da.name == f"ddpm_lean_sigmoid_{c}64"
        assert (da.export_dir, da.state_dir) == (CHECKPOINTS, TRAIN_STATE)
        # its learned map reconstructs with that DDPM, with the quick profile's settings
        assert ma.ddpm == Path("data/checkpoints") / f"{da.name}.pt" and ma.name == f"learnedmap_{c}64"
        quick = learned_map.PROFILES["quick"]
        assert config_from_args(learned_map.SelfAwareSettings, ma) == quick.settings
        assert config_from_args(learned_map.LearnedMapConfig, ma) == quick.config
        assert (ma.pairs, ma.noise_seed) == (quick.pairs, quick.noise_seed)
        # DiffusionAD: object mode (shipped foregrounds) exactly for the object categories
        assert config_from_args(diffusionad.ADConfig, aa) == diffusionad.ADConfig(
            preset="lean", seg_preset="tiny", image_size=64, steps=3500, mode=category_kind(c, 3))
        assert aa.name == f"diffusionad_lean_{c}64"
    assert {c for c in cats if category_kind(c, 3) == "object"} == {"screw", "pill", "cable"}


def test_folders_and_preset_come_from_the_environment(tmp_path):
    cmds = _commands("screw", "gravel", PRESET="small", PAIRS="8", EXPORT_DIR=str(tmp_path / "ex"),
                     STATE_DIR=str(tmp_path / "st"))
    assert [c[c.index("--category") + 1] for c in cmds] == ["screw"] * 3 + ["gravel"] * 3
    d, m, a = (p.parse_args(x[3:]) for p, x in zip((ddpm.parser(), learned_map.parser(), diffusionad.parser()),
                                                   cmds[:3]))
    assert (d.export_dir, d.state_dir, a.export_dir, a.state_dir, m.export_dir) == (
        tmp_path / "ex", tmp_path / "st", tmp_path / "ex", tmp_path / "st", tmp_path / "ex")
    assert m.ddpm == tmp_path / "ex" / "ddpm_small_sigmoid_screw64.pt" and m.pairs == 8
    assert (d.preset, a.preset, a.mode) == ("small", "small", "object")
