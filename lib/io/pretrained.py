"""Large pretrained pipelines (diffusers) from a hub id or a local folder, with errors that say how to get them,
and the offline pieces that tiny randomly initialised pipelines need (a CLIP tokenizer built in code)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ..core.checks import check_choice
from ..core.device import pick_device

__all__ = ["WeightsError", "load_pipeline", "tiny_clip_tokenizer", "CLIP_VIT_L", "OPENCLIP_VIT_BIGG"]

#: ``CLIPTextConfig`` arguments of the published text encoders (random-weight pipelines of the real architecture);
#: the token ids match :func:`tiny_clip_tokenizer`
CLIP_VIT_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                  vocab_size=49408, hidden_act="quick_gelu", projection_dim=768, bos_token_id=0, eos_token_id=1,
                  pad_token_id=1)                        # SD 1.5's encoder and SDXL's first
OPENCLIP_VIT_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                         vocab_size=49408, hidden_act="gelu", projection_dim=1280, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1)                 # SDXL's second


class WeightsError(FileNotFoundError):
    """Pretrained weights are missing or incomplete; the message names the folder and how to fetch them."""


def load_pipeline(cls, source: str | os.PathLike, *, parts: Sequence[str], what: str, hub_id: str,
                  device: str | torch.device | None = None, dtype: str = "float16", local_files_only: bool = False,
                  **kwargs):
    """``cls.from_pretrained(source)`` (a hub id or a local folder) in ``dtype`` on ``device``, progress bars off. A
    local folder that is missing or lacks ``model_index.json`` or one of ``parts`` raises :class:`WeightsError`
    naming the folder, what is missing and the ``huggingface-cli download`` command for ``hub_id``; ``kwargs`` go
    to ``from_pretrained`` (e.g. ``safety_checker=None``)."""
    check_choice("dtype", dtype, ("float16", "bfloat16", "float32"))
    fetch = (f"fetch them with `huggingface-cli download {hub_id} --local-dir <folder>` on a machine with "
             "internet access, or pass the hub id")
    path = Path(source)
    looks_local = path.is_absolute() or str(source).startswith((".", "~")) or path.exists()
    if looks_local:
        path = path.expanduser()
        if not path.is_dir():
            raise WeightsError(f"{what} weights folder {path} does not exist; {fetch}")
        missing = [p for p in ("model_index.json", *parts) if not (path / p).exists()]
        if missing:
            raise WeightsError(f"{what} weights folder {path} is incomplete: {', '.join(missing)} missing; {fetch}")
    kwargs["torch_dtype"] = getattr(torch, dtype)
    if dtype == "float16" and not looks_local:
        kwargs["variant"] = "fp16"
    try:
        pipe = cls.from_pretrained(str(path if looks_local else source), local_files_only=local_files_only, **kwargs)
    except OSError as e:
        raise WeightsError(f"could not load {what} weights from {source!r} ({e}); {fetch}") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(pick_device(None if device is None else str(device)))


def tiny_clip_tokenizer():
    """A CLIP BPE tokenizer built offline: printable ASCII characters as the vocabulary, no merges."""
    from transformers import CLIPTokenizer

    chars = [chr(i) for i in range(33, 127)]
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars])}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77, bos_token="<|startoftext|>",
                         eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>")
