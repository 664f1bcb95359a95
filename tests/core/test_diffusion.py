"""lib.core.diffusion against diffusers' DDPMScheduler / DDIMScheduler on identical inputs and noise.

Precision note.  diffusers keeps ᾱ in float32, and 1 - ᾱ_t loses ~3 significant digits at small t
(ᾱ_0 = 0.9999), so its step coefficients there are off by up to ~1e-3 relative; lib.core.diffusion keeps
ᾱ in float64.  To compare the *formulas* on identical inputs, the step/sampler tests hand diffusers
our float64 ᾱ (``_patched``); the schedules themselves are compared with diffusers' own float32
ones in ``test_schedules_match_diffusers``.  Values that are not O(1) (unclipped x̂0 at large t
reaches 1e5) are compared with an absolute tolerance scaled by max(1, |reference|).
"""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from lib.core.diffusion import (Diffusion, ddim_from, denoise_from, eps_fn, make_betas, noise_like, predict_x0_one_step,
                                randn as draw, reverse_pairs, sample_ddim, sample_ddpm, sample_hybrid, size_multiple,
                                t_batch)

T = 1000
TOL = 1e-5
SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2", "sigmoid": "sigmoid"}
SHAPE = (2, 3, 8, 8)


def maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item()


def assert_close(ours, ref, tol=TOL):
    scale = max(1.0, ref.abs().max().item())
    d = maxdiff(ours, ref)
    assert d <= tol * scale, f"max abs diff {d:.3g} > {tol:g} x {scale:.3g}"


def _patched(sched, d):
    """Give a diffusers scheduler our float64 ᾱ (see module docstring)."""
    sched.betas, sched.alphas, sched.alphas_cumprod = d.betas, d.alphas, d.alpha_bar
    one = torch.tensor(1.0, dtype=torch.float64)
    if isinstance(sched, DDIMScheduler):
        sched.final_alpha_cumprod = one
    else:
        sched.one = one
    return sched


def ddpm_sched(name, **kw):
    return DDPMScheduler(num_train_timesteps=T, beta_schedule=SCHEDULES[name], **kw)


def ddim_sched(name, **kw):
    # DDIMScheduler has no "sigmoid": pass trained_betas (diffusers' own sigmoid betas).
    betas = DDPMScheduler(num_train_timesteps=T, beta_schedule=SCHEDULES[name]).betas
    return DDIMScheduler(num_train_timesteps=T, trained_betas=betas.numpy(), set_alpha_to_one=True, **kw)


def stub_model(x_t, t):
    """A fixed deterministic ε-model."""
    return 0.1 * x_t + 1e-3 * t.to(x_t.dtype).reshape(-1, 1, 1, 1)


def randn(seed, dtype=torch.float32, shape=SHAPE):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_match_diffusers(name):
    d = Diffusion.from_schedule(name, T)
    ref = ddpm_sched(name)
    assert d.betas.dtype == torch.float64 and d.T == T
    assert maxdiff(d.betas, ref.betas) <= 1e-7
    assert maxdiff(d.alpha_bar, ref.alphas_cumprod) <= 1e-6  # diffusers' float32 cumprod drifts ~4e-7
    assert maxdiff(d.alphas, ref.alphas) <= 1e-7


def test_cosine_is_capped():
    betas = make_betas("cosine", T)
    assert betas.max().item() == pytest.approx(0.999) and (betas > 0).all()


# ---------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("name", SCHEDULES)
def test_q_sample_matches_add_noise(name):
    d, ref = Diffusion.from_schedule(name, T), ddpm_sched(name)  # unpatched: add_noise is well conditioned
    x0, eps = randn(0, shape=(4, 3, 8, 8)), randn(1, shape=(4, 3, 8, 8))
    for t in [0, 1, 500, T - 1]:
        tt = torch.full((4,), t, dtype=torch.long)
        assert maxdiff(d.q_sample(x0, t, eps), ref.add_noise(x0, eps, tt)) <= TOL
    tt = torch.tensor([0, 10, 500, T - 1])  # per-sample t
    assert maxdiff(d.q_sample(x0, tt, eps), ref.add_noise(x0, eps, tt)) <= TOL


def test_iterated_forward_steps_match_closed_form():
    """Eq. 1 (corrected) iterated for s = 0..t has eq. 3's mean √ᾱ_t·x0 and variance 1 - ᾱ_t."""
    d = Diffusion.from_schedule("linear", T)
    n, x0 = 40_000, 0.7
    g = torch.Generator().manual_seed(0)
    x = torch.full((n, 1, 1, 1), x0)
    checked = 0
    for t in range(T):
        x = d.q_step(x, t, torch.randn(x.shape, generator=g))
        if t in (0, 9, 99, 299, 999):
            ab = d.alpha_bar[t].item()
            mean_want, var_want = math.sqrt(ab) * x0, 1 - ab
            assert abs(x.mean().item() - mean_want) <= 5 * math.sqrt(var_want / n), (t, x.mean().item(), mean_want)
            assert abs(x.var().item() - var_want) <= 5 * var_want * math.sqrt(2 / n), (t, x.var().item(), var_want)
            checked += 1
    assert checked == 5


# ---------------------------------------------------------------------------------------- ε ↔ x0
def test_x0_eps_roundtrip_and_log_snr():
    d = Diffusion.from_schedule("sigmoid", T)
    x0, eps = randn(0, torch.float64), randn(1, torch.float64)
    t = torch.tensor([3, 700])
    x_t = d.q_sample(x0, t, eps)
    assert maxdiff(d.x0_from_eps(x_t, t, eps), x0) <= 1e-9
    assert maxdiff(d.eps_from_x0(x_t, t, x0), eps) <= 1e-9
    ab = d.alpha_bar[t]
    assert maxdiff(d.log_snr(t), torch.log(ab / (1 - ab))) == 0
    assert (d.log_snr(torch.arange(T)).diff() < 0).all()


@pytest.mark.parametrize("t", [0, 100, 500, 900])
def test_one_step_x0_is_exact_with_true_noise(t):
    d = Diffusion.from_schedule("linear", T)
    x0, eps = randn(0).clamp(-1, 1), randn(1)
    x0_hat = predict_x0_one_step(lambda x_t, tt: eps, x0, d, t, noise=eps)
    assert maxdiff(x0_hat, x0) <= TOL
    # per-sample t, and the model really sees t
    seen = []
    tt = torch.tensor([t, T - 1])
    predict_x0_one_step(lambda x_t, tb: seen.append(tb) or eps, x0, d, tt, noise=eps)
    assert seen[0].tolist() == [t, T - 1]
    # a wrong noise estimate is not exact
    assert maxdiff(predict_x0_one_step(lambda x_t, tb: 0 * eps, x0, d, t, noise=eps), x0) > 1e-3


# ---------------------------------------------------------------------------------------- DDPM step
@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("num_steps", [None, 50])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_posterior_and_ddpm_step_match_diffusers(name, clip, num_steps, dtype):
    d = Diffusion.from_schedule(name, T)
    ref = _patched(ddpm_sched(name, clip_sample=clip), d)
    if num_steps is None:
        ts = [T - 1, T - 2, 500, 1, 0]
    else:
        ref.set_timesteps(num_steps)
        ts = [ref.timesteps[i].item() for i in (0, 1, 25, -2, -1)]
    x, eps = randn(0, dtype), randn(1, dtype)
    for t in ts:
        out = ref.step(eps, t, x, generator=torch.Generator().manual_seed(7))
        z = randn(7, dtype)  # the same draw diffusers' randn_tensor makes from the same seed
        t_prev = None if num_steps is None else d.prev_timestep(t, num_steps)
        assert (t - 1 if t_prev is None else t_prev) == max(int(ref.previous_timestep(t)), -1)
        ours = d.ddpm_step(eps, t, x, t_prev=t_prev, noise=z, clip_x0=clip)
        assert_close(ours.x0_hat, out.pred_original_sample)
        assert_close(ours.x_prev, out.prev_sample)
        mean, var, log_var = d.posterior(out.pred_original_sample, x, t, t_prev)
        ref_var = ref._get_variance(t)  # private, but it is the variance step() uses
        vtol = 1e-7 if dtype == torch.float32 else 1e-12  # returned in x's dtype
        assert_close(var.flatten(), ref_var.reshape(1), tol=vtol)
        assert_close(log_var.flatten(), ref_var.log().reshape(1), tol=vtol)
        ref_mean = out.prev_sample - (ref_var.sqrt() * z if t > 0 else 0)
        assert_close(mean, ref_mean)


def test_ddpm_last_step_adds_no_noise_and_beta_matches_betas():
    d = Diffusion.from_schedule("linear", T)
    x, eps = randn(0, torch.float64), randn(1, torch.float64)
    a = d.ddpm_step(eps, 0, x).x_prev
    b = d.ddpm_step(eps, 0, x, noise=randn(2, torch.float64)).x_prev
    assert torch.equal(a, b)
    _, var, _ = d.posterior(x, x, 0)
    assert var.item() == 0
    # un-respaced: 1 - ᾱ_t/ᾱ_{t-1} is β_t
    _, var, _ = d.posterior(x, x, 10)
    ab = d.alpha_bar
    assert var.item() == pytest.approx(((1 - ab[9]) / (1 - ab[10]) * d.betas[10]).item(), rel=1e-12)
    with pytest.raises(ValueError, match="noise"):
        d.ddpm_step(eps, 5, x)


def test_posterior_unpatched_diffusers_within_float32_error():
    """Against diffusers' own float32 ᾱ: equal up to its float32 cancellation in 1 - ᾱ (documented)."""
    d = Diffusion.from_schedule("linear", T)
    ref = ddpm_sched("linear", clip_sample=True)
    x, eps = randn(0), randn(1)
    for t in [T - 1, 500, 50]:
        out = ref.step(eps, t, x, generator=torch.Generator().manual_seed(3))
        assert maxdiff(d.ddpm_step(eps, t, x, noise=randn(3)).x_prev, out.prev_sample) <= 1e-4


# ---------------------------------------------------------------------------------------- DDIM step
@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("num_steps", [10, 50, 100])
@pytest.mark.parametrize("clip", [True, False])
def test_ddim_step_matches_diffusers(name, eta, num_steps, clip):
    d = Diffusion.from_schedule(name, T)
    ref = _patched(ddim_sched(name, clip_sample=clip), d)
    ref.set_timesteps(num_steps)
    x, eps, z = randn(0), randn(1), randn(2)
    for t in [ref.timesteps[i].item() for i in (0, 1, num_steps // 2, -1)]:
        out = ref.step(eps, t, x, eta=eta, variance_noise=z)
        ours = d.ddim_step(eps, t, x, t_prev=d.prev_timestep(t, num_steps), eta=eta, noise=z if eta > 0 else None,
                           clip_x0=clip)
        assert_close(ours.x0_hat, out.pred_original_sample)
        assert_close(ours.x_prev, out.prev_sample)
        var = ref._get_variance(t, t - T // num_steps)
        sigma = d.ddim_sigma(t, d.prev_timestep(t, num_steps), eta)
        assert maxdiff(sigma, eta * var.sqrt().reshape(1)) <= 1e-12


def test_ddim_per_sample_t_matches_per_sample_calls():
    d = Diffusion.from_schedule("cosine", T)
    x, eps, z = randn(0), randn(1), randn(2)
    t, t_prev = torch.tensor([900, 40]), torch.tensor([800, -1])
    both = d.ddim_step(eps, t, x, t_prev=t_prev, eta=0.5, noise=z).x_prev
    for i in range(2):
        one = d.ddim_step(eps[i:i + 1], t[i].item(), x[i:i + 1], t_prev=t_prev[i].item(), eta=0.5, noise=z[i:i + 1]).x_prev
        assert maxdiff(both[i:i + 1], one) <= 1e-6


def test_ddim_eta1_variance_is_ddpm_posterior_variance():
    d = Diffusion.from_schedule("linear", T)
    x = randn(0, torch.float64)
    for t, tp in [(999, 998), (500, 400), (20, 0), (0, -1)]:
        _, var, _ = d.posterior(x, x, t, tp)
        assert maxdiff(d.ddim_sigma(t, tp, 1.0) ** 2, var.flatten()) <= 1e-15


# ---------------------------------------------------------------------------------------- respacing
@pytest.mark.parametrize("n", [1, 7, 10, 50, 100, 250, 999, 1000])
def test_timesteps_match_set_timesteps(n):
    d = Diffusion.from_schedule("linear", T)
    ddim, ddpm = ddim_sched("linear"), ddpm_sched("linear")
    ddim.set_timesteps(n)
    ddpm.set_timesteps(n)
    assert d.timesteps(n) == ddim.timesteps.tolist() == ddpm.timesteps.tolist()
    for t in d.timesteps(n):
        assert d.prev_timestep(t, n) == max(t - T // n, -1)
        assert d.prev_timestep(t, n) == max(ddpm.previous_timestep(t).item(), -1)
    assert d.timesteps(10) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]


# ---------------------------------------------------------------------------------------- samplers
def _diffusers_ddim_loop(ref, num_steps, eta, seed):
    g = torch.Generator().manual_seed(seed)
    ref.set_timesteps(num_steps)
    x = torch.randn(SHAPE, generator=g)
    for t in ref.timesteps:
        eps = stub_model(x, torch.full((SHAPE[0],), t.item()))
        z = torch.randn(SHAPE, generator=g) if eta > 0 else None  # same per-step draw as ours
        x = ref.step(eps, t, x, eta=eta, variance_noise=z).prev_sample
    return x


@pytest.mark.parametrize("name", ["linear", "sigmoid"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clip", [True, False])
def test_sample_ddim_matches_diffusers_loop(name, eta, clip):
    d = Diffusion.from_schedule(name, T)
    ref = _patched(ddim_sched(name, clip_sample=clip), d)
    want = _diffusers_ddim_loop(ref, 20, eta, seed=11)
    got, steps = sample_ddim(stub_model, SHAPE, d, num_steps=20, eta=eta, generator=torch.Generator().manual_seed(11),
                             clip_x0=clip)
    assert_close(got, want)
    assert [t for t, _ in steps] == d.timesteps(20) and {k for _, k in steps} == {"ddim"}


@pytest.mark.parametrize("num_steps", [50, None])
@pytest.mark.parametrize("clip", [True, False])
def test_sample_ddpm_matches_diffusers_loop(num_steps, clip):
    d = Diffusion.from_schedule("sigmoid", T)
    ref = _patched(ddpm_sched("sigmoid", clip_sample=clip), d)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(SHAPE, generator=g)
    if num_steps is not None:
        ref.set_timesteps(num_steps)
    for t in ref.timesteps:
        x = ref.step(stub_model(x, torch.full((SHAPE[0],), t.item())), t, x, generator=g).prev_sample
    got, steps = sample_ddpm(stub_model, SHAPE, d, generator=torch.Generator().manual_seed(5), num_steps=num_steps,
                             clip_x0=clip)
    assert_close(got, x)
    assert len(steps) == (num_steps or T)


def test_samplers_are_reproducible_from_the_generator():
    d = Diffusion.from_schedule("linear", T)
    a, _ = sample_ddim(stub_model, SHAPE, d, num_steps=10, eta=0.5, generator=torch.Generator().manual_seed(1))
    b, _ = sample_ddim(stub_model, SHAPE, d, num_steps=10, eta=0.5, generator=torch.Generator().manual_seed(1))
    c, _ = sample_ddim(stub_model, SHAPE, d, num_steps=10, eta=0.5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------------------------------- hybrid
def test_hybrid_schedule():
    d = Diffusion.from_schedule("linear", T)
    _, steps = sample_hybrid(stub_model, SHAPE, d, num_steps=10, switch_t=250, generator=torch.Generator().manual_seed(0))
    ddim = [t for t, k in steps if k == "ddim"]
    ddpm = [t for t, k in steps if k == "ddpm"]
    assert ddim == [900, 800, 700, 600, 500, 400, 300]  # the step from 300 lands on 250
    assert ddpm == list(range(250, -1, -1))
    assert steps == [(t, "ddim") for t in ddim] + [(t, "ddpm") for t in ddpm]
    _, steps = sample_hybrid(stub_model, SHAPE, d, num_steps=10, switch_t=200, generator=torch.Generator().manual_seed(0))
    assert [t for t, k in steps if k == "ddim"] == [900, 800, 700, 600, 500, 400, 300]
    assert [t for t, k in steps if k == "ddpm"] == list(range(200, -1, -1))
    assert len(steps) == 7 + 201


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_hybrid_limits_equal_ddim_and_ddpm(eta):
    d = Diffusion.from_schedule("sigmoid", T)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ddim, _ = sample_ddim(stub_model, SHAPE, d, num_steps=25, eta=eta, generator=g())
    hyb, steps = sample_hybrid(stub_model, SHAPE, d, num_steps=25, switch_t=-1, eta=eta, generator=g())
    assert torch.equal(hyb, ddim) and {k for _, k in steps} == {"ddim"}
    ddpm, _ = sample_ddpm(stub_model, SHAPE, d, generator=g())
    hyb, steps = sample_hybrid(stub_model, SHAPE, d, num_steps=25, switch_t=T - 1, eta=eta, generator=g())
    assert torch.equal(hyb, ddpm) and steps == [(t, "ddpm") for t in range(T - 1, -1, -1)]


# ---------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    d = Diffusion.from_schedule("linear", T)
    x = randn(0)
    with pytest.raises(ValueError, match="schedule.*linear.*cosine.*sigmoid"):
        make_betas("quadratic")
    with pytest.raises(ValueError, match="^t must"):
        d.q_sample(x, T, x)
    with pytest.raises(ValueError, match="^t must"):
        d.q_sample(x, -1, x)
    with pytest.raises(ValueError, match="^t must"):
        d.x0_from_eps(x, torch.tensor([0, T]), x)
    with pytest.raises(ValueError, match="^t must"):
        d.q_sample(x, 0.5, x)
    with pytest.raises(ValueError, match="t_prev"):
        d.posterior(x, x, 10, t_prev=10)
    with pytest.raises(ValueError, match="num_steps"):
        d.timesteps(T + 1)
    with pytest.raises(ValueError, match="num_steps"):
        sample_ddim(stub_model, SHAPE, d, num_steps=0, eta=0.0, generator=torch.Generator())
    with pytest.raises(ValueError, match="eta"):
        d.ddim_step(x, 100, x, t_prev=0, eta=1.5, noise=x)
    with pytest.raises(ValueError, match="noise"):
        d.ddim_step(x, 100, x, t_prev=0, eta=0.5)


def test_reverse_pairs_respacing():
    full = reverse_pairs(4)
    assert full == [(4, 3), (3, 2), (2, 1), (1, 0), (0, -1)]
    assert reverse_pairs(4, 5) == full
    r = reverse_pairs(400, 40)
    assert len(r) == 40 and r[0][0] == 400 and r[-1] == (0, -1)
    assert all(a > b for a, b in r) and all(r[i][1] == r[i + 1][0] for i in range(len(r) - 1))
    assert reverse_pairs(49, 1) == [(49, -1)]
    with pytest.raises(ValueError, match="num_steps"):
        reverse_pairs(9, 11)


# ---------------------------------------------------------------------------------------- noise from a generator
def test_steps_draw_their_noise_from_the_generator_like_the_samplers():
    """noise=None + generator: the same draw as passing randn(shape, generator) yourself, only when needed."""
    d = Diffusion.from_schedule("linear", T)
    x, eps = randn(0), randn(1)
    z = draw(SHAPE, torch.Generator().manual_seed(4))
    assert torch.equal(d.ddpm_step(eps, 500, x, generator=torch.Generator().manual_seed(4)).x_prev,
                       d.ddpm_step(eps, 500, x, noise=z).x_prev)
    assert torch.equal(d.ddim_step(eps, 500, x, t_prev=400, eta=0.7, generator=torch.Generator().manual_seed(4)).x_prev,
                       d.ddim_step(eps, 500, x, t_prev=400, eta=0.7, noise=z).x_prev)
    g = torch.Generator().manual_seed(4)
    d.ddpm_step(eps, 0, x, generator=g)                    # last step: no noise, nothing drawn
    d.ddim_step(eps, 500, x, t_prev=400, eta=0.0, generator=g)  # η = 0: nothing drawn
    assert torch.equal(draw(SHAPE, g), z)
    assert noise_like(randn(0, torch.float64), generator=torch.Generator().manual_seed(4)).dtype == torch.float64
    with pytest.raises(ValueError, match="noise_s must have the shape of x0"):
        noise_like(x, torch.zeros(1, 3, 8, 8), name="noise_s", like="x0")


def test_t_batch_and_coef():
    assert t_batch(7, 3).tolist() == [7, 7, 7] and t_batch(7, 3).dtype == torch.long
    assert t_batch(torch.tensor([5]), 2).tolist() == [5, 5]
    assert t_batch(torch.tensor([1, 2, 3]), 3).tolist() == [1, 2, 3]
    c = Diffusion.coef(torch.tensor([0.5, 2.0], dtype=torch.float64), torch.zeros(2, 3, 4, 4))
    assert c.shape == (2, 1, 1, 1) and c.dtype == torch.float32


def test_q_jump_is_q_step_for_one_step_and_has_the_right_law():
    d = Diffusion.from_schedule("linear", T)
    x, z = randn(0), randn(1)
    assert torch.equal(d.q_jump(x, 10, 9, z), d.q_step(x, 10, z))
    ratio = (d.alpha_bar[300] / d.alpha_bar[100]).item()
    assert maxdiff(d.q_jump(x, 300, 100, z), math.sqrt(ratio) * x + math.sqrt(1 - ratio) * z) <= 1e-6
    assert maxdiff(d.q_jump(x, 300, -1, z), d.q_sample(x, 300, z)) <= 1e-6  # from clean = eq. 3
    with pytest.raises(ValueError, match="t_prev"):
        d.q_jump(x, 100, 100, z)


# ---------------------------------------------------------------------------------------- from a clean image
@pytest.mark.parametrize("num_steps", [None, 7])
def test_denoise_from_is_the_documented_loop(num_steps):
    """ε first, then one z per step with s_prev >= 0, each step ddpm_step; 1 model call per (s, s_prev)."""
    d = Diffusion.from_schedule("sigmoid", T)
    x0 = randn(0).clamp(-1, 1)
    calls = []
    got = denoise_from(lambda x_t, t: calls.append(t.tolist()) or stub_model(x_t, t), x0, d, 30,
                       generator=torch.Generator().manual_seed(3), num_steps=num_steps)
    g = torch.Generator().manual_seed(3)
    x = d.q_sample(x0, 30, draw(SHAPE, g))
    pairs = reverse_pairs(30, num_steps)
    for s, s_prev in pairs:
        z = draw(SHAPE, g) if s_prev >= 0 else None
        x = d.ddpm_step(stub_model(x, torch.full((2,), s)), s, x, t_prev=s_prev, noise=z).x_prev
    assert torch.equal(got, x)
    assert calls == [[s, s] for s, _ in pairs]
    # noise given: the generator is used for the per-step z only (DiffusionAD's Iterative-t)
    eps = randn(9)
    a = denoise_from(stub_model, x0, d, 30, noise=eps, generator=torch.Generator().manual_seed(3), num_steps=num_steps)
    g = torch.Generator().manual_seed(3)
    x = d.q_sample(x0, 30, eps)
    for s, s_prev in pairs:
        z = draw(SHAPE, g) if s_prev >= 0 else None
        x = d.ddpm_step(stub_model(x, torch.full((2,), s)), s, x, t_prev=s_prev, noise=z).x_prev
    assert torch.equal(a, x)
    assert a.abs().max() <= 1  # the last step returns the clipped x̂0


def test_denoise_from_and_ddim_from_are_exact_with_true_noise():
    d = Diffusion(make_betas("linear", 1000))
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    oracle = lambda x_t, t: d.eps_from_x0(x_t, t.cpu(), x0)  # noqa: E731  knows x0
    assert torch.allclose(ddim_from(oracle, x0, d, 400, noise=noise, num_steps=30), x0, atol=1e-9)
    # ancestral DDPM: x̂0 is exact at every step, the posterior mean at the last step is x0 itself
    out = denoise_from(oracle, x0, d, 400, noise=noise, generator=torch.Generator().manual_seed(2), num_steps=40)
    assert torch.allclose(out, x0, atol=1e-9)
    assert torch.allclose(denoise_from(oracle, x0, d, 49, generator=torch.Generator()), x0, atol=1e-9)
    # a wrong model does not reproduce x0; DDIM with η = 0 is deterministic, with η > 0 it draws from the generator
    a = ddim_from(stub_model, x0, d, 400, noise=noise, num_steps=10)
    assert maxdiff(a, x0) > 1e-2 and torch.equal(a, ddim_from(stub_model, x0, d, 400, noise=noise, num_steps=10))
    b = ddim_from(stub_model, x0, d, 400, noise=noise, num_steps=10, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert maxdiff(a, b) > 1e-3


# ---------------------------------------------------------------------------------------- range checks at every entry
def test_range_checks_name_the_parameter_value_and_range():
    d = Diffusion.from_schedule("linear", T)
    x, g = randn(0), torch.Generator()
    calls = []

    def counted(x_t, t):
        calls.append(t)
        return stub_model(x_t, t)

    cases = [
        (lambda: d.q_sample(x, 200.7, x), r"t must be an int or a 1-D integer tensor, got 200.7"),
        (lambda: d.q_sample(x, True, x), r"t must be an int"),
        (lambda: d.q_sample(x, torch.tensor([[1]]), x), r"t must be an int or a 1-D"),
        (lambda: d.ddpm_step(x, T, x), r"t must be an integer in \[0, 999\], got 1000"),
        (lambda: d.ddpm_step(x, 10, x, t_prev=T), r"t_prev must be an integer in \[-1, 999\]"),
        (lambda: d.ddpm_step(x, 10, x, t_prev=20, noise=x), r"t_prev must be smaller than t"),
        (lambda: d.ddim_step(x, 100, x, t_prev=0, eta=float("nan"), noise=x), r"eta must be a finite number in \[0.0, 1.0\], got nan"),
        (lambda: d.ddim_step(x, 100, x, t_prev=0, eta=-0.1), r"eta .*\[0.0, 1.0\].*-0.1"),
        (lambda: d.ddim_sigma(100, 0, 2.0), r"eta .*got 2.0"),
        (lambda: d.timesteps(0), r"num_steps must be an integer in \[1, 1000\], got 0"),
        (lambda: d.timesteps(2.5), r"num_steps must be an integer in \[1, 1000\], got 2.5"),
        (lambda: sample_ddpm(counted, SHAPE, d, generator=g, num_steps=T + 1), r"num_steps .*\[1, 1000\].*1001"),
        (lambda: sample_ddim(counted, SHAPE, d, num_steps=10, eta=1.5, generator=g), r"eta .*1.5"),
        (lambda: sample_hybrid(counted, SHAPE, d, num_steps=10, switch_t=T, generator=g), r"switch_t must be an integer in \[-1, 999\], got 1000"),
        (lambda: sample_hybrid(counted, SHAPE, d, num_steps=10, switch_t=-2, generator=g), r"switch_t .*-2"),
        (lambda: sample_hybrid(counted, SHAPE, d, num_steps=10, switch_t=50.5, generator=g), r"switch_t .*50.5"),
        (lambda: sample_hybrid(counted, SHAPE, d, num_steps=0, switch_t=50, generator=g), r"num_steps .*got 0"),
        (lambda: sample_ddpm(counted, (0, 3, 8, 8), d, generator=g), r"shape\[0\] must be an integer >= 1, got 0"),
        (lambda: sample_ddpm(counted, (3, 8, 8), d, generator=g), r"shape must be \(N, C, H, W\)"),
        (lambda: sample_ddpm(counted, SHAPE, d, generator=0), r"generator must be a torch.Generator"),
        (lambda: reverse_pairs(-1), r"t must be an integer >= 0, got -1"),
        (lambda: reverse_pairs(9, 0), r"num_steps must be an integer in \[1, 10\], got 0"),
        (lambda: denoise_from(counted, x, d, -1, generator=g), r"t must be an integer in \[0, 999\], got -1"),
        (lambda: denoise_from(counted, x, d, T, generator=g), r"t must be an integer in \[0, 999\], got 1000"),
        (lambda: denoise_from(counted, x, d, 10, generator=g, num_steps=12), r"num_steps .*\[1, 11\].*12"),
        (lambda: denoise_from(counted, x, d, 10, generator=None), r"generator must be a torch.Generator"),
        (lambda: denoise_from(counted, x[:0], d, 10, generator=g), r"x0 is an empty batch"),
        (lambda: denoise_from(counted, x, d, 10, generator=g, noise=x[:1]), r"noise must have the shape of x0"),
        (lambda: ddim_from(counted, x, d, 10), r"noise or a generator"),
        (lambda: ddim_from(counted, x, d, 10, noise=x, eta=0.5), r"generator must be a torch.Generator"),
        (lambda: ddim_from(counted, x, d, 10, noise=x, eta=1.2), r"eta .*1.2"),
        (lambda: predict_x0_one_step(counted, x, d, -5, noise=x), r"t must be an integer in \[0, 999\]"),
        (lambda: predict_x0_one_step(counted, x, d, torch.tensor([1, 2, 3]), noise=x), r"one timestep per image"),
    ]
    for call, msg in cases:
        with pytest.raises(ValueError, match=msg):
            call()
    assert calls == []  # every check runs at the entry, before the first model call


def test_a_nan_pixel_is_refused_before_any_model_call():
    d = Diffusion.from_schedule("linear", T)
    x = randn(0)
    x[1, 2, 3, 4] = float("nan")
    calls = []
    model = lambda x_t, t: calls.append(1) or x_t  # noqa: E731
    for call in (lambda: denoise_from(model, x, d, 10, generator=torch.Generator()),
                 lambda: ddim_from(model, x, d, 10, noise=torch.zeros_like(x)),
                 lambda: predict_x0_one_step(model, x, d, 10, noise=torch.zeros_like(x))):
        with pytest.raises(ValueError, match=r"x0 holds 1 NaN"):
            call()
    assert calls == []


def test_eps_fn_refuses_an_image_size_the_unet_cannot_downsample():
    from lib.core.nets import unet

    torch.manual_seed(0)
    u = unet("tiny", image_size=32).eval()
    assert size_multiple(u) == 8
    model = eps_fn(u)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 16, 24), torch.zeros(1, dtype=torch.long)).shape == (1, 3, 16, 24)
        with pytest.raises(ValueError, match=r"20×24, but this network down-samples by 8.*multiples of 8"):
            model(torch.zeros(1, 3, 20, 24), torch.zeros(1, dtype=torch.long))
        with pytest.raises(ValueError, match="down-samples by 8"):
            denoise_from(model, torch.zeros(1, 3, 12, 12), Diffusion.from_schedule("linear", T), 3,
                         generator=torch.Generator())
