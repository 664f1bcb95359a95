"""One training loop for every method: resume, a progress bar, seeded determinism, periodic atomic
state saves with manifests, a final export — on HF accelerate, so one command also runs on N GPUs.

A method supplies only its modules, the optimizer's parameter groups and a per-step loss::

    trainer = Trainer(cfg, out, data=(images,), device=device)   # seeds torch, owns the generator
    model = unet(cfg.preset, cfg.image_size).to(trainer.device)

    def loss(nets, shard):                      # one step
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=trainer.generator)
        ...                                     # draw the GLOBAL batch, then keep this process's rows
        rows = shard.rows(cfg.batch_size)
        return {"loss": F.mse_loss(nets["model"](x_t[rows], t[rows]).sample, eps[rows])}

    history = trainer.fit(loss, {"model": model}, [{"params": model.parameters(), "lr": cfg.lr}],
                          steps=cfg.steps, ckpt_every=cfg.ckpt_every)
    trainer.export(path, KIND, {...})

**Determinism.** ``torch.manual_seed(cfg.seed)`` fixes the weight initialisation; every random draw of
a step (batch indices, t, ε) comes from the one ``trainer.generator`` (seeded with ``cfg.seed``) whose
state the training state keeps, so a stopped and resumed run ends with the weights of an uninterrupted
one, and ``steps`` may grow to extend a finished run (0→a→b equals 0→b).

**Several processes.** Every process draws the same global batch from the same generator and keeps its
1/N slice (:meth:`Shard.rows`); DDP averages the N slice-mean gradients, which is the global-batch mean
gradient up to float rounding. With one process the slice is the whole batch: the random stream, and so
the weights, are exactly those of a plain single-process loop. Only the main process writes files and
shows the progress bar. Launch::

    accelerate launch --multi_gpu --num_processes 4 -m lib.methods.ddpm --name ... (GPUs, NCCL)
    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 -m lib.methods.ddpm --name ... (CPUs, gloo)

(``accelerate launch --cpu`` starts a single process unless it is given an MPI hostfile.) Batch-norm
layers become ``SyncBatchNorm`` on several GPUs, so their statistics are those of the global batch.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..core.device import device_label, pick_device
from .checkpoints import (CheckpointKind, config_diff, data_digest, export_checkpoint, read_manifest,
                          resume_state, save_atomic, write_manifest)

__all__ = ["NonFiniteLossError", "Shard", "Trainer", "LossFn", "training_time", "TrainingCommand", "find_or_train",
           "find_or_run"]


class NonFiniteLossError(ValueError):
    """A loss became NaN or infinite: training stopped before the optimizer step."""


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes (rank 0 of 1 without a launcher)."""

    rank: int = 0
    world: int = 1

    def rows(self, n: int) -> slice:
        """This process's contiguous rows of a global batch of ``n`` (all of them with one process)."""
        if n % self.world:
            raise ValueError(f"a global batch of {n} cannot be split evenly over {self.world} processes; "
                             f"choose a batch size divisible by {self.world}")
        k = n // self.world
        return slice(self.rank * k, (self.rank + 1) * k)


LossFn = Callable[[Mapping[str, torch.nn.Module], Shard], Mapping[str, torch.Tensor]]


class Trainer:
    """One training run of a method: the accelerator, the device, the seeded generator, the resumable
    state at ``out`` (None: no state file) and the manifests (``command``, ``data_fingerprint``, ``extra``).

    ``data`` are the in-memory training tensors; their digest goes into the state, so resuming on other
    data is refused. ``grow`` names the config fields that may change on resume (they set the step count).
    """

    def __init__(self, cfg, out: str | os.PathLike | None, *, data: Sequence[torch.Tensor],
                 device: str | torch.device | None = None, data_fingerprint: str = "unknown",
                 command: str | None = None, progress: bool = True, desc: str = "train",
                 extra: dict | None = None, grow: tuple[str, ...] = ("steps",)):
        self.accelerator = Accelerator(device_placement=False)
        self.shard = Shard(self.accelerator.process_index, self.accelerator.num_processes)
        self.device = self._pick(device)
        self.cfg, self.out = cfg, (None if out is None else Path(out))
        self.data = data_digest(*data)
        self.data_fingerprint, self.grow, self.desc = data_fingerprint, grow, desc
        self.command = command or " ".join([sys.executable, *sys.argv])
        self.progress = progress and self.accelerator.is_main_process
        self.extra = {**(extra or {}), **({"processes": self.shard.world} if self.shard.world > 1 else {})}
        torch.manual_seed(cfg.seed)          # weight initialisation; every draw of a step uses the generator
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step, self.steps = 0, 0
        self.history: dict[str, list[float]] = {}
        self.step_seconds: list[float] = []   # wall time of each step this process ran (the loss read back syncs it)

    def _pick(self, device) -> torch.device:
        if self.shard.world == 1:
            return pick_device(None if device is None else str(device))
        dev = self.accelerator.device              # one device per process, set by the launcher
        if device not in (None, "", "auto") and torch.device(str(device)).type != dev.type:
            raise ValueError(f"device={device!r}, but the launcher gave this process {dev}; launch with "
                             "`accelerate launch --multi_gpu` for GPUs or ACCELERATE_USE_CPU=1 for CPUs")
        return dev

    @property
    def main(self) -> bool:
        """Whether this is the process that writes files."""
        return self.accelerator.is_main_process

    def manifest_args(self) -> dict:
        """The manifest fields of this run (command, config, seed, data fingerprint)."""
        return dict(command=self.command, config=asdict(self.cfg), seed=self.cfg.seed,
                    data_fingerprint=self.data_fingerprint)

    def fit(self, loss_fn: LossFn, modules: dict[str, torch.nn.Module], param_groups: list[dict], *, steps: int,
            ckpt_every: int | None = None, keep: dict[str, torch.nn.Module] | None = None,
            after_step: Callable[[], None] | None = None, stop_after: int | None = None) -> dict[str, list[float]]:
        """Train ``modules`` with Adam over ``param_groups`` until ``steps`` (resuming the state at ``out``).

        Each step calls ``loss_fn(nets, shard)`` (``nets``: the prepared modules, by name), sums the named
        losses, steps the optimizer, then calls ``after_step`` (e.g. an EMA update of a module in ``keep``:
        saved and restored with the state, not trained). ``stop_after`` ends early (to test resuming).
        Returns the loss history ``{name: [value per step]}`` (averaged over processes)."""
        keep = keep or {}
        opt = torch.optim.Adam(param_groups)
        self.steps = steps
        state = None if self.out is None else resume_state(self.out, self.cfg, self.data, steps=steps,
                                                           grow=self.grow)
        if state is not None:
            for name, m in {**modules, **keep}.items():
                m.load_state_dict(state[name])
            opt.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"])
            self.step, self.history = state["step"], state["losses"]
        if self.shard.world > 1 and self.device.type == "cuda":
            modules = {k: torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for k, m in modules.items()}
        *prepared, opt = self.accelerator.prepare(*modules.values(), opt)
        nets = dict(zip(modules, prepared))
        for m in modules.values():
            m.train()
        end = steps if stop_after is None else min(steps, self.step + stop_after)
        bar = tqdm(total=steps, initial=self.step, desc=self.desc, disable=not self.progress)
        t0 = t_prev = time.perf_counter()
        while self.step < end:
            losses = loss_fn(nets, self.shard)
            names = list(losses)
            values = self.accelerator.gather(torch.stack([losses[k].detach() for k in names])[None])
            values = values.mean(0).tolist()
            if not all(math.isfinite(v) for v in values):
                raise NonFiniteLossError(
                    f"training stopped at step {self.step + 1}: the loss became non-finite "
                    f"({', '.join(f'{k} = {v}' for k, v in zip(names, values))}); no optimizer step was taken"
                    + (f" and {self.out} keeps the last saved state" if self.out is not None else "")
                    + ". Check the training images for NaN/inf (lib.core.checks.check_images) or lower the "
                    "learning rate")
            total = losses[names[0]]
            for k in names[1:]:
                total = total + losses[k]
            opt.zero_grad(set_to_none=True)
            self.accelerator.backward(total)
            opt.step()
            if after_step is not None:
                after_step()
            self.step += 1
            now = time.perf_counter()
            self.step_seconds.append(now - t_prev)
            t_prev = now
            for k, v in zip(names, values):
                self.history.setdefault(k, []).append(v)
            bar.update(1)
            bar.set_postfix({k: f"{sum(v[-50:]) / len(v[-50:]):.4f}" for k, v in self.history.items()})
            if self.out is not None and (self.step % (ckpt_every or steps) == 0 or self.step == end):
                self._save({**modules, **keep}, opt)
                t_prev = time.perf_counter()          # a state save is not a training step
        bar.close()
        for m in modules.values():
            m.eval()
        self.accelerator.wait_for_everyone()
        if self.progress:
            sps = self.seconds_per_step
            print(f"trained to step {self.step}/{steps} in {time.perf_counter() - t0:.1f} s"
                  + (f" ({sps:.3g} s/step)" if sps is not None else "")
                  + (f" -> {self.out}" if self.out is not None else ""))
        return self.history

    def _timing(self) -> dict:
        """The manifest's ``seconds_per_step`` (this process's median, see :attr:`seconds_per_step`) and how many
        steps it is measured over; empty when this process ran fewer than two steps."""
        sps = self.seconds_per_step
        if sps is None:
            return {}
        return {"seconds_per_step": round(sps, 4), "timed_steps": len(self.step_seconds) - 1}

    def _save(self, modules: dict[str, torch.nn.Module], opt) -> None:
        if not self.main:
            return
        save_atomic({"config": asdict(self.cfg), "step": self.step, "losses": self.history,
                     **{k: m.state_dict() for k, m in modules.items()}, "optimizer": opt.state_dict(),
                     "generator": self.generator.get_state(), "data": self.data,
                     "data_fingerprint": self.data_fingerprint}, self.out)
        write_manifest(self.out, **self.manifest_args(),
                       extra={"step": self.step, "final": self.step >= self.steps, **self.extra})

    @property
    def seconds_per_step(self) -> float | None:
        """The median wall time of the steps this process ran after its first (which carries the warm-up, e.g.
        cuDNN's autotuning); None before a second step. A step's time runs to the read-back of its loss, so it also
        holds the previous step's backward pass and update, which run asynchronously on a GPU."""
        return statistics.median(self.step_seconds[1:]) if len(self.step_seconds) > 1 else None

    @property
    def done(self) -> bool:
        """Whether the run reached its ``steps``."""
        return self.step >= self.steps

    def export(self, path: str | os.PathLike | None, kind: CheckpointKind, contents: dict, *, weights: str,
               extra: dict | None = None) -> Path | None:
        """When the run is done, write the export ``path`` of ``kind`` (``contents``: its entries) and its
        manifest (``weights`` describes them, e.g. "EMA (decay 0.999), stored as float16") on the main
        process; None when there is nothing to write."""
        if path is None or not self.done:
            return None
        if self.main:
            export_checkpoint(path, kind, contents, command=self.command, seed=self.cfg.seed,
                              data_fingerprint=self.data_fingerprint,
                              extra={"step": self.step, "final": True, **self.extra, "weights": weights,
                                     "device": device_label(self.device), **self._timing(), **(extra or {})})
        self.accelerator.wait_for_everyone()
        return Path(path)


# ----------------------------------------------------------------------------------------------
# pretrained checkpoints
# ----------------------------------------------------------------------------------------------
def training_time(steps: int, seconds_per_step: Mapping[str, float]) -> str:
    """A rough duration of ``steps`` from measured seconds per step, e.g. "3000 steps, about 30 min on a
    2-core CPU (0.6 s/step)"."""
    def human(s: float) -> str:
        return f"{s / 3600:.1f} h" if s >= 5400 else f"{max(1, round(s / 60))} min"

    times = [f"about {human(steps * s)} {where} ({s:g} s/step)" for where, s in seconds_per_step.items()]
    return f"{steps} steps, " + (", ".join(times) if times else "a GPU job, not timed here")


class TrainingCommand(NamedTuple):
    """How a method trains a profile's checkpoint: the file ``name``, the ``module`` to run, the command as the
    manifest shows it (``shown``, data paths relative to the repository), the ``argv`` that runs it (absolute
    paths), the ``config`` the checkpoint must have, the data ``fingerprint`` and roughly how long it takes."""

    name: str
    module: str
    shown: str
    argv: list[str]
    config: dict
    fingerprint: str
    cost: str


def find_or_train(path: Path, *, retrain: bool, train: Callable[[], object], command: str, cost: str,
                  expected_config: dict | None = None, data_fingerprint: str | None = None,
                  config_defaults: dict | None = None) -> Path:
    """The committed checkpoint ``path``: trained first by ``train()`` when ``retrain``; when it is missing
    an error names the file, the command that trains it and roughly how long that takes (``cost``).
    Warns when its manifest's config (fields it lacks: ``config_defaults``) differs from ``expected_config`` (the
    profile's) or its data
    fingerprint from ``data_fingerprint`` (the data loaded here)."""
    if retrain:
        train()
    elif not path.exists():
        raise FileNotFoundError(f"checkpoint {path} is missing. Train it from the repository root with\n"
                                f"    {command}\n({cost}), or pass retrain=True to train it here")
    manifest = read_manifest(path)
    # a field added to the config after the file was trained counts as its default (``config_defaults``)
    recorded = {**{k: v for k, v in (config_defaults or {}).items() if k not in manifest["config"]},
                **manifest["config"]}
    if expected_config is not None and recorded != expected_config:
        warnings.warn(f"{path.name} was trained with another config than its profile's "
                      f"({'; '.join(config_diff(expected_config, recorded))}; profile → file)",
                      stacklevel=3)
    if data_fingerprint is not None and manifest["data_fingerprint"] != data_fingerprint:
        warnings.warn(f"{path.name} was trained on data with fingerprint {manifest['data_fingerprint'][:12]}…, "
                      f"the data here has {data_fingerprint[:12]}… (another seed, size or dataset)", stacklevel=3)
    return path


def find_or_run(path: Path, tc: TrainingCommand, *, retrain: bool, train: Callable[[], object],
                config_defaults: dict | None = None) -> Path:
    """:func:`find_or_train` for the checkpoint ``path`` that ``tc`` trains: its command, cost, config and data
    fingerprint come from ``tc``; ``train()`` runs it."""
    return find_or_train(path, retrain=retrain, train=train, command=tc.shown, cost=tc.cost,
                         expected_config=tc.config, data_fingerprint=tc.fingerprint, config_defaults=config_defaults)
