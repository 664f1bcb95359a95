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
  Adam, 50 epochs (thesis §4.3).  The map is :func:`lib.core.scoring.segmentation_map` (seg, x, x̂),
  its image score the max (§3.1.3): ``image_score(map, reduction="max")``.
Half the pairs are normal images (empty masks), as in DRAEM's training.

Training runs on the kit's one loop (:class:`lib.io.training.Trainer`); :func:`pretrained` loads (or trains)
the committed map of a profile (:data:`PROFILES`). Command line (the committed manifests record theirs)::

    python -m lib.methods.learned_map --ddpm data/checkpoints/ddpm_small_sigmoid_brick64.pt --category brick \
        --num-steps 10 --t-stride 10 --pairs 1024 --name learnedmap_brick64
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.checks import check_choice, check_float, check_images, check_int, check_shape
from ..core.device import pick_device
from ..core.diffusion import Diffusion
from ..core.losses import focal_loss
from ..core.nets import SEG_PRESETS, segmentation_net
from ..core.paths import CHECKPOINTS, REPO
from ..io.checkpoints import CheckpointKind, checkpoint_path, config_from, half_precision, open_checkpoint, register_kind
from ..io.cli import (add_config_arguments, add_training_arguments, cli_main, command_line, config_argv,
                      config_from_args)
from ..io.training import Trainer, TrainingCommand, find_or_run, training_time
from .ddpm import PROFILES as DDPM_PROFILES, checkpoint_name as ddpm_checkpoint_name, training_data

__all__ = ["SelfAwareSettings", "make_pairs", "LearnedMapConfig", "train_learned_map", "load_learned_map",
           "LearnedMap", "Profile", "PROFILES", "checkpoint_name", "pretrained", "training_command", "parser", "run",
           "main"]

MODULE = "lib.methods.learned_map"


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

    def __post_init__(self) -> None:
        """Range checks (``ValueError`` naming the field, its value and the valid range)."""
        check_int("t", self.t, 0)
        check_int("n_resample", self.n_resample, 1)
        if self.num_steps is not None:
            check_int("num_steps", self.num_steps, 1)
        check_int("t_start", self.t_start, 0)
        check_int("t_end", self.t_end, self.t_start)
        check_int("t_stride", self.t_stride, 1)
        check_float("p", self.p, 0.0, 1.0)
        check_choice("init", self.init, ("masked", "noised"))


def make_pairs(model, images: torch.Tensor, diffusion: Diffusion, q_p: torch.Tensor, eps: torch.Tensor,
               settings: SelfAwareSettings, sources, generator: torch.Generator, n: int,
               beta_range=(0.1, 1.0), batch_size: int = 64, device=None, progress: bool = True,
               foreground: torch.Tensor | None = None):
    """``n`` training triples (I_a, x̂, M): half normal images, half simulated anomalies, each
    reconstructed by :func:`lib.inpaint.self_aware_reconstruct` with ``settings``. ``foreground`` (bool N x H x W,
    one mask per image; an object category's ``Split.foreground``) keeps the simulated anomalies on the object."""
    from .inpaint import self_aware_reconstruct
    from ..data.synth import synthesize

    device = device or images.device
    xs, ms = [], []
    for i in range(n):
        k = int(torch.randint(0, len(images), (1,), generator=generator))
        img = images[k]
        if i % 2 == 0:
            xs.append(img)
            ms.append(torch.zeros(1, *img.shape[-2:]))
        else:
            s = synthesize(img, generator, sources, beta_range=beta_range, mode="texture", beta_on="source",
                           foreground=None if foreground is None else foreground[k])
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
    """Training settings of the learned map's segmentation network (thesis §4.3)."""

    seg_preset: str = "tiny"
    epochs: int = 50            # thesis §4.3
    batch_size: int = 32
    lr: float = 1e-3
    focal_gamma: float = 2.0
    focal_alpha: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        """Range checks (``ValueError`` naming the field, its value and the valid range)."""
        check_choice("seg_preset", self.seg_preset, sorted(SEG_PRESETS))
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("focal_gamma", self.focal_gamma, 0.0)
        check_float("focal_alpha", self.focal_alpha, 0.0, 1.0)


KIND = register_kind(CheckpointKind("learned_map", "a learned anomaly map (segmentation net)",
                                    f"{MODULE}.load_learned_map", LearnedMapConfig, weights=("seg",),
                                    fields=("config", "settings", "losses"), nested=("settings",)))


class LearnedMap(NamedTuple):
    """A trained learned-map network with the self-aware settings it was trained on (evaluate with the same),
    its config, manifest, loss history and path."""

    seg: torch.nn.Module
    settings: SelfAwareSettings
    config: LearnedMapConfig
    manifest: dict | None
    losses: list[float]
    path: Path


def train_learned_map(x_a: torch.Tensor, x_hat: torch.Tensor, M: torch.Tensor, cfg: LearnedMapConfig,
                      device=None, progress: bool = True, *, settings: SelfAwareSettings | None = None,
                      out: str | os.PathLike | None = None, export: str | os.PathLike | None = None,
                      command: str | None = None, data_fingerprint: str = "unknown", extra: dict | None = None):
    """Train the segmentation network on concat(I_a, x̂) → M with BCE + focal loss (thesis §4.3), for
    ``cfg.epochs`` × (pairs // batch) steps of a random batch each. ``out``: an optional resumable state;
    ``export``: where the float16 weights go (with ``settings``, the reconstruction the pairs were made with).
    Returns (network in eval mode, loss history)."""
    for name, x in (("x_a", x_a), ("x_hat", x_hat)):
        check_images(name, x, channels=3)
    check_shape("x_hat", x_hat, tuple(x_a.shape), "x_a")
    check_shape("M", M, (x_a.shape[0], 1, *x_a.shape[-2:]), "x_a with one channel")
    if export is not None and settings is None:
        raise ValueError("export needs the settings the pairs were reconstructed with (settings=...)")
    trainer = Trainer(cfg, out, data=(x_a, x_hat, M), device=device, data_fingerprint=data_fingerprint,
                      command=command, progress=progress, desc="train learned map", extra=extra, grow=("epochs",))
    dev, gen, B = trainer.device, trainer.generator, cfg.batch_size
    seg = segmentation_net(cfg.seg_preset).to(dev)
    inputs = torch.cat([x_a, x_hat], 1)
    n = len(inputs)

    def loss(nets, shard):
        idx = torch.randint(0, n, (B,), generator=gen)[shard.rows(B)]     # the global batch, this process's rows
        logits, target = nets["seg"](inputs[idx].to(dev)), M[idx].to(dev)
        return {"loss": F.binary_cross_entropy_with_logits(logits, target) + focal_loss(
            logits, target, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)}

    hist = trainer.fit(loss, {"seg": seg}, [{"params": seg.parameters(), "lr": cfg.lr}],
                       steps=cfg.epochs * max(1, n // B))["loss"]
    if export is not None:
        trainer.export(export, KIND, {"config": asdict(cfg), "settings": asdict(settings), "losses": hist,
                                      "seg": half_precision(seg.state_dict())}, weights="final, stored as float16")
    return seg.eval(), hist


def load_learned_map(path: str | os.PathLike, device="cpu", verify: bool = True) -> LearnedMap:
    """Load an exported learned-map network (float32) with the settings it was trained on."""
    state, cfg, manifest = open_checkpoint(path, KIND, verify)
    settings = config_from(SelfAwareSettings, state["settings"], f"{path} (settings)")
    seg = segmentation_net(cfg.seg_preset)
    seg.load_state_dict(state["seg"])
    return LearnedMap(seg.to(device).eval(), settings, cfg, manifest, list(state["losses"]), Path(path))


# ----------------------------------------------------------------------------------------------
# the committed checkpoints
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """How a committed learned map is made: the DDPM profile it reconstructs with, the self-aware settings,
    the network's config, the number of pairs, Algorithm 2's noise seed, and rough measured durations."""

    ddpm: str
    settings: SelfAwareSettings
    config: LearnedMapConfig = field(default_factory=LearnedMapConfig)
    pairs: int = 1024
    noise_seed: int = 0
    seconds_per_step: dict = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    # quick: the thesis' settings with two shortcuts: num_steps=10 respaced reverse steps from t (RePaint
    # respaces too) and every 10th t in [299, 349]; paper: the thesis §4.3–4.5 (every step, [300, 350])
    # quick also trains on 256 pairs (the thesis' recipe has no count; 1024 made on a GPU before): each pair costs
    # one self-aware reconstruction (~66 UNet calls); a map then takes 8-9 min on one thread of a 2-core CPU
    "quick": Profile("thesis-quick", SelfAwareSettings(t=49, n_resample=5, num_steps=10, t_start=299, t_end=349,
                                                       t_stride=10, p=0.8, init="masked"), pairs=256,
                     seconds_per_step={"on one thread of a 2-core CPU": 0.85}),
    "paper": Profile("thesis-paper", SelfAwareSettings(t=49, n_resample=5, num_steps=None, t_start=299, t_end=349,
                                                       t_stride=1, p=0.8, init="masked"),
                     config=LearnedMapConfig(seg_preset="paper")),
}


def checkpoint_name(category: str, profile: str = "quick", seed: int = 0) -> str:
    """The naming rule of learned-map checkpoints: ``learnedmap_<category><size>`` (the size of the DDPM it
    reconstructs with; ``_seed<seed>`` for a seed other than 0), e.g. ``learnedmap_brick64``."""
    p = PROFILES[check_choice("profile", profile, list(PROFILES))]
    return f"learnedmap_{category}{DDPM_PROFILES[p.ddpm].config.image_size}" + (f"_seed{seed}" if seed else "")


def training_command(category: str, profile: str = "quick", *, data_root: str | os.PathLike | None = None,
                     seed: int = 0) -> TrainingCommand:
    """The command that trains the learned map of ``category`` for ``profile`` (:data:`PROFILES`) from the profile's
    DDPM of that category (``lib.methods.ddpm.training_command(category, "thesis-" + profile)`` trains it first);
    arguments as :func:`lib.methods.ddpm.training_command`."""
    name = checkpoint_name(category, profile, check_int("seed", seed, 0))
    p = PROFILES[profile]
    cfg = LearnedMapConfig(**{**asdict(p.config), "seed": seed})
    size = DDPM_PROFILES[p.ddpm].config.image_size
    ddpm = checkpoint_path(CHECKPOINTS, ddpm_checkpoint_name(category, p.ddpm, seed))
    td = training_data(data_root, category, size, DDPM_PROFILES[p.ddpm].data_version)
    options = (["--category", category, "--image-size", str(size)] + config_argv(p.settings) + config_argv(cfg)
               + ["--pairs", str(p.pairs), "--noise-seed", str(p.noise_seed), "--name", name])
    steps = cfg.epochs * (p.pairs // cfg.batch_size)
    return TrainingCommand(name, MODULE, command_line(MODULE, td.shown + ["--ddpm", str(ddpm.relative_to(REPO))] + options),
                           td.run + ["--ddpm", str(ddpm)] + options, {**asdict(cfg), "settings": asdict(p.settings)},
                           td.fingerprint,
                           training_time(steps, p.seconds_per_step) + f" (and {p.pairs} reconstructions first)")


def pretrained(category: str, profile: str = "quick", *, data_root: str | os.PathLike | None = None, seed: int = 0,
               retrain: bool = False, device: str | torch.device | None = "auto") -> LearnedMap:
    """The committed learned map of ``category`` for ``profile`` (:data:`PROFILES`), verified against its
    manifest; trained first when ``retrain`` (from the category's DDPM of the profile, which must exist:
    ``lib.methods.ddpm.pretrained(category, "thesis-" + profile)``); a missing one raises ``FileNotFoundError``
    with the training command and roughly how long it takes. Arguments as :func:`lib.methods.ddpm.pretrained`."""
    tc = training_command(category, profile, data_root=data_root, seed=seed)
    path = find_or_run(checkpoint_path(CHECKPOINTS, tc.name), tc, retrain=retrain,
                       config_defaults=asdict(LearnedMapConfig()),
                       train=lambda: run(parser().parse_args(tc.argv), command=tc.shown, device=device))
    return load_learned_map(path, device=pick_device(device))


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    """The ``python -m lib.methods.learned_map`` argument parser."""
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                description="Train the thesis' learned anomaly map for one category")
    p.add_argument("--ddpm", type=Path, required=True,
                   help="the category's DDPM checkpoint (python -m lib.methods.ddpm with --val-fraction)")
    add_training_arguments(p, example="learnedmap_gravel64", state=False)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--pairs", type=int, default=1024, help="training pairs (half normal, half simulated anomalies)")
    p.add_argument("--noise-seed", type=int, default=0, help="seed of Algorithm 2's shared ε")
    add_config_arguments(p, SelfAwareSettings)
    add_config_arguments(p, LearnedMapConfig)
    return p


def run(a: argparse.Namespace, *, command: str, device: str | torch.device | None = None) -> Path:
    """Reconstruct the training pairs with the DDPM ``a.ddpm`` and train the map; returns the export's path."""
    from .. import data as kit_data
    from ..core.diffusion import eps_fn
    from ..data.synth import anomaly_sources
    from .ddpm import load_ddpm
    from .inpaint import shared_noise, threshold_map

    settings = config_from_args(SelfAwareSettings, a)
    cfg = config_from_args(LearnedMapConfig, a)
    check_int("pairs", a.pairs, 2)
    device = pick_device(device or a.device)
    ddpm = load_ddpm(a.ddpm, device, category=a.category)   # a shared DDPM serves the category's class
    val_fraction = ddpm.manifest.get("val_fraction", 0.0)
    root = Path(a.data) if a.data else kit_data.embedded_benchmark(a.image_size)
    cat = kit_data.load_category(root, a.category, image_size=a.image_size)
    train_split, val_split = kit_data.split_validation(cat.train, val_fraction)
    if len(val_split) == 0:
        raise ValueError(f"{a.ddpm} was trained without a held-out validation set (val_fraction "
                         f"{val_fraction}); Algorithm 2 needs one: train it with --val-fraction 0.2")
    model = eps_fn(ddpm.unet)
    H, W = train_split.images.shape[1:3]
    eps = shared_noise(H, W, torch.Generator().manual_seed(a.noise_seed))
    val = kit_data.to_tensor(val_split.images).to(device)
    q_p = threshold_map(model, val, ddpm.diffusion, settings.t_start, settings.t_end, settings.p, eps.to(device),
                        t_stride=settings.t_stride)
    t0 = time.perf_counter()
    x_a, x_hat, M = make_pairs(model, kit_data.to_tensor(train_split.images), ddpm.diffusion, q_p, eps, settings,
                               anomaly_sources((H, W), exclude=a.category), torch.Generator().manual_seed(cfg.seed),
                               a.pairs, device=device,
                               foreground=(torch.from_numpy(train_split.foreground)
                                           if cat.kind == "object" and train_split.foreground is not None else None))
    t_pairs = time.perf_counter() - t0
    out = checkpoint_path(a.export_dir, a.name)
    _, hist = train_learned_map(x_a, x_hat, M, cfg, device=device, settings=settings, export=out, command=command,
                                data_fingerprint=kit_data.fingerprint(root / a.category),
                                extra={"ddpm": Path(a.ddpm).name, "pairs": a.pairs, "noise_seed": a.noise_seed,
                                       "pair_seconds": round(t_pairs, 1)})
    print(f"learned map for {a.category}: {a.pairs} pairs in {t_pairs:.1f} s, final loss "
          f"{sum(hist[-50:]) / len(hist[-50:]):.4f} -> {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.methods.learned_map``: parse, train, export; errors become ``error: ...`` and exit status 2."""
    cli_main(MODULE, parser, run, argv)


if __name__ == "__main__":
    main()
