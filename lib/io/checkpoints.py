"""Checkpoints: atomic saves, manifests, sha256 verification, float16 export, ``weights_only`` loading,
the record of what kind of model a file holds, and the resume check of a training state.

Two kinds of file, each written atomically (temporary file + ``os.replace``) with a manifest
``<name>.json`` beside it (command, config, seed, data fingerprint, git commit, torch, sha256):

* an **export** (``data/checkpoints/<name>.pt``): the weights a notebook loads, e.g. a DDPM's
  ``{"config", "step", "losses", "ema"}``; what kind of model it holds is a :class:`CheckpointKind`
  that the method module registers (:func:`register_kind`);
* a **training state** (``build/train/<name>.pt``): weights, optimizer, the generator state (a
  uint8 tensor), the step, the loss history and the data digest — only tensors, numbers and
  strings, so it is read with ``torch.load(weights_only=True)`` and a crafted file cannot run code.

Every error names the file, what it holds and what was expected (:class:`CheckpointError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import subprocess
import tempfile
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import torch

from ..core.paths import REPO

__all__ = ["CheckpointError", "CheckpointKind", "register_kind", "identify_kind", "checkpoint_path",
           "save_atomic", "sha256_file", "data_digest", "half_precision", "write_manifest", "read_manifest",
           "verify_checkpoint", "load_file", "open_checkpoint", "config_from", "config_diff", "resume_state",
           "export_checkpoint"]

MANIFEST_KEYS = ("checkpoint", "sha256", "command", "config", "seed", "data_fingerprint", "commit")


class CheckpointError(ValueError):
    """A checkpoint, training state or manifest that is unreadable, altered, or not what was expected."""


# ----------------------------------------------------------------------------------------------
# what a checkpoint holds
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointKind:
    """What kind of model an exported checkpoint holds, and how to read it.

    ``weights`` are the entries that hold state dicts, ``fields`` the other entries; an export holds
    exactly these (plus ``"kind"`` in files written since it was recorded). ``nested`` entries are
    folded into the manifest's ``config`` (the learned map's ``settings``)."""

    name: str                           # "ddpm"
    what: str                           # "a DDPM (ε-prediction UNet, EMA weights)"
    loader: str                         # "lib.methods.ddpm.load_ddpm"
    config: type                        # the method's config dataclass
    weights: tuple[str, ...]            # ("ema",)
    fields: tuple[str, ...] = ("config", "step", "losses")
    nested: tuple[str, ...] = ()

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.fields + self.weights)

    @property
    def module(self) -> str:
        """The module whose ``python -m`` trains it."""
        return self.loader.rsplit(".", 1)[0]

    def manifest_config(self, state: Mapping) -> dict:
        """The ``config`` a manifest records for ``state``: its config with the ``nested`` entries folded in."""
        return {**state["config"], **{k: state[k] for k in self.nested}}


KINDS: dict[str, CheckpointKind] = {}


def register_kind(kind: CheckpointKind) -> CheckpointKind:
    """Record ``kind`` so that loaders can recognise (and name) files of that kind."""
    KINDS[kind.name] = kind
    return kind


def identify_kind(state: Mapping) -> CheckpointKind | None:
    """The registered kind of an exported checkpoint's contents (its ``"kind"`` entry, else its exact keys)."""
    if isinstance(state.get("kind"), str):
        return KINDS.get(state["kind"])
    keys = frozenset(state)
    return next((k for k in KINDS.values() if k.keys == keys), None)


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def checkpoint_path(directory: str | os.PathLike, name: str, suffix: str = ".pt") -> Path:
    """``directory/<name><suffix>`` after checking that ``name`` is a plain file name (no path
    separator, no ``..``), so a checkpoint can never be written outside ``directory``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"checkpoint name {name!r} is not a plain file name: use letters, digits and _ . + - "
                         "only (no '/', '\\' or '..'), e.g. ddpm_tiny_gravel64; the folder is chosen by "
                         "--export-dir / --state-dir")
    return Path(directory) / f"{name}{suffix}"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_digest(*tensors: torch.Tensor) -> str:
    """sha256 over the shapes, dtypes and values of in-memory training data (recorded in a training
    state, so that resuming on other data is refused)."""
    h = hashlib.sha256()
    for x in tensors:
        x = x.detach().cpu().contiguous()
        h.update(f"{tuple(x.shape)}{x.dtype}".encode())
        h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _replace_atomic(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` (never a half-written file)."""
    return _replace_atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def half_precision(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with every floating tensor stored as float16 (half the bytes; loaders cast back)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def load_file(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name the file: a missing
    file, a truncated or non-torch file, or one holding objects other than tensors, numbers and strings
    (refused unread: such a pickle could run code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{what} {path} holds Python objects other than tensors, numbers and strings; "
                              "it was refused unread (weights_only=True) because such a file can run code. "
                              "Delete it and retrain, or restore it from git") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{what} {path} ({path.stat().st_size} bytes) is not a readable torch file — "
                              f"truncated or corrupt ({type(e).__name__}: {str(e)[:120]}); "
                              "restore it from git or retrain it") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path} holds a {type(obj).__name__}, expected a dict of named entries")
    return obj


# ----------------------------------------------------------------------------------------------
# manifests
# ----------------------------------------------------------------------------------------------
def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_manifest(ckpt: str | os.PathLike, *, command: str, config: dict, seed: int, data_fingerprint: str,
                   extra: dict | None = None) -> Path:
    """Write ``<ckpt>.json``: command, config, seed, data fingerprint, commit, torch version, sha256."""
    ckpt = Path(ckpt)
    manifest = {
        "checkpoint": ckpt.name,
        "sha256": sha256_file(ckpt),
        "bytes": ckpt.stat().st_size,
        "command": command,
        "config": config,
        "seed": seed,
        "data_fingerprint": data_fingerprint,
        "commit": _git_commit(),
        "torch": torch.__version__,
        **(extra or {}),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    return _replace_atomic(ckpt.with_suffix(".json"), write)


def read_manifest(ckpt: str | os.PathLike) -> dict:
    """The manifest ``<ckpt>.json`` after checking it is a JSON object with every key a manifest has."""
    path = Path(ckpt).with_suffix(".json")
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} is missing; a checkpoint without its manifest is not trusted — "
                                "retrain it (the method's `python -m lib.methods.<method>` writes both)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"manifest {path} is not valid JSON ({e}); restore it from git or retrain "
                              f"{Path(ckpt).name}") from e
    if not isinstance(manifest, dict):
        raise CheckpointError(f"manifest {path} holds a JSON {type(manifest).__name__}, expected an object "
                              f"with the keys {list(MANIFEST_KEYS)}")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise CheckpointError(f"manifest {path} lacks {missing} (a manifest has {list(MANIFEST_KEYS)}); "
                              "restore it from git or retrain the checkpoint")
    return manifest


def verify_checkpoint(ckpt: str | os.PathLike) -> dict:
    """Check the checkpoint's sha256 against its manifest; return the manifest."""
    manifest = read_manifest(ckpt)
    digest = sha256_file(ckpt)
    if digest != manifest["sha256"]:
        raise CheckpointError(f"checkpoint {ckpt} has sha256 {digest[:12]}… but its manifest says "
                              f"{str(manifest['sha256'])[:12]}…; the file was changed or is corrupt — "
                              "restore it from git or retrain it")
    return manifest


# ----------------------------------------------------------------------------------------------
# reading an export
# ----------------------------------------------------------------------------------------------
def config_from(cls: type, config: Mapping, where: str):
    """``cls(**config)`` with errors naming ``where``: unknown or missing fields, out-of-range values."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise CheckpointError(f"{where}: config has fields {unknown} that {cls.__name__} does not have "
                              f"(expected a subset of {sorted(names)})")
    try:
        return cls(**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: config is not a valid {cls.__name__}: {e}") from e


def open_checkpoint(path: str | os.PathLike, kind: CheckpointKind, verify: bool = True) -> tuple[dict, Any, dict | None]:
    """Read an exported checkpoint of ``kind``: ``(contents, config, manifest)``.

    Checks that it exists (else the error names the ``python -m`` that trains it), with ``verify`` that
    its sha256 and config match its manifest, that it holds ``kind`` (else it names what it holds), and
    that its config is a valid ``kind.config``. ``manifest`` is None when ``verify`` is off."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train it with `python -m {kind.module} --name "
                                f"{path.stem} ...` (the manifest of a sibling checkpoint has the full command) "
                                "or pass retrain=True to the method's pretrained()")
    manifest = verify_checkpoint(path) if verify else None
    state = load_file(path)
    found = identify_kind(state)
    if found is None or found.name != kind.name:
        held = (found.what if found is not None else f"a {state['kind']!r} checkpoint" if "kind" in state
                else f"the entries {sorted(state)}")
        hint = f"; load it with {found.loader}" if found is not None else ""
        raise CheckpointError(f"{path} holds {held}, not {kind.what} (expected the entries {sorted(kind.keys)})"
                              f"{hint}")
    cfg = config_from(kind.config, state["config"], str(path))
    if manifest is not None and manifest["config"] != kind.manifest_config(state):
        diff = config_diff(manifest["config"], kind.manifest_config(state))
        raise CheckpointError(f"{path}: its config differs from its manifest's ({'; '.join(diff)}; manifest → "
                              "file); the two were not written together — restore both from git or retrain")
    return state, cfg, manifest


def export_checkpoint(path: str | os.PathLike, kind: CheckpointKind, contents: dict, *, command: str, seed: int,
                      data_fingerprint: str, extra: dict | None = None) -> Path:
    """Write an export of ``kind`` (``contents`` holds its entries) atomically, then its manifest."""
    missing = kind.keys - set(contents)
    if missing:
        raise ValueError(f"an export of {kind.name} needs the entries {sorted(kind.keys)}; missing {sorted(missing)}")
    state = {"kind": kind.name, **contents}
    save_atomic(state, path)
    write_manifest(path, command=command, config=kind.manifest_config(state), seed=seed,
                   data_fingerprint=data_fingerprint, extra={"kind": kind.name, **(extra or {})})
    return Path(path)


# ----------------------------------------------------------------------------------------------
# resuming a training state
# ----------------------------------------------------------------------------------------------
def config_diff(old: Mapping, new: Mapping) -> list[str]:
    """The fields that differ between two config dicts, as ``"name: old → new"``."""
    def show(d, k):
        return repr(d[k]) if k in d else "(absent)"

    return [f"{k}: {show(old, k)} → {show(new, k)}" for k in sorted(set(old) | set(new), key=str)
            if k not in old or k not in new or old[k] != new[k]]


STATE_KEYS = ("config", "step", "losses", "generator", "data")


def resume_state(out: str | os.PathLike, cfg, data: str, *, steps: int, grow: tuple[str, ...] = ("steps",)) -> dict | None:
    """The resumable training state saved at ``out`` (None if there is none yet), read with
    ``weights_only=True`` after checking that it was trained with the dataclass config ``cfg``
    (only the fields in ``grow`` may differ, and only so that ``steps`` ≥ the steps already done) on
    the data whose :func:`data_digest` is ``data``."""
    out = Path(out)
    if not out.exists():
        return None
    state = load_file(out, "training state")
    fix = f"choose another --name (or out path), or delete {out} to start over"
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"training state {out} lacks {missing} (a state has {list(STATE_KEYS)}; states "
                              f"written before data digests were recorded cannot be resumed); {fix}")
    new = asdict(cfg)
    diff = config_diff({k: v for k, v in state["config"].items() if k not in grow},
                       {k: v for k, v in new.items() if k not in grow})
    if diff:
        raise CheckpointError(f"training state {out} was trained with a different config: {'; '.join(diff)} "
                              f"(saved → now; only {', '.join(grow)} may change, to extend a run); {fix}")
    if state["step"] > steps:
        raise CheckpointError(f"training state {out} has already done {state['step']} steps, more than the "
                              f"{steps} asked for now ({'; '.join(config_diff(state['config'], new))}); "
                              f"steps may only grow; {fix}")
    if state["data"] != data:
        raise CheckpointError(f"training state {out} was trained on other data (digest {state['data'][:12]}…, "
                              f"now {data[:12]}…; dataset fingerprint {state.get('data_fingerprint', '?')[:12]}…): "
                              f"another category, size or dataset; {fix}")
    return state
