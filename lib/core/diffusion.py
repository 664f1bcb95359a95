"""DDPM / DDIM math, written to be read beside the papers and checked against diffusers.

Sources (equation numbers are quoted in every docstring):
  * seed 000 = the mura-defect paper, §3.1 (DDPM, eqs. 1-6) and §3.2 (DDIM, eqs. 7-10);
  * Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (DDPM), eqs. 4, 6, 7, 11;
  * Song et al. 2021, "Denoising Diffusion Implicit Models" (DDIM), eqs. 12, 16;
  * Nichol & Dhariwal 2021, "Improved DDPM" (cosine schedule, eq. 17).

Two typos in seed 000, corrected here:
  * eq. 1 as printed reads N(x_t; √β_t·x_{t-1}, (1-β_t)·ε). The DDPM forward step is
        q(x_t | x_{t-1}) = N(x_t; √(1-β_t)·x_{t-1}, β_t·I)          (Ho eq. 2)
  * eq. 6 as printed ends in "+ (1-ᾱ_{t-1})/(1-ᾱ_t)·β_t". That is the posterior *variance* β̃_t
    (Ho eq. 7); a sample step adds noise with that variance:
        x_{t-1} = μ̃_t(x̂0, x_t) + σ_t·z,   σ_t² = β̃_t,   z ~ N(0, I)    (Ho eqs. 6-7, Alg. 2)

Conventions (the same as diffusers):
  * timesteps are 0-based: t = 0 … T-1 index ``betas``; the code's t is the papers' t+1.
    ``alpha_bar[t] = Π_{s<=t} (1-β_s)``, so ``q_sample(x0, 0, eps)`` already carries β_0 of noise,
    and x0 is the clean image.  A "previous" timestep t_prev < 0 means "clean": ᾱ_{-1} := 1
    (diffusers' ``set_alpha_to_one=True``).
  * images are N×C×H×W tensors; t is an int or a 1-D long tensor of length N (per-sample t).
  * schedules live in float64 on the CPU; coefficients are computed in float64 and cast to the
    dtype/device of the tensor they multiply.
  * a model is any callable ``eps_theta(x_t, t_tensor) -> eps`` (use :func:`eps_fn` to wrap a
    diffusers ``UNet2DModel``).
  * one argument order everywhere: model output (or model), then t, then x_t (or x0, diffusion, t);
    options are keyword-only.  ``clip_x0`` clamps x̂0 to [-1, 1].  Noise that is not passed in is
    drawn from ``generator`` with :func:`randn` (float32 on the generator's device, then moved —
    diffusers' ``randn_tensor``), so a seed fixes every result.
  * public entries check their arguments (``ValueError`` naming the parameter, its value and the
    valid range, via :mod:`lib.core.checks`) once, before any model call.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Union

import torch
from tqdm.auto import tqdm

from .checks import check_float, check_generator, check_images, check_int, check_shape, check_size_multiple

__all__ = [
    "SCHEDULES",
    "EpsModel",
    "Timestep",
    "make_betas",
    "Diffusion",
    "Step",
    "eps_fn",
    "size_multiple",
    "randn",
    "noise_like",
    "t_batch",
    "sample_ddpm",
    "sample_ddim",
    "sample_hybrid",
    "hybrid_plan",
    "run_plan",
    "predict_x0_one_step",
    "denoise_from",
    "ddim_from",
    "reverse_pairs",
]

SCHEDULES = ("linear", "cosine", "sigmoid")

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""An ε-model: ``eps_theta(x_t, t) -> ε_θ(x_t, t)`` with t an (N,) long tensor on x_t's device."""
Timestep = Union[int, torch.Tensor]
"""A timestep: an int, or a 1-D integer tensor with one t per sample."""


# --------------------------------------------------------------------------------------------
# β schedules
# --------------------------------------------------------------------------------------------
def make_betas(schedule: str, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_0 … β_{T-1} (float64) for one of ``SCHEDULES``.

    * ``"linear"``  β_t = linspace(β_start, β_end, T)                      (Ho et al. §4)
    * ``"cosine"``  ᾱ(s) = cos²((s + 0.008)/1.008 · π/2),
                    β_t = min(1 - ᾱ((t+1)/T) / ᾱ(t/T), 0.999)               (Nichol & Dhariwal eq. 17;
                    diffusers ``"squaredcos_cap_v2"``; β_start/β_end are ignored)
    * ``"sigmoid"`` β_t = sigmoid(linspace(-6, 6, T))·(β_end - β_start) + β_start
                    (GeoDiff; diffusers ``DDPMScheduler(beta_schedule="sigmoid")``; seed 002 §4.3)
    """
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if schedule == "cosine":
        def abar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - abar((t + 1) / T) / abar(t / T), 0.999) for t in range(T)], dtype=torch.float64)
    if schedule == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (beta_end - beta_start) + beta_start
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


class Step(NamedTuple):
    """Result of one reverse step: the next sample and the x̂0 it was built from."""

    x_prev: torch.Tensor
    x0_hat: torch.Tensor


# --------------------------------------------------------------------------------------------
# The process
# --------------------------------------------------------------------------------------------
class Diffusion:
    """A discrete Gaussian diffusion defined by β_0 … β_{T-1}.

    Attributes (float64, CPU): ``betas`` β_t, ``alphas`` α_t = 1 - β_t,
    ``alpha_bar`` ᾱ_t = Π_{s<=t} α_s (seed 000 eq. 2), and ``T``.
    """

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must lie in (0, 1]")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)
        self.T = len(betas)
        # ᾱ with ᾱ_{-1} = 1 prepended, so that alpha_bar_prev = _alpha_bar_ext[t_prev + 1] for t_prev >= -1.
        self._alpha_bar_ext = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])

    @classmethod
    def from_schedule(cls, schedule: str, T: int = 1000, beta_start: float = 1e-4,
                      beta_end: float = 0.02) -> "Diffusion":
        """``Diffusion(make_betas(schedule, T, beta_start, beta_end))``."""
        return cls(make_betas(schedule, T, beta_start, beta_end))

    def __repr__(self) -> str:
        return f"Diffusion(T={self.T}, beta[0]={self.betas[0].item():.3g}, beta[-1]={self.betas[-1].item():.3g})"

    # ---- small helpers ---------------------------------------------------------------------
    def check_t(self, t: Timestep, name: str = "t", *, allow_clean: bool = False) -> torch.Tensor:
        """t (an int or a 1-D integer tensor, one per sample) as a 1-D long CPU tensor with every
        entry in [0, T-1]; ``ValueError`` naming ``name`` otherwise (bools, floats such as 200.7 and
        out-of-range values never wrap or truncate).  ``allow_clean``: a previous timestep, where
        any negative value means "clean" (ᾱ = 1) and is stored as -1."""
        tt = torch.as_tensor(t).detach().cpu()
        if tt.is_floating_point() or tt.is_complex() or tt.dtype == torch.bool or tt.ndim > 1:
            raise ValueError(f"{name} must be an int or a 1-D integer tensor, got {t!r}")
        tt = tt.long().reshape(-1)
        if allow_clean:
            tt = tt.clamp(min=-1)
        low = -1 if allow_clean else 0
        if len(tt) == 0 or bool((tt < low).any()) or bool((tt > self.T - 1).any()):
            hint = " (negative = clean, alpha_bar = 1)" if allow_clean else ""
            raise ValueError(f"{name} must be an integer in [{low}, {self.T - 1}]{hint}, got {t!r}")
        return tt

    def _t_prev(self, t: torch.Tensor, t_prev) -> torch.Tensor:
        """Checked previous timestep; ``None`` means t - 1 (the un-respaced chain)."""
        if t_prev is None:
            return t - 1
        tp = self.check_t(t_prev, "t_prev", allow_clean=True)
        if bool((tp >= t).any()):
            raise ValueError(f"t_prev must be smaller than t, got t={t.tolist()}, t_prev={tp.tolist()}")
        return tp

    def _ab(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ_t (float64) for t >= -1, with ᾱ_{-1} = 1."""
        return self._alpha_bar_ext[t + 1]

    @staticmethod
    def coef(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A float64 per-sample coefficient (e.g. √ᾱ_t) → ``like``'s dtype/device, shaped (N or 1, 1, 1, …)
        so that it broadcasts against ``like`` (N×C×H×W)."""
        return values.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

    # ---- forward process ---------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: Timestep, eps: torch.Tensor) -> torch.Tensor:
        """Closed-form forward marginal, seed 000 eq. 3 (Ho eq. 4):

            x_t = √ᾱ_t · x0 + √(1 - ᾱ_t) · ε,     ε ~ N(0, I)

        Same as diffusers ``DDPMScheduler.add_noise(x0, eps, t)``.
        """
        ab = self._ab(self.check_t(t))
        return self.coef(ab.sqrt(), x0) * x0 + self.coef((1 - ab).sqrt(), x0) * eps

    def q_step(self, x_prev: torch.Tensor, t: Timestep, eps: torch.Tensor) -> torch.Tensor:
        """One forward step, seed 000 eq. 1 *corrected* (Ho eq. 2):

            q(x_t | x_{t-1}) = N(√(1 - β_t) · x_{t-1}, β_t · I)
            x_t = √(1 - β_t) · x_{t-1} + √β_t · ε

        Iterating it for s = 0, 1, …, t from the clean x0 gives x_t with the same law as
        ``q_sample(x0, t, ·)``: mean √ᾱ_t·x0 and variance 1 - ᾱ_t.
        """
        beta = self.betas[self.check_t(t)]
        return self.coef((1 - beta).sqrt(), x_prev) * x_prev + self.coef(beta.sqrt(), x_prev) * eps

    def q_jump(self, x_prev: torch.Tensor, t: Timestep, t_prev: Timestep, eps: torch.Tensor) -> torch.Tensor:
        """Forward jump between two timesteps t_prev < t (RePaint's "undo" on a respaced grid):

            q(x_t | x_{t_prev}) = N(√(ᾱ_t/ᾱ_{t_prev}) · x_{t_prev}, (1 - ᾱ_t/ᾱ_{t_prev}) · I)

        For t_prev = t - 1 it is exactly one forward step :meth:`q_step` (β_t); t_prev < 0 means clean (ᾱ = 1).
        """
        tt = self.check_t(t)
        tp = self._t_prev(tt, t_prev)
        if bool((tp == tt - 1).all()):
            return self.q_step(x_prev, tt, eps)
        ratio = self._ab(tt) / self._ab(tp)
        return self.coef(ratio.sqrt(), x_prev) * x_prev + self.coef((1 - ratio).sqrt(), x_prev) * eps

    # ---- ε ↔ x0 ------------------------------------------------------------------------------
    def x0_from_eps(self, x_t: torch.Tensor, t: Timestep, eps: torch.Tensor) -> torch.Tensor:
        """Seed 000 eq. 5 / eq. 9 (Ho eq. 4 solved for x0; DDIM eq. 12's "predicted x0"):

            x̂0 = (x_t - √(1 - ᾱ_t) · ε_θ) / √ᾱ_t
        """
        ab = self._ab(self.check_t(t))
        return (x_t - self.coef((1 - ab).sqrt(), x_t) * eps) / self.coef(ab.sqrt(), x_t)

    def eps_from_x0(self, x_t: torch.Tensor, t: Timestep, x0: torch.Tensor) -> torch.Tensor:
        """Eq. 3 solved for the noise:  ε = (x_t - √ᾱ_t · x0) / √(1 - ᾱ_t)."""
        ab = self._ab(self.check_t(t))
        return (x_t - self.coef(ab.sqrt(), x_t) * x0) / self.coef((1 - ab).sqrt(), x_t)

    def log_snr(self, t: Timestep) -> torch.Tensor:
        """log SNR(t) = log(ᾱ_t / (1 - ᾱ_t))  (float64, one value per t)."""
        ab = self._ab(self.check_t(t))
        return torch.log(ab / (1 - ab))

    # ---- reverse process ---------------------------------------------------------------------
    def _posterior_coefs(self, t: torch.Tensor, t_prev: torch.Tensor):
        """float64 (coef_x0, coef_xt, β̃) of Ho eqs. 6-7 for checked t, t_prev."""
        ab_t, ab_prev = self._ab(t), self._ab(t_prev)
        alpha_t = ab_t / ab_prev  # α_t, or ᾱ_t/ᾱ_{t_prev} when respaced
        beta_t = 1 - alpha_t
        coef_x0 = ab_prev.sqrt() * beta_t / (1 - ab_t)
        coef_xt = alpha_t.sqrt() * (1 - ab_prev) / (1 - ab_t)
        var = (1 - ab_prev) / (1 - ab_t) * beta_t
        return coef_x0, coef_xt, var

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: Timestep, t_prev: Timestep | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_{t_prev} | x_t, x0) = N(μ̃, β̃) — seed 000 eq. 6 corrected, Ho eqs. 6-7:

            μ̃ = √ᾱ_{t-1} β_t / (1 - ᾱ_t) · x0  +  √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · x_t
            β̃ = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t

        With ``t_prev`` (respaced chains, default t - 1) ᾱ_{t-1} becomes ᾱ_{t_prev},
        α_t becomes ᾱ_t / ᾱ_{t_prev} and β_t becomes 1 - ᾱ_t / ᾱ_{t_prev} (as diffusers does).
        ᾱ_{-1} = 1, so β̃ = 0 at the last step.

        Returns ``(mean, variance, log_variance)``; variance and log_variance are shaped to
        broadcast against x_t (in its dtype); log_variance uses max(β̃, 1e-20) (diffusers' clamp).
        """
        t = self.check_t(t)
        coef_x0, coef_xt, var = self._posterior_coefs(t, self._t_prev(t, t_prev))
        mean = self.coef(coef_x0, x_t) * x0 + self.coef(coef_xt, x_t) * x_t
        return mean, self.coef(var, x_t), self.coef(var.clamp(min=1e-20).log(), x_t)

    def ddpm_step(self, eps_theta: torch.Tensor, t: Timestep, x_t: torch.Tensor, *, t_prev: Timestep | None = None,
                  noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  clip_x0: bool = True) -> Step:
        """One ancestral DDPM step x_t → x_{t_prev} (seed 000 eqs. 4-6 corrected; Ho Alg. 2):

            x̂0      = (x_t - √(1 - ᾱ_t) ε_θ) / √ᾱ_t            (eq. 5), clamped to [-1, 1] if clip_x0
            x_{t-1} = μ̃(x̂0, x_t) + σ_t · z,  σ_t² = β̃_t       (eq. 6 corrected, "fixed_small")

        ``t_prev`` defaults to t - 1; for respaced chains pass the next grid timestep (see
        :meth:`prev_timestep`).  z is ``noise``, or else drawn from ``generator`` (:func:`randn`,
        in x_t's dtype).  At the last step (t_prev < 0, i.e. t = 0 unrespaced) σ = 0, no noise is
        added and none is drawn.  Matches ``DDPMScheduler(variance_type="fixed_small",
        clip_sample=clip_x0).step``.
        """
        tt = self.check_t(t)
        tp = self._t_prev(tt, t_prev)
        x0_hat = self.x0_from_eps(x_t, tt, eps_theta)
        if clip_x0:
            x0_hat = x0_hat.clamp(-1, 1)
        coef_x0, coef_xt, var = self._posterior_coefs(tt, tp)
        mean = self.coef(coef_x0, x_t) * x0_hat + self.coef(coef_xt, x_t) * x_t
        if bool((tp < 0).all()):
            return Step(mean, x0_hat)
        noise = noise_like(x_t, noise, generator, like="x_t", needed_for="a DDPM step with t_prev >= 0")
        return Step(mean + self.coef(var.sqrt(), x_t) * noise, x0_hat)

    def ddim_sigma(self, t: Timestep, t_prev: Timestep, eta: float) -> torch.Tensor:
        """Seed 000 eq. 7 (DDIM eq. 16), float64, one value per t:

            σ_t = η · √((1 - ᾱ_{t_prev}) / (1 - ᾱ_t)) · √(1 - ᾱ_t / ᾱ_{t_prev})

        η = 1 gives σ_t² = β̃_t (DDPM's posterior variance); η = 0 is deterministic DDIM.
        """
        eta = check_float("eta", eta, 0.0, 1.0)
        t = self.check_t(t)
        t_prev = self._t_prev(t, t_prev)
        ab_t, ab_prev = self._ab(t), self._ab(t_prev)
        return eta * ((1 - ab_prev) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_prev).sqrt()

    def ddim_step(self, eps_theta: torch.Tensor, t: Timestep, x_t: torch.Tensor, *, t_prev: Timestep, eta: float = 0.0,
                  noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                  clip_x0: bool = True) -> Step:
        """One DDIM step x_t → x_{t_prev}, seed 000 eqs. 7-10 (DDIM eq. 12):

            σ_t     = η · √((1-ᾱ_prev)/(1-ᾱ_t)) · √(1 - ᾱ_t/ᾱ_prev)                       (eq. 7)
            x̂0      = (x_t - √(1-ᾱ_t) ε_θ) / √ᾱ_t, clamped to [-1, 1] if clip_x0       (eq. 9)
            x_prev  = √ᾱ_prev · x̂0 + √(1 - ᾱ_prev - σ_t²) · ε_θ + σ_t · z              (eq. 10)

        ᾱ_prev = 1 when t_prev < 0 (diffusers ``set_alpha_to_one=True``), so the last step returns x̂0.
        As diffusers' ``DDIMScheduler.step`` by default (``use_clipped_model_output=False``), the
        direction term uses the model's ε_θ, *not* an ε recomputed from the clipped x̂0.
        z is needed only when η > 0: ``noise``, or else drawn from ``generator``.  η must lie in [0, 1].
        """
        eta = check_float("eta", eta, 0.0, 1.0)
        tt = self.check_t(t)
        tp = self._t_prev(tt, t_prev)
        ab_prev = self._ab(tp)
        sigma = self.ddim_sigma(tt, tp, eta)
        x0_hat = self.x0_from_eps(x_t, tt, eps_theta)
        if clip_x0:
            x0_hat = x0_hat.clamp(-1, 1)
        x_prev = self.coef(ab_prev.sqrt(), x_t) * x0_hat + self.coef((1 - ab_prev - sigma**2).sqrt(), x_t) * eps_theta
        if eta > 0:
            noise = noise_like(x_t, noise, generator, like="x_t", needed_for="a DDIM step with eta > 0")
            x_prev = x_prev + self.coef(sigma, x_t) * noise
        return Step(x_prev, x0_hat)

    # ---- respacing -----------------------------------------------------------------------------
    def timesteps(self, num_steps: int) -> list[int]:
        """Respaced grid, descending — diffusers' default ``timestep_spacing="leading"``
        (``DDIMScheduler`` / ``DDPMScheduler.set_timesteps``, steps_offset 0):

            k = T // num_steps,   grid = [(num_steps-1)·k, …, 2k, k, 0]

        e.g. T = 1000, 10 steps → 900, 800, …, 0.  Note the chain then starts at x_T ~ N(0, I)
        treated as x_{(num_steps-1)k}, not x_{T-1}, as in diffusers.
        """
        k = self._step_ratio(num_steps)
        return [i * k for i in range(num_steps - 1, -1, -1)]

    def prev_timestep(self, t: int, num_steps: int) -> int:
        """The timestep after t on the ``timesteps(num_steps)`` grid: t - T // num_steps, or -1
        (meaning "clean", ᾱ = 1) past the end.  This is diffusers' DDIM ``prev_timestep``."""
        return max(int(t) - self._step_ratio(num_steps), -1)

    def _step_ratio(self, num_steps: int) -> int:
        return self.T // check_int("num_steps", num_steps, 1, self.T)


# --------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------
def reverse_pairs(t: int, num_steps: int | None = None) -> list[tuple[int, int]]:
    """(s, s_prev) pairs of a reverse chain that starts at x_t and ends clean (s_prev = −1 last).

    ``num_steps=None``: every step t, t−1, …, 0. Otherwise ``num_steps`` grid points spaced evenly from
    t down to 0 (rounded), so a partial chain — RePaint from t = 49, DiffusionAD's Iterative-400 /
    DDIM-30 — can be respaced; the step between grid points is the exact posterior
    q(x_{s_prev} | x_s, x̂0) (Ho eqs. 6–7, ``ddpm_step(..., t_prev=s_prev)``) or a DDIM step.
    """
    t = check_int("t", t, 0)
    if num_steps is None:
        pts = list(range(t, -1, -1))
    else:
        num_steps = check_int("num_steps", num_steps, 1, t + 1)
        if num_steps == 1:
            pts = [t]
        else:
            pts = sorted({round(t - i * t / (num_steps - 1)) for i in range(num_steps)}, reverse=True)
    return list(zip(pts, pts[1:] + [-1]))


def size_multiple(unet: torch.nn.Module) -> int:
    """A diffusers ``UNet2DModel``'s total down-sampling 2^(levels − 1) (every level but the last halves
    H and W): image height and width must be multiples of it."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def eps_fn(unet: torch.nn.Module) -> EpsModel:
    """Adapter: a diffusers ``UNet2DModel`` → ``eps_theta(x_t, t) = unet(x_t, t).sample``.

    Every call first checks that H and W are multiples of :func:`size_multiple` (a ``ValueError``
    saying how to resize, instead of a shape error deep inside diffusers); plain Python, no host sync.
    """
    multiple = size_multiple(unet) if hasattr(getattr(unet, "config", None), "block_out_channels") else 1

    def eps_theta(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if multiple > 1:
            check_size_multiple("the input images", x_t, multiple)
        return unet(x_t, t).sample
    return eps_theta


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator,
          device: torch.device | str | None = None) -> torch.Tensor:
    """ε ~ N(0, I), float32, drawn on ``generator``'s device and then moved to ``device`` (default: stay) —
    diffusers' ``randn_tensor`` rule, so a CPU generator gives the same numbers on every device."""
    x = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return x if device is None else x.to(device)


def noise_like(x: torch.Tensor, noise: torch.Tensor | None = None, generator: torch.Generator | None = None, *,
               name: str = "noise", like: str = "x", needed_for: str = "") -> torch.Tensor:
    """``noise`` (checked to have x's shape), or else ε ~ N(0, I) shaped like x drawn from ``generator``
    (:func:`randn`, then cast to x's dtype) — the rule of every function here that takes both."""
    if noise is not None:
        return check_shape(name, noise, x.shape, like=like)
    if generator is None:
        why = f" for {needed_for}" if needed_for else ""
        raise ValueError(f"{name} or a generator to draw it from is required{why}; pass {name}=... or "
                         "generator=torch.Generator().manual_seed(...)")
    check_generator("generator", generator)
    return randn(x.shape, generator, x.device).to(x.dtype)


def t_batch(t: int | torch.Tensor, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The timestep argument of an ε-model: an (n,) long tensor on ``device`` — an int (or a 1-element
    tensor) repeated n times, or a per-sample tensor of length n as it is."""
    if isinstance(t, torch.Tensor) and t.numel() != 1:
        return t.reshape(-1).to(device=device, dtype=torch.long)
    return torch.full((n,), int(t), dtype=torch.long, device=device)


def hybrid_plan(diffusion: Diffusion, num_steps: int, switch_t: int) -> list[tuple[int, int, str]]:
    """(t, t_prev, kind) for every model call of the hybrid sampler (seed 000 §3.2; see :func:`sample_hybrid`)."""
    plan = []
    for t in diffusion.timesteps(num_steps):
        if t <= switch_t:
            break
        t_prev = diffusion.prev_timestep(t, num_steps)
        if 0 <= switch_t and t_prev <= switch_t:
            t_prev = switch_t  # land exactly on switch_t, then go one step at a time
        plan.append((t, t_prev, "ddim"))
    if switch_t >= 0:
        start = plan[-1][1] if plan else min(switch_t, diffusion.T - 1)
        plan += [(t, t - 1, "ddpm") for t in range(start, -1, -1)]
    return plan


@torch.no_grad()
def _run(eps_theta: EpsModel, x: torch.Tensor, diffusion: Diffusion, plan, generator: torch.Generator,
         eta: float, clip_x0: bool, progress: bool, desc: str, after_step=None):
    """Shared reverse loop from x over ``plan`` ((t, t_prev, kind) per model call).  Noise order (fixed by
    ``generator``): per step z for a DDPM step with t_prev >= 0, or for a DDIM step when η > 0
    (diffusers' order; the steps draw it). ``after_step(x_prev, t_prev)`` may replace each step's result."""
    steps = []
    for t, t_prev, kind in tqdm(plan, desc=desc, disable=not progress, leave=False):
        eps = eps_theta(x, t_batch(t, x.shape[0], x.device))
        if kind == "ddpm":
            x = diffusion.ddpm_step(eps, t, x, t_prev=t_prev, generator=generator, clip_x0=clip_x0).x_prev
        else:
            x = diffusion.ddim_step(eps, t, x, t_prev=t_prev, eta=eta, generator=generator, clip_x0=clip_x0).x_prev
        if after_step is not None:
            x = after_step(x, t_prev)
        steps.append((t, kind))
    return x, steps


@torch.no_grad()
def run_plan(eps_theta: EpsModel, x_t: torch.Tensor, diffusion: Diffusion, plan: list[tuple[int, int, str]], *,
             generator: torch.Generator, eta: float = 0.0, clip_x0: bool = True, progress: bool = False,
             desc: str = "reverse", after_step: Callable[[torch.Tensor, int], torch.Tensor] | None = None
             ) -> tuple[torch.Tensor, list[tuple[int, str]]]:
    """The reverse loop of every sampler from a given x_t over ``plan`` ((t, t_prev, "ddim" | "ddpm") per model call,
    e.g. :func:`hybrid_plan`); ``after_step(x_prev, t_prev)`` replaces each step's result (masked generation puts the
    known pixels back: x_{t-1} ← m·x_{t-1} + (1−m)·x_0, seed 000 §3.3). Returns ``(x, steps)``."""
    check_generator("generator", generator)
    eta = check_float("eta", eta, 0.0, 1.0)
    return _run(eps_theta, x_t, diffusion, plan, generator, eta, clip_x0, progress, desc, after_step)


def _sample(eps_theta: EpsModel, shape, plan, diffusion: Diffusion, generator: torch.Generator, eta: float,
            clip_x0: bool, progress: bool, device, desc: str):
    """x_T ~ N(0, I) (the first draw from ``generator``), then :func:`_run`."""
    shape = tuple(check_int(f"shape[{i}]", n, 1) for i, n in enumerate(shape))
    if len(shape) != 4:
        raise ValueError(f"shape must be (N, C, H, W), got {shape}")
    check_generator("generator", generator)
    device = torch.device(device) if device is not None else generator.device
    return _run(eps_theta, randn(shape, generator, device), diffusion, plan, generator, eta, clip_x0, progress,
                desc)


def sample_ddpm(eps_theta: EpsModel, shape: tuple[int, int, int, int], diffusion: Diffusion, *,
                generator: torch.Generator, num_steps: int | None = None, clip_x0: bool = True,
                progress: bool = False, device: torch.device | str | None = None
                ) -> tuple[torch.Tensor, list[tuple[int, str]]]:
    """Ancestral DDPM sampling x_T → x_0 (Ho Alg. 2; seed 000 eqs. 4-6 corrected).

    ``num_steps=None`` runs all T steps T-1, …, 0; otherwise the respaced grid
    ``diffusion.timesteps(num_steps)`` with the posterior between grid points
    (as diffusers' ``DDPMScheduler.set_timesteps``).  Returns ``(x0, steps)`` with
    ``steps`` the list of ``(t, "ddpm")`` (one model call each).

    All samplers: x_T and every per-step noise come from ``generator`` (float32, drawn on the
    generator's device, then moved to ``device``, default the generator's device), so a fixed seed
    gives identical samples; ``progress=True`` shows a tqdm bar; no gradients are tracked.
    """
    if num_steps is None:
        plan = [(t, t - 1, "ddpm") for t in range(diffusion.T - 1, -1, -1)]
    else:
        plan = [(t, diffusion.prev_timestep(t, num_steps), "ddpm") for t in diffusion.timesteps(num_steps)]
    return _sample(eps_theta, shape, plan, diffusion, generator, 0.0, clip_x0, progress, device, "DDPM")


def sample_ddim(eps_theta: EpsModel, shape: tuple[int, int, int, int], diffusion: Diffusion, *, num_steps: int,
                eta: float = 0.0, generator: torch.Generator, clip_x0: bool = True, progress: bool = False,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, list[tuple[int, str]]]:
    """DDIM sampling (Song et al. eq. 12; seed 000 eqs. 7-10) on ``diffusion.timesteps(num_steps)``,
    η ∈ [0, 1] (0 = deterministic DDIM, 1 = DDPM's variance).

    Returns ``(x0, steps)`` with ``steps`` the list of ``(t, "ddim")``.
    """
    eta = check_float("eta", eta, 0.0, 1.0)
    plan = [(t, diffusion.prev_timestep(t, num_steps), "ddim") for t in diffusion.timesteps(num_steps)]
    return _sample(eps_theta, shape, plan, diffusion, generator, eta, clip_x0, progress, device, "DDIM")


def sample_hybrid(eps_theta: EpsModel, shape: tuple[int, int, int, int], diffusion: Diffusion, *,
                  num_steps: int, switch_t: int, eta: float = 0.0, generator: torch.Generator,
                  clip_x0: bool = True, progress: bool = False, device: torch.device | str | None = None
                  ) -> tuple[torch.Tensor, list[tuple[int, str]]]:
    """Seed 000 §3.2's hybrid: "when time T is close to zero, we use DDPM instead of DDIM".

    Exact schedule:
      1. DDIM steps (eta) from every grid point t of ``diffusion.timesteps(num_steps)`` with
         t > switch_t, each to the next grid point — except that a step whose next grid point would
         be <= switch_t lands on switch_t itself;
      2. then DDPM ancestral single steps switch_t, switch_t-1, …, 0 (if switch_t lies above the
         first grid point, DDPM starts at switch_t directly from x_T).
    So every t <= switch_t gets its own DDPM step and the chain ends at t = 0.
    ``switch_t`` ∈ [-1, T-1]: -1 is exactly ``sample_ddim``; T-1 is exactly ``sample_ddpm``
    with all T steps (same noise draws from ``generator``).
    Model calls = #DDIM steps + switch_t + 1.

    Returns ``(x0, steps)`` with ``steps`` the list of ``(t, "ddim" | "ddpm")``.
    """
    eta = check_float("eta", eta, 0.0, 1.0)
    switch_t = check_int("switch_t", switch_t, -1, diffusion.T - 1)
    diffusion.timesteps(num_steps)  # checks num_steps before anything else
    plan = hybrid_plan(diffusion, num_steps, switch_t)
    return _sample(eps_theta, shape, plan, diffusion, generator, eta, clip_x0, progress, device, "hybrid")


# --------------------------------------------------------------------------------------------
# Reconstructions from a clean image x0 (anomaly detection: noise it, denoise it back)
# --------------------------------------------------------------------------------------------
def _noised(x0: torch.Tensor, diffusion: Diffusion, t, noise: torch.Tensor | None,
            generator: torch.Generator | None) -> torch.Tensor:
    """Checked x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε (eq. 3), ε = ``noise`` or the first draw from ``generator``."""
    check_images("x0", x0)
    return diffusion.q_sample(x0, t, noise_like(x0, noise, generator, like="x0"))


@torch.no_grad()
def predict_x0_one_step(eps_theta: EpsModel, x0: torch.Tensor, diffusion: Diffusion, t: Timestep, *,
                        noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                        clip_x0: bool = False) -> torch.Tensor:
    """One-step reconstruction: x_t = eq. 3(x0, ε), then x̂0 = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t (eq. 5).

    The reconstruction DiffusionAD's observation 1 rests on (its eq. 6, with ``clip_x0=True`` as in the
    authors' code); exact (x̂0 = x0) when ε_θ = ε.  ``t`` may be an int or a per-sample long tensor;
    ε is ``noise`` or drawn from ``generator``.
    """
    tt = diffusion.check_t(t)
    if len(tt) not in (1, len(x0)):
        raise ValueError(f"t must be an int or one timestep per image ({len(x0)}), got {len(tt)} timesteps")
    x_t = _noised(x0, diffusion, tt, noise, generator)
    x0_hat = diffusion.x0_from_eps(x_t, tt, eps_theta(x_t, t_batch(tt, x0.shape[0], x0.device)))
    return x0_hat.clamp(-1, 1) if clip_x0 else x0_hat


@torch.no_grad()
def denoise_from(eps_theta: EpsModel, x0: torch.Tensor, diffusion: Diffusion, t: int, *,
                 generator: torch.Generator, noise: torch.Tensor | None = None, num_steps: int | None = None,
                 clip_x0: bool = True, progress: bool = False) -> torch.Tensor:
    """Noise x0 to t, then ancestral DDPM back to a clean image (seed 002 ch. 3's "basic DDPM
    denoising"; DiffusionAD Table VII's "Iterative-t"):

        x_t = √ᾱ_t · x0 + √(1 - ᾱ_t) · ε                                  (eq. 3)
        x_{s_prev} = μ̃(x̂0(x_s, ε_θ(x_s, s)), x_s) + σ_s z,  (s, s_prev) ∈ reverse_pairs(t, num_steps)

    and returns x̂ = x_{-1} (= the last x̂0, so in [-1, 1] with ``clip_x0``).  Each step is
    :meth:`Diffusion.ddpm_step` (Ho Alg. 2; no noise at the last step).  Noise order from
    ``generator``: ε (unless ``noise`` is given), then one z per step with s_prev ≥ 0.
    Model calls: t + 1, or ``num_steps`` respaced steps (the exact posterior between grid points).
    """
    t = check_int("t", t, 0, diffusion.T - 1)
    check_generator("generator", generator)
    plan = [(s, s_prev, "ddpm") for s, s_prev in reverse_pairs(t, num_steps)]
    x_t = _noised(x0, diffusion, t, noise, generator)
    return _run(eps_theta, x_t, diffusion, plan, generator, 0.0, clip_x0, progress, "denoise")[0]


@torch.no_grad()
def ddim_from(eps_theta: EpsModel, x0: torch.Tensor, diffusion: Diffusion, t: int, *,
              noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
              num_steps: int | None = None, eta: float = 0.0, clip_x0: bool = True,
              progress: bool = False) -> torch.Tensor:
    """Noise x0 to t (eq. 3), then DDIM steps (seed 000 eq. 10; η = 0: deterministic) back to a clean
    image over ``reverse_pairs(t, num_steps)`` — DiffusionAD Table VII's "DDIM-30" with num_steps = 30.

    Returns x̂ = x_{-1} (= the last x̂0).  Noise from ``generator``: ε unless ``noise`` is given, and one
    z per step when η > 0.
    """
    t = check_int("t", t, 0, diffusion.T - 1)
    eta = check_float("eta", eta, 0.0, 1.0)
    if generator is not None or eta > 0:
        check_generator("generator", generator)
    plan = [(s, s_prev, "ddim") for s, s_prev in reverse_pairs(t, num_steps)]
    x_t = _noised(x0, diffusion, t, noise, generator)
    return _run(eps_theta, x_t, diffusion, plan, generator, eta, clip_x0, progress, "DDIM")[0]
