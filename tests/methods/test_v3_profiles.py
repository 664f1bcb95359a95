"""The plumbing that lets a profile train on benchmark version 3: the commands pretrained() shows and runs."""

import dataclasses

import pytest

from lib import data
from lib.methods import ddpm as DDPM, diffusionad as DA, learned_map as LM


@pytest.fixture
def version3(monkeypatch):
    p = DDPM.PROFILES["thesis-quick"]
    monkeypatch.setitem(DDPM.PROFILES, "thesis-quick", dataclasses.replace(p, data_version=3))
    monkeypatch.setitem(DA.DATA_VERSION, "quick", 3)
    data.embedded_benchmark(size=64, version=3)


def test_training_data_of_version_3_is_shown_relative_and_run_absolute():
    td = DDPM.training_data(None, "screw", 64, 3)
    assert td.shown == ["--data", "data/embedded/v3_size64_seed0"]
    assert td.run[0] == "--data" and td.run[1].endswith("data/embedded/v3_size64_seed0") and td.run[1].startswith("/")
    assert td.fingerprint == data.fingerprint(data.embedded_benchmark(64, version=3) / "screw")
    assert DDPM.training_data(None, "brick", 64).shown == []      # the CLIs' default needs no --data


def test_missing_version_3_checkpoints_name_their_commands(version3):
    with pytest.raises(FileNotFoundError) as e:
        DA.pretrained("screw", "quick", device="cpu")
    assert "--data data/embedded/v3_size64_seed0" in str(e.value) and "--mode object" in str(e.value)
    lean = dataclasses.replace(DA.PROFILES["quick"], preset="lean")   # a name with no committed checkpoint
    with pytest.MonkeyPatch.context() as m:
        m.setitem(DA.PROFILES, "quick", lean)
        with pytest.raises(FileNotFoundError) as e:
            DA.pretrained("fabric", "quick", device="cpu")
    assert "diffusionad_lean_fabric64" in str(e.value) and "--mode" not in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        DDPM.pretrained("cable", "thesis-quick", device="cpu")
    assert "--data data/embedded/v3_size64_seed0" in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        LM.pretrained("pill", "quick", device="cpu")
    assert "--data data/embedded/v3_size64_seed0" in str(e.value)
