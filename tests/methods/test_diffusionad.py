"""DiffusionAD (seed 003): one-step and norm-guided denoising and their range checks, training round trip."""

import math

import pytest
import torch

from lib.core.diffusion import Diffusion, make_betas, predict_x0_one_step
from lib.methods.diffusionad import ADConfig, DiffusionADModel, load_diffusionad, norm_guided, train_diffusionad


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
        # eq. 6, clamped as in the authors' code
        assert torch.allclose(predict_x0_one_step(lambda x_t, tt: eps, x0, d, t, noise=eps, clip_x0=True), x0, atol=1e-9)
    r = norm_guided(true_noise_model(x0, d), x0, d, 200, 400, torch.randn(x0.shape, generator=g, dtype=torch.float64),
                    torch.randn(x0.shape, generator=g, dtype=torch.float64))
    for rec in (r.x0_g, r.x0_s, r.x0_b):
        assert torch.allclose(rec, x0, atol=1e-9)


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


def test_norm_guided_draws_its_noises_from_the_generator_as_reconstruct_does():
    """noise_s then noise_b from the generator (float32, then x0's device/dtype): the draws the notebooks'
    reconstruct() made before the restructure, so the committed tables do not move."""
    d = two_step_diffusion()
    x0 = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    g = torch.Generator().manual_seed(5)
    n_s, n_b = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
    want = norm_guided(const_model(0.1), x0, d, 0, 1, n_s, n_b, w=0.5)
    got = norm_guided(const_model(0.1), x0, d, 0, 1, generator=torch.Generator().manual_seed(5), w=0.5)
    for a, b in zip(want, got):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="noise_s or a generator"):
        norm_guided(const_model(0.1), x0, d, 0, 1)


def test_norm_guided_range_checks():
    """No wrap-around, no IndexError, no silent truncation: ValueError naming t_s, t_b, w or x0."""
    d = Diffusion(make_betas("linear", 1000))
    x0 = torch.zeros(2, 3, 8, 8)
    n = torch.zeros_like(x0)
    calls = []
    model = lambda x_t, t: calls.append(1) or torch.zeros_like(x_t)  # noqa: E731
    nan_x = x0.clone()
    nan_x[1, 2, 3, 4] = float("nan")
    cases = [
        (dict(t_s=-1), r"t_s must be an integer in \[0, 999\], got -1"),
        (dict(t_b=-5), r"t_b must be an integer in \[0, 999\], got -5"),
        (dict(t_b=1000), r"t_b must be an integer in \[0, 999\], got 1000"),
        (dict(t_s=200.7), r"t_s must be an int or a 1-D integer tensor, got 200.7"),
        (dict(t_s=500, t_b=400), r"t_s must be <= t_b .*t_s=500, t_b=400"),
        (dict(t_s=torch.tensor([100, 450]), t_b=torch.tensor([400, 400])), r"t_s must be <= t_b"),
        (dict(t_s=torch.tensor([1, 2, 3])), r"t_s must be an int or one timestep per image \(2\), got 3"),
        (dict(w=-0.5), r"w must be a finite number >= 0.0, got -0.5"),
        (dict(w=float("nan")), r"w must be a finite number >= 0.0, got nan"),
        (dict(x0=nan_x), r"x0 holds 1 NaN"),
        (dict(x0=x0[:0], noise_s=n[:0], noise_b=n[:0]), r"x0 is an empty batch"),
        (dict(noise_b=n[:1]), r"noise_b must have the shape of x0"),
    ]
    for kw, msg in cases:
        args = dict(x0=x0, t_s=200, t_b=400, noise_s=n, noise_b=n, w=1.0) | kw
        with pytest.raises(ValueError, match=msg):
            norm_guided(model, args["x0"], d, args["t_s"], args["t_b"], args["noise_s"], args["noise_b"], w=args["w"])
    assert calls == []
    r = norm_guided(model, x0, d, 300, 300, n, n)            # t_s = t_b is allowed
    assert r.x0_g.shape == x0.shape and len(calls) == 1


def test_model_reconstruct_and_anomaly_map_check_the_image_size():
    from lib.core.nets import segmentation_net, unet

    torch.manual_seed(0)
    m = DiffusionADModel(unet("small", 32).eval(), segmentation_net("tiny").eval(),
                         Diffusion(make_betas("linear", 1000)), ADConfig(image_size=32))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    r = m.reconstruct(x, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    n_s, n_b = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    with torch.no_grad():
        assert torch.equal(r.x0_g, norm_guided(m.eps, x, m.diffusion, 200, 400, n_s, n_b).x0_g)
    amap = m.anomaly_map(x, r.x0_g)
    assert amap.shape == (1, 32, 32) and float(amap.min()) >= 0 and float(amap.max()) <= 1
    with pytest.raises(ValueError, match=r"30×32, but this network down-samples by 8"):
        m.reconstruct(x[:, :, :30], torch.Generator())
    with pytest.raises(ValueError, match="t_s must be <= t_b"):
        m.reconstruct(x, torch.Generator(), t_s=600, t_b=400)


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
    with pytest.raises(ValueError, match=r"different config: seed: 0 → 1"):
        train_diffusionad(images, ADConfig(image_size=32, steps=4, batch_size=4, pool=6, ckpt_every=2, seed=1), out,
                          sources=sources, progress=False, device="cpu")
    # other anomaly sources give another pool: the same config on other data is refused
    with pytest.raises(ValueError, match="was trained on other data"):
        train_diffusionad(images, ADConfig(image_size=32, steps=6, batch_size=4, pool=6, ckpt_every=2), out,
                          sources=anomaly_sources((32, 32), exclude="grass"), progress=False, device="cpu")


def test_training_checks_its_images(tmp_path):
    images = torch.zeros(4, 3, 36, 36)
    with pytest.raises(ValueError, match=r"images is 36×36, but this network down-samples by 8"):
        train_diffusionad(images, ADConfig(image_size=32, steps=1, batch_size=2, pool=2), tmp_path / "s.pt",
                          sources=None, progress=False, device="cpu")
    images = torch.full((4, 3, 32, 32), float("nan"))
    with pytest.raises(ValueError, match="images holds"):
        train_diffusionad(images, ADConfig(image_size=32, steps=1, batch_size=2, pool=2), tmp_path / "s.pt",
                          sources=None, progress=False, device="cpu")


def test_pretrained_loads_the_committed_model(recwarn):
    from lib.methods import diffusionad

    m = diffusionad.pretrained("display_panel", "quick", device="cpu")
    assert m.path.name == "diffusionad_lean_shared64.pt" and m.config == diffusionad.PROFILES["quick"]
    steps = diffusionad.PROFILES["quick"].steps
    assert m.manifest["step"] == steps and len(m.losses["noise"]) == len(m.losses["mask"]) == steps
    assert not m.unet.training and not m.seg.training
    assert not [w for w in recwarn if "trained" in str(w.message)]
    with pytest.raises(FileNotFoundError, match=r"(?s)diffusionad_paper_gravel256\.pt is missing.*"
                       r"python -m lib\.methods\.diffusionad --category gravel --preset paper --seg-preset paper "
                       r"--image-size 256 --steps 300000 --name diffusionad_paper_gravel256"):
        diffusionad.pretrained("gravel", "paper", device="cpu")
