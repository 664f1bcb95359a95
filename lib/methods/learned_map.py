"""The learned anomaly map of the thesis (seed 002 §3.1.3, after DRAEM): a segmentation U-Net on
the 6-channel pair (image, its self-aware inpainting reconstruction), trained on simulated anomalies.

Recipe (thesis §3.1.3, §4.3):

* simulated anomaly: Perlin mask M_a, a texture source A (DTD in DRAEM; here the offline stand-in
  :func:`lib.synth.anomaly_sources`) with 3 random augmentations, blended
  I_a = M̄_a ⊙ I + (1 − β)(M_a ⊙ I) + β (M_a ⊙ A), β ~ U[0.1, 1.0]   (``beta_on="source"``);
* its reconstruction x̂ by the self-aware inpainting of :mod:`lib.inpaint` — the same settings
  the notebook evaluates with, so the network is trained on the inputs it will see
  (DiffusionAD's "training–inference consistency", seed 003 Table VIII);
* the segmentation network on concat(I_a, x̂), Cross-Entropy + Focal loss, batch 32, lr 1e-3,
  Adam, 50 epochs (thesis §4.3); image score = max of the map (§3.1.3).
Half the pairs are normal images (empty masks), as in DRAEM's training.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.diffusion import Diffusion
from ..core.losses import focal_loss
from ..core.device import pick_device
from ..core.nets import segmentation_net
from ..core.paths import CHECKPOINTS, TRAIN_STATE
from ..io.checkpoints import open_checkpoint, read_manifest, save_atomic, write_manifest

__all__ = ["SelfAwareSettings", "make_pairs", "LearnedMapConfig", "train_learned_map",
           "load_learned_map", "learned_map"]


@dataclass
class SelfAwareSettings:
    """The knobs of the self-aware reconstruction (thesis §4.5 values as defaults, 0-based t)."""

    t: int = 49                 # "50 noise steps" (1-based) = t 49 … 0 here
    n_resample: int = 5         # N
    num_steps: int | None = None  # respaced reverse steps from t (None = every step, the thesis)
    t_start: int = 299          # [300, 350] 1-based
    t_end: int = 349
    t_stride: int = 1
    p: float = 0.8
    init: str = "masked"


def make_pairs(model, images: torch.Tensor, diffusion: Diffusion, q_p: torch.Tensor, eps: torch.Tensor,
               settings: SelfAwareSettings, sources, generator: torch.Generator, n: int,
               beta_range=(0.1, 1.0), batch_size: int = 64, device=None, progress: bool = True):
    """``n`` training triples (I_a, x̂, M): half normal images, half simulated anomalies, each
    reconstructed by :func:`lib.inpaint.self_aware_reconstruct` with ``settings``."""
    from .inpaint import self_aware_reconstruct
    from ..data.synth import synthesize

    device = device or images.device
    xs, ms = [], []
    for i in range(n):
        img = images[int(torch.randint(0, len(images), (1,), generator=generator))]
        if i % 2 == 0:
            xs.append(img)
            ms.append(torch.zeros(1, *img.shape[-2:]))
        else:
            s = synthesize(img, generator, sources, beta_range=beta_range, mode="texture", beta_on="source")
            xs.append(s.image)
            ms.append(s.mask.reshape(1, *img.shape[-2:]))
    x_a, M = torch.stack(xs), torch.stack(ms).float()
    x_hat = []
    for i in tqdm(range(0, n, batch_size), desc="reconstruct pairs", disable=not progress):
        xb = x_a[i:i + batch_size].to(device)
        r = self_aware_reconstruct(model, xb, diffusion, q_p.to(device), eps.to(device), settings.t_start,
                                   settings.t_end, settings.t, settings.n_resample, generator,
                                   t_stride=settings.t_stride, init=settings.init,
                                   num_steps=settings.num_steps)
        x_hat.append(r.x_hat.cpu())
    return x_a, torch.cat(x_hat), M


@dataclass
class LearnedMapConfig:
    seg_preset: str = "tiny"
    epochs: int = 50            # thesis §4.3
    batch_size: int = 32
    lr: float = 1e-3
    focal_gamma: float = 2.0
    focal_alpha: float = 0.5
    seed: int = 0


def train_learned_map(x_a: torch.Tensor, x_hat: torch.Tensor, M: torch.Tensor, cfg: LearnedMapConfig,
                      device=None, progress: bool = True):
    """Train the segmentation network on concat(I_a, x̂) → M with BCE + focal loss (thesis §4.3).
    Returns (network in eval mode, loss history)."""
    device = pick_device(None if device is None else str(device))
    torch.manual_seed(cfg.seed)
    seg = segmentation_net(cfg.seg_preset).to(device)
    opt = torch.optim.Adam(seg.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    inputs = torch.cat([x_a, x_hat], 1)
    n = len(inputs)
    steps = cfg.epochs * max(1, n // cfg.batch_size)
    hist = []
    seg.train()
    for _ in tqdm(range(steps), desc="train learned map", disable=not progress):
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        logits = seg(inputs[idx].to(device))
        target = M[idx].to(device)
        loss = F.binary_cross_entropy_with_logits(logits, target) + focal_loss(
            logits, target, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist.append(loss.item())
    return seg.eval(), hist


@torch.no_grad()
def learned_map(seg: torch.nn.Module, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """The learned anomaly map, sigmoid(seg(concat(x, x̂))) → (B, H, W); image score = its max."""
    return torch.sigmoid(seg(torch.cat([x, x_hat], 1)))[:, 0]


def load_learned_map(path: str | os.PathLike, device="cpu", verify: bool = True):
    """Load an exported learned-map network; returns (network, manifest config dict)."""
    state = open_checkpoint(path, "lib.methods.learned_map", verify)
    cfg = LearnedMapConfig(**state["config"])
    seg = segmentation_net(cfg.seg_preset)
    seg.load_state_dict(state["seg"])
    return seg.to(device).eval(), state


def main(argv=None):
    import argparse

    from .. import data as kit_data
    from ..core.diffusion import eps_fn
    from .inpaint import shared_noise, threshold_map
    from ..data.synth import anomaly_sources
    from .ddpm import load_checkpoint

    p = argparse.ArgumentParser(description="Train the thesis' learned anomaly map for one category")
    p.add_argument("--ddpm", required=True, help="the category's DDPM checkpoint (lib.train, with --val-fraction)")
    p.add_argument("--data", default=None)
    p.add_argument("--category", default="gravel")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--name", required=True)
    p.add_argument("--export-dir", type=Path, default=CHECKPOINTS)
    p.add_argument("--pairs", type=int, default=1024)
    p.add_argument("--noise-seed", type=int, default=0, help="seed of Algorithm 2's shared ε")
    p.add_argument("--device", default=None)
    for f in SelfAwareSettings.__dataclass_fields__.values():
        typ = int if f.name == "num_steps" else type(f.default)
        p.add_argument("--" + f.name.replace("_", "-"), type=typ, default=f.default)
    for f in LearnedMapConfig.__dataclass_fields__.values():
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    a = p.parse_args(argv)
    settings = SelfAwareSettings(**{k: getattr(a, k) for k in SelfAwareSettings.__dataclass_fields__})
    cfg = LearnedMapConfig(**{k: getattr(a, k) for k in LearnedMapConfig.__dataclass_fields__})
    device = pick_device(a.device)
    unet, diffusion, tcfg = load_checkpoint(a.ddpm, device)
    manifest = read_manifest(a.ddpm)          # load_checkpoint above already checked its sha256
    val_fraction = manifest.get("val_fraction", 0.0)
    root = Path(a.data) if a.data else kit_data.embedded_benchmark(image_size=a.image_size)
    cat = kit_data.load_category(root, a.category, image_size=a.image_size)
    train_split, val_split = kit_data.split_validation(cat.train, val_fraction)
    if len(val_split) == 0:
        raise SystemExit(f"{a.ddpm} was trained without a held-out validation set (--val-fraction); "
                         "Algorithm 2 needs one")
    model = eps_fn(unet)
    g = torch.Generator().manual_seed(a.noise_seed)
    H, W = train_split.images.shape[1:3]
    eps = shared_noise(H, W, g)
    val = kit_data.to_tensor(val_split.images).to(device)
    q_p = threshold_map(model, val, diffusion, settings.t_start, settings.t_end, settings.p, eps.to(device),
                        t_stride=settings.t_stride)
    sources = anomaly_sources((H, W), exclude=a.category)
    t0 = time.perf_counter()
    x_a, x_hat, M = make_pairs(model, kit_data.to_tensor(train_split.images), diffusion, q_p, eps, settings,
                               sources, torch.Generator().manual_seed(cfg.seed), a.pairs, device=device)
    t_pairs = time.perf_counter() - t0
    seg, hist = train_learned_map(x_a, x_hat, M, cfg, device=device)
    out = a.export_dir / f"{a.name}.pt"
    state = {k: v.half() if v.is_floating_point() else v for k, v in seg.state_dict().items()}
    save_atomic({"config": asdict(cfg), "settings": asdict(settings), "losses": hist, "seg": state}, out)
    cmd = "python -m lib.methods.learned_map " + " ".join(argv if argv is not None else sys.argv[1:])
    write_manifest(out, command=cmd, config={**asdict(cfg), "settings": asdict(settings)}, seed=cfg.seed,
                   data_fingerprint=kit_data.fingerprint(root / a.category),
                   extra={"ddpm": Path(a.ddpm).name, "pairs": a.pairs, "noise_seed": a.noise_seed,
                          "pair_seconds": round(t_pairs, 1), "weights": "final, stored as float16"})
    print(f"learned map for {a.category}: {a.pairs} pairs in {t_pairs:.1f} s, final loss "
          f"{sum(hist[-50:]) / len(hist[-50:]):.4f} -> {out}")


if __name__ == "__main__":
    main()
