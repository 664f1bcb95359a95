"""Checkpoints: atomic saves, manifests (command, config, seed, data fingerprint, commit, sha256),
verification on load, and the resume check of a training state."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from ..core.paths import REPO

__all__ = ["save_atomic", "sha256_file", "write_manifest", "read_manifest", "verify_checkpoint",
           "open_checkpoint", "resume_state"]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _write_text_atomic(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, _umask_mode())
    os.replace(tmp, path)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_manifest(ckpt: Path, *, command: str, config: dict, seed: int, data_fingerprint: str,
                   extra: dict | None = None) -> Path:
    """Write ``<ckpt>.json``: command, config, seed, data fingerprint, commit, sha256."""
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
    path = ckpt.with_suffix(".json")
    _write_text_atomic(json.dumps(manifest, indent=2, sort_keys=True) + "\n", path)
    return path


def read_manifest(ckpt: str | os.PathLike) -> dict:
    path = Path(ckpt).with_suffix(".json")
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} is missing; a checkpoint without its manifest is "
                                "not trusted — retrain with `python -m lib.train` to write both")
    return json.loads(path.read_text())


def verify_checkpoint(ckpt: str | os.PathLike) -> dict:
    """Check the checkpoint's sha256 against its manifest; return the manifest."""
    manifest = read_manifest(ckpt)
    digest = sha256_file(ckpt)
    if digest != manifest["sha256"]:
        raise ValueError(f"checkpoint {ckpt} has sha256 {digest[:12]}… but its manifest says "
                         f"{manifest['sha256'][:12]}…; the file was changed or is corrupt — "
                         "restore it from git or retrain it")
    return manifest


def resume_state(out: Path, cfg) -> dict | None:
    """The resumable training state saved at ``out`` (None if there is none yet), after checking it
    was trained with the dataclass config ``cfg``: only ``steps`` may differ, and only grow."""
    if not out.exists():
        return None
    state = torch.load(out, map_location="cpu", weights_only=False)
    if {**state["config"], "steps": cfg.steps} != asdict(cfg) or state["step"] > cfg.steps:
        raise ValueError(f"{out} was trained with a different config {state['config']}; "
                         "choose another --name/--out or delete it to start over (only `steps` "
                         "may grow, to extend a run)")
    return state


def open_checkpoint(path: str | os.PathLike, module: str, verify: bool = True) -> dict:
    """Read an exported checkpoint's state dict (CPU, ``weights_only``) after checking that it exists
    (else an error naming the file and the ``python -m <module>`` that trains it) and, with ``verify``,
    that its sha256 matches its manifest."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train it with `python -m {module} --name "
                                f"{path.stem} ...` (the manifest of a sibling checkpoint has the full command) "
                                "or pass retrain=True in the notebook")
    if verify:
        verify_checkpoint(path)
    return torch.load(path, map_location="cpu", weights_only=True)


