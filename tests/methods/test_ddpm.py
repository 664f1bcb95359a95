"""Training loop: resuming gives the weights of an uninterrupted run; checkpoints and manifests."""

import json

import pytest
import torch

from lib.io.checkpoints import read_manifest, verify_checkpoint
from lib.methods.ddpm import TrainConfig, load_checkpoint, train_ddpm


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
    model, dif, cfg = load_checkpoint(tmp_path / "w.pt")
    assert dif.T == CFG["T"] and cfg.image_size == 16
    assert model(x[:1], torch.tensor([3])).sample.shape == (1, 3, 16, 16)


def test_corrupt_checkpoint_is_detected(tmp_path):
    x = _images()
    train_ddpm(x, TrainConfig(**{**CFG, "steps": 2}), tmp_path / "s.pt", export=tmp_path / "w.pt",
               device="cpu", progress=False)
    data = bytearray((tmp_path / "w.pt").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "w.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(tmp_path / "w.pt")


def test_resume_with_other_config_is_refused(tmp_path):
    x = _images()
    train_ddpm(x, TrainConfig(**{**CFG, "steps": 2}), tmp_path / "s.pt", device="cpu", progress=False)
    with pytest.raises(ValueError, match="different config"):
        train_ddpm(x, TrainConfig(**{**CFG, "steps": 2, "lr": 1e-3}), tmp_path / "s.pt", device="cpu",
                   progress=False)
    with pytest.raises(ValueError, match="different config"):      # fewer steps than already done
        train_ddpm(x, TrainConfig(**{**CFG, "steps": 1}), tmp_path / "s.pt", device="cpu", progress=False)


def test_extending_a_finished_run_equals_one_long_run(tmp_path):
    x = _images()
    _, e1, l1 = train_ddpm(x, TrainConfig(**{**CFG, "steps": 4}), tmp_path / "long.pt", device="cpu", progress=False)
    train_ddpm(x, TrainConfig(**{**CFG, "steps": 2}), tmp_path / "ext.pt", device="cpu", progress=False)
    _, e2, l2 = train_ddpm(x, TrainConfig(**{**CFG, "steps": 4}), tmp_path / "ext.pt", device="cpu", progress=False)
    assert l1 == l2 and _states_equal(e1.state_dict(), e2.state_dict())


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="images must be"):
        train_ddpm(torch.zeros(4, 1, 16, 16), TrainConfig(**CFG), tmp_path / "x.pt", device="cpu", progress=False)
    with pytest.raises(ValueError, match="preset"):
        TrainConfig(preset="huge").validate()
    (tmp_path / "lonely.pt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_checkpoint(tmp_path / "lonely.pt")


def test_half_precision_export_loads_as_float32(tmp_path):
    from lib.io.checkpoints import read_manifest
    from lib.methods.ddpm import load_checkpoint

    x = _images()
    _, ema, _ = train_ddpm(x, TrainConfig(**{**CFG, "steps": 2}), tmp_path / "s.pt", export=tmp_path / "w.pt",
                           device="cpu", progress=False, export_half=True, extra={"val_fraction": 0.2})
    stored = torch.load(tmp_path / "w.pt", weights_only=True)["ema"]
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    model, _, _ = load_checkpoint(tmp_path / "w.pt")
    for a, b in zip(model.state_dict().values(), ema.state_dict().values()):
        assert a.dtype == torch.float32 and torch.allclose(a, b, atol=1e-3, rtol=1e-3)
    man = read_manifest(tmp_path / "w.pt")
    assert man["val_fraction"] == 0.2 and "float16" in man["weights"]
