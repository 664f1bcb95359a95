"""The one device picker and the one device synchronisation of the kit."""

from __future__ import annotations

import torch

__all__ = ["pick_device", "synchronize", "device_label"]


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """``prefer`` if given (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``), else cuda → mps → cpu (``None``/``"auto"``)."""
    if isinstance(prefer, torch.device):
        prefer = str(prefer)
    if prefer not in (None, "", "auto"):
        try:
            dev = torch.device(prefer)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device={prefer!r} is not a device; use 'auto', 'cpu', 'cuda' or 'mps'") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={prefer!r} was asked for but CUDA is not available here; "
                             "use device='auto' or 'cpu'")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device={prefer!r} was asked for but MPS is not available here; "
                             "use device='auto' or 'cpu'")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def synchronize(device: str | torch.device | None) -> None:
    """Wait for queued kernels on ``device`` (CUDA, MPS); a no-op on the CPU or for ``None``."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def device_label(device: str | torch.device) -> str:
    """Where a computation ran, for manifests and tables: e.g. "cpu: AMD EPYC 7B13, 1 of 2 cores' threads
    (torch 2.14.1)" or "cuda: NVIDIA H200 (torch 2.11.0+cu130)"."""
    import os
    import platform

    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    elif dev.type == "cpu":
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
        except OSError:
            pass
        name += f", {torch.get_num_threads()} thread(s) of {os.cpu_count()} cores"
    else:
        name = dev.type
    return f"{dev.type}: {name} (torch {torch.__version__})"
