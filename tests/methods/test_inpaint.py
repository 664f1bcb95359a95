"""lib.methods.inpaint (seed 002 ch. 3: Algorithms 1-2 and the multi-scale anomaly map).

The RePaint loop is checked step by step against its definition (via ``callback``) and end to end
against diffusers' ``RePaintScheduler`` driven by a random tiny UNet on the same noise draws.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lib.core.diffusion import Diffusion, denoise_from, eps_fn, randn, reverse_pairs
from lib.core.scoring import reconstruction_error
from lib.methods.inpaint import (
    SelfAwareResult,
    inpaint,
    inpaint_with_diffusers,
    keep_from_mask,
    noise_misprediction,
    percentile_maps,
    self_aware_mask,
    self_aware_reconstruct,
    shared_noise,
    threshold_map,
)
from lib.core.nets import unet

T = 1000
SHAPE = (2, 3, 16, 12)  # non-square on purpose


def maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item()


def gen(seed):
    return torch.Generator().manual_seed(seed)


def images(seed, shape=SHAPE):
    return torch.rand(shape, generator=gen(seed)) * 2 - 1


def keep_mask(seed, shape=SHAPE):
    return (torch.rand(shape[0], 1, *shape[2:], generator=gen(seed)) > 0.5).float()


@pytest.fixture(scope="module")
def diffusion():
    return Diffusion.from_schedule("sigmoid", T)


class Stub:
    """A deterministic ε-model that records its calls."""

    def __init__(self, offset=0.0):
        self.calls, self.offset = [], offset

    def __call__(self, x_t, t):
        self.calls.append((x_t.clone(), t.clone()))
        return 0.1 * x_t + 1e-3 * t.to(x_t.dtype).reshape(-1, 1, 1, 1) + self.offset


class StubUNet:
    """The same stub behind diffusers' ``unet(x, t).sample`` interface."""

    def __init__(self, offset=0.0):
        self.eps, self.n = Stub(offset), 0

    def __call__(self, x, t):
        self.n += 1
        return SimpleNamespace(sample=self.eps(x, torch.as_tensor(t).expand(x.shape[0])))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return unet("tiny", image_size=32).eval()


# ------------------------------------------------------------------------------ basic denoising (ch. 3)
def test_basic_denoising_is_exact_with_an_oracle_model(diffusion):
    """The thesis' basic approach is lib.core.diffusion.denoise_from (noise to t, ancestral DDPM back)."""
    x = images(0)
    oracle = lambda x_t, t: diffusion.eps_from_x0(x_t, t.cpu(), x)  # noqa: E731  knows x0
    for t in (0, 7, 49):
        assert maxdiff(denoise_from(oracle, x, diffusion, t, generator=gen(1)), x) <= 1e-5
    stub = Stub()
    x_hat = denoise_from(stub, x, diffusion, 9, generator=gen(1))
    assert [c[1][0].item() for c in stub.calls] == list(range(9, -1, -1))
    assert maxdiff(x_hat, x) > 1e-2  # a wrong model does not reproduce x
    err = reconstruction_error(x, x_hat)
    assert err.shape == (2, 16, 12) and torch.allclose(err, (x_hat - x).abs().mean(1))


# ------------------------------------------------------------------------------ Algorithm 1 / RePaint
@pytest.mark.parametrize("init", ["masked", "noised"])
def test_inpaint_step_by_step(diffusion, init):
    """Known part = original re-noised to s-1 with the step's z; the model input after an undo is
    q_step(x_{s-1}, s, z'); noise is drawn in the documented order; the start follows ``init``."""
    x, keep, t, N = images(0), keep_mask(1), 4, 3
    stub, steps = Stub(), []
    out = inpaint(stub, x, keep, diffusion, t, N, gen(5), init=init, callback=steps.append)
    assert [(st.s, st.n) for st in steps] == [(s, n) for s in range(t, -1, -1) for n in range(1, N + 1)]
    assert len(stub.calls) == N * (t + 1)
    replay = gen(5)
    eps0 = randn(x.shape, replay, "cpu")
    start = diffusion.q_sample(keep * x if init == "masked" else x, t, eps0)
    assert torch.equal(stub.calls[0][0], start)
    for i, st in enumerate(steps):
        z = randn(x.shape, replay, "cpu")
        assert torch.equal(st.noise, z)
        want_known = diffusion.q_sample(x, st.s - 1, z) if st.s >= 1 else x
        assert maxdiff(st.known, want_known) == 0
        assert maxdiff(keep * st.x_prev, keep * want_known) <= 1e-7
        assert maxdiff((1 - keep) * st.x_prev, (1 - keep) * st.unknown) <= 1e-7
        eps_theta = stub.calls[i][0] * 0.1 + 1e-3 * st.s
        z_arg = z if st.s >= 1 else None
        assert maxdiff(st.unknown, diffusion.ddpm_step(eps_theta, st.s, stub.calls[i][0], noise=z_arg).x_prev) <= 1e-6
        if st.n < N:  # undo: one forward step with β_s and a fresh z'
            z2 = randn(x.shape, replay, "cpu")
            assert maxdiff(stub.calls[i + 1][0], diffusion.q_step(st.x_prev, st.s, z2)) <= 1e-7
            assert stub.calls[i + 1][1][0].item() == st.s
        elif i + 1 < len(steps):
            assert torch.equal(stub.calls[i + 1][0], st.x_prev)
            assert stub.calls[i + 1][1][0].item() == st.s - 1
    assert torch.equal(out, steps[-1].x_prev)
    assert torch.equal(keep * out, keep * x)  # the last known part is x itself


@pytest.mark.parametrize("init", ["masked", "noised"])
def test_all_known_mask_returns_the_input_exactly(diffusion, init):
    x = images(0)
    for keep in (torch.ones(2, 1, 16, 12), torch.ones(2, 16, 12, dtype=torch.bool), torch.ones(16, 12)):
        assert torch.equal(inpaint(Stub(), x, keep, diffusion, 6, 2, gen(0), init=init), x)


def test_n_resample_1_is_a_plain_masked_pass_and_n_scales_calls(diffusion):
    x, keep, t = images(0), keep_mask(1), 6
    stub = Stub()
    got = inpaint(stub, x, keep, diffusion, t, 1, gen(2))
    assert len(stub.calls) == t + 1
    g = gen(2)  # reference: masked start, then one merge per step, no undo
    x_s = diffusion.q_sample(keep * x, t, randn(x.shape, g, "cpu"))
    ref = Stub()
    for s in range(t, -1, -1):
        eps_theta = ref(x_s, torch.full((2,), s))
        z = randn(x.shape, g, "cpu")
        unknown = diffusion.ddpm_step(eps_theta, s, x_s, noise=z).x_prev
        known = diffusion.q_sample(x, s - 1, z) if s else x
        x_s = keep * known + (1 - keep) * unknown
    assert maxdiff(got, x_s) <= 1e-6
    stub5 = Stub()
    out5 = inpaint(stub5, x, keep, diffusion, t, 5, gen(2))
    assert len(stub5.calls) == 5 * (t + 1)
    assert [c[1][0].item() for c in stub5.calls] == [s for s in range(t, -1, -1) for _ in range(5)]
    assert maxdiff(out5, got) > 1e-3


def test_inpaint_is_reproducible_and_validates(diffusion):
    x, keep = images(0), keep_mask(1)
    a = inpaint(Stub(), x, keep, diffusion, 3, 2, gen(1))
    assert torch.equal(a, inpaint(Stub(), x, keep, diffusion, 3, 2, gen(1)))
    assert not torch.equal(a, inpaint(Stub(), x, keep, diffusion, 3, 2, gen(2)))
    with pytest.raises(ValueError, match="init"):
        inpaint(Stub(), x, keep, diffusion, 3, 2, gen(1), init="zeros")
    with pytest.raises(ValueError, match="keep"):
        inpaint(Stub(), x, keep[:, :, :8], diffusion, 3, 2, gen(1))
    with pytest.raises(ValueError, match="n_resample"):
        inpaint(Stub(), x, keep, diffusion, 3, 0, gen(1))
    with pytest.raises(ValueError, match="t must"):
        inpaint(Stub(), x, keep, diffusion, T, 1, gen(1))


# ------------------------------------------------------------------------------ against diffusers
@pytest.mark.parametrize("init", ["masked", "noised"])
def test_inpaint_matches_diffusers_repaint(diffusion, tiny, init):
    """Random tiny UNet, non-square 32×24, same generator seed: agreement to float32 rounding."""
    x = images(0, (2, 3, 32, 24))
    keep = keep_mask(1, (2, 3, 32, 24))
    ours = inpaint(eps_fn(tiny), x, keep, diffusion, 8, 3, gen(3), init=init, clip_x0=False)
    ref = inpaint_with_diffusers(tiny, x, keep, diffusion, 8, 3, gen(3), init=init, clip_x0=False)
    assert maxdiff(ours, ref) <= 1e-5
    assert torch.equal(keep * ref, keep * x)


def test_channels_last_model_gives_the_same_inpainting_and_misprediction(diffusion, tiny):
    """Notebook 03 runs its CPU models in channels-last (NHWC) memory format for speed: the results must
    be those of the default layout up to float32 rounding, and the known pixels still exactly x."""
    import copy

    x = images(0, (2, 3, 32, 24))
    keep = keep_mask(1, (2, 3, 32, 24))
    nhwc = copy.deepcopy(tiny).to(memory_format=torch.channels_last)
    ref = inpaint(eps_fn(tiny), x, keep, diffusion, 9, 2, gen(3), num_steps=4)
    got = inpaint(eps_fn(nhwc), x, keep, diffusion, 9, 2, gen(3), num_steps=4)
    assert maxdiff(got, ref) <= 1e-4 and torch.equal(keep * got, keep * x)
    eps = shared_noise(32, 24, gen(1))
    q_ref = noise_misprediction(eps_fn(tiny), x, diffusion, 40, 50, eps, t_stride=5)
    assert maxdiff(noise_misprediction(eps_fn(nhwc), x, diffusion, 40, 50, eps, t_stride=5), q_ref) <= 1e-5


def test_diffusers_clipping_difference_is_only_the_ddim_form(diffusion, monkeypatch):
    """With clipping, diffusers' DDIM(η=1) unknown step differs from the DDPM posterior step where
    |x̂0| > 1; swapping our step for ``ddim_step(eta=1)`` reproduces diffusers."""
    x, keep = images(0), keep_mask(1)
    big = StubUNet(offset=3.0)  # x̂0 ≈ x_t - 3·√(1-ᾱ_t)/√ᾱ_t: partly below -1 at t ~ 100
    ref = inpaint_with_diffusers(big, x, keep, diffusion, 100, 2, gen(4), init="noised", clip_x0=True)
    ours = inpaint(big.eps, x, keep, diffusion, 100, 2, gen(4), init="noised", clip_x0=True)
    assert maxdiff(ours, ref) > 1e-3
    d2 = Diffusion(diffusion.betas)
    monkeypatch.setattr(d2, "ddpm_step", lambda e, s, xs, *, t_prev=None, noise=None, clip_x0=True:
                        d2.ddim_step(e, s, xs, t_prev=s - 1 if t_prev is None else t_prev, eta=1.0, noise=noise,
                                     clip_x0=clip_x0))
    ours_ddim = inpaint(big.eps, x, keep, d2, 100, 2, gen(4), init="noised", clip_x0=True)
    assert maxdiff(ours_ddim, ref) <= 1e-6


def test_diffusers_schedule_does_not_resample_its_top_timestep():
    d = Diffusion.from_schedule("linear", 8)
    x, keep, N = images(0), keep_mask(1), 3
    for t, want in [(5, N * 6), (7, 1 + N * 7)]:
        u = StubUNet()
        inpaint_with_diffusers(u, x, keep, d, t, N, gen(0), clip_x0=False)
        assert u.n == want
        stub = Stub()
        inpaint(stub, x, keep, d, t, N, gen(0))
        assert len(stub.calls) == N * (t + 1)
    u, stub = StubUNet(), Stub()  # t < T-1: identical
    a = inpaint_with_diffusers(u, x, keep, d, 6, N, gen(0), clip_x0=False)
    assert maxdiff(a, inpaint(stub, x, keep, d, 6, N, gen(0), clip_x0=False)) <= 1e-6


# ------------------------------------------------------------------------------ Algorithm 2
def test_noise_misprediction_with_true_noise_is_zero_and_averages_t(diffusion):
    x = images(0, (3, 3, 8, 6))
    eps = shared_noise(8, 6, gen(1))
    assert eps.shape == (1, 3, 8, 6)
    oracle = lambda x_t, t: eps.expand(len(t), -1, -1, -1)  # noqa: E731  the true (shared) ε
    q = noise_misprediction(oracle, x, diffusion, 300, 350, eps)
    assert q.shape == (3, 8, 6) and q.abs().max().item() == 0
    seen = []
    offset = lambda x_t, t: seen.append(t) or eps + 1e-3 * t.to(x_t.dtype).reshape(-1, 1, 1, 1)  # noqa: E731
    q = noise_misprediction(offset, x, diffusion, 10, 18, eps, t_stride=4, batch_size=5)  # t_end inclusive
    assert sorted(torch.cat(seen).tolist()) == sorted([10, 14, 18] * 3)
    assert maxdiff(q, torch.full_like(q, 1e-3 * 14)) <= 1e-7


def test_noise_misprediction_matches_a_direct_loop(diffusion, tiny):
    x = images(0, (3, 3, 16, 24))
    eps = shared_noise(16, 24, gen(1))
    model = eps_fn(tiny)
    want = torch.stack([(model(diffusion.q_sample(x, t, eps), torch.full((3,), t)) - eps).abs().mean(1)
                        for t in (40, 45, 50)]).mean(0)
    for bs in (None, 1, 4, 9):
        got = noise_misprediction(model, x, diffusion, 40, 52, eps, t_stride=5, batch_size=bs)
        assert maxdiff(got, want) <= 1e-5


def test_percentile_maps_match_numpy():
    q = torch.rand(7, 5, 4, generator=gen(0))
    ps = [0.0, 0.13, 0.5, 0.8, 1.0]
    many = percentile_maps(q, ps)
    assert many.shape == (5, 5, 4)
    for p, m in zip(ps, many):
        want = np.percentile(q.numpy(), 100 * p, axis=0)
        assert np.abs(m.numpy() - want).max() <= 1e-6
        assert torch.equal(percentile_maps(q, p), m)
    assert percentile_maps(q, 0.8).shape == (5, 4)
    with pytest.raises(ValueError, match="fraction"):
        percentile_maps(q, 80)


def test_self_aware_mask_shrinks_with_p_and_keep_is_its_complement():
    q_val, q_test = torch.rand(20, 6, 5, generator=gen(0)), torch.rand(3, 6, 5, generator=gen(1))
    q_ps = percentile_maps(q_val, [0.2, 0.5, 0.8, 0.95])
    masks = [self_aware_mask(q_test, q_p) for q_p in q_ps]
    for lo, hi in zip(masks, masks[1:]):
        assert lo.shape == (3, 6, 5) and lo.dtype == torch.bool
        assert not (hi & ~lo).any()  # higher p → subset
    assert masks[0].sum() > masks[-1].sum()
    assert torch.equal(masks[2], q_test > q_ps[2])
    keep = keep_from_mask(masks[2])
    assert keep.shape == (3, 1, 6, 5) and torch.equal(keep[:, 0], (~masks[2]).float())


def test_threshold_map_and_self_aware_reconstruct(diffusion):
    val, x = images(0, (5, 3, 8, 6)), images(1, (2, 3, 8, 6))
    eps = shared_noise(8, 6, gen(2))
    stub = Stub()
    q = noise_misprediction(stub, val, diffusion, 100, 104, eps)
    q_p, q2 = threshold_map(stub, val, diffusion, 100, 104, 0.8, eps, batch_size=2, return_q=True)
    assert maxdiff(q2, q) <= 1e-7 and maxdiff(q_p, percentile_maps(q, 0.8)) <= 1e-7
    batches = [(val[:3], "labels"), (val[3:], "labels")]  # a DataLoader-like iterable
    assert maxdiff(threshold_map(stub, batches, diffusion, 100, 104, 0.8, eps), q_p) <= 1e-7
    res = self_aware_reconstruct(stub, x, diffusion, q_p, eps, 100, 104, 4, 2, gen(3))
    assert isinstance(res, SelfAwareResult) and res.x_hat.shape == x.shape
    assert torch.equal(res.mask, res.q_test > q_p)
    assert maxdiff(res.q_test, noise_misprediction(stub, x, diffusion, 100, 104, eps)) <= 1e-7
    kept = ~res.mask[:, None].expand_as(x)
    assert torch.equal(res.x_hat[kept], x[kept])  # only the suspected anomaly is regenerated


def test_respaced_inpaint_keeps_known_region_and_counts_calls(diffusion):
    """num_steps respacing (quick profile): known part = q(x_{s_prev} | x) at every step, N·num_steps calls,
    output = x where keep = 1, and num_steps = t+1 is exactly the un-respaced chain."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    keep = torch.ones(2, 1, 16, 16)
    keep[:, :, 4:10, 4:10] = 0
    calls = []

    def stub(x_t, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x_t)

    steps = []
    out = inpaint(stub, x, keep, diffusion, 49, 3, torch.Generator().manual_seed(1), num_steps=10,
                  callback=steps.append)
    assert len(calls) == 30 and sorted(set(calls), reverse=True)[0] == 49 and min(calls) == 0
    for st in steps:
        s_prev = [b for a, b in reverse_pairs(49, 10) if a == st.s][0]
        want = diffusion.q_sample(x, s_prev, st.noise) if s_prev >= 0 else x
        assert torch.allclose(st.known, want) and torch.allclose(keep * st.x_prev, keep * want)
    assert torch.equal(keep * out, keep * x)
    a = inpaint(stub, x, keep, diffusion, 12, 2, torch.Generator().manual_seed(5))
    b = inpaint(stub, x, keep, diffusion, 12, 2, torch.Generator().manual_seed(5), num_steps=13)
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------ range checks at the entries
def test_inpaint_entries_check_their_arguments(diffusion):
    x, keep = images(0), keep_mask(1)
    nan_x = x.clone()
    nan_x[0, 1, 2, 3] = float("nan")
    eps = shared_noise(16, 12, gen(0))
    cases = [
        (lambda: inpaint(Stub(), x, keep, diffusion, -1, 1, gen(1)), r"t must be an integer in \[0, 999\], got -1"),
        (lambda: inpaint(Stub(), x, keep, diffusion, 49.0, 1, gen(1)), r"t must be an integer .*got 49.0"),
        (lambda: inpaint(Stub(), x, keep, diffusion, 9, 0, gen(1)), r"n_resample must be an integer >= 1, got 0"),
        (lambda: inpaint(Stub(), x, keep, diffusion, 9, 2, gen(1), num_steps=11), r"num_steps .*\[1, 10\].*11"),
        (lambda: inpaint(Stub(), x, keep, diffusion, 9, 2, 7), r"generator must be a torch.Generator"),
        (lambda: inpaint(Stub(), nan_x, keep, diffusion, 9, 2, gen(1)), r"x holds 1 NaN"),
        (lambda: inpaint(Stub(), x[:0], keep[:0], diffusion, 9, 2, gen(1)), r"x is an empty batch"),
        (lambda: inpaint(Stub(), x, keep * float("nan"), diffusion, 9, 2, gen(1)), r"keep must lie in \[0, 1\]"),
        (lambda: shared_noise(0, 12, gen(0)), r"height must be an integer >= 1, got 0"),
        (lambda: noise_misprediction(Stub(), nan_x, diffusion, 10, 12, eps), r"x holds 1 NaN"),
        (lambda: noise_misprediction(Stub(), x, diffusion, 12, 10, eps), r"t_end must be an integer in \[12, 999\], got 10"),
        (lambda: noise_misprediction(Stub(), x, diffusion, 10, 1000, eps), r"t_end .*got 1000"),
        (lambda: noise_misprediction(Stub(), x, diffusion, -1, 10, eps), r"t_start must be an integer in \[0, 999\], got -1"),
        (lambda: noise_misprediction(Stub(), x, diffusion, 10, 12, eps, t_stride=0), r"t_stride must be an integer >= 1"),
        (lambda: noise_misprediction(Stub(), x, diffusion, 10, 12, eps, batch_size=0), r"batch_size must be an integer >= 1"),
        (lambda: threshold_map(Stub(), x, diffusion, 10, 12, 0.8, eps, batch_size=0), r"batch_size must be an integer >= 1"),
        (lambda: threshold_map(Stub(), x, diffusion, 10, 12, float("nan"), eps), r"p must lie in \[0, 1\]"),
        (lambda: threshold_map(Stub(), x, diffusion, 10, 12, 1.5, eps), r"p must lie in \[0, 1\].*1.5"),
        (lambda: threshold_map(Stub(), x, diffusion, 10, 12, -0.1, eps), r"p must lie in \[0, 1\]"),
    ]
    for call, msg in cases:
        with pytest.raises(ValueError, match=msg):
            call()


def test_inpaint_with_diffusers_refuses_bad_input_before_diffusers_runs(diffusion, tiny):
    """An empty batch, a NaN pixel or a size the UNet cannot down-sample (tiny: by 8) → ValueError, no UNet call."""
    x = images(0, (2, 3, 32, 24))
    keep = keep_mask(1, (2, 3, 32, 24))
    calls = []
    hook = tiny.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="empty batch"):
            inpaint_with_diffusers(tiny, x[:0], keep[:0], diffusion, 5, 2, gen(0))
        with pytest.raises(ValueError, match=r"x is 30×24, but this network down-samples by 8"):
            inpaint_with_diffusers(tiny, x[:, :, :30], keep[:, :, :30], diffusion, 5, 2, gen(0))
        nan_x = x.clone()
        nan_x[1, 0, 5, 5] = float("nan")
        with pytest.raises(ValueError, match="x holds 1 NaN"):
            inpaint_with_diffusers(tiny, nan_x, keep, diffusion, 5, 2, gen(0))
        with pytest.raises(ValueError, match=r"down-samples by 8"):   # our own loop, through eps_fn
            inpaint(eps_fn(tiny), x[:, :, :30], keep[:, :, :30], diffusion, 5, 2, gen(0))
    finally:
        hook.remove()
    assert calls == []
