"""The one training loop: exactly a plain PyTorch loop with one process, the same result on two processes,
resume checks (config, data), non-finite losses, and the pretrained() lookup."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.core.diffusion import Diffusion, make_betas
from lib.core.nets import unet
from lib.core.paths import REPO
from lib.io.checkpoints import CheckpointError, read_manifest
from lib.io.training import NonFiniteLossError, Shard, Trainer, find_or_train, training_time
from lib.methods.ddpm import TrainConfig, train_ddpm

CFG = dict(preset="tiny", image_size=16, T=50, steps=6, batch_size=2, ckpt_every=2, seed=3)


def _images(n=6, size=16, seed=123):
    return torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _plain_loop(images, cfg):
    """The DDPM training loop as it was written before the shared loop (Ho eq. 14, EMA 0.999)."""
    alpha_bar = Diffusion(make_betas(cfg.schedule, cfg.T)).alpha_bar.float()
    torch.manual_seed(cfg.seed)
    model, ema = unet(cfg.preset, cfg.image_size), unet(cfg.preset, cfg.image_size)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for _ in range(cfg.steps):
        idx = torch.randint(0, images.shape[0], (cfg.batch_size,), generator=gen)
        t = torch.randint(0, cfg.T, (cfg.batch_size,), generator=gen)
        eps = torch.randn((cfg.batch_size, *images.shape[1:]), generator=gen)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(model(a.sqrt() * images[idx] + (1 - a).sqrt() * eps, t).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - cfg.ema_decay)
        losses.append(loss.item())
    return model, ema, losses


def test_one_process_is_exactly_a_plain_pytorch_loop(tmp_path):
    x, cfg = _images(), TrainConfig(**CFG)
    m1, e1, l1 = _plain_loop(x, cfg)
    m2, e2, l2 = train_ddpm(x, cfg, tmp_path / "s.pt", device="cpu", progress=False)
    assert l1 == l2
    for a, b in ((m1, m2), (e1, e2)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_two_processes_match_one_process(tmp_path, tiny_data):
    """``torchrun`` with 2 gloo processes (accelerate's MULTI_CPU) vs 1 process, same command: every process
    draws the same global batch and trains on half of it; DDP averages the halves' gradients."""
    lr = 2e-4
    args = ["--data", str(tiny_data), "--category", "c", "--image-size", "16", "--T", "50", "--steps", "10",
            "--batch-size", "4", "--ckpt-every", "5", "--ema-decay", "0.5", "--lr", str(lr), "--name", "w"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO)}
    from lib.methods import ddpm
    ddpm.main(args + ["--state-dir", str(tmp_path / "s1"), "--export-dir", str(tmp_path / "e1"), "--device", "cpu"])
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lib.methods.ddpm", *args, "--state-dir", str(tmp_path / "s2"),
                          "--export-dir", str(tmp_path / "e2"), "--device", "cpu"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one, two_ = (torch.load(tmp_path / d / "w.pt", weights_only=True) for d in ("e1", "e2"))
    s1, s2 = (torch.load(tmp_path / d / "w.pt", weights_only=True) for d in ("s1", "s2"))
    assert read_manifest(tmp_path / "e2" / "w.pt")["processes"] == 2
    np.testing.assert_allclose(one["losses"], two_["losses"], rtol=1e-5)   # each step: the global-batch mean
    torch.manual_seed(0)                                   # both runs start from these weights
    init = unet("tiny", 16).state_dict()
    for key in ("model", "ema"):
        diff = torch.cat([(s1[key][k] - s2[key][k]).flatten() for k in init])
        moved = torch.cat([(s1[key][k] - init[k]).flatten() for k in init])
        print(f"{key} weights after 10 steps: max |1 process - 2 processes| {diff.abs().max():.2e}, "
              f"relative to how far training moved them {diff.norm() / moved.norm():.2e}")
        # float rounding of the split gradient sum, amplified by Adam, stays far below what training did
        # (measured here: 5e-5 at most, 1e-4 relative; one Adam step moves a weight by about lr = 2e-4 at most)
        assert diff.abs().max() < 2 * lr and diff.norm() < 1e-2 * moved.norm(), key
    assert max((one["ema"][k] - two_["ema"][k]).abs().max().item() for k in one["ema"]) < 2 * lr


def test_a_non_finite_loss_stops_training_before_the_step(tmp_path):
    cfg = TrainConfig(**CFG)
    trainer = Trainer(cfg, tmp_path / "s.pt", data=(torch.zeros(1),), device="cpu", progress=False)
    net = torch.nn.Linear(2, 1)

    def loss(nets, shard):
        y = nets["net"](torch.ones(1, 2)).sum()
        return {"l": y * (float("nan") if trainer.step == 3 else 1.0)}

    with pytest.raises(NonFiniteLossError, match=r"stopped at step 4: the loss became non-finite \(l = nan\)"):
        trainer.fit(loss, {"net": net}, [{"params": net.parameters(), "lr": 0.1}], steps=6, ckpt_every=2)
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["net"].values())
    assert torch.isfinite(net.weight).all()


def test_nan_images_are_refused_at_the_entry(tmp_path):
    x = _images()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images holds 1 NaN"):
        train_ddpm(x, TrainConfig(**CFG), tmp_path / "s.pt", device="cpu", progress=False)
    assert not (tmp_path / "s.pt").exists()


def test_resume_on_other_data_is_refused(tmp_path):
    cfg = TrainConfig(**{**CFG, "steps": 2})
    train_ddpm(_images(), cfg, tmp_path / "s.pt", device="cpu", progress=False)
    with pytest.raises(CheckpointError, match="was trained on other data"):
        train_ddpm(_images(seed=7), TrainConfig(**{**CFG, "steps": 4}), tmp_path / "s.pt", device="cpu",
                   progress=False)


def test_resume_errors_say_which_field_differs(tmp_path):
    x = _images()
    train_ddpm(x, TrainConfig(**{**CFG, "steps": 2}), tmp_path / "s.pt", device="cpu", progress=False)
    with pytest.raises(CheckpointError, match=r"different config: lr: 0.0002 → 0.001 \(saved → now"):
        train_ddpm(x, TrainConfig(**{**CFG, "steps": 2, "lr": 1e-3}), tmp_path / "s.pt", device="cpu", progress=False)
    with pytest.raises(CheckpointError, match=r"already done 2 steps, more than the 1 asked for now \(steps: 2 → 1\)"):
        train_ddpm(x, TrainConfig(**{**CFG, "steps": 1}), tmp_path / "s.pt", device="cpu", progress=False)


def test_shard_rows():
    assert Shard().rows(6) == slice(0, 6)
    assert [Shard(r, 2).rows(4) for r in (0, 1)] == [slice(0, 2), slice(2, 4)]
    with pytest.raises(ValueError, match="cannot be split evenly over 2 processes"):
        Shard(0, 2).rows(5)


def test_find_or_train_explains_a_missing_checkpoint(tmp_path):
    cost = training_time(3000, {"on a 2-core CPU": 0.6, "on an H100": 0.03})
    assert cost == "3000 steps, about 30 min on a 2-core CPU (0.6 s/step), about 2 min on an H100 (0.03 s/step)"
    with pytest.raises(FileNotFoundError, match=r"(?s)x\.pt is missing.*python -m lib\.methods\.ddpm --name x\n"
                                                r"\(3000 steps, about 30 min"):
        find_or_train(tmp_path / "x.pt", retrain=False, train=lambda: None, command="python -m lib.methods.ddpm --name x",
                      cost=cost)
    assert training_time(10, {}) == "10 steps, a GPU job, not timed here"


def test_the_export_records_the_measured_seconds_per_step(tmp_path):
    """The trainer times every step; the export's manifest keeps the median after the first (the warm-up step)."""
    x, cfg = _images(), TrainConfig(**CFG)
    train_ddpm(x, cfg, tmp_path / "s.pt", export=tmp_path / "e.pt", device="cpu", progress=False)
    m = read_manifest(tmp_path / "e.pt")
    assert m["seconds_per_step"] > 0 and m["timed_steps"] == cfg.steps - 1
