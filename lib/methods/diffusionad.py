"""DiffusionAD (seed 003): noise-to-norm reconstruction by one-step and norm-guided denoising,
a segmentation sub-network on (input, reconstruction), joint training, and image scores.

Paper equations (seed 003, §IV) and where they live here:

* eq. 1  x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε                        → ``Diffusion.q_sample``
* eq. 6  x̂_0 = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t          → :func:`one_step`
* eq. 5/7  ε̂ = ε_θ(x_{t_s}) − √(1−ᾱ_{t_s}) · w · (n_{t_s} − x_{t_s}),
  the gradient of sim = −½‖n_{t_s} − x_{t_s}‖², with n_{t_s} = √ᾱ_{t_s} x̂_{0_b} + √(1−ᾱ_{t_s}) ε_θ(x_{t_s})
  (re-noised with the *predicted* noise, not fresh noise)   → :func:`norm_guided`
* eq. 8  x̂_{0_g} = (x_{t_s} − √(1−ᾱ_{t_s}) ε̂) / √ᾱ_{t_s}     → :func:`norm_guided`
* eq. 9  L_noise = (1−y)(‖ε_{t_s} − ε_θ(x_{t_s})‖² + ‖ε_{t_b} − ε_θ(x_{t_b})‖²)/2
* eq. 10 L_mask = SmoothL1(M, M̂) + γ·L_focal(M, M̂), γ = 5    → :func:`train_diffusionad`
* image score: mean of the top-50 pixels of the anomaly map (authors' code) → :func:`image_score`

Settings the paper leaves out follow the authors' code (``shared/reference/paper-settings.md``):
x̂_{0_b} and x̂_{0_g} are clamped to [−1, 1]; each of the two noisings draws its own ε;
t_s = 200, t_b = 400, w = 1 at inference; t_s ~ U[0, τ), t_b ~ U[τ, T), τ = 300 in training.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.diffusion import Diffusion, EpsModel, eps_fn, make_betas, reverse_pairs
from ..core.losses import focal_loss, smooth_l1_map_loss
from ..core.device import pick_device
from ..core.nets import segmentation_net, unet
from ..core.paths import CHECKPOINTS, TRAIN_STATE
from ..io.checkpoints import open_checkpoint, resume_state, save_atomic, write_manifest

__all__ = ["one_step", "norm_guided", "norm_guided_core", "NormGuided", "anomaly_map", "image_score", "ADConfig",
           "train_diffusionad", "load_diffusionad", "DiffusionADModel", "iterative", "ddim_from"]


def _bc(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return coef.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))


def _t(t, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.long)
    return (t.expand(n) if t.ndim == 0 or len(t) == 1 else t).to(device)


def one_step(eps_theta: torch.Tensor, x_t: torch.Tensor, t, diffusion: Diffusion,
             clamp: bool = True) -> torch.Tensor:
    """Eq. 6: x̂_0 = (x_t − √(1−ᾱ_t)·ε_θ(x_t, t)) / √ᾱ_t, clamped to [−1, 1] (authors' code)."""
    x0 = diffusion.x0_from_eps(x_t, _t(t, x_t.shape[0], "cpu"), eps_theta)
    return x0.clamp(-1, 1) if clamp else x0


class NormGuided(NamedTuple):
    """Everything :func:`norm_guided` computes (for figures and tests)."""

    x0_g: torch.Tensor      # eq. 8, the norm-guided reconstruction
    x0_s: torch.Tensor      # eq. 6 from x_{t_s} (one-step, small noise)
    x0_b: torch.Tensor      # eq. 6 from x_{t_b} (one-step, big noise) = the guide n
    eps_s: torch.Tensor     # ε_θ(x_{t_s}, t_s)
    eps_b: torch.Tensor     # ε_θ(x_{t_b}, t_b)
    x_ts: torch.Tensor
    x_tb: torch.Tensor
    n_ts: torch.Tensor      # n re-noised to t_s with the predicted noise ε_θ(x_{t_s})


def norm_guided(model: EpsModel, x0: torch.Tensor, diffusion: Diffusion, t_s, t_b,
                noise_s: torch.Tensor, noise_b: torch.Tensor, w: float = 1.0,
                one_call: bool = True) -> NormGuided:
    """Norm-guided one-step denoising (seed 003 §IV-B, eqs. 1, 6, 7, 8).

    1. x_{t_s} = q(x0, t_s, noise_s), x_{t_b} = q(x0, t_b, noise_b)           (eq. 1, own noise each)
    2. ε_s = ε_θ(x_{t_s}, t_s), ε_b = ε_θ(x_{t_b}, t_b)  — with ``one_call`` both noisings of a
       batch go through the UNet as one batch of 2B (same numbers, one launch sequence)
    3. n = x̂_{0_b} = clamp(eq. 6 from x_{t_b})
    4. n_{t_s} = √ᾱ_{t_s} n + √(1−ᾱ_{t_s}) ε_s                             (predicted noise)
    5. ε̂ = ε_s − √(1−ᾱ_{t_s})·w·(n_{t_s} − x_{t_s})                          (eq. 7)
    6. x̂_{0_g} = clamp(eq. 6 from x_{t_s} with ε̂)                          (eq. 8)

    ``t_s``/``t_b`` are ints or per-sample long tensors. Gradients flow (training uses this).
    """
    B = x0.shape[0]
    ts, tb = _t(t_s, B, "cpu"), _t(t_b, B, "cpu")
    ab_s, ab_b = diffusion.alpha_bar[ts], diffusion.alpha_bar[tb]
    coefs = tuple(_bc(c, x0) for c in (ab_s.sqrt(), (1 - ab_s).sqrt(), ab_b.sqrt(), (1 - ab_b).sqrt()))
    return norm_guided_core(model, x0, ts.to(x0.device), tb.to(x0.device), coefs, noise_s, noise_b, w,
                            one_call)


def norm_guided_core(model: EpsModel, x0: torch.Tensor, ts: torch.Tensor, tb: torch.Tensor, coefs,
                     noise_s: torch.Tensor, noise_b: torch.Tensor, w: float = 1.0,
                     one_call: bool = True) -> NormGuided:
    """The arithmetic of :func:`norm_guided` with precomputed coefficients
    ``coefs = (√ᾱ_{t_s}, √(1−ᾱ_{t_s}), √ᾱ_{t_b}, √(1−ᾱ_{t_b}))`` (floats or broadcastable tensors)
    and device-side timestep tensors — no host work, so ``torch.compile``/CUDA graphs can take it
    whole (``lib.bench`` does)."""
    sa_s, sb_s, sa_b, sb_b = coefs
    B = x0.shape[0]
    x_ts = sa_s * x0 + sb_s * noise_s                                   # eq. 1
    x_tb = sa_b * x0 + sb_b * noise_b
    if one_call:
        eps = model(torch.cat([x_ts, x_tb]), torch.cat([ts, tb]))
        eps_s, eps_b = eps[:B], eps[B:]
    else:
        eps_s, eps_b = model(x_ts, ts), model(x_tb, tb)
    x0_b = ((x_tb - sb_b * eps_b) / sa_b).clamp(-1, 1)                   # eq. 6 from x_{t_b}: n
    x0_s = ((x_ts - sb_s * eps_s) / sa_s).clamp(-1, 1)                   # eq. 6 from x_{t_s}
    n_ts = sa_s * x0_b + sb_s * eps_s                                    # re-noised with ε_θ(x_{t_s})
    eps_hat = eps_s - sb_s * w * (n_ts - x_ts)                           # eq. 7
    x0_g = ((x_ts - sb_s * eps_hat) / sa_s).clamp(-1, 1)                 # eq. 8
    return NormGuided(x0_g, x0_s, x0_b, eps_s, eps_b, x_ts, x_tb, n_ts)


@torch.no_grad()
def iterative(model: EpsModel, x0: torch.Tensor, diffusion: Diffusion, t: int, noise: torch.Tensor,
              generator: torch.Generator, num_steps: int | None = None) -> torch.Tensor:
    """Table VII's "Iterative-t" row: noise x0 to t (eq. 1), then ancestral DDPM steps back to 0.

    ``num_steps`` respaces the chain (t, t−t/num_steps, …, 0) with the exact posterior between
    grid points (Ho eqs. 6–7); ``None`` = every step (the paper's 400 model calls from t = 400).
    """
    x = diffusion.q_sample(x0, t, noise)
    for s, s_prev in reverse_pairs(t, num_steps):
        eps = model(x, _t(s, x.shape[0], x.device))
        z = torch.randn(x.shape, generator=generator).to(x.device, x.dtype) if s_prev >= 0 else None
        x = diffusion.ddpm_step(eps, s, x, z, t_prev=s_prev).x_prev
    return x.clamp(-1, 1)


@torch.no_grad()
def ddim_from(model: EpsModel, x0: torch.Tensor, diffusion: Diffusion, t: int, noise: torch.Tensor,
              num_steps: int = 30) -> torch.Tensor:
    """Table VII's "DDIM-30" row: noise x0 to t, then deterministic DDIM (η = 0) in ``num_steps``."""
    x = diffusion.q_sample(x0, t, noise)
    for s, s_prev in reverse_pairs(t, num_steps):
        eps = model(x, _t(s, x.shape[0], x.device))
        x = diffusion.ddim_step(eps, s, s_prev, x, eta=0.0, noise=None).x_prev
    return x.clamp(-1, 1)


def anomaly_map(seg: torch.nn.Module, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Segmentation sub-network on the 6-channel (input, reconstruction) pair → M̂ ∈ [0, 1], (B, H, W)."""
    return torch.sigmoid(seg(torch.cat([x, x_hat], dim=1)))[:, 0]


def image_score(amap: torch.Tensor, k: int = 50) -> torch.Tensor:
    """Image-level score: mean of the top-k pixels of the anomaly map (authors' code, k = 50)."""
    flat = amap.flatten(1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(1)


# --------------------------------------------------------------------------------------------
# a trained model: UNet + segmentation net + schedule
# --------------------------------------------------------------------------------------------
@dataclass
class ADConfig:
    """Joint training settings (paper §IV-C; authors' code where the paper is silent)."""

    preset: str = "small"          # reconstruction UNet preset (lib.models)
    seg_preset: str = "tiny"       # segmentation sub-network preset
    image_size: int = 64
    schedule: str = "linear"       # authors: linear β 1e-4 → 0.02, T = 1000
    T: int = 1000
    tau: int = 300                 # t_s ~ U[0, τ), t_b ~ U[τ, T)
    steps: int = 8000
    batch_size: int = 16           # half normal, half synthetic anomalies
    lr_unet: float = 1e-4
    lr_seg: float = 1e-4           # authors: 1e-5 over 3000 epochs; see the notebook
    focal_weight: float = 5.0      # γ of eq. 10
    focal_alpha: float = 0.5
    focal_gamma: float = 4.0
    beta_low: float = 0.2          # blend opacity β ~ U[0.2, 0.8)
    beta_high: float = 0.8
    mode: str = "texture"          # "texture" or "object" (synthetic anomaly recipe)
    pool: int = 2048               # synthetic anomalies drawn once, sampled every step
    seed: int = 0
    ckpt_every: int = 1000


class DiffusionADModel(NamedTuple):
    unet: torch.nn.Module
    seg: torch.nn.Module
    diffusion: Diffusion
    config: ADConfig

    @property
    def eps(self) -> EpsModel:
        return eps_fn(self.unet)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator, t_s: int = 200, t_b: int = 400,
                    w: float = 1.0) -> NormGuided:
        n1 = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        n2 = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        return norm_guided(self.eps, x, self.diffusion, t_s, t_b, n1, n2, w)

    @torch.no_grad()
    def anomaly_map(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return anomaly_map(self.seg, x, x_hat)


def _build(cfg: ADConfig, device):
    return unet(cfg.preset, cfg.image_size).to(device), segmentation_net(cfg.seg_preset).to(device)


def load_diffusionad(path: str | os.PathLike, device="cpu", verify: bool = True) -> DiffusionADModel:
    """Load an exported DiffusionAD checkpoint (UNet + segmentation net) made by :func:`train_diffusionad`."""
    state = open_checkpoint(path, "lib.methods.diffusionad", verify)
    cfg = ADConfig(**state["config"])
    u, s = _build(cfg, "cpu")
    u.load_state_dict(state["unet"])
    s.load_state_dict(state["seg"])
    u.to(device).eval()
    s.to(device).eval()
    return DiffusionADModel(u, s, Diffusion(make_betas(cfg.schedule, cfg.T)), cfg)


def _pool(images: torch.Tensor, cfg: ADConfig, gen: torch.Generator, sources, progress: bool):
    from ..data.synth import synthesize

    xs, ms = [], []
    for _ in tqdm(range(cfg.pool), desc="synthetic anomalies", disable=not progress, leave=False):
        i = int(torch.randint(0, images.shape[0], (1,), generator=gen))
        s = synthesize(images[i], gen, sources, beta_range=(cfg.beta_low, cfg.beta_high), mode=cfg.mode)
        xs.append(s.image)
        ms.append(s.mask.reshape(1, *s.image.shape[-2:]))
    return torch.stack(xs), torch.stack(ms).float()


def train_diffusionad(images: torch.Tensor, cfg: ADConfig, out: str | os.PathLike, *, sources,
                      export: str | os.PathLike | None = None, device=None,
                      data_fingerprint: str = "unknown", command: str | None = None,
                      progress: bool = True, stop_after: int | None = None):
    """Joint training of the reconstruction and segmentation sub-networks (seed 003 §IV-C).

    Each step: B/2 normal images and B/2 synthetic anomalies (drawn from a pool made once with
    :func:`lib.synth.synthesize`, §IV-D), t_s ~ U[0, τ), t_b ~ U[τ, T) per sample, own noise for
    each, :func:`norm_guided` reconstruction with w = 1 (gradients flow end to end), loss
    L_noise (eq. 9, normal samples only) + SmoothL1(M, M̂) + 5·focal(M, M̂) (eq. 10).
    Resumable like :func:`lib.train.train_ddpm` (one generator, state saved atomically).
    Returns the trained :class:`DiffusionADModel` and the loss history.
    """
    device = pick_device(None if device is None else str(device))
    out = Path(out)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be N×3×H×W in [-1, 1]; got {tuple(images.shape)}")
    diffusion = Diffusion(make_betas(cfg.schedule, cfg.T))
    torch.manual_seed(cfg.seed)
    model, seg = _build(cfg, device)
    opt = torch.optim.Adam([{"params": model.parameters(), "lr": cfg.lr_unet},
                            {"params": seg.parameters(), "lr": cfg.lr_seg}])
    gen = torch.Generator().manual_seed(cfg.seed)
    pool_x, pool_m = _pool(images, cfg, gen, sources, progress)
    step, hist = 0, {"noise": [], "mask": []}
    state = resume_state(out, cfg)
    if state is not None:
        model.load_state_dict(state["unet"])
        seg.load_state_dict(state["seg"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, hist = state["step"], state["losses"]
    cmd = command or " ".join([sys.executable, *sys.argv])
    meta = dict(command=cmd, config=asdict(cfg), seed=cfg.seed, data_fingerprint=data_fingerprint)

    def save():
        save_atomic({"config": asdict(cfg), "step": step, "losses": hist, "unet": model.state_dict(),
                     "seg": seg.state_dict(), "optimizer": opt.state_dict(),
                     "generator": gen.get_state()}, out)
        write_manifest(out, **meta, extra={"step": step, "final": step >= cfg.steps,
                                           "n_images": int(images.shape[0])})

    eps_model = eps_fn(model)
    nb = cfg.batch_size // 2
    na = cfg.batch_size - nb
    model.train()
    seg.train()
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    bar = tqdm(total=cfg.steps, initial=step, desc="train DiffusionAD", disable=not progress)
    t0 = time.perf_counter()
    while step < end:
        i_n = torch.randint(0, images.shape[0], (nb,), generator=gen)
        i_a = torch.randint(0, pool_x.shape[0], (na,), generator=gen)
        t_s = torch.randint(0, cfg.tau, (cfg.batch_size,), generator=gen)
        t_b = torch.randint(cfg.tau, cfg.T, (cfg.batch_size,), generator=gen)
        e_s = torch.randn((cfg.batch_size, *images.shape[1:]), generator=gen)
        e_b = torch.randn((cfg.batch_size, *images.shape[1:]), generator=gen)
        x = torch.cat([images[i_n], pool_x[i_a]]).to(device)
        M = torch.cat([torch.zeros(nb, *pool_m.shape[1:]), pool_m[i_a]]).to(device)
        e_s, e_b = e_s.to(device), e_b.to(device)
        r = norm_guided(eps_model, x, diffusion, t_s, t_b, e_s, e_b, w=1.0)
        # eq. 9 on the normal half only (y = 0)
        l_noise = 0.5 * (F.mse_loss(r.eps_s[:nb], e_s[:nb]) + F.mse_loss(r.eps_b[:nb], e_b[:nb]))
        logits = seg(torch.cat([x, r.x0_g], 1))
        l_mask = smooth_l1_map_loss(torch.sigmoid(logits), M) + cfg.focal_weight * focal_loss(
            logits, M, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
        loss = l_noise + l_mask
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        hist["noise"].append(l_noise.item())
        hist["mask"].append(l_mask.item())
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(noise=f"{sum(hist['noise'][-50:]) / 50:.4f}", mask=f"{sum(hist['mask'][-50:]) / 50:.4f}")
        if step % cfg.ckpt_every == 0 or step == end:
            save()
    bar.close()
    model.eval()
    seg.eval()
    if export is not None and step >= cfg.steps:
        half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
        seg_state = {k: v.half() if v.is_floating_point() else v for k, v in seg.state_dict().items()}
        save_atomic({"config": asdict(cfg), "step": step, "losses": hist, "unet": half, "seg": seg_state},
                    Path(export))
        write_manifest(Path(export), **meta, extra={"step": step, "final": True,
                                                    "n_images": int(images.shape[0]),
                                                    "weights": "final weights, stored as float16"})
    if progress:
        print(f"trained to step {step}/{cfg.steps} in {time.perf_counter() - t0:.1f} s -> {out}")
    return DiffusionADModel(model, seg, diffusion, cfg), hist


def main(argv: list[str] | None = None) -> None:
    import argparse

    from .. import data as kit_data
    from ..data.synth import anomaly_sources

    p = argparse.ArgumentParser(description="Train DiffusionAD (UNet + segmentation net) on one category")
    p.add_argument("--data", default=None, help="MVTec-layout root (default: the embedded benchmark)")
    p.add_argument("--category", default="gravel")
    p.add_argument("--name", required=True, help="checkpoint name, e.g. diffusionad_small_gravel64")
    p.add_argument("--state-dir", type=Path, default=TRAIN_STATE)
    p.add_argument("--export-dir", type=Path, default=CHECKPOINTS)
    p.add_argument("--device", default=None)
    for f in ADConfig.__dataclass_fields__.values():
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    a = p.parse_args(argv)
    cfg = ADConfig(**{k: getattr(a, k) for k in ADConfig.__dataclass_fields__})
    root = Path(a.data) if a.data else kit_data.embedded_benchmark(image_size=cfg.image_size)
    cat = kit_data.load_category(root, a.category, image_size=cfg.image_size)
    images = kit_data.to_tensor(cat.train.images)
    sources = anomaly_sources(tuple(images.shape[-2:]), exclude=a.category)
    cmd = "python -m lib.methods.diffusionad " + " ".join(argv if argv is not None else sys.argv[1:])
    train_diffusionad(images, cfg, a.state_dir / f"{a.name}.pt", export=a.export_dir / f"{a.name}.pt",
                      sources=sources, device=a.device, command=cmd,
                      data_fingerprint=kit_data.fingerprint(root / a.category))


if __name__ == "__main__":
    main()
