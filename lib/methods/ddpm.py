"""Training loop for ε-prediction DDPMs, atomic checkpoints and manifests.

The loss is the simple DDPM objective (Ho et al. 2020, eq. 14; seed 000 §3.1):

    L = E_{x0, t ~ U{0..T-1}, ε ~ N(0, I)} || ε − ε_θ( √ᾱ_t x0 + √(1−ᾱ_t) ε , t ) ||²

Everything random (batch indices, t, ε) is drawn from one seeded ``torch.Generator``
whose state is saved in the checkpoint, so a run that is stopped and resumed ends
with the same weights as one that was never interrupted (tested).

Two files, each written atomically (temporary file + ``os.replace``) with a manifest
``<name>.json`` beside it (command, config, seed, data fingerprint, git commit, sha256):

* the resumable state ``build/train/<name>.pt`` (weights, EMA, optimizer, generator);
* at the end, the exported EMA weights ``data/checkpoints/<name>.pt`` — the small
  file the notebooks load and the repository commits.

Command line (what the committed checkpoints were made with)::

    python -m lib.methods.ddpm --category gravel --image-size 64 --name ddpm_tiny_gravel64
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core.diffusion import Diffusion, make_betas
from ..core.device import pick_device
from ..core.nets import UNET_PRESETS, unet
from ..io.checkpoints import open_checkpoint, resume_state, save_atomic, write_manifest
from ..core.paths import CHECKPOINTS, TRAIN_STATE

__all__ = ["TrainConfig", "train_ddpm", "load_checkpoint"]


@dataclass
class TrainConfig:
    preset: str = "tiny"
    image_size: int = 64
    schedule: str = "linear"
    T: int = 1000
    steps: int = 12000
    batch_size: int = 16
    lr: float = 2e-4
    seed: int = 0
    ckpt_every: int = 500
    ema_decay: float = 0.999

    def validate(self) -> None:
        if self.preset not in UNET_PRESETS:
            raise ValueError(f"preset={self.preset!r} is unknown; choose one of {sorted(UNET_PRESETS)}")
        for name in ("steps", "batch_size", "T", "ckpt_every", "image_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay} must be in [0, 1)")


# ----------------------------------------------------------------------------- training
def _build(cfg: TrainConfig, device: torch.device):
    model = unet(cfg.preset, cfg.image_size).to(device)
    ema = unet(cfg.preset, cfg.image_size).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return model, ema, opt


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True,
                    verify: bool = True):
    """Load a trained UNet (EMA weights by default) and its :class:`Diffusion` from a checkpoint."""
    state = open_checkpoint(path, "lib.methods.ddpm", verify)
    cfg = TrainConfig(**state["config"])
    model = unet(cfg.preset, cfg.image_size)
    model.load_state_dict(state["ema" if ema or "model" not in state else "model"])
    model.to(device).eval()
    return model, Diffusion(make_betas(cfg.schedule, cfg.T)), cfg


def train_ddpm(images: torch.Tensor, cfg: TrainConfig, out: str | os.PathLike, *,
               export: str | os.PathLike | None = None,
               device: str | torch.device | None = None, data_fingerprint: str = "unknown",
               command: str | None = None, progress: bool = True, stop_after: int | None = None,
               export_half: bool = False, extra: dict | None = None):
    """Train an ε-prediction UNet on ``images`` (N×3×H×W in [−1, 1]).

    ``out`` is the resumable checkpoint: an existing one with the same config is
    resumed (``steps`` may be larger than before: that extends a finished run, and since
    all randomness continues from the saved generator, 0→a→b equals 0→b). When training completes, the EMA weights go to ``export`` (if given).
    ``stop_after`` ends the run early after that many steps (used to test resuming).
    ``export_half`` stores the exported EMA weights as float16 (half the size in the repository;
    :func:`load_checkpoint` loads them back into float32). ``extra`` goes into the manifests.
    Returns ``(model, ema, losses)``.
    """
    cfg.validate()
    device = pick_device(None if device is None else str(device))
    out = Path(out)
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != cfg.image_size:
        raise ValueError(f"images must be N×3×H×{cfg.image_size} in [-1, 1]; got "
                         f"{tuple(images.shape)} — load them with lib.data and resize to image_size")
    diffusion = Diffusion(make_betas(cfg.schedule, cfg.T))
    alpha_bar = diffusion.alpha_bar.to(device=device, dtype=torch.float32)
    torch.manual_seed(cfg.seed)  # weight init (and dropout); all sampling below uses `gen`
    model, ema, opt = _build(cfg, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, losses = 0, []
    state = resume_state(out, cfg)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, losses = state["step"], state["losses"]

    def save():
        save_atomic({"config": asdict(cfg), "step": step, "losses": losses,
                     "model": model.state_dict(), "ema": ema.state_dict(),
                     "optimizer": opt.state_dict(), "generator": gen.get_state()}, out)
        write_manifest(out, command=command or " ".join([sys.executable, *sys.argv]),
                       config=asdict(cfg), seed=cfg.seed, data_fingerprint=data_fingerprint,
                       extra={"step": step, "final": step >= cfg.steps,
                              "n_images": int(images.shape[0]), **(extra or {})})

    model.train()
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    bar = tqdm(total=cfg.steps, initial=step, desc="train DDPM", disable=not progress)
    t0 = time.perf_counter()
    while step < end:
        idx = torch.randint(0, images.shape[0], (cfg.batch_size,), generator=gen)
        t = torch.randint(0, cfg.T, (cfg.batch_size,), generator=gen)
        eps = torch.randn((cfg.batch_size, *images.shape[1:]), generator=gen)
        x0 = images[idx].to(device)
        t, eps = t.to(device), eps.to(device)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = torch.nn.functional.mse_loss(model(x_t, t).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - cfg.ema_decay)
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if step % cfg.ckpt_every == 0 or step == end:
            save()
    bar.close()
    if export is not None and step >= cfg.steps:
        export = Path(export)
        weights = {k: v.half() if export_half and v.is_floating_point() else v
                   for k, v in ema.state_dict().items()}
        save_atomic({"config": asdict(cfg), "step": step, "losses": losses, "ema": weights}, export)
        write_manifest(export, command=command or " ".join([sys.executable, *sys.argv]),
                       config=asdict(cfg), seed=cfg.seed, data_fingerprint=data_fingerprint,
                       extra={"step": step, "final": True, "n_images": int(images.shape[0]),
                              "weights": "EMA (decay %g)%s" % (cfg.ema_decay,
                                                              ", stored as float16" if export_half else ""),
                              **(extra or {})})
    if progress:
        print(f"trained to step {step}/{cfg.steps} in {time.perf_counter() - t0:.1f} s -> {out}")
    return model, ema, losses


def main(argv: list[str] | None = None) -> None:
    from .. import data as kit_data

    p = argparse.ArgumentParser(description="Train a DDPM (ε-prediction) on one benchmark category")
    p.add_argument("--data", default=None, help="MVTec-layout root (default: the embedded benchmark)")
    p.add_argument("--category", default="gravel")
    p.add_argument("--name", required=True, help="checkpoint name, e.g. ddpm_tiny_gravel64")
    p.add_argument("--state-dir", type=Path, default=TRAIN_STATE,
                   help="where the resumable state goes")
    p.add_argument("--export-dir", type=Path, default=CHECKPOINTS,
                   help="where the final EMA weights go")
    p.add_argument("--device", default=None)
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="hold out this fraction of the train split (its last images) as a validation "
                        "set that training never sees (thesis §4.1: 20%%)")
    p.add_argument("--export-half", action="store_true", help="store the exported EMA weights as float16")
    for f in TrainConfig.__dataclass_fields__.values():
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    a = p.parse_args(argv)
    cfg = TrainConfig(**{k: getattr(a, k) for k in TrainConfig.__dataclass_fields__})
    root = Path(a.data) if a.data else kit_data.embedded_benchmark(image_size=cfg.image_size)
    cat = kit_data.load_category(root, a.category, image_size=cfg.image_size)
    train_split, val_split = kit_data.split_validation(cat.train, a.val_fraction)
    images = kit_data.to_tensor(train_split.images)
    cmd = "python -m lib.methods.ddpm " + " ".join(argv if argv is not None else sys.argv[1:])
    train_ddpm(images, cfg, a.state_dir / f"{a.name}.pt", export=a.export_dir / f"{a.name}.pt",
               device=a.device, command=cmd, data_fingerprint=kit_data.fingerprint(root / a.category),
               export_half=a.export_half,
               extra={"val_fraction": a.val_fraction, "validation_images": len(val_split.images)})


if __name__ == "__main__":
    main()
