"""Checkpoints: every committed one loads and verifies; clear errors for crafted, corrupt, mislabelled files."""

import dataclasses
import importlib
import json
import shlex
import shutil

import pytest
import torch

from lib.core.paths import CHECKPOINTS
from lib.io.checkpoints import (CheckpointError, checkpoint_path, config_diff, data_digest, half_precision, identify_kind,
                                load_file, read_manifest, resume_state, verify_checkpoint)
from lib.io.cli import config_from_args
from lib.methods import ddpm, diag, diffusionad, inout, learned_map, masked_ddpm  # noqa: F401  (register their checkpoint kinds)

COMMITTED = sorted(CHECKPOINTS.glob("*.pt"))
LOADERS = {"ddpm": ddpm.load_ddpm, "diffusionad": diffusionad.load_diffusionad,
           "learned_map": learned_map.load_learned_map, "masked_ddpm": masked_ddpm.load_masked,
           "diag_standin": diag.load_standin}


def test_there_are_committed_checkpoints():
    # 12 of notebooks 01, 03, 04 (01's DDPM; 03's shared DDPM and nine learned maps; 04's shared DiffusionAD model),
    # 3 of notebook 02, 2 of notebook 05 (stand-in, In&Out)
    assert len(COMMITTED) == 17


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_every_committed_checkpoint_loads_verifies_and_its_command_rebuilds_its_config(path):
    kind = identify_kind(load_file(path))
    assert kind is not None, f"{path.name}: unknown layout"
    manifest = read_manifest(path)
    shared = manifest["config"].get("classes")            # a shared model loads as one of its classes
    model = LOADERS[kind.name](path, **({"category": shared.split(",")[-1]} if shared else {}))   # sha256, config checked
    assert model.manifest == manifest and model.path == path
    config = dataclasses.asdict(model.config)
    recorded = {k: v for k, v in manifest["config"].items() if k != "settings"}
    # fields added after a checkpoint was trained (e.g. `classes`) take their defaults, which keep the old behaviour
    defaults = {f.name: f.default for f in dataclasses.fields(model.config)}
    assert config == {**{k: defaults[k] for k in config.keys() - recorded.keys()}, **recorded}
    # the manifest's command runs with today's CLI and describes this very config
    argv = shlex.split(manifest["command"])
    assert not [a for a in argv if a.startswith("/")], "the command is run from the repository, paths relative to it"
    baseline = argv[2] == masked_ddpm.MODULE and "--baseline" in argv     # seed 000 §3.1's DDPM on defect crops
    finetuned = argv[2] == inout.MODULE                                   # seed 001's In&Out: a fine-tuned stand-in
    assert argv[:3] == ["python", "-m", masked_ddpm.MODULE if baseline else inout.MODULE if finetuned else kind.module]
    module = importlib.import_module(argv[2])
    a = module.parser().parse_args(argv[3:])
    if baseline:
        fields = {f.name for f in dataclasses.fields(ddpm.TrainConfig)}
        given = {k: v for k, v in vars(a).items() if k in fields}     # its CLI has no --classes: the default
        assert {**{k: defaults[k] for k in fields - given.keys()}, **given} == config
    elif finetuned:
        cfg = config_from_args(inout.InOutConfig, a)
        base = diag.load_standin(CHECKPOINTS / f"{cfg.base}.pt")
        assert manifest["base_sha256"] == base.manifest["sha256"]
        assert dataclasses.asdict(inout.finetune_config(base.config, cfg)) == dataclasses.asdict(model.config)
    else:
        assert dataclasses.asdict(config_from_args(kind.config, a)) == dataclasses.asdict(model.config)
    assert a.name == path.stem
    if kind.name == "learned_map":
        assert dataclasses.asdict(config_from_args(learned_map.SelfAwareSettings, a)) == manifest["config"]["settings"]
    if "command_at_training" in manifest:                 # trained before the restructure: what it was run with
        old = manifest["command_at_training"]
        assert old.split()[2] in ("lib.train", "lib.diffusionad", "lib.learned_map")
        assert shlex.split(old)[3:] == argv[3:]


def _tiny_export(tmp_path, name="w"):
    """A real two-step DDPM export (16², T = 50) and its manifest."""
    x = torch.rand((4, 3, 16, 16), generator=torch.Generator().manual_seed(0)) * 2 - 1
    cfg = ddpm.TrainConfig(image_size=16, T=50, steps=2, batch_size=2, ckpt_every=1)
    ddpm.train_ddpm(x, cfg, tmp_path / f"{name}_state.pt", export=tmp_path / f"{name}.pt", device="cpu", progress=False)
    return tmp_path / f"{name}.pt"


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))            # would create the marker file when unpickled


def test_a_state_with_pickled_code_is_refused_unread(tmp_path):
    marker = tmp_path / "code_ran"
    state = tmp_path / "state.pt"
    torch.save({"config": {}, "step": 0, "payload": _RunsCode(marker)}, state)
    with pytest.raises(CheckpointError, match=r"state\.pt holds Python objects .* refused unread"):
        resume_state(state, ddpm.TrainConfig(), "digest", steps=10)
    # the public path: train_ddpm resuming that file
    x = torch.zeros(2, 3, 16, 16)
    with pytest.raises(CheckpointError, match="refused unread"):
        ddpm.train_ddpm(x, ddpm.TrainConfig(image_size=16, steps=1, batch_size=1), state, device="cpu", progress=False)
    assert not marker.exists(), "unpickling must not run the file's code"


def test_a_state_written_by_the_trainer_loads_with_weights_only(tmp_path):
    path = _tiny_export(tmp_path)
    state = torch.load(tmp_path / "w_state.pt", weights_only=True)          # no error: plain tensors and numbers
    assert state["generator"].dtype == torch.uint8 and state["step"] == 2 and len(state["data"]) == 64
    assert torch.load(path, weights_only=True)["kind"] == "ddpm"


def test_manifest_not_json_or_without_sha256(tmp_path):
    path = _tiny_export(tmp_path)
    manifest = path.with_suffix(".json")
    good = manifest.read_text()
    manifest.write_text(good[:-20])
    with pytest.raises(CheckpointError, match=r"manifest .*w\.json is not valid JSON"):
        ddpm.load_ddpm(path)
    m = json.loads(good)
    del m["sha256"]
    manifest.write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match=r"w\.json lacks \['sha256'\]"):
        ddpm.load_ddpm(path)
    manifest.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="expected an object"):
        verify_checkpoint(path)


def test_a_checkpoint_of_another_kind_is_named():
    ad, dd, lm = (CHECKPOINTS / f"{n}.pt" for n in ("diffusionad_lean_shared64", "ddpm_lean_sigmoid_shared64",
                                                    "learnedmap_brick64"))
    with pytest.raises(CheckpointError, match=r"holds a DiffusionAD model .* not a DDPM .* load it with "
                                              r"lib\.methods\.diffusionad\.load_diffusionad"):
        ddpm.load_ddpm(ad)
    with pytest.raises(CheckpointError, match=r"holds a DDPM .* not a DiffusionAD model .* lib\.methods\.ddpm\.load_ddpm"):
        diffusionad.load_diffusionad(dd)
    with pytest.raises(CheckpointError, match=r"holds a learned anomaly map .* not a DDPM"):
        ddpm.load_ddpm(lm)
    with pytest.raises(CheckpointError, match=r"holds a DiffusionAD model .* not a learned anomaly map"):
        learned_map.load_learned_map(ad)


def test_a_training_state_is_not_an_export(tmp_path):
    _tiny_export(tmp_path)
    with pytest.raises(CheckpointError, match=r"holds the entries \[.*'optimizer'.*\], not a DDPM"):
        ddpm.load_ddpm(tmp_path / "w_state.pt")


def test_truncated_checkpoint_without_verification_names_the_file(tmp_path):
    path = _tiny_export(tmp_path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"w\.pt \(5000 bytes\) is not a readable torch file — truncated"):
        ddpm.load_ddpm(path, verify=False)
    with pytest.raises(CheckpointError, match="sha256"):
        ddpm.load_ddpm(path)


def test_manifest_config_is_compared_with_the_checkpoints_own(tmp_path):
    path = _tiny_export(tmp_path)
    manifest = path.with_suffix(".json")
    m = json.loads(manifest.read_text())
    m["config"]["steps"] = 12000                          # the weights' sha256 still matches
    manifest.write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match=r"config differs from its manifest's \(steps: 12000 → 2"):
        ddpm.load_ddpm(path)


def test_config_fields_unknown_to_the_method_are_named(tmp_path):
    path = _tiny_export(tmp_path)
    state = torch.load(path, weights_only=True)
    state["config"]["warmup"] = 10
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"config has fields \['warmup'\] that TrainConfig does not have"):
        ddpm.load_ddpm(path, verify=False)


def test_a_copied_committed_checkpoint_still_verifies(tmp_path):
    src = CHECKPOINTS / "learnedmap_gravel64.pt"
    shutil.copy(src, tmp_path / src.name)
    shutil.copy(src.with_suffix(".json"), tmp_path / f"{src.stem}.json")
    lm = learned_map.load_learned_map(tmp_path / src.name)
    assert lm.settings == learned_map.PROFILES["quick"].settings


@pytest.mark.parametrize("name", ["../escaped", "a/b", "/abs/x", "..", "", "a\\b", ".hidden", "x..y"])
def test_checkpoint_names_cannot_leave_their_folder(tmp_path, name):
    with pytest.raises(ValueError, match="not a plain file name"):
        checkpoint_path(tmp_path, name)


def test_checkpoint_path_accepts_plain_names(tmp_path):
    assert checkpoint_path(tmp_path, "ddpm_tiny_gravel64_seed1") == tmp_path / "ddpm_tiny_gravel64_seed1.pt"


def test_half_precision_and_digest_and_diff():
    sd = {"w": torch.ones(2), "n": torch.tensor([3])}
    half = half_precision(sd)
    assert half["w"].dtype == torch.float16 and half["n"].dtype == torch.int64
    a = torch.zeros(2, 3)
    assert data_digest(a) == data_digest(a.clone()) != data_digest(a + 1) != data_digest(a.reshape(3, 2))
    assert config_diff({"lr": 2e-4, "steps": 2}, {"lr": 1e-3, "steps": 2, "x": 1}) == ["lr: 0.0002 → 0.001",
                                                                                       "x: (absent) → 1"]
