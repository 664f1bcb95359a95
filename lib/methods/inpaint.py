"""Anomaly detection by inpainting with a DDPM and a self-aware mask — seed 002 (the thesis), ch. 3.

Sources (sections / algorithms are quoted in every docstring):
  * seed 002 ch. 3 intro: the basic approach — noise the test image t steps, denoise it back, and use
    |x̂ - x| as the anomaly map ("basic DDPM denoising", also the baseline of §4.5);
  * seed 002 §3.1.1 / Algorithm 1: inpainting with resampling, following RePaint [29]
    (Lugmayr et al. 2022, arXiv:2201.09865, Algorithm 1);
  * seed 002 §3.1.2 / Algorithm 2: the self-aware inpainting mask from the model's noise
    misprediction |ε_θ(x_t, t) - ε| compared against a per-pixel percentile of normal images;
  * seed 002 §3.1.3: the multi-scale reconstruction-error anomaly map and max-score (both in
    :mod:`lib.core.scoring`: ``multiscale_error_map`` and ``image_score(map, reduction="max")``);
  * seed 002 §4.5: the settings t = 50, N = 5 resampling steps, [t_start, t_end] = [300, 350], p = 0.8.

The basic approach itself is :func:`lib.core.diffusion.denoise_from` (x̂ from x at noise level t), its
anomaly map :func:`lib.core.scoring.reconstruction_error`.

Conventions (as ``lib.core.diffusion``):
  * images are (B, 3, H, W) tensors in [-1, 1]; H ≠ W is fine (the ε-model may need H, W divisible
    by its down-sampling factor, e.g. 8 for ``unet("tiny")``);
  * ``model`` is an ε-model ``model(x_t, t_tensor) -> ε_θ`` (``lib.core.diffusion.eps_fn(unet)``);
  * t is 0-based (diffusers): ``t`` indexes ``diffusion.betas``; ᾱ_{-1} = 1 means "clean".  The thesis'
    "t = 50 noise steps" is ᾱ_50 in 1-based DDPM notation, i.e. ``t=49`` here (50 reverse steps
    49 … 0); likewise [t_start, t_end] = [300, 350] is 299 … 349 here.  Passing 50 instead changes
    the noise level by one step out of 1000;
  * every random draw comes from the ``generator`` argument (float32, drawn on the generator's
    device, then moved — ``lib.core.diffusion.randn``, the same as diffusers' ``randn_tensor``);
  * the inference functions run under ``torch.no_grad()``; ``progress=True`` shows a tqdm bar;
  * every public function checks its arguments once at the entry (``ValueError`` naming the parameter,
    its value and the valid range): images a non-empty finite (B, C, H, W) batch, 0 <= t <= T-1, ….

Mask conventions — read this before passing masks around:
  * ``keep`` (used by :func:`inpaint`) is 1 where the pixel is *known* (kept from the input) and 0
    where it is inpainted — Algorithm 1's m (``m ⊙ x`` is "the known part") and diffusers'
    ``RePaintScheduler`` ``mask`` (1 = keep).
  * ``m`` from :func:`self_aware_mask` is Algorithm 2's m: 1 where the model mispredicts the noise
    (Q_test > Q_p), i.e. the *suspected anomaly*, the region that must be *inpainted*.
  * As printed, the thesis uses the same letter for both, which would keep the suspected anomaly
    and regenerate the rest.  The text ("this mask should cover the anomalous region in the image
    as only this part gets reconstructed") settles it: keep = 1 - m (:func:`keep_from_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple, Sequence

import torch
from tqdm.auto import tqdm

from ..core.checks import check_choice, check_finite, check_generator, check_images, check_int, check_size_multiple
from ..core.diffusion import Diffusion, EpsModel, randn, reverse_pairs, size_multiple, t_batch

__all__ = [
    "InpaintStep",
    "inpaint",
    "inpaint_with_diffusers",
    "shared_noise",
    "noise_misprediction",
    "percentile_maps",
    "threshold_map",
    "self_aware_mask",
    "keep_from_mask",
    "SelfAwareResult",
    "self_aware_reconstruct",
]

INITS = ("masked", "noised")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _keep(keep, x: torch.Tensor) -> torch.Tensor:
    """``keep`` → float (B or 1, 1, H, W) in x's dtype/device.  Accepts (H, W), (B, H, W), (B, 1, H, W)."""
    keep = torch.as_tensor(keep)
    if keep.ndim == 2:
        keep = keep[None, None]
    elif keep.ndim == 3:
        keep = keep[:, None]
    if keep.ndim != 4 or keep.shape[1] != 1 or tuple(keep.shape[-2:]) != tuple(x.shape[-2:]) \
            or keep.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"keep must be (H, W), (B, H, W) or (B, 1, H, W) matching x {tuple(x.shape)}, "
                         f"got {tuple(torch.as_tensor(keep).shape)}")
    keep = keep.to(device=x.device, dtype=x.dtype)
    if bool(((keep < 0) | (keep > 1) | keep.isnan()).any()):
        raise ValueError("keep must lie in [0, 1] (1 = known pixel, 0 = inpaint)")
    return keep


def _entry(x: torch.Tensor, keep, diffusion: Diffusion, t: int, n_resample: int, generator: torch.Generator,
           init: str) -> tuple[torch.Tensor, int]:
    """The checks shared by :func:`inpaint` and :func:`inpaint_with_diffusers`; returns (keep, t)."""
    check_images("x", x)
    t = check_int("t", t, 0, diffusion.T - 1)
    check_int("n_resample", n_resample, 1)
    check_generator("generator", generator)
    check_choice("init", init, INITS)
    return _keep(keep, x), t


def _init_x_t(x: torch.Tensor, keep: torch.Tensor, diffusion: Diffusion, t: int, eps: torch.Tensor, init: str):
    """The start of Algorithm 1 (``init="masked"``) or of RePaint on the noised image (``"noised"``)."""
    return diffusion.q_sample(keep * x if init == "masked" else x, t, eps)


# --------------------------------------------------------------------------------------------
# §3.1.1, Algorithm 1: inpainting with resampling (RePaint)
# --------------------------------------------------------------------------------------------
class InpaintStep(NamedTuple):
    """One reverse step of :func:`inpaint`, handed to ``callback``.

    ``s`` the model's timestep, ``n`` the resampling round (1 … N), ``x_prev`` = x_{s-1} after the
    merge, ``known`` = q_sample(x, s-1, z) (x itself when s = 0), ``unknown`` = the DDPM posterior
    sample, ``x0_hat`` the model's (clipped) x̂0, ``noise`` = z, the draw used for both parts.
    """

    s: int
    n: int
    x_prev: torch.Tensor
    known: torch.Tensor
    unknown: torch.Tensor
    x0_hat: torch.Tensor
    noise: torch.Tensor


@torch.no_grad()
def inpaint(model: EpsModel, x: torch.Tensor, keep: torch.Tensor, diffusion: Diffusion, t: int, n_resample: int,
            generator: torch.Generator, init: str = "masked", clip_x0: bool = True,
            callback: Callable[[InpaintStep], None] | None = None, progress: bool = False,
            num_steps: int | None = None) -> torch.Tensor:
    """Seed 002 §3.1.1, Algorithm 1 (inpainting with resampling), done as RePaint [29] Algorithm 1.

    ``keep`` (1 = known pixel, 0 = inpaint; (H, W), (B, H, W) or (B, 1, H, W), bool or float) is
    Algorithm 1's m.  For a self-aware mask m from Algorithm 2 pass ``keep_from_mask(m)`` = 1 - m
    (see the module docstring: the thesis' two m's have opposite meanings).

    Start (x_t, with ε ~ N(0, I)):
      * ``init="masked"`` (default; Algorithm 1 literally): x_t = √ᾱ_t (keep ⊙ x) + √(1-ᾱ_t) ε —
        the unknown part starts from a noised *zero* image;
      * ``init="noised"``: x_t = √ᾱ_t x + √(1-ᾱ_t) ε — the whole image noised, as in ch. 3's basic
        approach (the unknown part then starts from the noised anomaly).
    Only the model's first input depends on this choice; the known part is replaced at every step.

    Reverse loop, for s = t, t-1, …, 0 and n = 1 … N (N = ``n_resample``; thesis: N = 5, t = 50):
        z ~ N(0, I)
        unknown_{s-1} = μ̃(x̂0(x_s, ε_θ(x_s, s)), x_s) + σ_s z           (DDPM posterior, ``ddpm_step``)
        known_{s-1}   = √ᾱ_{s-1} x + √(1-ᾱ_{s-1}) z                    (q(x_{s-1} | x); = x at s = 0)
        x_{s-1}       = keep ⊙ known_{s-1} + (1 - keep) ⊙ unknown_{s-1}
        if n < N:  x_s = √(1-β_s) x_{s-1} + √β_s z',  z' ~ N(0, I)       (one forward step, ``q_step``)
    and returns x̂ = x_{-1}.  With keep ≡ 1 the result is exactly x.

    Differences from the thesis' Algorithm 1 as printed, all following RePaint (as the issue asks):
      * the printed loop re-uses the single ε drawn at the top and never decrements t inside it (it
        re-noises x̂ at the same level t, N times per outer step); here every step draws fresh noise
        and the noise level goes down one step per outer iteration;
      * the printed loop (and the §3.1.1 prose) merges the known pixels into x̂0 and re-noises; here
        the known pixels are merged into x_{s-1}, re-noised from the *original* image at level s-1.
    Differences from diffusers' ``RePaintScheduler`` (see :func:`inpaint_with_diffusers`):
      * like diffusers, one z per step serves both the known and the unknown part.  Pixels with a
        binary keep use only one of the two, so this is the same law as independent draws; for a
        fractional keep the two noise terms are correlated (diffusers does the same);
      * diffusers writes the unknown part as DDIM eq. 12 with η = 1; that equals the DDPM posterior
        step exactly only when x̂0 is not clipped (``clip_x0=False``); with clipping the two differ
        where |x̂0| > 1 (DDIM keeps the model's ε_θ in the direction term);
      * diffusers' schedule does *not* resample its very first timestep (T-1): for ``t = T-1`` it
        makes 1 + N(T-1) model calls, this function N·T.  For t < T-1 both make N(t+1).

    Respacing (``num_steps``, not in the thesis; the quick profile's shortcut, as RePaint's own
    T_respaced = 250): the loop runs over ``num_steps`` grid points s > s_prev (:func:`lib.diffusion.reverse_pairs`), the
    unknown part is the exact posterior q(x_{s_prev} | x_s, x̂0), the known part q(x_{s_prev} | x) and
    the undo the forward jump q(x_s | x_{s_prev}).  ``None`` = every step, exactly as above.

    Noise order from ``generator``: ε (start), then per model call z, then z' if n < N — the same
    order as diffusers' ``RePaintScheduler.step`` / ``undo_step``.  Model calls: N·(t+1)
    (N·num_steps when respaced).
    ``callback(InpaintStep)`` is called after every merge (for tests and figures).
    """
    keep, t = _entry(x, keep, diffusion, t, n_resample, generator, init)
    x_s = _init_x_t(x, keep, diffusion, t, randn(x.shape, generator, x.device), init)
    B = x.shape[0]
    grid = reverse_pairs(t, num_steps)
    bar = tqdm(total=n_resample * len(grid), desc="inpaint", disable=not progress, leave=False)
    for s, s_prev in grid:
        for n in range(1, n_resample + 1):
            eps_theta = model(x_s, t_batch(s, B, x.device))
            z = randn(x.shape, generator, x.device)
            unknown, x0_hat = diffusion.ddpm_step(eps_theta, s, x_s, t_prev=s_prev, noise=z, clip_x0=clip_x0)
            known = diffusion.q_sample(x, s_prev, z) if s_prev >= 0 else x
            x_prev = keep * known + (1 - keep) * unknown
            if callback is not None:
                callback(InpaintStep(s, n, x_prev, known, unknown, x0_hat, z))
            if n < n_resample:
                x_s = diffusion.q_jump(x_prev, s, s_prev, randn(x.shape, generator, x.device))
            else:
                x_s = x_prev
            bar.update()
    bar.close()
    return x_s


@torch.no_grad()
def inpaint_with_diffusers(unet: torch.nn.Module, x: torch.Tensor, keep: torch.Tensor, diffusion: Diffusion, t: int, n_resample: int,
                           generator: torch.Generator, init: str = "masked", clip_x0: bool = True,
                           progress: bool = False) -> torch.Tensor:
    """:func:`inpaint` driven by diffusers' ``RePaintScheduler`` — a cross-check, not the method.

    ``unet`` is a diffusers ``UNet2DModel`` (anything with ``unet(x, t).sample``).  The scheduler is
    ``RePaintScheduler(eta=1.0, clip_sample=clip_x0)`` given our float64 β / ᾱ (as
    ``tests/core/test_diffusion.py`` does for DDPM/DDIM) and
    ``set_timesteps(num_inference_steps=T, jump_length=1, jump_n_sample=n_resample)``.  The loop is
    the one of diffusers' ``RePaintPipeline`` (``step`` when the timestep goes down, ``undo_step(x,
    t_last)`` when it goes up), started at the first occurrence of ``t`` in ``scheduler.timesteps``
    with ``t_last = t + 1``, from the same x_t as :func:`inpaint` (ε drawn first from ``generator``).

    What the scheduler does, index by index (T' = num_inference_steps = T, so the step ratio is 1):
      * ``step(ε_θ, s, x_s, x, keep)`` draws one z and returns, with prev = s - 1 (ᾱ_{-1} = 1):
        unknown = √ᾱ_prev x̂0 + √(1-ᾱ_prev-σ²) ε_θ + σ z (DDIM eq. 12, σ² = η² β̃_s, no σz at s = 0),
        known = √ᾱ_prev x + √(1-ᾱ_prev) z (so exactly x at s = 0),
        x_{s-1} = mask ⊙ known + (1 - mask) ⊙ unknown  — ``mask`` is 1 = keep, like our ``keep``;
      * the schedule is …, s, s+1, s, s+1, …, s, s-1, … (N entries s); an entry s+1 means
        ``undo_step(x_{s-1}, t_last=s)`` = √(1-β_s) x_{s-1} + √β_s z' — the forward step x_{s-1} → x_s
        with β_s, the same index as our ``q_step(·, s, ·)``;
      * ``jumps`` are set for j in range(0, T - jump_length) only, so the top timestep T-1 is never
        resampled (1 model call there) — the one schedule difference from :func:`inpaint`, which
        matters only for ``t = T-1``; the last step (s = 0) is resampled N times like every other.
    Returns x̂; equals ``inpaint(eps_fn(unet), …, clip_x0=clip_x0)`` up to float32 rounding when
    ``clip_x0=False`` and t < T-1 (see the DDIM-vs-posterior note in :func:`inpaint` for clipping).
    H and W must be multiples of the UNet's down-sampling (checked before diffusers is called).
    """
    from diffusers import RePaintScheduler

    keep, t = _entry(x, keep, diffusion, t, n_resample, generator, init)
    if hasattr(getattr(unet, "config", None), "block_out_channels"):
        check_size_multiple("x", x, size_multiple(unet))
    sched = RePaintScheduler(num_train_timesteps=diffusion.T, eta=1.0, clip_sample=clip_x0,
                             trained_betas=diffusion.betas.numpy())
    sched.betas, sched.alphas, sched.alphas_cumprod = diffusion.betas, diffusion.alphas, diffusion.alpha_bar
    sched.one = sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    sched.eta = 1.0
    sched.set_timesteps(diffusion.T, jump_length=1, jump_n_sample=n_resample)
    timesteps = [int(s) for s in sched.timesteps]
    timesteps = timesteps[timesteps.index(t):]

    eps = randn(x.shape, generator, x.device)
    ab = sched.alphas_cumprod[t]
    x0 = keep * x if init == "masked" else x
    image = ab.sqrt().to(x) * x0 + (1 - ab).sqrt().to(x) * eps
    t_last = t + 1
    for s in tqdm(timesteps, desc="RePaint (diffusers)", disable=not progress, leave=False):
        if s < t_last:
            eps_theta = unet(image, t_batch(s, x.shape[0], x.device)).sample
            image = sched.step(eps_theta, s, image, x, keep, generator).prev_sample
        else:
            image = sched.undo_step(image, t_last, generator)
        t_last = s
    return image


# --------------------------------------------------------------------------------------------
# §3.1.2, Algorithm 2: the self-aware inpainting mask
# --------------------------------------------------------------------------------------------
def shared_noise(height: int, width: int, generator: torch.Generator, channels: int = 3,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Algorithm 2's first line, ε ~ N(0, I), drawn once: shape (1, C, H, W), broadcast over a batch.

    Use the *same* ε for the validation images (:func:`threshold_map`) and the test images
    (:func:`noise_misprediction`), so that Q_test and Q_p measure the misprediction of the same
    noise pattern — the thesis draws ε once, at the top of Algorithm 2.
    """
    shape = (1, check_int("channels", channels, 1), check_int("height", height, 1), check_int("width", width, 1))
    check_generator("generator", generator)
    return randn(shape, generator, device if device is not None else generator.device)


def _t_range(diffusion: Diffusion, t_start: int, t_end: int, t_stride: int) -> list[int]:
    """The checked noise levels t_start, t_start + t_stride, …, <= t_end of Algorithm 2."""
    t_start = check_int("t_start", t_start, 0, diffusion.T - 1)
    t_end = check_int("t_end", t_end, t_start, diffusion.T - 1)
    return list(range(t_start, t_end + 1, check_int("t_stride", t_stride, 1)))


@torch.no_grad()
def noise_misprediction(model: EpsModel, x: torch.Tensor, diffusion: Diffusion, t_start: int, t_end: int,
                        eps: torch.Tensor, t_stride: int = 1, batch_size: int | None = None,
                        progress: bool = False) -> torch.Tensor:
    """Algorithm 2's calculateDifference (seed 002 §3.1.2), batched:

        Q(x) = mean_{t ∈ [t_start, t_end]} mean_channels |ε_θ(√ᾱ_t x + √(1-ᾱ_t) ε, t) - ε|   → (B, H, W)

    t runs over ``range(t_start, t_end + 1, t_stride)`` (inclusive; t_stride > 1 subsamples the
    range for a quick profile — the thesis uses every t in [300, 350]).  The same ``eps`` — (1, C, H, W)
    broadcast, or (B, C, H, W) — is used for every t and every image, as in Algorithm 2
    (see :func:`shared_noise`).  The (t, image) pairs are evaluated ``batch_size`` at a time (default:
    B, i.e. one forward pass per t); each pair gets its own t in the model call.
    """
    check_images("x", x)
    ts = _t_range(diffusion, t_start, t_end, t_stride)
    eps = torch.as_tensor(eps).to(device=x.device, dtype=x.dtype)
    if eps.ndim != 4 or eps.shape[0] not in (1, x.shape[0]) or eps.shape[1:] != x.shape[1:]:
        raise ValueError(f"eps must be (1 or B, C, H, W) matching x {tuple(x.shape)}, got {tuple(eps.shape)}")
    check_finite("eps", eps)
    if batch_size is not None:
        check_int("batch_size", batch_size, 1)
    B = x.shape[0]
    eps = eps.expand_as(x)
    batch_size = batch_size or B
    t_idx = torch.tensor(ts, dtype=torch.long).repeat_interleave(B)      # t-major: (t0, img0..B-1), (t1, …)
    img_idx = torch.arange(B).repeat(len(ts))
    total = torch.zeros(B, *x.shape[-2:], dtype=x.dtype, device=x.device)
    for lo in tqdm(range(0, len(t_idx), batch_size), desc="misprediction", disable=not progress, leave=False):
        ti, ii = t_idx[lo:lo + batch_size], img_idx[lo:lo + batch_size]
        e = eps[ii.to(x.device)]
        x_t = diffusion.q_sample(x[ii.to(x.device)], ti, e)
        err = (model(x_t, ti.to(x.device)) - e).abs().mean(dim=1)
        total.index_add_(0, ii.to(x.device), err)
    return total / len(ts)


def percentile_maps(q: torch.Tensor, ps: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Algorithm 2's ``percentile(q, p)``: the per-pixel p-quantile over the images of q (N, H, W).

    ``ps`` is one p in [0, 1] (→ (H, W)) or a sequence (→ (len(ps), H, W)), so several thresholds
    come from one q without re-running the model.  Linear interpolation between order statistics
    (position p·(N-1)), i.e. ``numpy.percentile(q, 100·p, axis=0)``'s default; no size limit
    (unlike ``torch.quantile``).  p ∈ [0, 1] (NaN refused): the thesis sets no lower bound (§4.5 only
    notes that a lower p gives a larger mask), and p = 0 / 1 are the per-pixel minimum / maximum.
    """
    q = torch.as_tensor(q)
    if q.ndim != 3 or q.shape[0] < 1:
        raise ValueError(f"q must be (N, H, W) with N >= 1, got {tuple(q.shape)}")
    scalar = not isinstance(ps, (Sequence, torch.Tensor)) or (isinstance(ps, torch.Tensor) and ps.ndim == 0)
    p = torch.as_tensor(ps, dtype=torch.float64).reshape(-1)
    if len(p) == 0 or bool(((p < 0) | (p > 1) | p.isnan()).any()):
        raise ValueError(f"p must lie in [0, 1] (a fraction, not a percent), got {ps!r}")
    srt = q.sort(dim=0).values.double()
    pos = p * (q.shape[0] - 1)
    lo, hi = pos.floor().long(), pos.ceil().long()
    frac = (pos - lo).to(srt.device).reshape(-1, 1, 1)
    out = (srt[lo.to(srt.device)] * (1 - frac) + srt[hi.to(srt.device)] * frac).to(q.dtype)
    return out[0] if scalar else out


def _images(val_images) -> Iterable[torch.Tensor]:
    if isinstance(val_images, torch.Tensor):
        yield val_images
        return
    for item in val_images:
        if isinstance(item, dict):
            item = item["image"]
        elif isinstance(item, (tuple, list)):
            item = item[0]
        yield item


@torch.no_grad()
def threshold_map(model: EpsModel, val_images: torch.Tensor | Iterable, diffusion: Diffusion, t_start: int,
                  t_end: int, p: float | Sequence[float], eps: torch.Tensor, t_stride: int = 1, batch_size: int = 16,
                  progress: bool = False, return_q: bool = False
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 2's calculateThreshold (seed 002 §3.1.2): Q_p = percentile_p of Q(s) over s ∈ S.

    ``val_images``: a (N, C, H, W) tensor, or an iterable of batches (tensors, ``(images, …)`` tuples
    or dicts with ``"image"``) of normal validation images.  Q(s) is :func:`noise_misprediction` with
    the shared ``eps``; Q_p is :func:`percentile_maps` (q, p) — (H, W) for one p (thesis: p = 0.8), or
    (P, H, W) for a sequence.  ``return_q=True`` returns ``(Q_p, q)`` with q (N, H, W), so more
    thresholds can be taken from q later.

    The §3.1.2 prose says q ∈ R^{b×a×h×w} is "averaged across the first dimension" before the
    percentile; Algorithm 2 averages over the a noise levels (inside calculateDifference) and takes
    the percentile over the b images.  We follow Algorithm 2 (the only reading giving an h×w map
    from a percentile over normal images).
    """
    check_int("batch_size", batch_size, 1)
    chunks = []
    for batch in tqdm(list(_images(val_images)) if progress else _images(val_images), desc="threshold",
                      disable=not progress, leave=False):
        check_images("val_images", batch)
        for lo in range(0, batch.shape[0], batch_size):
            chunks.append(noise_misprediction(model, batch[lo:lo + batch_size], diffusion, t_start, t_end, eps,
                                              t_stride=t_stride, batch_size=batch_size))
    if not chunks:
        raise ValueError("val_images is empty")
    q = torch.cat(chunks)
    q_p = percentile_maps(q, p)
    return (q_p, q) if return_q else q_p


def self_aware_mask(q_test: torch.Tensor, q_p: torch.Tensor) -> torch.Tensor:
    """Algorithm 2's last line: m_ij = 1 if Q_test,ij > Q_p,ij else 0 → bool (B, H, W).

    m = 1 marks the *suspected anomaly*, the region to inpaint (so ``keep = keep_from_mask(m)``).
    A higher p gives a higher Q_p and so a smaller mask (§4.5: "the lower p is, the larger space
    covered by the mask").
    """
    q_test = torch.as_tensor(q_test)
    if q_test.ndim == 2:
        q_test = q_test[None]
    if q_test.ndim != 3 or tuple(torch.as_tensor(q_p).shape) != tuple(q_test.shape[-2:]):
        raise ValueError(f"q_test must be (B, H, W) and q_p (H, W), got {tuple(q_test.shape)}, "
                         f"{tuple(torch.as_tensor(q_p).shape)}")
    return q_test > q_p.to(q_test.device)


def keep_from_mask(m: torch.Tensor) -> torch.Tensor:
    """keep = 1 - m (float (B, 1, H, W)): Algorithm 2's m (1 = inpaint) → Algorithm 1's known-part
    mask (1 = keep).  See the module docstring for why the thesis' two m's are complementary."""
    m = torch.as_tensor(m)
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 3:
        m = m[:, None]
    return 1.0 - m.float()


@dataclass
class SelfAwareResult:
    """Output of :func:`self_aware_reconstruct`: the reconstruction x̂ (B, C, H, W), Algorithm 2's
    mask m (bool (B, H, W), 1 = inpainted), and the test misprediction map Q_test (B, H, W)."""

    x_hat: torch.Tensor
    mask: torch.Tensor
    q_test: torch.Tensor


@torch.no_grad()
def self_aware_reconstruct(model: EpsModel, x: torch.Tensor, diffusion: Diffusion, q_p: torch.Tensor,
                           eps: torch.Tensor, t_start: int, t_end: int, t: int, n_resample: int,
                           generator: torch.Generator, t_stride: int = 1, init: str = "masked",
                           clip_x0: bool = True, batch_size: int | None = None,
                           progress: bool = False, num_steps: int | None = None) -> SelfAwareResult:
    """Seed 002 §3.1 end to end: Algorithm 2 (mask) then Algorithm 1 (inpainting).

        Q_test = calculateDifference(x, t_start, t_end)      (:func:`noise_misprediction`, shared ``eps``)
        m      = Q_test > Q_p                                (:func:`self_aware_mask`)
        x̂      = inpaint(x, keep = 1 - m, t, N)              (:func:`inpaint`)

    ``q_p`` from :func:`threshold_map` with the *same* ``eps``.  Thesis settings (§4.5):
    [t_start, t_end] = [300, 350], p = 0.8, t = 50, N = 5 (0-based: 299 … 349 and t = 49; see the
    module docstring).  The anomaly map is then :func:`lib.core.scoring.multiscale_error_map` (x, x̂), the
    image score its max (``image_score(map, reduction="max")``, §3.1.3).
    """
    q_test = noise_misprediction(model, x, diffusion, t_start, t_end, eps, t_stride=t_stride,
                                 batch_size=batch_size, progress=progress)
    m = self_aware_mask(q_test, q_p)
    x_hat = inpaint(model, x, keep_from_mask(m), diffusion, t, n_resample, generator, init=init,
                    clip_x0=clip_x0, progress=progress, num_steps=num_steps)
    return SelfAwareResult(x_hat=x_hat, mask=m, q_test=q_test)

