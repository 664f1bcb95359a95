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

from lib.core.diffusion import Diffusion, make_betas, predict_x0_one_step, sample_ddim, sample_ddpm, sample_hybrid

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
    x0_hat = predict_x0_one_step(lambda x_t, tt: eps, x0, t, eps, d)
    assert maxdiff(x0_hat, x0) <= TOL
    # per-sample t, and the model really sees t
    seen = []
    tt = torch.tensor([t, T - 1])
    predict_x0_one_step(lambda x_t, tb: seen.append(tb) or eps, x0, tt, eps, d)
    assert seen[0].tolist() == [t, T - 1]
    # a wrong noise estimate is not exact
    assert maxdiff(predict_x0_one_step(lambda x_t, tb: 0 * eps, x0, t, eps, d), x0) > 1e-3


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
        ours = d.ddpm_step(eps, t, x, z, t_prev=t_prev, clip_x0=clip)
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
    a = d.ddpm_step(eps, 0, x, None).x_prev
    b = d.ddpm_step(eps, 0, x, randn(2, torch.float64)).x_prev
    assert torch.equal(a, b)
    _, var, _ = d.posterior(x, x, 0)
    assert var.item() == 0
    # un-respaced: 1 - ᾱ_t/ᾱ_{t-1} is β_t
    _, var, _ = d.posterior(x, x, 10)
    ab = d.alpha_bar
    assert var.item() == pytest.approx(((1 - ab[9]) / (1 - ab[10]) * d.betas[10]).item(), rel=1e-12)
    with pytest.raises(ValueError, match="noise"):
        d.ddpm_step(eps, 5, x, None)


def test_posterior_unpatched_diffusers_within_float32_error():
    """Against diffusers' own float32 ᾱ: equal up to its float32 cancellation in 1 - ᾱ (documented)."""
    d = Diffusion.from_schedule("linear", T)
    ref = ddpm_sched("linear", clip_sample=True)
    x, eps = randn(0), randn(1)
    for t in [T - 1, 500, 50]:
        out = ref.step(eps, t, x, generator=torch.Generator().manual_seed(3))
        assert maxdiff(d.ddpm_step(eps, t, x, randn(3)).x_prev, out.prev_sample) <= 1e-4


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
        ours = d.ddim_step(eps, t, d.prev_timestep(t, num_steps), x, eta=eta, noise=z if eta > 0 else None,
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
    both = d.ddim_step(eps, t, t_prev, x, eta=0.5, noise=z).x_prev
    for i in range(2):
        one = d.ddim_step(eps[i:i + 1], t[i].item(), t_prev[i].item(), x[i:i + 1], eta=0.5, noise=z[i:i + 1]).x_prev
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
    got, steps = sample_ddim(stub_model, SHAPE, d, 20, eta, torch.Generator().manual_seed(11), clip_x0=clip)
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
    got, steps = sample_ddpm(stub_model, SHAPE, d, torch.Generator().manual_seed(5), num_steps=num_steps,
                             clip_x0=clip)
    assert_close(got, x)
    assert len(steps) == (num_steps or T)


def test_samplers_are_reproducible_from_the_generator():
    d = Diffusion.from_schedule("linear", T)
    a, _ = sample_ddim(stub_model, SHAPE, d, 10, 0.5, torch.Generator().manual_seed(1))
    b, _ = sample_ddim(stub_model, SHAPE, d, 10, 0.5, torch.Generator().manual_seed(1))
    c, _ = sample_ddim(stub_model, SHAPE, d, 10, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------------------------------- hybrid
def test_hybrid_schedule():
    d = Diffusion.from_schedule("linear", T)
    _, steps = sample_hybrid(stub_model, SHAPE, d, 10, switch_t=250, generator=torch.Generator().manual_seed(0))
    ddim = [t for t, k in steps if k == "ddim"]
    ddpm = [t for t, k in steps if k == "ddpm"]
    assert ddim == [900, 800, 700, 600, 500, 400, 300]  # the step from 300 lands on 250
    assert ddpm == list(range(250, -1, -1))
    assert steps == [(t, "ddim") for t in ddim] + [(t, "ddpm") for t in ddpm]
    _, steps = sample_hybrid(stub_model, SHAPE, d, 10, switch_t=200, generator=torch.Generator().manual_seed(0))
    assert [t for t, k in steps if k == "ddim"] == [900, 800, 700, 600, 500, 400, 300]
    assert [t for t, k in steps if k == "ddpm"] == list(range(200, -1, -1))
    assert len(steps) == 7 + 201


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_hybrid_limits_equal_ddim_and_ddpm(eta):
    d = Diffusion.from_schedule("sigmoid", T)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ddim, _ = sample_ddim(stub_model, SHAPE, d, 25, eta, g())
    hyb, steps = sample_hybrid(stub_model, SHAPE, d, 25, switch_t=-1, eta=eta, generator=g())
    assert torch.equal(hyb, ddim) and {k for _, k in steps} == {"ddim"}
    ddpm, _ = sample_ddpm(stub_model, SHAPE, d, g())
    hyb, steps = sample_hybrid(stub_model, SHAPE, d, 25, switch_t=T - 1, eta=eta, generator=g())
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
        sample_ddim(stub_model, SHAPE, d, 0, 0.0, torch.Generator())
    with pytest.raises(ValueError, match="eta"):
        d.ddim_step(x, 100, 0, x, eta=1.5, noise=x)
    with pytest.raises(ValueError, match="noise"):
        d.ddim_step(x, 100, 0, x, eta=0.5)


def test_reverse_pairs_respacing():
    from lib.core.diffusion import reverse_pairs

    full = reverse_pairs(4)
    assert full == [(4, 3), (3, 2), (2, 1), (1, 0), (0, -1)]
    assert reverse_pairs(4, 5) == full
    r = reverse_pairs(400, 40)
    assert len(r) == 40 and r[0][0] == 400 and r[-1] == (0, -1)
    assert all(a > b for a, b in r) and all(r[i][1] == r[i + 1][0] for i in range(len(r) - 1))
    assert reverse_pairs(49, 1) == [(49, -1)]
    with pytest.raises(ValueError, match="num_steps"):
        reverse_pairs(9, 11)
