"""The profiles of notebooks 03 and 04 train on benchmark version 3: the commands pretrained() shows and runs."""

import dataclasses

import pytest

from lib import data
from lib.methods import ddpm as DDPM, diffusionad as DA, learned_map as LM


@pytest.fixture(scope="module", autouse=True)
def version3():
    data.embedded_benchmark(size=64, version=3)


def test_training_data_of_version_3_is_shown_relative_and_run_absolute():
    td = DDPM.training_data(None, "screw", 64, 3)
    assert td.shown == ["--data", "data/embedded/v3_size64_seed0"]
    assert td.run[0] == "--data" and td.run[1].endswith("data/embedded/v3_size64_seed0") and td.run[1].startswith("/")
    assert td.fingerprint == data.fingerprint(data.embedded_benchmark(64, version=3) / "screw")
    assert DDPM.training_data(None, "brick", 64).shown == []      # the CLIs' default needs no --data
    shared = DDPM.training_data(None, "screw", 64, 3, "screw,pill")
    assert shared.fingerprint == DDPM.shared_fingerprint(td.root, "screw,pill") != td.fingerprint


def test_missing_version_3_checkpoints_name_their_commands():
    with pytest.raises(FileNotFoundError) as e:          # seed 5: no committed checkpoint
        DA.pretrained("screw", "quick", seed=5, device="cpu")
    msg = str(e.value)
    assert "diffusionad_lean_shared64_seed5" in msg and "--data data/embedded/v3_size64_seed0" in msg
    assert "--mode kind --seed 5 --classes display_panel,metal_strip," in msg and "--category" not in msg
    # a per-category profile picks object mode for an object class, by its kind
    per_category = dataclasses.replace(DA.PROFILES["quick"], classes="", mode="texture")
    with pytest.MonkeyPatch.context() as m:
        m.setitem(DA.PROFILES, "quick", per_category)
        with pytest.raises(FileNotFoundError) as e:
            DA.pretrained("screw", "quick", device="cpu")
        assert "diffusionad_lean_screw64" in str(e.value) and "--mode object" in str(e.value)
        with pytest.raises(FileNotFoundError) as e:
            DA.pretrained("fabric", "quick", device="cpu")
        assert "diffusionad_lean_fabric64" in str(e.value) and "--mode" not in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        DDPM.pretrained("cable", "thesis-quick", seed=5, device="cpu")
    assert "--data data/embedded/v3_size64_seed0" in str(e.value) and "ddpm_lean_sigmoid_shared64_seed5" in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        LM.pretrained("pill", "quick", seed=5, device="cpu")
    assert "--data data/embedded/v3_size64_seed0" in str(e.value) and "--category pill" in str(e.value)


def test_training_commands_parse_with_the_methods_command_lines_and_rebuild_the_profiles():
    from lib.io.cli import config_from_args

    d = DDPM.training_command("pill", "thesis-quick")
    a = DDPM.parser().parse_args(d.argv)
    assert dataclasses.asdict(config_from_args(DDPM.TrainConfig, a)) == d.config
    assert a.val_fraction == 0.2 and a.export_half and a.name == d.name == "ddpm_lean_sigmoid_shared64"
    ad = DA.training_command("pill", "quick")
    assert dataclasses.asdict(config_from_args(DA.ADConfig, DA.parser().parse_args(ad.argv))) == ad.config
    m = LM.training_command("pill", "quick")
    ma = LM.parser().parse_args(m.argv)
    assert ma.ddpm.name == "ddpm_lean_sigmoid_shared64.pt" and ma.ddpm.is_absolute() and ma.category == "pill"
    assert m.shown.startswith("python -m lib.methods.learned_map --data data/embedded/v3_size64_seed0 --ddpm "
                              "data/checkpoints/ddpm_lean_sigmoid_shared64.pt --category pill")


def test_masked_ddpm_commands_are_the_ones_the_committed_checkpoints_record():
    """notebook 02's generators and baseline: the command, data and config each committed manifest records."""
    from lib.io.checkpoints import read_manifest
    from lib.core.paths import CHECKPOINTS
    from lib.methods import masked_ddpm as MD

    for tc in (MD.training_command("quick", "features"), MD.training_command("quick", "blur"),
               MD.baseline_command("quick")):
        m = read_manifest(CHECKPOINTS / f"{tc.name}.pt")
        assert (m["command"], m["data_fingerprint"]) == (tc.shown, tc.fingerprint)
        assert {k: v for k, v in tc.config.items() if k in m["config"]} == m["config"]
