"""Training an ε-prediction DDPM (Ho et al. 2020), its committed checkpoints and its command line.

The loss is the simple DDPM objective (Ho et al. 2020, eq. 14; seed 000 §3.1):

    L = E_{x0, t ~ U{0..T-1}, ε ~ N(0, I)} || ε − ε_θ( √ᾱ_t x0 + √(1−ᾱ_t) ε , t ) ||²

with an EMA of the weights (decay 0.999) as the exported model. The loop, resume, manifests and
multi-process runs are :class:`lib.io.training.Trainer`'s: this module holds only the loss.

Files: the resumable state ``build/train/<name>.pt`` and, at the end, the exported EMA weights
``data/checkpoints/<name>.pt`` (the small file the notebooks load), each with a manifest.

Command line (the manifests of the committed checkpoints record theirs)::

    python -m lib.methods.ddpm --category gravel --image-size 64 --steps 12000 --name ddpm_tiny_gravel64
    accelerate launch --multi_gpu --num_processes 4 -m lib.methods.ddpm ...     # the same run on 4 GPUs

Notebooks load the committed ones with :func:`pretrained` (``profile`` in :data:`PROFILES`).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..core.checks import check_choice, check_float, check_images, check_int, check_multiple
from ..core.device import pick_device
from ..core.diffusion import SCHEDULES, Diffusion, make_betas
from ..core.nets import UNET_PRESETS, unet
from ..core.paths import CHECKPOINTS, REPO
from ..io.checkpoints import CheckpointKind, checkpoint_path, half_precision, open_checkpoint, register_kind
from ..io.cli import (add_config_arguments, add_training_arguments, cli_main, command_line, config_argv,
                      config_from_args)
from ..io.training import Trainer, find_or_train, training_time

__all__ = ["TrainConfig", "train_ddpm", "load_ddpm", "DDPMModel", "Profile", "PROFILES", "checkpoint_name",
           "pretrained", "TrainingData", "training_data", "parser", "run", "main"]

MODULE = "lib.methods.ddpm"


@dataclass
class TrainConfig:
    """DDPM training settings (Ho et al. 2020; the kit's tiny/small/paper UNet presets)."""

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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Range checks (``ValueError`` naming the field, its value and the valid range)."""
        check_choice("preset", self.preset, sorted(UNET_PRESETS))
        check_choice("schedule", self.schedule, SCHEDULES)
        for name in ("steps", "batch_size", "T", "ckpt_every"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("ema_decay", self.ema_decay, 0.0, 1.0, hi_open=True)
        levels = len(UNET_PRESETS[self.preset].block_out_channels)
        check_multiple("image_size", self.image_size, 2 ** (levels - 1), f"the {self.preset!r} UNet down-samples "
                       f"by 2^{levels - 1}")


KIND = register_kind(CheckpointKind("ddpm", "a DDPM (ε-prediction UNet, EMA weights)", f"{MODULE}.load_ddpm",
                                    TrainConfig, weights=("ema",)))


class DDPMModel(NamedTuple):
    """A trained DDPM: the UNet (EMA weights), its schedule, config, manifest and loss history."""

    unet: torch.nn.Module
    diffusion: Diffusion
    config: TrainConfig
    manifest: dict | None
    losses: list[float]
    path: Path


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def train_ddpm(images: torch.Tensor, cfg: TrainConfig, out: str | os.PathLike, *,
               export: str | os.PathLike | None = None, device: str | torch.device | None = None,
               data_fingerprint: str = "unknown", command: str | None = None, progress: bool = True,
               stop_after: int | None = None, export_half: bool = False, extra: dict | None = None):
    """Train an ε-prediction UNet on ``images`` (N×3×H×W in [−1, 1], H = W = ``cfg.image_size``), Ho eq. 14.

    ``out`` is the resumable state: one with the same config and data is resumed (``steps`` may grow, which
    extends a finished run: 0→a→b equals 0→b). When training completes, the EMA weights go to ``export``
    (float16 with ``export_half``; :func:`load_ddpm` casts back). ``stop_after`` ends the run early (to test
    resuming); ``extra`` goes into the manifests. Returns ``(model, ema, losses)``."""
    cfg.validate()
    images = check_images("images", images, channels=3)
    if images.shape[-2:] != (cfg.image_size, cfg.image_size):
        raise ValueError(f"images must be N×3×{cfg.image_size}×{cfg.image_size} (cfg.image_size) in [-1, 1]; got "
                         f"{tuple(images.shape)} — load them with lib.data at image_size={cfg.image_size}")
    trainer = Trainer(cfg, out, data=(images,), device=device, data_fingerprint=data_fingerprint, command=command,
                      progress=progress, desc="train DDPM", extra={"n_images": int(images.shape[0]), **(extra or {})})
    dev, gen, B = trainer.device, trainer.generator, cfg.batch_size
    alpha_bar = Diffusion(make_betas(cfg.schedule, cfg.T)).alpha_bar.to(device=dev, dtype=torch.float32)
    model = unet(cfg.preset, cfg.image_size).to(dev)
    ema = unet(cfg.preset, cfg.image_size).to(dev)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)

    def loss(nets, shard):
        idx = torch.randint(0, images.shape[0], (B,), generator=gen)      # the global batch ...
        t = torch.randint(0, cfg.T, (B,), generator=gen)
        eps = torch.randn((B, *images.shape[1:]), generator=gen)
        rows = shard.rows(B)                                              # ... and this process's rows
        x0, t, eps = images[idx[rows]].to(dev), t[rows].to(dev), eps[rows].to(dev)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps                        # Ho eq. 4
        return {"loss": F.mse_loss(nets["model"](x_t, t).sample, eps)}   # Ho eq. 14

    @torch.no_grad()
    def ema_update():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - cfg.ema_decay)

    history = trainer.fit(loss, {"model": model}, [{"params": model.parameters(), "lr": cfg.lr}], steps=cfg.steps,
                          ckpt_every=cfg.ckpt_every, keep={"ema": ema}, after_step=ema_update, stop_after=stop_after)
    losses = history.get("loss", [])
    weights = half_precision(ema.state_dict()) if export_half else ema.state_dict()
    trainer.export(export, KIND, {"config": asdict(cfg), "step": trainer.step, "losses": losses, "ema": weights},
                   weights=f"EMA (decay {cfg.ema_decay:g}){', stored as float16' if export_half else ''}")
    return model, ema, losses


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def load_ddpm(path: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True) -> DDPMModel:
    """A trained DDPM (EMA weights, float32) and its :class:`Diffusion` from an exported checkpoint."""
    state, cfg, manifest = open_checkpoint(path, KIND, verify)
    model = unet(cfg.preset, cfg.image_size)
    model.load_state_dict(state["ema"])
    return DDPMModel(model.to(device).eval(), Diffusion(make_betas(cfg.schedule, cfg.T)), cfg, manifest,
                     list(state["losses"]), Path(path))


# ----------------------------------------------------------------------------------------------
# the committed checkpoints
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """How a committed DDPM checkpoint is trained: its config, the options that are not config fields, and
    rough measured seconds per training step (the "how long" of a missing checkpoint; empty: not timed).
    CPU figures: one thread of the kit's 2-core test machine; H100: the run that made the committed files."""

    config: TrainConfig
    val_fraction: float = 0.0
    export_half: bool = False
    seconds_per_step: dict = field(default_factory=dict)
    data_version: int | None = None   # the embedded benchmark's version it is trained on (None: lib.data.DEFAULT_VERSION)

    def __post_init__(self) -> None:
        check_float("val_fraction", self.val_fraction, 0.0, 1.0, hi_open=True)


PROFILES: dict[str, Profile] = {
    # notebook 01: the tiny DDPM, linear schedule (Ho et al.)
    "quick": Profile(TrainConfig(preset="tiny", image_size=64, steps=12_000, batch_size=16),
                     seconds_per_step={"on a 2-core CPU": 3.5}),
    "paper": Profile(TrainConfig(preset="paper", image_size=256, steps=50_000, batch_size=16)),
    # notebook 03: the thesis' DDPM (seed 002 §4.3), sigmoid schedule, 20 % of the train split held out
    # for Algorithm 2's threshold map; "thesis-paper": 256², its UNet, batch 16, lr 2e-5, 6250 steps
    # ≈ 500 epochs of an average MVTec class (200 images)
    "thesis-quick": Profile(TrainConfig(preset="small", image_size=64, schedule="sigmoid", steps=3000, batch_size=32),
                            val_fraction=0.2, export_half=True,
                            seconds_per_step={"on a 2-core CPU": 10, "on an H100 shared by 12 trainings": 0.09}),
    "thesis-paper": Profile(TrainConfig(preset="paper", image_size=256, schedule="sigmoid", steps=6250, batch_size=16,
                                        lr=2e-5), val_fraction=0.2, export_half=True),
}


def checkpoint_name(category: str, profile: str = "quick", seed: int = 0) -> str:
    """The naming rule of DDPM checkpoints: ``ddpm_<preset>[_<schedule> unless linear]_<category><size>``
    and ``_seed<seed>`` for a seed other than 0, e.g. ``ddpm_tiny_gravel64``, ``ddpm_small_sigmoid_brick64``."""
    cfg = PROFILES[check_choice("profile", profile, list(PROFILES))].config
    schedule = "" if cfg.schedule == "linear" else f"_{cfg.schedule}"
    return f"ddpm_{cfg.preset}{schedule}_{category}{cfg.image_size}" + (f"_seed{seed}" if seed else "")


def pretrained(category: str, profile: str = "quick", *, data_root: str | os.PathLike | None = None, seed: int = 0,
               retrain: bool = False, device: str | torch.device | None = "auto") -> DDPMModel:
    """The committed DDPM of ``category`` for ``profile`` (see :data:`PROFILES`), verified against its manifest;
    trained first (with a progress bar) when ``retrain``. ``data_root``: the data it is (re)trained on (None: the
    embedded benchmark), ``seed``: the training seed (part of the name). A missing checkpoint raises
    ``FileNotFoundError`` with the command that trains it and roughly how long that takes."""
    name = checkpoint_name(category, profile, check_int("seed", seed, 0))
    p = PROFILES[profile]
    cfg = TrainConfig(**{**asdict(p.config), "seed": seed})
    td = training_data(data_root, category, cfg.image_size, p.data_version)
    options = (["--category", category] + config_argv(cfg, always=("image_size", "steps"))
               + (["--val-fraction", f"{p.val_fraction:g}"] if p.val_fraction else [])
               + (["--export-half"] if p.export_half else []) + ["--name", name])
    shown = command_line(MODULE, td.shown + options)
    fingerprint = td.fingerprint
    path = find_or_train(checkpoint_path(CHECKPOINTS, name), retrain=retrain, command=shown,
                         train=lambda: run(parser().parse_args(td.run + options), command=shown, device=device),
                         cost=training_time(cfg.steps, p.seconds_per_step), expected_config=asdict(cfg),
                         data_fingerprint=fingerprint)
    return load_ddpm(path, device=pick_device(device))


class TrainingData(NamedTuple):
    """The ``--data`` option of a training command as the manifest shows it (``shown``: a path inside the
    repository relative to it) and as it is run (``run``: absolute), and the category's data ``fingerprint``."""

    shown: list[str]
    run: list[str]
    fingerprint: str


def training_data(data_root: str | os.PathLike | None, category: str, image_size: int,
                  version: int | None = None) -> TrainingData:
    """The ``--data`` option of a training command (none for the CLIs' default, the embedded benchmark of
    ``lib.data.DEFAULT_VERSION``) and the fingerprint of the category's data; ``data_root`` None: the embedded
    benchmark of ``version`` (every method's :func:`pretrained` uses this)."""
    from .. import data as kit_data

    cli_default = kit_data.embedded_benchmark(image_size).resolve()
    root = (kit_data.embedded_benchmark(image_size, version=version) if data_root is None else Path(data_root)).resolve()
    fingerprint = kit_data.fingerprint(root / category)
    if root == cli_default:
        return TrainingData([], [], fingerprint)
    shown = str(root.relative_to(REPO)) if root.is_relative_to(REPO) else str(root)
    return TrainingData(["--data", shown], ["--data", str(root)], fingerprint)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    """The ``python -m lib.methods.ddpm`` argument parser."""
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                description="Train a DDPM (ε-prediction) on one category")
    add_training_arguments(p, example="ddpm_tiny_gravel64")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="hold out this fraction of the train split (its last images) as a validation set that "
                        "training never sees (thesis §4.1: 20%%)")
    p.add_argument("--export-half", action="store_true", help="store the exported EMA weights as float16")
    add_config_arguments(p, TrainConfig)
    return p


def run(a: argparse.Namespace, *, command: str, device: str | torch.device | None = None) -> Path:
    """Train what the parsed options ``a`` describe; returns the exported checkpoint's path."""
    from .. import data as kit_data

    cfg = config_from_args(TrainConfig, a)
    check_float("val_fraction", a.val_fraction, 0.0, 1.0, hi_open=True)
    root = Path(a.data) if a.data else kit_data.embedded_benchmark(cfg.image_size)
    cat = kit_data.load_category(root, a.category, image_size=cfg.image_size)
    train_split, val_split = kit_data.split_validation(cat.train, a.val_fraction)
    export = checkpoint_path(a.export_dir, a.name)
    train_ddpm(kit_data.to_tensor(train_split.images), cfg, checkpoint_path(a.state_dir, a.name), export=export,
               device=device or a.device, command=command,
               data_fingerprint=kit_data.fingerprint(root / a.category), export_half=a.export_half,
               extra={"val_fraction": a.val_fraction, "validation_images": len(val_split.images)})
    return export


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.methods.ddpm``: parse, train, export; errors become ``error: ...`` and exit status 2."""
    cli_main(MODULE, parser, run, argv)


if __name__ == "__main__":
    main()
