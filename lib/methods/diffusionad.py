"""DiffusionAD (seed 003): noise-to-norm reconstruction by one-step and norm-guided denoising,
a segmentation sub-network on (input, reconstruction), joint training, and image scores.

Paper equations (seed 003, §IV) and where they live here:

* eq. 1  x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε                        → ``Diffusion.q_sample``
* eq. 6  x̂_0 = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t          → ``Diffusion.x0_from_eps``; from x_0 in one
  call: :func:`lib.core.diffusion.predict_x0_one_step` (``clip_x0=True``, authors' code)
* eq. 5/7  ε̂ = ε_θ(x_{t_s}) − √(1−ᾱ_{t_s}) · w · (n_{t_s} − x_{t_s}),
  the gradient of sim = −½‖n_{t_s} − x_{t_s}‖², with n_{t_s} = √ᾱ_{t_s} x̂_{0_b} + √(1−ᾱ_{t_s}) ε_θ(x_{t_s})
  (re-noised with the *predicted* noise, not fresh noise)   → :func:`norm_guided`
* eq. 8  x̂_{0_g} = (x_{t_s} − √(1−ᾱ_{t_s}) ε̂) / √ᾱ_{t_s}     → :func:`norm_guided`
* eq. 9  L_noise = (1−y)(‖ε_{t_s} − ε_θ(x_{t_s})‖² + ‖ε_{t_b} − ε_θ(x_{t_b})‖²)/2
* eq. 10 L_mask = SmoothL1(M, M̂) + γ·L_focal(M, M̂), γ = 5    → :func:`train_diffusionad`
* anomaly map M̂ = sigmoid(seg(x ⊕ x̂_0))                      → :func:`lib.core.scoring.segmentation_map`
* image score: mean of the top-50 pixels of the anomaly map (authors' code)
                                               → ``lib.core.scoring.image_score(M̂, reduction="topk", k=50)``
* Table VII's Iterative-t / DDIM-30 rows → :func:`lib.core.diffusion.denoise_from` / :func:`lib.core.diffusion.ddim_from`

Settings the paper leaves out follow the authors' code (``shared/reference/paper-settings.md``):
x̂_{0_b} and x̂_{0_g} are clamped to [−1, 1]; each of the two noisings draws its own ε;
t_s = 200, t_b = 400, w = 1 at inference; t_s ~ U[0, τ), t_b ~ U[τ, T), τ = 300 in training.

Training runs on the kit's one loop (:class:`lib.io.training.Trainer`: resume, manifests, several
processes); :func:`pretrained` loads (or trains) the committed checkpoint of a profile (:data:`PROFILES`).
Command line (the manifests of the committed checkpoints record theirs)::

    python -m lib.methods.diffusionad --category brick --steps 4000 --name diffusionad_small_brick64
    python -m lib.methods.diffusionad --classes grass,screw --mode kind ... --name shared   # one model, two classes
    accelerate launch --multi_gpu --num_processes 4 -m lib.methods.diffusionad ...    # on 4 GPUs
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.checks import check_choice, check_float, check_images, check_int, check_multiple, check_size_multiple
from ..core.diffusion import SCHEDULES, Diffusion, EpsModel, eps_fn, make_betas, noise_like, t_batch
from ..core.scoring import segmentation_map
from ..core.losses import focal_loss, smooth_l1_map_loss
from ..core.device import pick_device
from ..core.nets import SEG_PRESETS, UNET_PRESETS, ClassConditioned, class_index, segmentation_net, unet
from ..core.paths import CHECKPOINTS
from ..io.checkpoints import CheckpointKind, checkpoint_path, data_digest, half_precision, open_checkpoint, register_kind
from ..io.cli import (add_config_arguments, add_training_arguments, cli_main, command_line, config_argv,
                      config_from_args)
from ..io.training import Trainer, TrainingCommand, find_or_run, training_time
from ..data.benchmark import categories as benchmark_categories
from .ddpm import check_classes, class_names, load_classes, shared_fingerprint, training_data

__all__ = ["norm_guided", "norm_guided_core", "NormGuided", "ADConfig", "anomaly_mode",
           "train_diffusionad", "load_diffusionad", "DiffusionADModel", "PROFILES", "checkpoint_name", "pretrained",
           "training_command", "parser", "run", "main"]

MODULE = "lib.methods.diffusionad"


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


def _timesteps(diffusion: Diffusion, t, name: str, n: int) -> torch.Tensor:
    """A checked t (int or one per image) as an (n,) long CPU tensor."""
    tt = diffusion.check_t(t, name)
    if len(tt) not in (1, n):
        raise ValueError(f"{name} must be an int or one timestep per image ({n}), got {len(tt)} timesteps")
    return t_batch(tt, n, "cpu")


def norm_guided(eps_theta: EpsModel, x0: torch.Tensor, diffusion: Diffusion, t_s: int | torch.Tensor,
                t_b: int | torch.Tensor, noise_s: torch.Tensor | None = None, noise_b: torch.Tensor | None = None,
                *, generator: torch.Generator | None = None, w: float = 1.0, one_call: bool = True) -> NormGuided:
    """Norm-guided one-step denoising (seed 003 §IV-B, eqs. 1, 6, 7, 8).

    1. x_{t_s} = q(x0, t_s, noise_s), x_{t_b} = q(x0, t_b, noise_b)           (eq. 1, own noise each)
    2. ε_s = ε_θ(x_{t_s}, t_s), ε_b = ε_θ(x_{t_b}, t_b)  — with ``one_call`` both noisings of a
       batch go through the UNet as one batch of 2B (same numbers, one launch sequence)
    3. n = x̂_{0_b} = clamp(eq. 6 from x_{t_b})
    4. n_{t_s} = √ᾱ_{t_s} n + √(1−ᾱ_{t_s}) ε_s                             (predicted noise)
    5. ε̂ = ε_s − √(1−ᾱ_{t_s})·w·(n_{t_s} − x_{t_s})                          (eq. 7)
    6. x̂_{0_g} = clamp(eq. 6 from x_{t_s} with ε̂)                          (eq. 8)

    The checked entry: ``t_s``/``t_b`` are ints or per-sample long tensors with 0 <= t_s <= t_b <= T-1
    (no wrap-around, no truncation of floats), ``w`` a finite number >= 0, x0 a finite non-empty
    batch.  A noise that is not given is drawn from ``generator`` (noise_s first, then noise_b; float32
    on the generator's device, then moved).  Gradients flow (training uses this).  The arithmetic is
    :func:`norm_guided_core`, which checks nothing (the compiled hot path of ``lib.tools.bench``).
    """
    check_images("x0", x0)
    B = x0.shape[0]
    ts, tb = _timesteps(diffusion, t_s, "t_s", B), _timesteps(diffusion, t_b, "t_b", B)
    if bool((ts > tb).any()):
        raise ValueError(f"t_s must be <= t_b (t_s the small noise scale, t_b the big one, the paper's 200 and "
                         f"400), got t_s={t_s!r}, t_b={t_b!r}")
    w = check_float("w", w, 0.0)
    noise_s = noise_like(x0, noise_s, generator, name="noise_s", like="x0")   # drawn first
    noise_b = noise_like(x0, noise_b, generator, name="noise_b", like="x0")
    ab_s, ab_b = diffusion.alpha_bar[ts], diffusion.alpha_bar[tb]
    coefs = tuple(Diffusion.coef(c, x0) for c in (ab_s.sqrt(), (1 - ab_s).sqrt(), ab_b.sqrt(), (1 - ab_b).sqrt()))
    return norm_guided_core(eps_theta, x0, ts.to(x0.device), tb.to(x0.device), coefs, noise_s, noise_b, w,
                            one_call)


def norm_guided_core(model: EpsModel, x0: torch.Tensor, ts: torch.Tensor, tb: torch.Tensor, coefs,
                     noise_s: torch.Tensor, noise_b: torch.Tensor, w: float = 1.0,
                     one_call: bool = True) -> NormGuided:
    """The arithmetic of :func:`norm_guided` (eqs. 1, 6, 7, 8) with precomputed coefficients
    ``coefs = (√ᾱ_{t_s}, √(1−ᾱ_{t_s}), √ᾱ_{t_b}, √(1−ᾱ_{t_b}))`` (floats or broadcastable tensors)
    and device-side timestep tensors — no host work and **no argument checks**, so ``torch.compile``/CUDA
    graphs can take it whole (``lib.tools.bench`` does).  Call :func:`norm_guided`, the checked entry,
    unless you are building such a hot path."""
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
    mode: str = "texture"          # "texture", "object" (synthetic anomaly recipe) or "kind" (each category's kind)
    pool: int = 2048               # synthetic anomalies drawn once, sampled every step
    seed: int = 0
    ckpt_every: int = 1000
    classes: str = ""              # comma-separated categories of one shared class-conditional model (empty: one)

    def __post_init__(self) -> None:
        """Range checks (``ValueError`` naming the field, its value and the valid range)."""
        check_classes(self.classes)
        check_choice("preset", self.preset, sorted(UNET_PRESETS))
        check_choice("seg_preset", self.seg_preset, sorted(SEG_PRESETS))
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("mode", self.mode, ("texture", "object", "kind"))
        check_int("T", self.T, 2)
        check_int("tau", self.tau, 1, self.T - 1)              # t_s ~ U[0, τ) and t_b ~ U[τ, T) both non-empty
        for name in ("steps", "pool", "ckpt_every"):
            check_int(name, getattr(self, name), 1)
        check_int("batch_size", self.batch_size, 2)           # at least one normal image and one anomaly
        check_int("seed", self.seed, 0)
        for name in ("lr_unet", "lr_seg"):
            check_float(name, getattr(self, name), 0.0, lo_open=True)
        check_float("focal_weight", self.focal_weight, 0.0)
        check_float("focal_alpha", self.focal_alpha, 0.0, 1.0)
        check_float("focal_gamma", self.focal_gamma, 0.0)
        check_float("beta_low", self.beta_low, 0.0, 1.0)
        check_float("beta_high", self.beta_high, self.beta_low, 1.0)
        levels = len(UNET_PRESETS[self.preset].block_out_channels)
        check_multiple("image_size", self.image_size, 2 ** (levels - 1),
                       f"the {self.preset!r} UNet down-samples by 2^{levels - 1}")


class DiffusionADModel(NamedTuple):
    """A trained DiffusionAD: reconstruction UNet, segmentation net, schedule and config (and, when loaded
    from a checkpoint, its manifest, loss history ``{"noise", "mask"}`` and path)."""

    unet: torch.nn.Module
    seg: torch.nn.Module
    diffusion: Diffusion
    config: ADConfig
    manifest: dict | None = None
    losses: dict | None = None
    path: Path | None = None

    @property
    def eps(self) -> EpsModel:
        return eps_fn(self.unet)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator, t_s: int = 200, t_b: int = 400,
                    w: float = 1.0) -> NormGuided:
        """Norm-guided reconstruction (eqs. 1, 6-8) with both noises drawn from ``generator`` (the paper's
        t_s = 200, t_b = 400, w = 1 by default); see :func:`norm_guided`."""
        return norm_guided(self.eps, x, self.diffusion, t_s, t_b, generator=generator, w=w)

    @torch.no_grad()
    def anomaly_map(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """M̂ = sigmoid(seg(x ⊕ x̂)) → (B, H, W) (:func:`lib.core.scoring.segmentation_map`); the image score is
        ``image_score(M̂, reduction="topk", k=50)`` (authors' code)."""
        return segmentation_map(self.seg, x, x_hat)


KIND = register_kind(CheckpointKind("diffusionad", "a DiffusionAD model (UNet + segmentation net)",
                                    f"{MODULE}.load_diffusionad", ADConfig, weights=("unet", "seg")))


def anomaly_mode(cfg: ADConfig, kind: str | None) -> str:
    """The synthetic-anomaly recipe (§IV-D) of a category of ``kind`` ("object", "texture" or None) under
    ``cfg.mode``: "texture" or "object" as configured, or by the category's kind when ``cfg.mode == "kind"``."""
    if cfg.mode != "kind":
        return cfg.mode
    return "object" if kind == "object" else "texture"


def _build(cfg: ADConfig, device) -> tuple[torch.nn.Module, torch.nn.Module]:
    n_classes = len(class_names(cfg.classes)) or None
    return (unet(cfg.preset, cfg.image_size, num_class_embeds=n_classes).to(device),
            segmentation_net(cfg.seg_preset).to(device))


def load_diffusionad(path: str | os.PathLike, device="cpu", verify: bool = True,
                     category: str | None = None) -> DiffusionADModel:
    """Load an exported DiffusionAD checkpoint (UNet + segmentation net, float32) made by :func:`train_diffusionad`;
    a shared class-conditional one (``config.classes``) as the model of ``category`` (one of its classes)."""
    state, cfg, manifest = open_checkpoint(path, KIND, verify)
    u, s = _build(cfg, "cpu")
    u.load_state_dict(state["unet"])
    s.load_state_dict(state["seg"])
    if cfg.classes:
        if category is None:
            raise ValueError(f"{path} is one DiffusionAD model shared by the classes {cfg.classes}: pass category= "
                             "one of them")
        u = ClassConditioned(u, class_index(cfg.classes, category, f"DiffusionAD model {Path(path).name}"))
    return DiffusionADModel(u.to(device).eval(), s.to(device).eval(), Diffusion(make_betas(cfg.schedule, cfg.T)),
                            cfg, manifest, state["losses"], Path(path))


def _pool(images: torch.Tensor, cfg: ADConfig, gen: torch.Generator, sources, progress: bool, foreground=None,
          modes=None):
    from ..data.synth import synthesize

    xs, ms, src = [], [], []
    for _ in tqdm(range(cfg.pool), desc="synthetic anomalies", disable=not progress, leave=False):
        i = int(torch.randint(0, images.shape[0], (1,), generator=gen))
        src.append(i)
        fg = None if foreground is None else foreground[i]
        s = synthesize(images[i], gen, sources, beta_range=(cfg.beta_low, cfg.beta_high),
                       mode=cfg.mode if modes is None else modes[i], foreground=fg)
        xs.append(s.image)
        ms.append(s.mask.reshape(1, *s.image.shape[-2:]))
    return torch.stack(xs), torch.stack(ms).float(), torch.tensor(src, dtype=torch.long)


def train_diffusionad(images: torch.Tensor, cfg: ADConfig, out: str | os.PathLike, *, sources,
                      export: str | os.PathLike | None = None, device=None,
                      data_fingerprint: str = "unknown", command: str | None = None,
                      progress: bool = True, stop_after: int | None = None,
                      foreground: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                      modes: list[str] | None = None):
    """Joint training of the reconstruction and segmentation sub-networks (seed 003 §IV-C).

    Each step: B/2 normal images and B/2 synthetic anomalies (drawn from a pool made once with
    :func:`lib.data.synth.synthesize`, §IV-D), t_s ~ U[0, τ), t_b ~ U[τ, T) per sample, own noise for
    each, :func:`norm_guided` reconstruction with w = 1 (gradients flow end to end), loss
    L_noise (eq. 9, normal samples only) + SmoothL1(M, M̂) + 5·focal(M, M̂) (eq. 10).
    Resumable like :func:`lib.methods.ddpm.train_ddpm` (:class:`lib.io.training.Trainer`); the export
    is stored as float16. ``foreground`` (bool N x H x W): the objects' masks for ``mode="object"`` (None: Otsu,
    :func:`lib.data.synth.foreground_mask`). Returns the trained :class:`DiffusionADModel` and the loss history.

    With ``cfg.classes`` one shared model learns every category: the UNet is class-conditional
    (ε_θ(x_t, t, c), ``labels``: each image's class index), the segmentation net is shared, and ``modes`` gives
    each image's synthetic-anomaly recipe ("texture" or "object"; ``cfg.mode == "kind"`` needs it).
    """
    images = check_images("images", images, channels=3)
    n_classes = len(class_names(cfg.classes))
    if n_classes and (labels is None or tuple(labels.shape) != (images.shape[0],)
                      or int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"cfg.classes names {n_classes} classes: labels must be one class index in [0, {n_classes}) "
                         f"per image ({images.shape[0]}) (lib.methods.ddpm.load_classes)")
    if (cfg.mode == "kind") != (modes is not None) or (modes is not None and len(modes) != images.shape[0]):
        raise ValueError(f"mode={cfg.mode!r}: modes must be given (one 'texture'/'object' per image) exactly when "
                         "cfg.mode is 'kind'")
    check_size_multiple("images", images, 2 ** (len(UNET_PRESETS[cfg.preset].block_out_channels) - 1))
    trainer = Trainer(cfg, out, data=(images,), device=device, data_fingerprint=data_fingerprint, command=command,
                      progress=progress, desc="train DiffusionAD", extra={"n_images": int(images.shape[0])})
    dev, gen, B = trainer.device, trainer.generator, cfg.batch_size
    diffusion = Diffusion(make_betas(cfg.schedule, cfg.T))
    model, seg = _build(cfg, dev)
    if foreground is not None and tuple(foreground.shape) != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"foreground is {tuple(foreground.shape)}; it must be N x H x W like the images "
                         f"{tuple(images.shape)} (one mask per training image, e.g. Split.foreground)")
    pool_x, pool_m, pool_src = _pool(images, cfg, gen, sources, progress, foreground, modes)
    # the pool depends on the anomaly sources too; a shared model's labels are data as well
    trainer.data = data_digest(images, pool_x, pool_m, *(() if labels is None else (labels,)))
    nb = B // 2                                               # normal images first, then anomalies
    na = B - nb

    def loss(nets, shard):
        i_n = torch.randint(0, images.shape[0], (nb,), generator=gen)          # the global batch ...
        i_a = torch.randint(0, pool_x.shape[0], (na,), generator=gen)
        t_s = torch.randint(0, cfg.tau, (B,), generator=gen)
        t_b = torch.randint(cfg.tau, cfg.T, (B,), generator=gen)
        e_s = torch.randn((B, *images.shape[1:]), generator=gen)
        e_b = torch.randn((B, *images.shape[1:]), generator=gen)
        r_n, r_a = shard.rows(nb), shard.rows(na)                               # ... this process's rows of
        rows = torch.cat([torch.arange(nb)[r_n], nb + torch.arange(na)[r_a]])   # each half
        n = r_n.stop - r_n.start
        x = torch.cat([images[i_n[r_n]], pool_x[i_a[r_a]]]).to(dev)
        M = torch.cat([torch.zeros(n, *pool_m.shape[1:]), pool_m[i_a[r_a]]]).to(dev)
        e_s, e_b = e_s[rows].to(dev), e_b[rows].to(dev)
        eps_theta = eps_fn(nets["unet"])
        if labels is not None:                                                  # ε_θ(x_t, t, c), shared model
            c = torch.cat([labels[i_n[r_n]], labels[pool_src[i_a[r_a]]]]).to(dev)
            eps_theta = (lambda x_t, t: nets["unet"](x_t, t, class_labels=c.repeat(x_t.shape[0] // len(c))).sample)
        r = norm_guided(eps_theta, x, diffusion, t_s[rows], t_b[rows], e_s, e_b, w=1.0)
        # eq. 9 on the normal images only (y = 0)
        l_noise = 0.5 * (F.mse_loss(r.eps_s[:n], e_s[:n]) + F.mse_loss(r.eps_b[:n], e_b[:n]))
        logits = nets["seg"](torch.cat([x, r.x0_g], 1))
        l_mask = smooth_l1_map_loss(torch.sigmoid(logits), M) + cfg.focal_weight * focal_loss(    # eq. 10
            logits, M, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
        return {"noise": l_noise, "mask": l_mask}

    groups = [{"params": model.parameters(), "lr": cfg.lr_unet}, {"params": seg.parameters(), "lr": cfg.lr_seg}]
    hist = trainer.fit(loss, {"unet": model, "seg": seg}, groups, steps=cfg.steps, ckpt_every=cfg.ckpt_every,
                       stop_after=stop_after)
    trainer.export(export, KIND, {"config": asdict(cfg), "step": trainer.step, "losses": hist,
                                  "unet": half_precision(model.state_dict()), "seg": half_precision(seg.state_dict())},
                   weights="final weights, stored as float16")
    return DiffusionADModel(model, seg, diffusion, cfg), hist


# ----------------------------------------------------------------------------------------------
# the committed checkpoints
# ----------------------------------------------------------------------------------------------
PROFILES: dict[str, ADConfig] = {
    # quick: one model shared by the nine categories of benchmark version 3 (class-conditional `lean` UNet, one
    # segmentation net, each category's synthetic-anomaly recipe by its kind), trained on a 2-core CPU
    "quick": ADConfig(preset="lean", seg_preset="tiny", image_size=64, steps=3000, mode="kind",
                      classes=",".join(benchmark_categories(3))),
    "paper": ADConfig(preset="paper", seg_preset="paper", image_size=256, steps=300_000),
}
SECONDS_PER_STEP = {"quick": {"on one thread of a 2-core CPU": 1.3}, "paper": {}}
DATA_VERSION: dict[str, int | None] = {"quick": 3, "paper": None}   # embedded benchmark version (None: the default)


def checkpoint_name(category: str, profile: str = "quick", seed: int = 0) -> str:
    """The naming rule of DiffusionAD checkpoints: ``diffusionad_<preset>_<category><size>`` (and ``_seed<seed>``
    for a seed other than 0), e.g. ``diffusionad_small_brick64``; ``shared`` replaces the category for a profile
    whose one model serves all its classes (``diffusionad_lean_shared64``)."""
    cfg = PROFILES[check_choice("profile", profile, list(PROFILES))]
    what = "shared" if cfg.classes else category       # one model of all the profile's classes
    return f"diffusionad_{cfg.preset}_{what}{cfg.image_size}" + (f"_seed{seed}" if seed else "")


def training_command(category: str, profile: str = "quick", *, data_root: str | os.PathLike | None = None,
                     seed: int = 0) -> TrainingCommand:
    """The command that trains the DiffusionAD model of ``category`` for ``profile`` (:data:`PROFILES`); arguments as
    :func:`lib.methods.ddpm.training_command` (a shared profile's command trains the one model of all its classes)."""
    from .. import data as kit_data

    name = checkpoint_name(category, profile, check_int("seed", seed, 0))
    shared = PROFILES[profile].classes
    if shared:
        class_index(shared, category, f"DiffusionAD model of profile {profile!r}")
    td = training_data(data_root, category, PROFILES[profile].image_size, DATA_VERSION[profile], shared)
    # object classes train with object-mode synthetic anomalies (§IV-D: Perlin noise times the foreground);
    # a shared model picks each category's recipe by its kind (mode "kind")
    mode = PROFILES[profile].mode
    if not shared and kit_data.read_kind(td.root, category) == "object":
        mode = "object"
    cfg = ADConfig(**{**asdict(PROFILES[profile]), "seed": seed, "mode": mode})
    options = (([] if shared else ["--category", category]) + config_argv(cfg, always=("image_size", "steps"))
               + ["--name", name])
    return TrainingCommand(name, MODULE, command_line(MODULE, td.shown + options), td.run + options, asdict(cfg),
                           td.fingerprint, training_time(cfg.steps, SECONDS_PER_STEP[profile]))


def pretrained(category: str, profile: str = "quick", *, data_root: str | os.PathLike | None = None, seed: int = 0,
               retrain: bool = False, device: str | torch.device | None = "auto") -> DiffusionADModel:
    """The committed DiffusionAD model of ``category`` for ``profile`` (:data:`PROFILES`), verified against its
    manifest; trained first (with a progress bar) when ``retrain``; a missing one raises ``FileNotFoundError``
    with the training command and roughly how long it takes. Arguments as :func:`lib.methods.ddpm.pretrained`."""
    tc = training_command(category, profile, data_root=data_root, seed=seed)
    path = find_or_run(checkpoint_path(CHECKPOINTS, tc.name), tc, retrain=retrain,
                       config_defaults=asdict(ADConfig()),
                       train=lambda: run(parser().parse_args(tc.argv), command=tc.shown, device=device))
    shared = PROFILES[profile].classes
    return load_diffusionad(path, device=pick_device(device), category=category if shared else None)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    """The ``python -m lib.methods.diffusionad`` argument parser."""
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                description="Train DiffusionAD (UNet + segmentation net) on one category")
    add_training_arguments(p, example="diffusionad_small_gravel64")
    add_config_arguments(p, ADConfig)
    return p


def run(a: argparse.Namespace, *, command: str, device: str | torch.device | None = None) -> Path:
    """Train what the parsed options ``a`` describe; returns the exported checkpoint's path."""
    from .. import data as kit_data
    from ..data.synth import anomaly_sources

    cfg = config_from_args(ADConfig, a)
    root = Path(a.data) if a.data else kit_data.embedded_benchmark(cfg.image_size)
    export = checkpoint_path(a.export_dir, a.name)
    size = (cfg.image_size, cfg.image_size)
    if cfg.classes:            # one shared model: class-conditional UNet, one segmentation net
        images, labels, splits = load_classes(root, cfg.classes, cfg.image_size)
        modes = ([anomaly_mode(cfg, cat.kind) for cat, tr, _ in splits.values() for _ in range(len(tr.images))]
                 if cfg.mode == "kind" else None)
        fg = torch.cat([torch.from_numpy(tr.foreground) if tr.foreground is not None
                        else torch.ones(len(tr.images), *size, dtype=torch.bool) for _, tr, _ in splits.values()])
        exclude, fingerprint = class_names(cfg.classes), shared_fingerprint(root, cfg.classes)
    else:
        cat = kit_data.load_category(root, a.category, image_size=cfg.image_size)
        images, labels, exclude = kit_data.to_tensor(cat.train.images), None, a.category
        modes = [anomaly_mode(cfg, cat.kind)] * len(images) if cfg.mode == "kind" else None
        # object mode: the dataset's foreground masks where it ships them (benchmark version 3), else Otsu (synth)
        fg = (torch.from_numpy(cat.train.foreground) if cfg.mode in ("object", "kind") and cat.train.foreground
              is not None else None)
        fingerprint = kit_data.fingerprint(root / a.category)
    train_diffusionad(images, cfg, checkpoint_path(a.state_dir, a.name), export=export,
                      sources=anomaly_sources(size, exclude=exclude), device=device or a.device, command=command,
                      data_fingerprint=fingerprint, foreground=fg, labels=labels, modes=modes)
    return export


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.methods.diffusionad``: parse, train, export; errors become ``error: ...`` and exit status 2."""
    cli_main(MODULE, parser, run, argv)


if __name__ == "__main__":
    main()
