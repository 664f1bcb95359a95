"""Model presets on diffusers' `UNet2DModel` (no hand-written UNet).

Presets
-------
``tiny``
    Trains on a laptop CPU in minutes at 64×64: four levels (16, 32, 64, 128
    channels), one residual block per level, self-attention only at the lowest
    resolution (8×8). About 2.7 M parameters.
``paper``
    DiffusionAD's reconstruction UNet (seed 003; settings from the authors' code,
    see ``shared/reference/paper-settings.md``): 256×256 input, base 128 channels,
    multipliers (1, 1, 2, 2, 4, 4), 2 residual blocks per level, attention at
    resolutions 32, 16 and 8, BigGAN-style (residual) up/down-sampling, scale-shift
    time conditioning, time embedding 4 × base, dropout 0. The authors' UNet has about 120 M
    parameters; diffusers' layout of the same settings has 138 M (counted with
    ``count_parameters``; block layouts differ in detail, e.g. the per-head width).
    Difference from the authors' guided-diffusion UNet: diffusers fixes the
    *per-head width* (64 here), so the attention layers have 4 heads at 256 channels
    and 8 heads at 512 channels instead of 4 everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers import UNet2DModel

__all__ = ["UNET_PRESETS", "UNetConfig", "unet", "count_parameters", "pick_device"]


@dataclass(frozen=True)
class UNetConfig:
    """Arguments for :class:`diffusers.UNet2DModel`, kept as plain data for manifests."""

    sample_size: int
    block_out_channels: tuple[int, ...]
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    layers_per_block: int
    attention_head_dim: int
    in_channels: int = 3
    out_channels: int = 3
    norm_num_groups: int = 32
    dropout: float = 0.0
    resnet_time_scale_shift: str = "default"
    downsample_type: str = "conv"
    upsample_type: str = "conv"

    def kwargs(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


UNET_PRESETS: dict[str, UNetConfig] = {
    "tiny": UNetConfig(
        sample_size=64,
        block_out_channels=(16, 32, 64, 128),
        down_block_types=("DownBlock2D",) * 3 + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * 3,
        layers_per_block=1,
        attention_head_dim=32,
        norm_num_groups=8,
    ),
    "paper": UNetConfig(
        sample_size=256,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        # resolutions 256, 128, 64, 32, 16, 8: attention at 32, 16, 8
        down_block_types=("ResnetDownsampleBlock2D",) * 3 + ("AttnDownBlock2D",) * 3,
        up_block_types=("AttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",) * 3,
        layers_per_block=2,
        attention_head_dim=64,
        resnet_time_scale_shift="scale_shift",
        downsample_type="resnet",
        upsample_type="resnet",
    ),
}


def unet(preset: str = "tiny", image_size: int | None = None, in_channels: int = 3,
         out_channels: int = 3) -> UNet2DModel:
    """Build a `UNet2DModel` from a preset (``"tiny"`` or ``"paper"``).

    ``image_size`` overrides the preset's ``sample_size`` (it must be divisible by
    2^(levels−1)); the UNet itself is fully convolutional, this only sets its config.
    """
    if preset not in UNET_PRESETS:
        raise ValueError(f"preset={preset!r} is unknown; choose one of {sorted(UNET_PRESETS)}")
    cfg = UNET_PRESETS[preset]
    size = image_size or cfg.sample_size
    factor = 2 ** (len(cfg.block_out_channels) - 1)
    if size % factor:
        raise ValueError(f"image_size={size} must be divisible by {factor} for preset {preset!r}")
    kwargs = cfg.kwargs()
    kwargs.update(sample_size=size, in_channels=in_channels, out_channels=out_channels)
    return UNet2DModel(**kwargs)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pick_device(prefer: str | None = None) -> torch.device:
    """``prefer`` if given (``"cpu"``, ``"cuda"``, ``"mps"``), else cuda → mps → cpu."""
    if prefer not in (None, "", "auto"):
        dev = torch.device(prefer)
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
