"""The In&Out-style baseline of seed 001 (DIAG §IV-B, reference [18]): a diffusion model fine-tuned on the positive
training images I_p, then sampled from noise to give whole new defective images (full-shot only: it needs I_p).

DIAG ran "the official code of In&Out to fine-tune a DDPM in the full-shot scenario (on all the positive images of
the KSDD2 dataset)" and lists it as "DDPM [18]" in Table III; In&Out's own code fine-tunes Stable Diffusion 1.5 with
DreamBooth/LoRA (``shared/reference/paper-settings.md``). The kit's analogue has the same shape — a pretrained
generator, fine-tuned on I_p, sampled unconditionally on the image — with the kit's own pretrained model: DIAG's
offline stand-in (:mod:`lib.methods.diag`, trained on the *other* categories' defects) fine-tuned here with the whole
image as its mask (x_t is noise everywhere, the loss covers every pixel) and each positive's defect class as its
condition, the DreamBooth analogue of a class prompt. Sampling is :func:`lib.methods.diag.sample_standin` at
strength 1 with the whole image as mask: the negative given as the base only fixes the output size.

Table I of the paper also lists In&Out in the zero-shot setting although its model saw the positives; the kit keeps it
to the full-shot table, where that is fair.

Command line (fine-tunes the committed stand-in on the embedded strip's I_p)::

    python -m lib.methods.inout --name inout_lean_metal_strip64 --steps 300
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..core.checks import check_float, check_int
from ..core.device import pick_device
from ..core.paths import CHECKPOINTS
from ..io.checkpoints import checkpoint_path
from ..io.cli import cli_main, command_line, config_argv, config_from_args, training_parser
from ..io.training import find_or_train, training_time
from . import diag as DG

__all__ = ["InOutConfig", "PROFILES", "finetune_config", "finetune", "sample", "checkpoint_name", "pretrained",
           "parser", "run", "main"]

MODULE = "lib.methods.inout"


@dataclass
class InOutConfig:
    """Fine-tuning of the stand-in ``base`` (a checkpoint name) on the positives of ``target``'s KSDD2-like split."""

    base: str = "diag_standin_lean_metal_strip64"
    target: str = "metal_strip"
    image_size: int = 64          # the embedded strip's size (its images are 64 wide × 184 tall)
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-4
    seed: int = 0
    ckpt_every: int = 100
    ema_decay: float = 0.98
    p_uncond: float = 0.1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Range checks (``ValueError`` naming the field, its value and the valid range)."""
        for name in ("steps", "batch_size", "ckpt_every", "image_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("ema_decay", self.ema_decay, 0.0, 1.0, hi_open=True)
        check_float("p_uncond", self.p_uncond, 0.0, 1.0)


PROFILES = {"quick": InOutConfig()}
SECONDS_PER_STEP = {"quick": {"on a 2-core CPU": 0.9}}


def finetune_config(base: DG.StandinConfig, cfg: InOutConfig) -> DG.StandinConfig:
    """The base stand-in's config with the fine-tuning's steps, batch, rate, seed, EMA and the whole image as mask
    (what the fine-tuned checkpoint records as its config)."""
    return replace(base, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                   ckpt_every=cfg.ckpt_every, ema_decay=cfg.ema_decay, p_full=1.0, p_uncond=cfg.p_uncond, dilate=0,
                   target=cfg.target)


def finetune(base: DG.Standin, positives: np.ndarray, types: Sequence[str], cfg: InOutConfig,
             out: str | os.PathLike | None, *, export: str | os.PathLike | None = None,
             device: str | torch.device | None = None, data_fingerprint: str = "unknown", command: str | None = None,
             progress: bool = True, stop_after: int | None = None, export_half: bool = False):
    """Fine-tune ``base`` on the uint8 ``positives`` (their defect ``types`` as classes,
    :data:`lib.methods.diag.DEFECT_CLASS`): L = ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, 1, t, c)‖² over every pixel."""
    cfg.validate()
    positives = np.asarray(positives)
    if positives.ndim != 4 or positives.dtype != np.uint8 or not len(positives):
        raise ValueError(f"positives must be a non-empty uint8 N×H×W×3 array, got {positives.dtype} {positives.shape}")
    if len(types) != len(positives):
        raise ValueError(f"{len(positives)} positives and {len(types)} types: give one defect type per image")
    unknown = sorted({t for t in types if t not in DG.DEFECT_CLASS})
    if unknown:
        raise ValueError(f"defect types {unknown} have no class in lib.methods.diag.DEFECT_CLASS; add them there")
    classes = np.array([DG.CLASSES.index(DG.DEFECT_CLASS[t]) for t in types])
    masks = np.ones(positives.shape[:3], bool)
    return DG.train_standin(positives, masks, classes, finetune_config(base.config, cfg), out, export=export,
                            device=device, data_fingerprint=data_fingerprint, command=command, progress=progress,
                            stop_after=stop_after, export_half=export_half, init=base.unet.state_dict(),
                            sources=[f"{cfg.target}/{t}" for t in types],
                            export_extra={"trained_on": [f"{cfg.target} I_p ({len(positives)} training positives)"],
                                          "base": cfg.base, "base_sha256": (base.manifest or {}).get("sha256"),
                                          "never_saw": f"{cfg.target}'s test images"})


def sample(model: DG.Standin, shape_like: np.ndarray, classes: Sequence[str], seeds: Sequence[int], *,
           num_steps: int = 25, guidance_scale: float = 1.0, scheduler: str = "ddpm",
           device: str | torch.device | None = None) -> np.ndarray:
    """New whole images from noise, x_T ~ N(0, I) → x_0 by ancestral DDPM steps on a ``num_steps`` grid
    (:func:`lib.methods.diag.sample_standin` at strength 1, mask = every pixel; deterministic DDIM drifts into noise
    with this small model); ``shape_like`` (uint8 N×H×W×3) only sets the size."""
    shape_like = np.asarray(shape_like)
    full = np.ones(shape_like.shape[:3], bool)
    return DG.sample_standin(model, shape_like, full, classes, seeds, num_steps=num_steps, strength=1.0,
                             guidance_scale=guidance_scale, scheduler=scheduler, device=device)


def checkpoint_name(profile: str = "quick", target: str = "metal_strip", seed: int = 0) -> str:
    """``inout_<base preset>_<target><size>[_seed<seed>]``."""
    cfg = PROFILES[profile]
    return f"inout_lean_{target}{cfg.image_size}" + (f"_seed{seed}" if seed else "")


def _positives(root: Path, target: str):
    from .. import data as kit_data
    from ..data.ksdd2 import ksdd2_split

    split = ksdd2_split(kit_data.load_category(root, target))      # native size (64 wide × 184 tall)
    return split.positives, list(split.positive_types)


def _fingerprint(root: Path, target: str, base_sha: str) -> str:
    from .. import data as kit_data

    return hashlib.sha256((kit_data.fingerprint(root / target) + base_sha).encode()).hexdigest()


def pretrained(profile: str = "quick", *, target: str = "metal_strip", data_root: str | os.PathLike | None = None,
               seed: int = 0, retrain: bool = False, device: str | torch.device | None = "auto") -> DG.Standin:
    """The committed In&Out-style model for ``target`` (fine-tuned first when ``retrain``); a missing checkpoint
    raises ``FileNotFoundError`` with the command that makes it."""
    from ..data.ksdd2 import embedded_strip

    cfg = replace(PROFILES[profile], seed=check_int("seed", seed, 0), target=target)
    name = checkpoint_name(profile, target, seed)
    root = Path(data_root) if data_root is not None else embedded_strip(cfg.image_size)
    options = config_argv(cfg, always=("steps", "target")) + ["--export-half", "--name", name]
    shown = command_line(MODULE, options if data_root is None else ["--data", str(root)] + options)
    run_argv = ["--data", str(root)] + options
    base = DG.load_standin(checkpoint_path(CHECKPOINTS, cfg.base))
    path = find_or_train(checkpoint_path(CHECKPOINTS, name), retrain=retrain, command=shown,
                         train=lambda: run(parser().parse_args(run_argv), command=shown, device=device),
                         cost=training_time(cfg.steps, SECONDS_PER_STEP.get(profile, {})),
                         expected_config=asdict(finetune_config(base.config, cfg)),
                         data_fingerprint=_fingerprint(root, target, base.manifest["sha256"]))
    return DG.load_standin(path, device=pick_device(device))


def parser() -> argparse.ArgumentParser:
    """The ``python -m lib.methods.inout`` argument parser (fine-tunes the stand-in on a category's I_p)."""
    return training_parser(MODULE, "Fine-tune DIAG's offline stand-in on the training positives of --target (the "
                           "In&Out-style baseline of seed 001)", InOutConfig, example="inout_lean_metal_strip64")


def run(a: argparse.Namespace, *, command: str, device: str | torch.device | None = None) -> Path:
    """Fine-tune what the parsed options ``a`` describe; returns the exported checkpoint's path."""
    from ..data.ksdd2 import embedded_strip

    cfg = config_from_args(InOutConfig, a)
    root = Path(a.data) if a.data is not None else embedded_strip(cfg.image_size)
    base = DG.load_standin(checkpoint_path(CHECKPOINTS, cfg.base))
    positives, types = _positives(root, cfg.target)
    export = checkpoint_path(a.export_dir, a.name)
    finetune(base, positives, types, cfg, checkpoint_path(a.state_dir, a.name), export=export,
             device=device or a.device, command=command,
             data_fingerprint=_fingerprint(root, cfg.target, base.manifest["sha256"]), export_half=a.export_half)
    return export


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.methods.inout``: parse, fine-tune, export; errors exit with status 2."""
    cli_main(MODULE, parser, run, argv)


if __name__ == "__main__":
    main()
