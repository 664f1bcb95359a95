"""DiffusionAD (seed 003): one-step and norm-guided denoising, scores, training round trip."""

import math

import pytest
import torch

from lib.core.diffusion import Diffusion, make_betas
from lib.methods.diffusionad import (ADConfig, ddim_from, image_score, iterative, load_diffusionad, norm_guided,
                             one_step, train_diffusionad)


def two_step_diffusion():
    """T = 2 with ᾱ_0 = 0.64 (√ = 0.8) and ᾱ_1 = 0.25 (√ = 0.5): numbers a hand can follow."""
    return Diffusion(torch.tensor([0.36, 1 - 0.25 / 0.64], dtype=torch.float64))


def const_model(c):
    return lambda x_t, t: torch.full_like(x_t, c)


def true_noise_model(x0, diffusion):
    """A stub ε-model that knows x0 and returns the noise that is really in x_t."""
    def eps(x_t, t):
        reps = x_t.shape[0] // x0.shape[0]
        return diffusion.eps_from_x0(x_t, t.cpu(), x0.repeat(reps, 1, 1, 1))
    return eps


def test_norm_guided_hand_computed():
    d = two_step_diffusion()
    x0 = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    n_s, n_b = torch.ones_like(x0), -torch.ones_like(x0)
    r = norm_guided(const_model(0.1), x0, d, 0, 1, n_s, n_b, w=1.0)
    # x_ts = 0.8·0.5 + 0.6·1 = 1.0;  x_tb = 0.5·0.5 − √0.75 = −0.6160254
    assert torch.allclose(r.x_ts, torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(r.x_tb, torch.tensor(0.25 - math.sqrt(0.75), dtype=torch.float64))
    # x̂0_b = (x_tb − √0.75·0.1)/0.5 = −1.405 → clamped to −1
    assert torch.allclose(r.x0_b, torch.tensor(-1.0, dtype=torch.float64))
    # n_ts = 0.8·(−1) + 0.6·0.1 = −0.74 (re-noised with the *predicted* noise)
    assert torch.allclose(r.n_ts, torch.tensor(-0.74, dtype=torch.float64))
    # ε̂ = 0.1 − 0.6·1·(−0.74 − 1.0) = 1.144;  x̂0_g = (1 − 0.6·1.144)/0.8 = 0.392
    assert torch.allclose(r.x0_g, torch.tensor(0.392, dtype=torch.float64))
    # w = 0: no guidance, x̂0_g = one-step from x_ts = (1 − 0.06)/0.8 = 1.175 → clamped to 1
    r0 = norm_guided(const_model(0.1), x0, d, 0, 1, n_s, n_b, w=0.0)
    assert torch.allclose(r0.x0_g, torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(r0.x0_g, r0.x0_s)
    # w = 0.5 moves halfway in ε: ε̂ = 0.1 + 0.522 = 0.622, x̂0_g = (1 − 0.3732)/0.8 = 0.7835
    r5 = norm_guided(const_model(0.1), x0, d, 0, 1, n_s, n_b, w=0.5)
    assert torch.allclose(r5.x0_g, torch.tensor(0.7835, dtype=torch.float64))


def test_one_step_exact_with_true_noise():
    d = Diffusion(make_betas("linear", 1000))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    for t in (0, 200, 400, 999):
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x_t = d.q_sample(x0, t, eps)
        assert torch.allclose(one_step(eps, x_t, t, d), x0, atol=1e-9)
    r = norm_guided(true_noise_model(x0, d), x0, d, 200, 400, torch.randn(x0.shape, generator=g, dtype=torch.float64),
                    torch.randn(x0.shape, generator=g, dtype=torch.float64))
    for rec in (r.x0_g, r.x0_s, r.x0_b):
        assert torch.allclose(rec, x0, atol=1e-9)


def test_iterative_and_ddim_exact_with_true_noise():
    d = Diffusion(make_betas("linear", 1000))
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    model = true_noise_model(x0, d)
    assert torch.allclose(ddim_from(model, x0, d, 400, noise, num_steps=30), x0, atol=1e-9)
    # ancestral DDPM: x̂0 is exact at every step, the posterior mean at the last step is x0 itself
    out = iterative(model, x0, d, 400, noise, torch.Generator().manual_seed(2), num_steps=40)
    assert torch.allclose(out, x0, atol=1e-9)


def test_one_call_equals_two_calls_with_a_real_unet():
    from lib.core.diffusion import eps_fn
    from lib.core.nets import unet

    torch.manual_seed(0)
    m = eps_fn(unet("small", 32).eval())
    d = Diffusion(make_betas("linear", 1000))
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    n_s, n_b = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        a = norm_guided(m, x0, d, 200, 400, n_s, n_b, one_call=True)
        b = norm_guided(m, x0, d, 200, 400, n_s, n_b, one_call=False)
    assert (a.x0_g - b.x0_g).abs().max() < 1e-5


def test_image_score_is_top_k_mean():
    amap = torch.zeros(2, 10, 10)
    amap[0].view(-1)[:60] = torch.linspace(0, 1, 60)
    top = torch.linspace(0, 1, 60)[-50:].mean()
    s = image_score(amap, k=50)
    assert torch.allclose(s[0], top) and s[1] == 0
    assert torch.allclose(image_score(amap, k=1)[0], torch.tensor(1.0))


def test_training_round_trip(tmp_path):
    from lib.data.synth import anomaly_sources

    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 32, 32, generator=g) * 2 - 1
    cfg = ADConfig(image_size=32, steps=4, batch_size=4, pool=6, ckpt_every=2)
    sources = anomaly_sources((32, 32))
    out, export = tmp_path / "state.pt", tmp_path / "export.pt"
    model, hist = train_diffusionad(images, cfg, out, sources=sources, export=export, progress=False,
                                    device="cpu")
    assert len(hist["noise"]) == 4 and all(math.isfinite(v) for v in hist["mask"])
    # stop after 2 then resume to 4: the same weights as one run
    out2 = tmp_path / "state2.pt"
    train_diffusionad(images, cfg, out2, sources=sources, progress=False, device="cpu", stop_after=2)
    resumed, _ = train_diffusionad(images, cfg, out2, sources=sources, progress=False, device="cpu")
    for a, b in zip(model.unet.state_dict().values(), resumed.unet.state_dict().values()):
        assert torch.equal(a, b)
    loaded = load_diffusionad(export)
    assert loaded.config == cfg
    for a, b in zip(model.seg.state_dict().values(), loaded.seg.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-2, rtol=1e-2)  # stored as float16
    with pytest.raises(ValueError, match="different config"):
        train_diffusionad(images, ADConfig(image_size=32, steps=4, batch_size=4, pool=6, seed=1), out,
                          sources=sources, progress=False, device="cpu")
