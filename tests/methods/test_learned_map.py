"""The thesis' learned anomaly map: training pairs, a short training run, and the validation hold-out."""

import numpy as np
import pytest
import torch

from lib import data as kd
from lib.core.diffusion import Diffusion
from lib.core.scoring import segmentation_map
from lib.methods.learned_map import LearnedMapConfig, SelfAwareSettings, make_pairs, train_learned_map
from lib.data.synth import anomaly_sources


def test_pairs_half_normal_and_known_region_kept():
    d = Diffusion.from_schedule("sigmoid", 1000)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    calls = []

    def stub(x_t, t):
        calls.append(len(x_t))
        return torch.zeros_like(x_t)

    settings = SelfAwareSettings(t=9, n_resample=2, num_steps=3, t_start=299, t_end=319, t_stride=10)
    q_p = torch.full((16, 16), 10.0)          # nothing exceeds it: empty masks, every pixel known
    eps = torch.randn(1, 3, 16, 16, generator=g)
    x_a, x_hat, M = make_pairs(stub, images, d, q_p, eps, settings, anomaly_sources((16, 16)),
                               torch.Generator().manual_seed(1), n=6, batch_size=4, progress=False)
    assert x_a.shape == x_hat.shape == (6, 3, 16, 16) and M.shape == (6, 1, 16, 16)
    assert M[0::2].sum() == 0 and all(M[i].sum() > 0 for i in range(1, 6, 2))
    assert torch.equal(x_hat, x_a)            # an all-known inpainting returns its input exactly
    seg, hist = train_learned_map(x_a, x_hat, M, LearnedMapConfig(epochs=2, batch_size=2), device="cpu", progress=False)
    assert len(hist) == 2 * 3 and np.isfinite(hist).all()
    amap = segmentation_map(seg, x_a, x_hat)
    assert amap.shape == (6, 16, 16) and float(amap.min()) >= 0 and float(amap.max()) <= 1


def test_split_validation_is_deterministic_and_disjoint():
    root = kd.embedded_benchmark(size=64)
    cat = kd.load_category(root, "gravel", image_size=64)
    tr, val = kd.split_validation(cat.train, 0.2)
    assert len(tr) + len(val) == len(cat.train) and len(val) == round(0.2 * len(cat.train))
    assert not set(tr.paths) & set(val.paths)
    assert val.paths == cat.train.paths[len(tr):]
    with pytest.raises(ValueError, match="fraction"):
        kd.split_validation(cat.train, 1.0)


def test_training_resumes_and_exports_with_its_settings(tmp_path):
    from lib.methods.learned_map import load_learned_map

    g = torch.Generator().manual_seed(0)
    x_a, x_hat = (torch.rand(8, 3, 16, 16, generator=g) * 2 - 1 for _ in range(2))
    M = (torch.rand(8, 1, 16, 16, generator=g) > 0.5).float()
    cfg, st = LearnedMapConfig(epochs=3, batch_size=2), SelfAwareSettings(num_steps=10, t_stride=10)
    seg1, h1 = train_learned_map(x_a, x_hat, M, cfg, device="cpu", progress=False, settings=st,
                                 export=tmp_path / "lm.pt", out=tmp_path / "s1.pt", command="pytest")
    # a shorter run (fewer epochs) extended to 3 epochs equals the single run
    train_learned_map(x_a, x_hat, M, LearnedMapConfig(epochs=1, batch_size=2), device="cpu", progress=False,
                      out=tmp_path / "s2.pt")
    seg2, h2 = train_learned_map(x_a, x_hat, M, cfg, device="cpu", progress=False, out=tmp_path / "s2.pt")
    assert h1 == h2 and len(h1) == 3 * 4
    assert all(torch.equal(a, b) for a, b in zip(seg1.state_dict().values(), seg2.state_dict().values()))
    lm = load_learned_map(tmp_path / "lm.pt")
    assert lm.settings == st and lm.config == cfg and lm.losses == h1 and lm.manifest["command"] == "pytest"
    assert lm.manifest["config"] == {**vars(cfg), "settings": vars(st)}
    with pytest.raises(ValueError, match="x_hat must have the shape of x_a"):
        train_learned_map(x_a, x_hat[:4], M, cfg, device="cpu", progress=False)
    with pytest.raises(ValueError, match="export needs the settings"):
        train_learned_map(x_a, x_hat, M, cfg, device="cpu", progress=False, export=tmp_path / "x.pt")


def test_pretrained_loads_the_committed_map(recwarn):
    from lib.methods import learned_map

    lm = learned_map.pretrained("metal_strip", "quick", device="cpu")
    assert lm.path.name == "learnedmap_metal_strip64.pt" and lm.settings == learned_map.PROFILES["quick"].settings
    assert lm.config == learned_map.PROFILES["quick"].config and lm.manifest["pairs"] == learned_map.PROFILES["quick"].pairs
    assert not [w for w in recwarn if "trained" in str(w.message)]
    with pytest.raises(FileNotFoundError, match=r"(?s)learnedmap_gravel64_seed2\.pt is missing.*python -m "
                       r"lib\.methods\.learned_map --data data/embedded/v3_size64_seed0 --ddpm "
                       r"data/checkpoints/ddpm_lean_sigmoid_shared64_seed2\.pt --category gravel --image-size 64 "
                       r"--num-steps 10 --t-stride 10 --seed 2 --pairs 256"):
        learned_map.pretrained("gravel", "quick", seed=2, device="cpu")


def test_the_cli_refuses_a_ddpm_without_validation_set(tmp_path, capsys):
    from lib.core.paths import CHECKPOINTS
    from lib.methods import learned_map

    with pytest.raises(SystemExit) as e:     # an absolute path: the test must not depend on the working folder
        learned_map.main(["--ddpm", str(CHECKPOINTS / "ddpm_tiny_gravel64.pt"), "--category", "gravel", "--name", "x",
                          "--export-dir", str(tmp_path), "--device", "cpu"])
    assert e.value.code == 2
    assert "trained without a held-out validation set" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_make_pairs_keeps_simulated_anomalies_on_the_foreground():
    import torch
    from lib.core.diffusion import Diffusion, make_betas
    from lib.data.synth import anomaly_sources
    from lib.methods.learned_map import SelfAwareSettings, make_pairs

    imgs = torch.rand(3, 3, 32, 32) * 2 - 1
    fg = torch.zeros(3, 32, 32, dtype=torch.bool)
    fg[:, 8:24, 8:24] = True
    st = SelfAwareSettings(t=9, n_resample=1, num_steps=2, t_start=5, t_end=9, t_stride=4, p=0.8)
    _, _, M = make_pairs(lambda x, t: torch.zeros_like(x), imgs, Diffusion(make_betas("linear", 50)),
                         torch.zeros(32, 32), torch.zeros(1, 3, 32, 32), st, anomaly_sources((32, 32)),
                         torch.Generator().manual_seed(0), 6, progress=False, foreground=fg)
    assert M[1::2].sum() > 0 and not (M[1::2, 0].bool() & ~fg[0]).any()
    assert not M[0::2].any()
