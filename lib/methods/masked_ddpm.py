"""Seed 000 §3.3-3.4: masked-region diffusion training with random background masks and feature-aware condition
maps (Algorithm 1), the feature bank, masked generation, and the §3.1 unconditional baseline on defect crops.

Masked forward process (§3.3, "only the masked region is changed by adding gaussian noise"), with
m = fmsk ∪ bmsk the defect boxes and the random background boxes::

    x_t = m ⊙ (√ᾱ_t x_0 + √(1−ᾱ_t) ε) + (1 − m) ⊙ x_0

The network sees every pixel of x_t and the condition map (:func:`condition`, two channels: Algorithm 1
line 6's context map and the dropped-out feature channel, see :mod:`lib.data.conditions`) and predicts ε; the
loss counts the mask only ("the calculation of loss only involves the masked regions")::

    L = Σ m ⊙ (ε − ε_θ([x_t, cond], t))² / (C · Σ m)

Generation runs the reverse process (the hybrid DDIM→DDPM sampler of §3.2) inside the requested boxes and puts
the known pixels back after every step, x_{t−1} ← m ⊙ x_{t−1} + (1 − m) ⊙ x_0, so the output equals the input
outside the boxes exactly (the kit also copies the input's bytes there).

The feature bank (§3.4: "those values are also stored as images for further defect generation"): the feature
image r̂ of every training defect box, written as PNGs under ``<name>_bank/<class>/`` with an ``index.json``
(sha256 of each file) when training starts; :class:`FeatureBank` reads and verifies it and never writes it.

Command line::

    python -m lib.methods.masked_ddpm --name masked_ddpm_lean_features_display_panel64 --steps 3000
    python -m lib.methods.masked_ddpm --name masked_ddpm_paper_features_display_panel512 --preset paper \\
        --image-size 512 --data /data/mura --batch-size 4        # the paper profile (GPU)
    python -m lib.methods.masked_ddpm --baseline --image-size 32 --name ddpm_lean_mura_crops32   # §3.1 baseline
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core.checks import check_choice, check_float, check_int, check_multiple
from ..core.device import pick_device
from ..core.diffusion import SCHEDULES, Diffusion, hybrid_plan, make_betas, randn, run_plan
from ..core.nets import UNET_PRESETS, unet
from ..core.paths import CHECKPOINTS, REPO
from ..data import conditions as C
from ..data.labels import Box, boxes_to_mask
from ..data.mura import DefectSet, defect_set, embedded_mura, split_defect_set
from ..io.checkpoints import CheckpointKind, checkpoint_path, half_precision, open_checkpoint, register_kind
from ..io.cli import add_config_arguments, add_training_arguments, cli_main, command_line, config_argv, config_from_args
from ..io.training import Trainer, TrainingCommand, find_or_run, training_time
from . import ddpm

__all__ = ["MaskedConfig", "q_sample_masked", "masked_loss", "condition", "FeatureBank", "FeatureBankError",
           "bank_path", "train_masked", "load_masked", "MaskedDDPM", "generate_in_boxes", "Inpainted", "defect_crops",
           "PROFILES", "BASELINE", "checkpoint_name", "held_out_split", "training_command", "baseline_command",
           "pretrained", "pretrained_baseline", "training_set", "parser", "run", "main"]

MODULE = "lib.methods.masked_ddpm"
N_COND = 2  # condition channels: context map (Algorithm 1 line 6), features (lines 8-16)


@dataclass
class MaskedConfig:
    """Masked-region DDPM training (seed 000 §3.3-3.4, Algorithm 1) on defect images with their masks."""

    preset: str = "lean"
    image_size: int = 64
    schedule: str = "linear"
    T: int = 1000
    steps: int = 3000
    batch_size: int = 16
    lr: float = 2e-4
    seed: int = 0
    ckpt_every: int = 500
    ema_decay: float = 0.999
    features: bool = True        # Algorithm 1's feature reservation (False: "conditioned diffusion with Gaussian blur")
    blur: bool = True            # Algorithm 1 line 3, the 3×3 Gaussian of §3.3
    margin: int = 2              # a defect box = the mask's bounding box grown by this many pixels
    n_background: int = 2        # random background boxes per image (Fig. 4c's black boxes)
    dropout_lo: float = 0.4      # the dropout rate is drawn from U(dropout_lo, dropout_hi) per image (line 7)
    dropout_hi: float = 0.9
    canny_sigma: float = 1.5
    threshold: float = 0.75      # τ on the min-max normalised region (line 12)
    augment: bool = True         # §4.2: random rotation (by 90°) and flipping
    n_train: int = 40            # generator training images per class (the first ones in file order)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Range checks (``ValueError`` naming the field, its value and the valid range)."""
        check_choice("preset", self.preset, sorted(UNET_PRESETS))
        check_choice("schedule", self.schedule, SCHEDULES)
        for name in ("steps", "batch_size", "T", "ckpt_every", "n_train"):
            check_int(name, getattr(self, name), 1)
        for name in ("seed", "margin", "n_background"):
            check_int(name, getattr(self, name), 0)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("ema_decay", self.ema_decay, 0.0, 1.0, hi_open=True)
        check_float("dropout_lo", self.dropout_lo, 0.0, 1.0)
        check_float("dropout_hi", self.dropout_hi, self.dropout_lo, 1.0)
        check_float("canny_sigma", self.canny_sigma, 0.0, lo_open=True)
        check_float("threshold", self.threshold, 0.0, 1.0)
        levels = len(UNET_PRESETS[self.preset].block_out_channels)
        check_multiple("image_size", self.image_size, 2 ** (levels - 1), f"the {self.preset!r} UNet down-samples "
                       f"by 2^{levels - 1}")


KIND = register_kind(CheckpointKind("masked_ddpm", "a masked-region DDPM (seed 000 §3.3; ε-prediction UNet on "
                                    "[x_t, condition map], EMA weights)", f"{MODULE}.load_masked", MaskedConfig,
                                    weights=("ema",), fields=("config", "step", "losses", "classes")))


# ----------------------------------------------------------------------------------------------
# the math of §3.3
# ----------------------------------------------------------------------------------------------
def q_sample_masked(x0: torch.Tensor, alpha_bar_t: torch.Tensor, eps: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Masked forward process: x_t = m ⊙ (√ᾱ_t x_0 + √(1−ᾱ_t) ε) + (1 − m) ⊙ x_0 (seed 000 §3.3; m ∈ {0, 1},
    N×1×H×W; ``alpha_bar_t`` N values or N×1×1×1)."""
    a = alpha_bar_t.reshape(-1, 1, 1, 1)
    return m * (a.sqrt() * x0 + (1 - a).sqrt() * eps) + (1 - m) * x0


def masked_loss(eps_theta: torch.Tensor, eps: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """L = Σ m ⊙ (ε − ε_θ)² / (C · Σ m): the DDPM loss on the masked region only (seed 000 §3.3)."""
    m = m.expand_as(eps)
    return ((eps_theta - eps) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def condition(context01: torch.Tensor, fmsk: torch.Tensor, bmsk: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The network's condition input, N×2×H×W in [−1, 1]: Algorithm 1 line 6's cond = img·(1 − fmsk ∪ bmsk) + fmsk
    (``context01``: the grey, optionally blurred image in [0, 1]) and the dropped-out features inside fmsk (N×H×W
    each)."""
    m = torch.maximum(fmsk, bmsk)
    cond = context01 * (1 - m) + fmsk
    return torch.stack([cond, features * fmsk], 1) * 2 - 1


# ----------------------------------------------------------------------------------------------
# the feature bank
# ----------------------------------------------------------------------------------------------
class FeatureBankError(ValueError):
    """A feature bank folder is missing, empty or corrupt; the message names the file and the fix."""


def bank_path(checkpoint: str | os.PathLike) -> Path:
    """The feature bank folder that belongs to a checkpoint: ``<dir>/<name>_bank``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + "_bank")


class FeatureBank:
    """Algorithm 1's stored feature images by class (bool arrays), read from a bank folder and verified."""

    INDEX = "index.json"

    def __init__(self, folder: Path, classes: tuple[str, ...], features: dict[str, list[np.ndarray]],
                 entries: list[dict]):
        self.folder, self.classes, self.features, self.entries = folder, classes, features, entries

    def __repr__(self) -> str:
        return f"FeatureBank({self.folder}, {', '.join(f'{c}: {len(v)}' for c, v in self.features.items())})"

    @staticmethod
    def write(folder: str | os.PathLike, classes: Sequence[str], features: Sequence[np.ndarray],
              labels: Sequence[int], sources: Sequence[str], settings: dict) -> Path:
        """Write a bank (one PNG per feature image, ``<class>/<k>.png``, and ``index.json``) atomically: built in a
        temporary sibling, then moved into place; an existing bank is replaced only if it is one (has an index)."""
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()) and not (folder / FeatureBank.INDEX).is_file():
            raise FileExistsError(f"{folder} exists and is not a feature bank (no {FeatureBank.INDEX}); refusing to "
                                  "overwrite it. Pass another checkpoint name or move that folder")
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        entries = []
        for k, (f, c, src) in enumerate(zip(features, labels, sources)):
            rel = f"{classes[c]}/{k:04d}.png"
            (tmp / classes[c]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(f, np.uint8) * 255).save(tmp / rel, format="PNG")
            entries.append({"file": rel, "class": classes[c], "source": str(src),
                            "sha256": hashlib.sha256((tmp / rel).read_bytes()).hexdigest()})
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / FeatureBank.INDEX).write_text(json.dumps({"classes": list(classes), "settings": settings,
                                                         "entries": entries}, indent=1) + "\n")
        if folder.exists():
            aside = folder.with_name(f".{folder.name}.{os.getpid()}.old")
            os.replace(folder, aside)
            os.replace(tmp, folder)
            shutil.rmtree(aside)
        else:
            folder.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, folder)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "FeatureBank":
        """Read and verify a bank folder (every file listed, present, with its sha256, a readable PNG)."""
        folder = Path(folder)
        index = folder / cls.INDEX
        fix = ("retrain the checkpoint that owns it (its manifest has the command), or restore the folder from the "
               "repository (git checkout -- <folder>)")
        if not folder.is_dir():
            raise FeatureBankError(f"feature bank {folder} does not exist; {fix}")
        if not index.is_file():
            raise FeatureBankError(f"feature bank {folder} has no {cls.INDEX} (empty or not a bank); {fix}")
        try:
            meta = json.loads(index.read_text())
            classes, entries = tuple(meta["classes"]), list(meta["entries"])
        except (ValueError, KeyError, TypeError) as e:
            raise FeatureBankError(f"{index} is not a feature-bank index ({type(e).__name__}: {e}); {fix}") from None
        if not entries:
            raise FeatureBankError(f"feature bank {folder} lists no feature images; {fix}")
        features: dict[str, list[np.ndarray]] = {c: [] for c in classes}
        for e in entries:
            f = folder / e["file"]
            if not f.is_file():
                raise FeatureBankError(f"feature bank file {f} (listed in {index}) is missing; {fix}")
            data = f.read_bytes()
            if hashlib.sha256(data).hexdigest() != e["sha256"]:
                raise FeatureBankError(f"feature bank file {f} does not match the sha256 in {index} (altered or "
                                       f"corrupt); {fix}")
            try:
                with Image.open(f) as im:
                    features[e["class"]].append(np.asarray(im.convert("L")) > 127)
            except (OSError, KeyError) as err:
                raise FeatureBankError(f"feature bank file {f} cannot be read as a feature image ({err}); {fix}") \
                    from None
        return cls(folder, classes, features, entries)

    def pick(self, name: str, rng: np.random.Generator) -> np.ndarray:
        """A stored feature image of class ``name``, picked at random (Algorithm 1 at generation, §3.4)."""
        check_choice("defect class", name, self.classes)
        if not self.features[name]:
            raise FeatureBankError(f"feature bank {self.folder} holds no feature image of class {name!r}")
        return self.features[name][int(rng.integers(len(self.features[name])))]


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def _grey_context(images: np.ndarray, blur: bool) -> np.ndarray:
    grey = np.stack([C.grey01(im) for im in images])
    return np.stack([C.gaussian_blur3(g) for g in grey]) if blur else grey


def _region_features(context: np.ndarray, boxes: Sequence[Box], cfg: MaskedConfig) -> list[np.ndarray]:
    return [C.region_features(g[b.y0:b.y1, b.x0:b.x1], canny_sigma=cfg.canny_sigma, threshold=cfg.threshold)
            for g, b in zip(context, boxes)]


def _augment(gen: torch.Generator, *maps: torch.Tensor) -> list[torch.Tensor]:
    """The same random rotation by k·90° and horizontal flip for every map of each sample (§4.2)."""
    n = maps[0].shape[0]
    k = torch.randint(0, 4, (n,), generator=gen)
    flip = torch.randint(0, 2, (n,), generator=gen)
    out = []
    for m in maps:
        rows = []
        for i in range(n):
            r = torch.rot90(m[i], int(k[i]), dims=(-2, -1))
            rows.append(r.flip(-1) if flip[i] else r)
        out.append(torch.stack(rows))
    return out


def _background(gen: torch.Generator, fmsk: torch.Tensor, cfg: MaskedConfig) -> torch.Tensor:
    """Random background boxes (sides 10-30 % of the image) minus the dilated defect boxes, N×H×W."""
    n, h, w = fmsk.shape
    bmsk = torch.zeros_like(fmsk)
    s = min(h, w)
    for _ in range(cfg.n_background):
        side = (torch.rand((n, 2), generator=gen) * 0.2 + 0.1) * s
        y0 = (torch.rand(n, generator=gen) * (h - side[:, 0])).long()
        x0 = (torch.rand(n, generator=gen) * (w - side[:, 1])).long()
        on = torch.rand(n, generator=gen) < 0.75
        for i in range(n):
            if on[i]:
                bmsk[i, y0[i]:y0[i] + int(side[i, 0]), x0[i]:x0[i] + int(side[i, 1])] = 1
    near = F.max_pool2d(fmsk[:, None], 3, 1, 1)[:, 0]
    return bmsk * (1 - near)


def train_masked(ds: DefectSet, cfg: MaskedConfig, out: str | os.PathLike | None, *,
                 export: str | os.PathLike | None = None, device: str | torch.device | None = None,
                 data_fingerprint: str = "unknown", command: str | None = None, progress: bool = True,
                 stop_after: int | None = None, export_half: bool = False):
    """Train the masked-region DDPM on the defect images ``ds`` (seed 000 §3.3-3.4); the feature bank goes next to
    ``export`` (written when training starts, on the main process). Returns ``(model, ema, losses)``."""
    cfg.validate()
    if ds.images.shape[1:3] != (cfg.image_size, cfg.image_size):
        raise ValueError(f"the defect images are {ds.images.shape[1]}×{ds.images.shape[2]}, the config's image_size "
                         f"is {cfg.image_size}; load them at image_size={cfg.image_size}")
    boxes = ds.boxes(cfg.margin)
    context = _grey_context(ds.images, cfg.blur)
    feats = _region_features(context, boxes, cfg)
    H = W = cfg.image_size
    x0_all = torch.from_numpy(ds.images).float().div(127.5).sub(1).permute(0, 3, 1, 2).contiguous()
    fmsk_all = torch.from_numpy(np.stack([np.pad(np.ones((b.height, b.width), np.float32),
                                                 ((b.y0, H - b.y1), (b.x0, W - b.x1))) for b in boxes]))
    feat_all = torch.from_numpy(np.stack([C.paste_features((H, W), [b], [f]) for b, f in zip(boxes, feats)]))
    ctx_all = torch.from_numpy(context.astype(np.float32))
    trainer = Trainer(cfg, out, data=(x0_all, fmsk_all, feat_all), device=device, data_fingerprint=data_fingerprint,
                      command=command, progress=progress, desc="train masked DDPM",
                      extra={"n_images": len(ds), "classes": list(ds.names)})
    if export is not None and cfg.features and trainer.main:
        FeatureBank.write(bank_path(export), ds.names, feats, ds.classes.tolist(),
                          [_relative(p) for p in ds.paths],
                          {"blur": cfg.blur, "margin": cfg.margin, "canny_sigma": cfg.canny_sigma,
                           "threshold": cfg.threshold, "source": "the masked DDPM's training images"})
    dev, gen, B = trainer.device, trainer.generator, cfg.batch_size
    alpha_bar = Diffusion(make_betas(cfg.schedule, cfg.T)).alpha_bar.to(device=dev, dtype=torch.float32)
    model = unet(cfg.preset, cfg.image_size, in_channels=3 + N_COND).to(dev)
    ema = unet(cfg.preset, cfg.image_size, in_channels=3 + N_COND).to(dev)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)

    def loss(nets, shard):
        idx = torch.randint(0, len(ds), (B,), generator=gen)
        x0, fmsk, feat, ctx = x0_all[idx], fmsk_all[idx], feat_all[idx], ctx_all[idx]
        if cfg.augment:
            x0, fmsk, feat, ctx = _augment(gen, x0, fmsk, feat, ctx)
        bmsk = _background(gen, fmsk, cfg)
        rate = torch.rand(B, generator=gen) * (cfg.dropout_hi - cfg.dropout_lo) + cfg.dropout_lo
        keep = (torch.rand((B, H, W), generator=gen) >= rate.view(-1, 1, 1)).float()
        feat = feat * keep if cfg.features else torch.zeros_like(feat)
        t = torch.randint(0, cfg.T, (B,), generator=gen)
        eps = torch.randn((B, 3, H, W), generator=gen)
        rows = shard.rows(B)
        m = torch.maximum(fmsk, bmsk)[:, None]
        x0, m, eps, t = x0[rows].to(dev), m[rows].to(dev), eps[rows].to(dev), t[rows].to(dev)
        cond = condition(ctx[rows], fmsk[rows], bmsk[rows], feat[rows]).to(dev)
        x_t = q_sample_masked(x0, alpha_bar[t], eps, m)
        return {"loss": masked_loss(nets["model"](torch.cat([x_t, cond], 1), t).sample, eps, m)}

    @torch.no_grad()
    def ema_update():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - cfg.ema_decay)

    history = trainer.fit(loss, {"model": model}, [{"params": model.parameters(), "lr": cfg.lr}], steps=cfg.steps,
                          ckpt_every=cfg.ckpt_every, keep={"ema": ema}, after_step=ema_update, stop_after=stop_after)
    losses = history.get("loss", [])
    weights = half_precision(ema.state_dict()) if export_half else ema.state_dict()
    trainer.export(export, KIND, {"config": asdict(cfg), "step": trainer.step, "losses": losses, "ema": weights,
                                  "classes": list(ds.names)},
                   weights=f"EMA (decay {cfg.ema_decay:g}){', stored as float16' if export_half else ''}",
                   extra={"feature_bank": bank_path(export).name if cfg.features else None})
    return model, ema, losses


def _relative(p: Path) -> str:
    p = Path(p).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


class MaskedDDPM(NamedTuple):
    """A trained masked-region DDPM: UNet (EMA), schedule, config, class names, manifest, losses, path and its
    feature bank (None for the blur-only variant)."""

    unet: torch.nn.Module
    diffusion: Diffusion
    config: MaskedConfig
    classes: tuple[str, ...]
    manifest: dict | None
    losses: list[float]
    path: Path
    bank: FeatureBank | None


def load_masked(path: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True) -> MaskedDDPM:
    """A trained masked DDPM (float32 EMA weights) with its verified feature bank, from an exported checkpoint."""
    state, cfg, manifest = open_checkpoint(path, KIND, verify)
    model = unet(cfg.preset, cfg.image_size, in_channels=3 + N_COND)
    model.load_state_dict({k: v.float() for k, v in state["ema"].items()})
    bank = FeatureBank.load(bank_path(path)) if cfg.features else None
    return MaskedDDPM(model.to(device).eval(), Diffusion(make_betas(cfg.schedule, cfg.T)), cfg,
                      tuple(state["classes"]), manifest, list(state["losses"]), Path(path), bank)


# ----------------------------------------------------------------------------------------------
# masked generation
# ----------------------------------------------------------------------------------------------
class Inpainted(NamedTuple):
    """Masked generation's result: ``images`` uint8 N×H×W×3 (equal to the input outside the boxes), the region
    ``masks`` (bool N×H×W) and the condition maps the network saw (float N×2×H×W in [0, 1])."""

    images: np.ndarray
    masks: np.ndarray
    conditions: np.ndarray


@torch.no_grad()
def generate_in_boxes(model: MaskedDDPM, images: np.ndarray, boxes: Sequence[Sequence[Box]],
                      features: Sequence[Sequence[np.ndarray]] | None, *, seed: int = 0, num_steps: int = 20,
                      switch_t: int = 20, eta: float = 0.0, dropout: float | None = None, batch_size: int = 32,
                      progress: bool = False, device: str | torch.device | None = None) -> Inpainted:
    """Generate inside ``boxes[i]`` of ``images[i]`` (uint8 N×H×W×3) with the masked model, conditioned on the
    ``features[i]`` pasted into the boxes (Algorithm 1 at generation; ignored by a blur-only model), with the
    hybrid sampler (``num_steps`` DDIM grid, DDPM from ``switch_t`` down, §3.2). ``dropout``: the rate (None: drawn
    from the model's U(lo, hi) per image). Seeded: the same arguments give the same images (image i's dropout uses
    ``seed + i``, batch b's noise ``seed + b·batch_size``)."""
    cfg = model.config
    images = np.asarray(images)
    n, H, W = images.shape[:3]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 N×H×W×3, got {images.dtype} {images.shape}")
    if len(boxes) != n or (features is not None and len(features) != n):
        raise ValueError(f"boxes ({len(boxes)}) and features ({'-' if features is None else len(features)}) need one "
                         f"entry per image ({n})")
    if dropout is not None:
        check_float("dropout", dropout, 0.0, 1.0)
    num_steps = check_int("num_steps", num_steps, 1, model.diffusion.T)
    switch_t = check_int("switch_t", switch_t, -1, model.diffusion.T - 1)
    batch_size = check_int("batch_size", batch_size, 1)
    dev = pick_device(device)
    fmsk = np.stack([boxes_to_mask(bx, (H, W)) for bx in boxes]).astype(np.float32)
    context = _grey_context(images, cfg.blur)
    feat = np.zeros((n, H, W), np.float32)
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        if cfg.features and features is not None:
            rate = rng.uniform(cfg.dropout_lo, cfg.dropout_hi) if dropout is None else dropout
            feat[i] = C.dropout(C.paste_features((H, W), boxes[i], features[i]), rate, rng)
    cond = condition(torch.from_numpy(context.astype(np.float32)), torch.from_numpy(fmsk),
                     torch.zeros(n, H, W), torch.from_numpy(feat))
    x0 = torch.from_numpy(images).float().div(127.5).sub(1).permute(0, 3, 1, 2)
    plan = hybrid_plan(model.diffusion, num_steps, switch_t)
    out = np.empty_like(images)
    net = model.unet.to(dev)
    for s in range(0, n, batch_size):
        sl = slice(s, min(n, s + batch_size))
        gen = torch.Generator().manual_seed(seed + s)
        m = torch.from_numpy(fmsk[sl])[:, None].to(dev)
        known, c = x0[sl].to(dev), cond[sl].to(dev)
        x_T = m * randn(tuple(known.shape), gen, dev) + (1 - m) * known

        def eps_theta(x, t, c=c):
            return net(torch.cat([x, c], 1), t).sample

        def put_back(x, t_prev, m=m, known=known):
            return m * x + (1 - m) * known

        x, _ = run_plan(eps_theta, x_T, model.diffusion, plan, generator=gen, eta=eta, progress=progress,
                        desc="masked generation", after_step=put_back)
        gen_u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        keep = fmsk[sl].astype(bool)[..., None]
        out[sl] = np.where(keep, gen_u8, images[sl])       # the input's own bytes outside the boxes
    return Inpainted(out, fmsk.astype(bool), ((cond.numpy() + 1) / 2).astype(np.float32))


# ----------------------------------------------------------------------------------------------
# §3.1's unconditional baseline: a DDPM on crops around the defects
# ----------------------------------------------------------------------------------------------
def defect_crops(ds: DefectSet, size: int) -> np.ndarray:
    """A ``size``×``size`` crop of every defect image, centred on its defect box and shifted to stay inside the image
    (seed 000 §3.1: "training the cropped regions from defective images"); uint8 N×size×size×3."""
    h, w = ds.images.shape[1:3]
    size = check_int("size", size, 8, min(h, w))
    out = []
    for im, b in zip(ds.images, ds.boxes()):
        cy, cx = (b.y0 + b.y1) // 2, (b.x0 + b.x1) // 2
        y0 = min(max(0, cy - size // 2), h - size)
        x0 = min(max(0, cx - size // 2), w - size)
        out.append(im[y0:y0 + size, x0:x0 + size])
    return np.stack(out)


# ----------------------------------------------------------------------------------------------
# the committed checkpoints
# ----------------------------------------------------------------------------------------------
PROFILES: dict[str, MaskedConfig] = {
    # notebook 02 on a 2-core CPU: the lean UNet at 64², 3000 steps of 16
    "quick": MaskedConfig(),
    # the paper profile: 512² patches, the guided-diffusion-style UNet (the kit's `paper` preset), batch 4
    "paper": MaskedConfig(preset="paper", image_size=512, steps=100_000, batch_size=4, lr=1e-4, n_train=140),
}
BASELINE: dict[str, ddpm.TrainConfig] = {
    "quick": ddpm.TrainConfig(preset="lean", image_size=32, steps=3000, batch_size=32),
    "paper": ddpm.TrainConfig(preset="paper", image_size=256, steps=50_000, batch_size=16),
}
SECONDS_PER_STEP = {"quick": {"on one thread of a 2-core CPU": 0.63}}
BASELINE_SECONDS_PER_STEP = {"quick": {"on one thread of a 2-core CPU": 0.32}}
DATA_VERSION = 3   # the embedded MURA set's benchmark version


def checkpoint_name(profile: str = "quick", variant: str = "features", seed: int = 0,
                    category: str = "display_panel") -> str:
    """``masked_ddpm_<preset>_<variant>_<category><size>[_seed<seed>]``; variant "features" or "blur"."""
    cfg = PROFILES[check_choice("profile", profile, list(PROFILES))]
    check_choice("variant", variant, ("features", "blur"))
    return f"masked_ddpm_{cfg.preset}_{variant}_{category}{cfg.image_size}" + (f"_seed{seed}" if seed else "")


def training_set(data_root: str | os.PathLike | None, category: str, image_size: int, n_train: int,
                 n_real: int = 1) -> tuple[Path, DefectSet]:
    """The data root (None: the embedded MURA set) and the generator's training images (the first ``n_train`` per
    class)."""
    from .. import data as kit_data

    root = Path(data_root) if data_root is not None else embedded_mura(image_size, version=DATA_VERSION)
    cat = kit_data.load_category(root, category, image_size=image_size)
    return root, split_defect_set(defect_set(cat), n_train, min(n_real, n_train))[0]


def held_out_split(defects: DefectSet, profile: str, n_real: int,
                   source: str | os.PathLike = "the data") -> tuple[DefectSet, DefectSet, DefectSet]:
    """(generator training, few real, held out) of ``defects`` for notebook 02: the first ``PROFILES[profile].n_train``
    images per class, which the profile's generators train on (:func:`training_set`), the detector's few real (the
    first ``n_real`` of those) and the rest, which neither sees. Data with too few images per class for the profile
    (the paper profile's 140 against the embedded set's 60) raise ``ValueError`` naming ``source`` and the fix."""
    n_train = PROFILES[check_choice("profile", profile, list(PROFILES))].n_train
    counts = defects.counts()
    if min(counts.values()) <= n_train:
        raise ValueError(f"profile={profile!r} trains its generators on the first {n_train} images per class and "
                         f"{source} has {counts}: pass data_root= a folder with more than {n_train} per class "
                         "(seed 000: ~700 patches), or profile='quick'")
    return split_defect_set(defects, n_train, n_real)


def _data_options(root: Path, category: str) -> tuple[list[str], list[str]]:
    shown = str(root.resolve().relative_to(REPO)) if root.resolve().is_relative_to(REPO) else str(root.resolve())
    return ["--data", shown, "--category", category], ["--data", str(root.resolve()), "--category", category]


def training_command(profile: str = "quick", variant: str = "features", *, category: str = "display_panel",
                     data_root: str | os.PathLike | None = None, seed: int = 0) -> TrainingCommand:
    """The command that trains the masked DDPM of ``profile`` (:data:`PROFILES`) and ``variant`` ("features" or
    "blur") on ``data_root``'s ``category`` (None: the embedded MURA set), with the training ``seed``."""
    from .. import data as kit_data

    name = checkpoint_name(profile, variant, check_int("seed", seed, 0), category)
    cfg = replace(PROFILES[profile], seed=seed, features=variant == "features")
    root = Path(data_root) if data_root is not None else embedded_mura(cfg.image_size, version=DATA_VERSION)
    shown_data, run_data = _data_options(root, category)
    options = config_argv(cfg, always=("image_size", "steps")) + ["--export-half", "--name", name]
    return TrainingCommand(name, MODULE, command_line(MODULE, shown_data + options), run_data + options, asdict(cfg),
                           kit_data.fingerprint(root / category),
                           training_time(cfg.steps, SECONDS_PER_STEP.get(profile, {})))


def baseline_command(profile: str = "quick", *, category: str = "display_panel",
                     data_root: str | os.PathLike | None = None, seed: int = 0) -> TrainingCommand:
    """The command that trains the §3.1 baseline of ``profile`` (:data:`BASELINE`): an unconditional DDPM on crops
    around the masked DDPM's training defects; arguments as :func:`training_command`."""
    from .. import data as kit_data

    base = replace(BASELINE[check_choice("profile", profile, list(BASELINE))], seed=check_int("seed", seed, 0))
    what = "mura" if category == "display_panel" else category    # the embedded MURA set keeps its committed name
    name = f"ddpm_{base.preset}_{what}_crops{base.image_size}" + (f"_seed{seed}" if seed else "")
    masked = PROFILES[profile]
    root = Path(data_root) if data_root is not None else embedded_mura(masked.image_size, version=DATA_VERSION)
    shown_data, run_data = _data_options(root, category)
    options = (["--baseline"] + config_argv(base, always=("image_size", "steps")) +
               ["--n-train", str(masked.n_train), "--export-half", "--name", name])
    return TrainingCommand(name, MODULE, command_line(MODULE, shown_data + options), run_data + options, asdict(base),
                           kit_data.fingerprint(root / category),
                           training_time(base.steps, BASELINE_SECONDS_PER_STEP.get(profile, {})))


def pretrained(profile: str = "quick", variant: str = "features", *, category: str = "display_panel",
               data_root: str | os.PathLike | None = None, seed: int = 0, retrain: bool = False,
               device: str | torch.device | None = "auto") -> MaskedDDPM:
    """The committed masked DDPM (``variant`` "features": Algorithm 1's feature-aware conditioning; "blur": the
    blur-conditioned model of Table 2's first row) with its feature bank; trained first when ``retrain``. A missing
    checkpoint raises ``FileNotFoundError`` with the command that trains it."""
    tc = training_command(profile, variant, category=category, data_root=data_root, seed=seed)
    path = find_or_run(checkpoint_path(CHECKPOINTS, tc.name), tc, retrain=retrain,
                       train=lambda: run(parser().parse_args(tc.argv), command=tc.shown, device=device))
    return load_masked(path, device=pick_device(device))


def pretrained_baseline(profile: str = "quick", *, category: str = "display_panel",
                        data_root: str | os.PathLike | None = None, seed: int = 0, retrain: bool = False,
                        device: str | torch.device | None = "auto") -> ddpm.DDPMModel:
    """The committed §3.1 baseline: an unconditional DDPM on crops around the training defects (a
    :class:`lib.methods.ddpm.DDPMModel`)."""
    tc = baseline_command(profile, category=category, data_root=data_root, seed=seed)
    path = find_or_run(checkpoint_path(CHECKPOINTS, tc.name), tc, retrain=retrain,
                       train=lambda: run(parser().parse_args(tc.argv), command=tc.shown, device=device),
                       config_defaults=asdict(ddpm.TrainConfig()))
    return ddpm.load_ddpm(path, device=pick_device(device))


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    """The ``python -m lib.methods.masked_ddpm`` argument parser."""
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="Train seed 000's masked-region DDPM (or, "
                                "with --baseline, its §3.1 unconditional DDPM on defect crops) on a category's "
                                "defect images (test/<class>/ with ground_truth/<class>/ masks)")
    add_training_arguments(p, example="masked_ddpm_lean_features_display_panel64")
    p.set_defaults(category="display_panel")
    p.add_argument("--baseline", action="store_true", help="train the unconditional DDPM of §3.1 on image-size "
                   "crops around the defects instead (preset, image size, steps, batch size, lr, seed, schedule, T, "
                   "ema decay and ckpt-every are read from the options below)")
    p.add_argument("--export-half", action="store_true", help="store the exported EMA weights as float16")
    p.add_argument("--source-size", type=int, default=None, help="with --baseline: the size the defect images are "
                   "loaded at before cropping (default: 64 or, for crops larger than 64, the crop size × 2)")
    add_config_arguments(p, MaskedConfig)
    return p


def run(a: argparse.Namespace, *, command: str, device: str | torch.device | None = None) -> Path:
    """Train what the parsed options ``a`` describe; returns the exported checkpoint's path."""
    from .. import data as kit_data

    export = checkpoint_path(a.export_dir, a.name)
    if a.baseline:
        base = ddpm.TrainConfig(preset=a.preset, image_size=a.image_size, schedule=a.schedule, T=a.T, steps=a.steps,
                                batch_size=a.batch_size, lr=a.lr, seed=a.seed, ckpt_every=a.ckpt_every,
                                ema_decay=a.ema_decay)
        source = a.source_size or (64 if a.image_size <= 64 else 2 * a.image_size)
        root, ds = training_set(a.data, a.category, source, a.n_train)
        crops = kit_data.to_tensor(defect_crops(ds, base.image_size))
        ddpm.train_ddpm(crops, base, checkpoint_path(a.state_dir, a.name), export=export, device=device or a.device,
                        command=command, data_fingerprint=kit_data.fingerprint(root / a.category),
                        export_half=a.export_half, extra={"crops_of": f"{len(ds)} defect images at {source}²"})
        return export
    cfg = config_from_args(MaskedConfig, a)
    root, ds = training_set(a.data, a.category, cfg.image_size, cfg.n_train)
    train_masked(ds, cfg, checkpoint_path(a.state_dir, a.name), export=export, device=device or a.device,
                 command=command, data_fingerprint=kit_data.fingerprint(root / a.category), export_half=a.export_half)
    return export


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.methods.masked_ddpm``: parse, train, export; errors exit with status 2."""
    cli_main(MODULE, parser, run, argv)


if __name__ == "__main__":
    main()
