"""The one CLI builder: every config dataclass round-trips through argparse; range checks; unsafe names."""

import argparse
import dataclasses

import pytest

from lib.io.cli import add_config_arguments, config_argv, config_from_args
from lib.methods.ddpm import PROFILES as DDPM_PROFILES, TrainConfig, main as ddpm_main
from lib.methods.diffusionad import PROFILES as AD_PROFILES, ADConfig
from lib.methods.learned_map import PROFILES as LM_PROFILES, LearnedMapConfig, SelfAwareSettings


@dataclasses.dataclass
class _Knobs:
    flag: bool = False
    scale: float | None = 0.5
    name: str = "a"


def _parse(cls, argv):
    p = argparse.ArgumentParser()
    add_config_arguments(p, cls)
    return config_from_args(cls, p.parse_args(argv))


CONFIGS = ([p.config for p in DDPM_PROFILES.values()] + list(AD_PROFILES.values())
           + [p.config for p in LM_PROFILES.values()] + [p.settings for p in LM_PROFILES.values()]
           + [TrainConfig(), ADConfig(), LearnedMapConfig(), SelfAwareSettings(num_steps=7), _Knobs(True, None, "b")])


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_every_config_round_trips_through_the_command_line(cfg):
    assert _parse(type(cfg), config_argv(cfg)) == cfg


def test_optional_and_bool_fields():
    assert _parse(SelfAwareSettings, ["--num-steps", "none"]).num_steps is None
    assert _parse(SelfAwareSettings, ["--num-steps", "10"]).num_steps == 10
    assert _parse(_Knobs, ["--flag", "--scale", "none"]) == _Knobs(True, None)
    assert _parse(_Knobs, ["--no-flag"]).flag is False
    assert config_argv(_Knobs(True, None)) == ["--flag", "--scale", "none"]
    with pytest.raises(SystemExit):
        _parse(TrainConfig, ["--steps", "many"])


@pytest.mark.parametrize("cls, field, value, match", [
    (TrainConfig, "steps", 0, r"steps must be an integer >= 1, got 0"),
    (TrainConfig, "batch_size", -2, r"batch_size must be an integer >= 1"),
    (TrainConfig, "lr", 0.0, r"lr must be a finite number > 0.0, got 0.0"),
    (TrainConfig, "lr", float("nan"), r"lr must be a finite number"),
    (TrainConfig, "ema_decay", 1.0, r"ema_decay must be a finite number in \[0.0, 1.0\), got 1.0"),
    (TrainConfig, "image_size", 60, r"image_size=60 must be a positive multiple of 8 \(the 'tiny' UNet"),
    (TrainConfig, "preset", "huge", r"preset='huge' is not one of"),
    (TrainConfig, "schedule", "quadratic", r"schedule='quadratic' is not one of"),
    (ADConfig, "tau", 1000, r"tau must be an integer in \[1, 999\], got 1000"),
    (ADConfig, "tau", 0, r"tau must be an integer in \[1, 999\], got 0"),
    (ADConfig, "batch_size", 1, r"batch_size must be an integer >= 2"),
    (ADConfig, "seg_preset", "big", r"seg_preset='big' is not one of"),
    (ADConfig, "image_size", 100, r"image_size=100 must be a positive multiple of 8"),
    (ADConfig, "beta_high", 0.1, r"beta_high must be a finite number in \[0.2, 1.0\]"),
    (LearnedMapConfig, "epochs", 0, r"epochs must be an integer >= 1"),
    (LearnedMapConfig, "focal_alpha", 1.5, r"focal_alpha must be a finite number in \[0.0, 1.0\]"),
    (SelfAwareSettings, "t_end", 10, r"t_end must be an integer >= 299, got 10"),
    (SelfAwareSettings, "num_steps", 0, r"num_steps must be an integer >= 1"),
    (SelfAwareSettings, "init", "zeros", r"init='zeros' is not one of"),
])
def test_configs_check_their_ranges(cls, field, value, match):
    with pytest.raises(ValueError, match=match):
        cls(**{field: value})


def test_val_fraction_is_checked():
    from lib.methods.ddpm import Profile
    with pytest.raises(ValueError, match=r"val_fraction must be a finite number in \[0.0, 1.0\)"):
        Profile(TrainConfig(), val_fraction=1.0)


@pytest.mark.parametrize("name", ["../escaped", "sub/x"])
def test_a_name_with_a_path_is_refused_before_anything_is_written(tmp_path, tiny_data, capsys, name):
    argv = ["--data", str(tiny_data), "--category", "c", "--image-size", "16", "--T", "50", "--steps", "1",
            "--batch-size", "1", "--name", name, "--export-dir", str(tmp_path / "e" / "f"),
            "--state-dir", str(tmp_path / "s" / "f"), "--device", "cpu"]
    with pytest.raises(SystemExit) as e:
        ddpm_main(argv)
    assert e.value.code == 2
    assert "not a plain file name" in capsys.readouterr().err
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".pt", ".json")], "nothing may be written"


def test_a_bad_option_value_is_an_error_not_a_traceback(capsys):
    with pytest.raises(SystemExit) as e:
        ddpm_main(["--name", "x", "--steps", "0", "--category", "gravel"])
    assert e.value.code == 2 and "steps must be an integer >= 1, got 0" in capsys.readouterr().err
