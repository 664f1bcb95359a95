"""DDPM training: resuming gives the weights of an uninterrupted run; exports, manifests, loading; pretrained()."""

import json

import pytest
import torch

from lib.io.checkpoints import read_manifest, verify_checkpoint
from lib.io.checkpoints import CheckpointError
from lib.methods import ddpm
from lib.methods.ddpm import TrainConfig, load_ddpm, train_ddpm


def _images(n=6, size=16):
    g = torch.Generator().manual_seed(123)
    return torch.rand((n, 3, size, size), generator=g) * 2 - 1


CFG = dict(preset="tiny", image_size=16, T=50, steps=6, batch_size=2, ckpt_every=2, seed=3)


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_gives_same_weights_as_uninterrupted(tmp_path):
    x = _images()
    m1, e1, l1 = train_ddpm(x, TrainConfig(**CFG), tmp_path / "a.pt", device="cpu", progress=False)
    # stopped after 3 steps (checkpoint at step 3), then resumed by a new call
    train_ddpm(x, TrainConfig(**CFG), tmp_path / "b.pt", device="cpu", progress=False, stop_after=3)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 3
    m2, e2, l2 = train_ddpm(x, TrainConfig(**CFG), tmp_path / "b.pt", device="cpu", progress=False)
    assert l1 == l2 and len(l1) == CFG["steps"]
    assert _states_equal(m1.state_dict(), m2.state_dict())
    assert _states_equal(e1.state_dict(), e2.state_dict())
    # and training did change the weights (the comparison above is not vacuous)
    m0, _, _ = train_ddpm(x, TrainConfig(**{**CFG, "steps": 1}), tmp_path / "c.pt", device="cpu", progress=False)
    assert not _states_equal(m0.state_dict(), m1.state_dict())


def test_manifest_and_export(tmp_path):
    x = _images()
    train_ddpm(x, TrainConfig(**CFG), tmp_path / "state.pt", export=tmp_path / "w.pt", device="cpu",
               progress=False, data_fingerprint="abc", command="pytest")
    for name in ("state.pt", "w.pt"):
        m = read_manifest(tmp_path / name)
        assert {"command", "config", "seed", "data_fingerprint", "commit", "sha256"} <= m.keys()
        assert m["data_fingerprint"] == "abc" and m["seed"] == CFG["seed"] and m["config"]["steps"] == 6
        verify_checkpoint(tmp_path / name)
    assert not list(tmp_path.glob("*.tmp")), "temporary files must not be left behind"
    m = load_ddpm(tmp_path / "w.pt")
    assert m.diffusion.T == CFG["T"] and m.config == TrainConfig(**CFG) and m.manifest["kind"] == "ddpm"
    assert m.unet(x[:1], torch.tensor([3])).sample.shape == (1, 3, 16, 16)
    assert len(m.losses) == CFG["steps"] and not m.unet.training


def test_corrupt_checkpoint_is_detected(tmp_path):
    x = _images()
    train_ddpm(x, TrainConfig(**{**CFG, "steps": 2}), tmp_path / "s.pt", export=tmp_path / "w.pt",
               device="cpu", progress=False)
    data = bytearray((tmp_path / "w.pt").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "w.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"w\.pt has sha256 .* but its manifest says"):
        load_ddpm(tmp_path / "w.pt")


def test_resume_with_other_config_is_refused(tmp_path):
    x = _images()
    train_ddpm(x, TrainConfig(**{**CFG, "steps": 2}), tmp_path / "s.pt", device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"different config: lr: 0.0002 → 0.001"):
        train_ddpm(x, TrainConfig(**{**CFG, "steps": 2, "lr": 1e-3}), tmp_path / "s.pt", device="cpu",
                   progress=False)
    with pytest.raises(ValueError, match=r"steps: 2 → 1"):      # fewer steps than already done
        train_ddpm(x, TrainConfig(**{**CFG, "steps": 1}), tmp_path / "s.pt", device="cpu", progress=False)


def test_extending_a_finished_run_equals_one_long_run(tmp_path):
    x = _images()
    _, e1, l1 = train_ddpm(x, TrainConfig(**{**CFG, "steps": 4}), tmp_path / "long.pt", device="cpu", progress=False)
    train_ddpm(x, TrainConfig(**{**CFG, "steps": 2}), tmp_path / "ext.pt", device="cpu", progress=False)
    _, e2, l2 = train_ddpm(x, TrainConfig(**{**CFG, "steps": 4}), tmp_path / "ext.pt", device="cpu", progress=False)
    assert l1 == l2 and _states_equal(e1.state_dict(), e2.state_dict())


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt does not exist; train it with `python -m lib\.methods\.ddpm"):
        load_ddpm(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="images must have 3 channels"):
        train_ddpm(torch.zeros(4, 1, 16, 16), TrainConfig(**CFG), tmp_path / "x.pt", device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"images must be N×3×16×16"):
        train_ddpm(torch.zeros(4, 3, 32, 32), TrainConfig(**CFG), tmp_path / "x.pt", device="cpu", progress=False)
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(preset="huge")
    (tmp_path / "lonely.pt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_ddpm(tmp_path / "lonely.pt")


def test_half_precision_export_loads_as_float32(tmp_path):
    x = _images()
    _, ema, _ = train_ddpm(x, TrainConfig(**{**CFG, "steps": 2}), tmp_path / "s.pt", export=tmp_path / "w.pt",
                           device="cpu", progress=False, export_half=True, extra={"val_fraction": 0.2})
    stored = torch.load(tmp_path / "w.pt", weights_only=True)["ema"]
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    model = load_ddpm(tmp_path / "w.pt").unet
    for a, b in zip(model.state_dict().values(), ema.state_dict().values()):
        assert a.dtype == torch.float32 and torch.allclose(a, b, atol=1e-3, rtol=1e-3)
    man = read_manifest(tmp_path / "w.pt")
    assert man["val_fraction"] == 0.2 and "float16" in man["weights"]


def test_profiles_name_the_committed_checkpoints():
    assert ddpm.checkpoint_name("gravel") == "ddpm_tiny_gravel64"
    assert ddpm.checkpoint_name("gravel", seed=2) == "ddpm_tiny_gravel64_seed2"
    assert ddpm.checkpoint_name("brick", "thesis-quick") == "ddpm_lean_sigmoid_shared64"     # one shared model
    assert ddpm.checkpoint_name("brick", "thesis-paper") == "ddpm_paper_sigmoid_brick256"
    with pytest.raises(ValueError, match=r"profile='fast' is not one of"):
        ddpm.checkpoint_name("brick", "fast")


def test_pretrained_finds_and_verifies_the_committed_checkpoint(recwarn):
    m = ddpm.pretrained("gravel", "quick", device="cpu")
    assert m.path.name == "ddpm_tiny_gravel64.pt" and m.manifest["step"] == 12000 and len(m.losses) == 12000
    assert m.config == ddpm.PROFILES["quick"].config
    m = ddpm.pretrained("grass", "thesis-quick", device="cpu")
    assert m.config == ddpm.PROFILES["thesis-quick"].config and m.manifest["val_fraction"] == 0.2
    assert not [w for w in recwarn if "trained" in str(w.message)], "profile and data match the committed files"


def test_pretrained_explains_a_missing_checkpoint():
    with pytest.raises(FileNotFoundError, match=r"(?s)ddpm_tiny_gravel64_seed5\.pt is missing.*\n"
                       r"    python -m lib\.methods\.ddpm --category gravel --image-size 64 --steps 12000 --seed 5 "
                       r"--name ddpm_tiny_gravel64_seed5\n\(12000 steps, about .* h on a 2-core CPU"):
        ddpm.pretrained("gravel", "quick", seed=5, device="cpu")


def test_pretrained_retrains_with_the_profiles_command(tmp_path, monkeypatch):
    import lib.io.cli as cli

    for module, name in ((ddpm, "CHECKPOINTS"), (cli, "CHECKPOINTS"), (cli, "TRAIN_STATE")):
        monkeypatch.setattr(module, name, tmp_path / name)
    monkeypatch.setitem(ddpm.PROFILES, "test", ddpm.Profile(TrainConfig(image_size=64, T=50, steps=2, batch_size=2),
                                                            val_fraction=0.2, export_half=True))
    m = ddpm.pretrained("gravel", "test", seed=1, retrain=True, device="cpu")
    assert m.path == tmp_path / "CHECKPOINTS" / "ddpm_tiny_gravel64_seed1.pt" and m.config.seed == 1
    assert m.manifest["command"] == ("python -m lib.methods.ddpm --category gravel --image-size 64 --T 50 --steps 2 "
                                     "--batch-size 2 --seed 1 --val-fraction 0.2 --export-half "
                                     "--name ddpm_tiny_gravel64_seed1")
    assert m.manifest["validation_images"] == 12 and m.manifest["n_images"] == 48
    assert (tmp_path / "TRAIN_STATE" / "ddpm_tiny_gravel64_seed1.pt").exists()
