"""Training an ε-prediction DDPM (Ho et al. 2020), its committed checkpoints and its command line.

The loss is the simple DDPM objective (Ho et al. 2020, eq. 14; seed 000 §3.1):

    L = E_{x0, t ~ U{0..T-1}, ε ~ N(0, I)} || ε − ε_θ( √ᾱ_t x0 + √(1−ᾱ_t) ε , t ) ||²

with an EMA of the weights (decay 0.999) as the exported model. The loop, resume, manifests and
multi-process runs are :class:`lib.io.training.Trainer`'s: this module holds only the loss.

Files: the resumable state ``build/train/<name>.pt`` and, at the end, the exported EMA weights
``data/checkpoints/<name>.pt`` (the small file the notebooks load), each with a manifest.

Command line (the manifests of the committed checkpoints record theirs)::

    python -m lib.methods.ddpm --category gravel --image-size 64 --steps 12000 --name ddpm_tiny_gravel64
    python -m lib.methods.ddpm --classes brick,screw --preset lean --name shared   # one model ε_θ(x_t, t, c) of two classes
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
from ..core.nets import UNET_PRESETS, ClassConditioned, class_index, unet
from ..core.paths import CHECKPOINTS, REPO
from ..data.benchmark import categories as benchmark_categories
from ..io.checkpoints import CheckpointKind, checkpoint_path, half_precision, open_checkpoint, register_kind
from ..io.cli import (add_config_arguments, add_training_arguments, cli_main, command_line, config_argv,
                      config_from_args)
from ..io.training import Trainer, TrainingCommand, find_or_run, training_time

__all__ = ["TrainConfig", "check_classes", "class_names", "shared_fingerprint", "load_classes", "train_ddpm", "load_ddpm",
           "DDPMModel", "Profile", "PROFILES", "checkpoint_name",
           "pretrained", "training_command", "TrainingData", "training_data", "parser", "run", "main"]

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
    classes: str = ""             # comma-separated categories of one shared class-conditional model (empty: one category)

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
        check_classes(self.classes)
        levels = len(UNET_PRESETS[self.preset].block_out_channels)
        check_multiple("image_size", self.image_size, 2 ** (levels - 1), f"the {self.preset!r} UNet down-samples "
                       f"by 2^{levels - 1}")


def class_names(classes: str) -> list[str]:
    """The category names of a shared model's ``classes`` field (``"brick,screw"`` → ``["brick", "screw"]``)."""
    return [c for c in classes.split(",") if c]


def check_classes(classes: str) -> str:
    """``classes`` of a config: empty or distinct comma-separated names (``ValueError`` naming the problem)."""
    names = class_names(classes)
    if classes and (len(set(names)) != len(names) or ",".join(names) != classes):
        raise ValueError(f"classes={classes!r} must be distinct category names joined by commas, e.g. 'brick,screw'")
    return classes


def shared_fingerprint(root: str | os.PathLike, classes: str) -> str:
    """The data fingerprint of a shared model: sha256 over its categories' ``lib.data.fingerprint`` in order."""
    import hashlib

    from .. import data as kit_data

    text = ";".join(f"{c}={kit_data.fingerprint(Path(root) / c)}" for c in class_names(classes))
    return hashlib.sha256(text.encode()).hexdigest()


def load_classes(root: str | os.PathLike, classes: str, image_size: int, val_fraction: float = 0.0):
    """The training images of every category of ``classes`` under ``root``, concatenated, with their class
    labels (index in ``classes``) and foregrounds: ``(images N×3×H×W in [−1, 1], labels (N,), splits)`` where
    ``splits`` maps each category to its (train, validation) splits."""
    from .. import data as kit_data

    xs, ys, splits = [], [], {}
    for i, c in enumerate(class_names(classes)):
        cat = kit_data.load_category(root, c, image_size=image_size)
        train_split, val_split = kit_data.split_validation(cat.train, val_fraction)
        splits[c] = (cat, train_split, val_split)
        xs.append(kit_data.to_tensor(train_split.images))
        ys.append(torch.full((len(train_split.images),), i, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys), splits


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
               stop_after: int | None = None, export_half: bool = False, extra: dict | None = None,
               labels: torch.Tensor | None = None):
    """Train an ε-prediction UNet on ``images`` (N×3×H×W in [−1, 1], H = W = ``cfg.image_size``), Ho eq. 14.

    With ``cfg.classes`` one shared class-conditional model ε_θ(x_t, t, c) learns every category at once:
    ``labels`` (N,) gives each image's class (its index in ``cfg.classes``, :func:`load_classes`).

    ``out`` is the resumable state: one with the same config and data is resumed (``steps`` may grow, which
    extends a finished run: 0→a→b equals 0→b). When training completes, the EMA weights go to ``export``
    (float16 with ``export_half``; :func:`load_ddpm` casts back). ``stop_after`` ends the run early (to test
    resuming); ``extra`` goes into the manifests. Returns ``(model, ema, losses)``."""
    cfg.validate()
    images = check_images("images", images, channels=3)
    if images.shape[-2:] != (cfg.image_size, cfg.image_size):
        raise ValueError(f"images must be N×3×{cfg.image_size}×{cfg.image_size} (cfg.image_size) in [-1, 1]; got "
                         f"{tuple(images.shape)} — load them with lib.data at image_size={cfg.image_size}")
    n_classes = len(class_names(cfg.classes)) or None
    if n_classes is not None and (labels is None or tuple(labels.shape) != (images.shape[0],)
                                  or int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"cfg.classes names {n_classes} classes: labels must be one class index in "
                         f"[0, {n_classes}) per image ({images.shape[0]}), got "
                         f"{None if labels is None else tuple(labels.shape)} (lib.methods.ddpm.load_classes)")
    if n_classes is None and labels is not None:
        raise ValueError("labels were given but cfg.classes is empty: set cfg.classes for a class-conditional model")
    data = (images,) if labels is None else (images, labels)
    trainer = Trainer(cfg, out, data=data, device=device, data_fingerprint=data_fingerprint, command=command,
                      progress=progress, desc="train DDPM", extra={"n_images": int(images.shape[0]), **(extra or {})})
    dev, gen, B = trainer.device, trainer.generator, cfg.batch_size
    alpha_bar = Diffusion(make_betas(cfg.schedule, cfg.T)).alpha_bar.to(device=dev, dtype=torch.float32)
    model = unet(cfg.preset, cfg.image_size, num_class_embeds=n_classes).to(dev)
    ema = unet(cfg.preset, cfg.image_size, num_class_embeds=n_classes).to(dev)
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
        c = None if labels is None else labels[idx[rows]].to(dev)         # the class of each image (shared model)
        return {"loss": F.mse_loss(nets["model"](x_t, t, class_labels=c).sample, eps)}   # Ho eq. 14

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
def load_ddpm(path: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True,
              category: str | None = None) -> DDPMModel:
    """A trained DDPM (EMA weights, float32) and its :class:`Diffusion` from an exported checkpoint; a shared
    class-conditional one (``config.classes``) is returned as the model of ``category``
    (:class:`lib.core.nets.ClassConditioned`), which must then be one of its classes."""
    state, cfg, manifest = open_checkpoint(path, KIND, verify)
    n_classes = len(class_names(cfg.classes)) or None
    model = unet(cfg.preset, cfg.image_size, num_class_embeds=n_classes)
    model.load_state_dict(state["ema"])
    if n_classes is not None:
        if category is None:
            raise ValueError(f"{path} is one DDPM shared by the classes {cfg.classes}: pass category= one of them")
        model = ClassConditioned(model, class_index(cfg.classes, category, f"DDPM {Path(path).name}"))
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


QUICK_DDPM_STEPS = 4000   # sized so that the quick checkpoints train on a 2-core CPU in about 80 min (README)

PROFILES: dict[str, Profile] = {
    # notebook 01: the tiny DDPM, linear schedule (Ho et al.)
    "quick": Profile(TrainConfig(preset="tiny", image_size=64, steps=12_000, batch_size=16),
                     seconds_per_step={"on a 2-core CPU": 3.5}),
    "paper": Profile(TrainConfig(preset="paper", image_size=256, steps=50_000, batch_size=16)),
    # notebook 03: the thesis' DDPM (seed 002 §4.3), sigmoid schedule, 20 % of the train split held out
    # for Algorithm 2's threshold map; "thesis-paper": 256², its UNet, batch 16, lr 2e-5, 6250 steps
    # ≈ 500 epochs of an average MVTec class (200 images)
    # "thesis-quick": one class-conditional `lean` DDPM shared by the nine categories of benchmark version 3
    # (ε_θ(x_t, t, c); the thesis trains one per category, which a 2-core CPU cannot do in one sitting)
    "thesis-quick": Profile(TrainConfig(preset="lean", image_size=64, schedule="sigmoid", steps=QUICK_DDPM_STEPS,
                                        batch_size=32, ema_decay=0.998, classes=",".join(benchmark_categories(3))),
                            val_fraction=0.2, export_half=True, data_version=3,
                            seconds_per_step={"on one thread of a 2-core CPU": 1.1}),
    "thesis-paper": Profile(TrainConfig(preset="paper", image_size=256, schedule="sigmoid", steps=6250, batch_size=16,
                                        lr=2e-5), val_fraction=0.2, export_half=True),
}


def checkpoint_name(category: str, profile: str = "quick", seed: int = 0) -> str:
    """The naming rule of DDPM checkpoints: ``ddpm_<preset>[_<schedule> unless linear]_<category><size>``
    and ``_seed<seed>`` for a seed other than 0, e.g. ``ddpm_tiny_gravel64``, ``ddpm_small_sigmoid_brick64``; ``shared``
    replaces the category for a profile whose one class-conditional model serves all its classes
    (``ddpm_lean_sigmoid_shared64``)."""
    cfg = PROFILES[check_choice("profile", profile, list(PROFILES))].config
    schedule = "" if cfg.schedule == "linear" else f"_{cfg.schedule}"
    what = "shared" if cfg.classes else category       # one model of all the profile's classes
    return f"ddpm_{cfg.preset}{schedule}_{what}{cfg.image_size}" + (f"_seed{seed}" if seed else "")


def training_command(category: str, profile: str = "quick", *, data_root: str | os.PathLike | None = None,
                     seed: int = 0) -> TrainingCommand:
    """The command that trains the DDPM of ``category`` for ``profile`` (:data:`PROFILES`) on ``data_root`` (None: the
    embedded benchmark of the profile's version), with the training ``seed``; a shared profile's command trains the
    one model of all its classes, of which ``category`` must be one."""
    name = checkpoint_name(category, profile, check_int("seed", seed, 0))
    p = PROFILES[profile]
    cfg = TrainConfig(**{**asdict(p.config), "seed": seed})
    if cfg.classes:
        class_index(cfg.classes, category, f"DDPM of profile {profile!r}")
    td = training_data(data_root, category, cfg.image_size, p.data_version, cfg.classes)
    options = (([] if cfg.classes else ["--category", category]) + config_argv(cfg, always=("image_size", "steps"))
               + (["--val-fraction", f"{p.val_fraction:g}"] if p.val_fraction else [])
               + (["--export-half"] if p.export_half else []) + ["--name", name])
    return TrainingCommand(name, MODULE, command_line(MODULE, td.shown + options), td.run + options, asdict(cfg),
                           td.fingerprint, training_time(cfg.steps, p.seconds_per_step))


def pretrained(category: str, profile: str = "quick", *, data_root: str | os.PathLike | None = None, seed: int = 0,
               retrain: bool = False, device: str | torch.device | None = "auto") -> DDPMModel:
    """The committed DDPM of ``category`` for ``profile`` (see :data:`PROFILES`), verified against its manifest;
    trained first (with a progress bar) when ``retrain``. ``data_root``: the data it is (re)trained on (None: the
    embedded benchmark), ``seed``: the training seed (part of the name). A missing checkpoint raises
    ``FileNotFoundError`` with the command that trains it and roughly how long that takes."""
    tc = training_command(category, profile, data_root=data_root, seed=seed)
    path = find_or_run(checkpoint_path(CHECKPOINTS, tc.name), tc, retrain=retrain,
                       config_defaults=asdict(TrainConfig()),
                       train=lambda: run(parser().parse_args(tc.argv), command=tc.shown, device=device))
    shared = PROFILES[profile].config.classes
    return load_ddpm(path, device=pick_device(device), category=category if shared else None)


class TrainingData(NamedTuple):
    """The ``--data`` option of a training command as the manifest shows it (``shown``: a path inside the
    repository relative to it) and as it is run (``run``: absolute), the data ``fingerprint`` (the category's,
    or :func:`shared_fingerprint` of a shared model's classes) and the data's ``root`` folder."""

    shown: list[str]
    run: list[str]
    fingerprint: str
    root: Path | None = None


def training_data(data_root: str | os.PathLike | None, category: str, image_size: int,
                  version: int | None = None, classes: str = "") -> TrainingData:
    """The ``--data`` option of a training command (none for the CLIs' default, the embedded benchmark of
    ``lib.data.DEFAULT_VERSION``) and the fingerprint of the category's data (of every class in ``classes`` for a
    shared model); ``data_root`` None: the embedded benchmark of ``version`` (every method's :func:`pretrained`)."""
    from .. import data as kit_data

    cli_default = kit_data.embedded_benchmark(image_size).resolve()
    root = (kit_data.embedded_benchmark(image_size, version=version) if data_root is None else Path(data_root)).resolve()
    fingerprint = shared_fingerprint(root, classes) if classes else kit_data.fingerprint(root / category)
    if root == cli_default:
        return TrainingData([], [], fingerprint, root)
    shown = str(root.relative_to(REPO)) if root.is_relative_to(REPO) else str(root)
    return TrainingData(["--data", shown], ["--data", str(root)], fingerprint, root)


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
    export = checkpoint_path(a.export_dir, a.name)
    if cfg.classes:            # one shared class-conditional model of every category in --classes
        images, labels, splits = load_classes(root, cfg.classes, cfg.image_size, a.val_fraction)
        fingerprint = shared_fingerprint(root, cfg.classes)
        n_val = {c: len(v.images) for c, (_, _, v) in splits.items()}
    else:
        cat = kit_data.load_category(root, a.category, image_size=cfg.image_size)
        train_split, val_split = kit_data.split_validation(cat.train, a.val_fraction)
        images, labels, fingerprint = kit_data.to_tensor(train_split.images), None, kit_data.fingerprint(root / a.category)
        n_val = len(val_split.images)
    train_ddpm(images, cfg, checkpoint_path(a.state_dir, a.name), export=export, labels=labels,
               device=device or a.device, command=command, data_fingerprint=fingerprint, export_half=a.export_half,
               extra={"val_fraction": a.val_fraction, "validation_images": n_val})
    return export


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.methods.ddpm``: parse, train, export; errors become ``error: ...`` and exit status 2."""
    cli_main(MODULE, parser, run, argv)


if __name__ == "__main__":
    main()
