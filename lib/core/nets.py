"""Model presets on diffusers' `UNet2DModel` (no hand-written UNet).

Presets
-------
``tiny``
    Trains on a laptop CPU in minutes at 64×64: four levels (16, 32, 64, 128
    channels), one residual block per level, self-attention only at the lowest
    resolution (8×8). About 2.7 M parameters.
``small``
    The quick-profile models of notebooks 03 and 04 (one per category, so they must be small
    in the repository): four levels (32, 48, 64, 64 channels), one residual block per level,
    attention at the lowest resolution. About 1.4 M parameters (2.7 MB stored as float16).
``lean``
    The version-3 quick-profile models (nine categories × three models must stay small in the
    repository and run on a 2-core CPU): ``small`` made narrower at the two highest resolutions
    (16, 32 instead of 32, 48 channels) — four levels (16, 32, 64, 64), one residual block per level,
    attention at the lowest resolution. About 1.1 M parameters (2.2 MB stored as float16); at 64² a
    forward and a training step take about half of ``small``'s time on one CPU thread (forward of a
    batch of 16: 0.51 s vs 1.0 s).
``paper``
    DiffusionAD's reconstruction UNet (seed 003 §V-A "Implementation Details": base channel 128,
    attention resolutions 32, 16, 8, 4 heads; the rest from the authors' code, see
    ``shared/reference/paper-settings.md``): 256×256 input, multipliers (1, 1, 2, 2, 4, 4),
    2 residual blocks per level, BigGAN-style (residual) up/down-sampling, time embedding
    4 × base *added* to the features (the authors' ResBlock has no scale-shift norm), sinusoidal
    embedding laid out [sin, cos], dropout 0. Built on diffusers' `UNet2DModel`; diffusers fixes the
    per-head width, so :func:`unet` sets every attention layer to 4 heads afterwards
    (:func:`set_attention_heads`). 131.7 M parameters (``count_parameters``);
    ``paper-settings.md``'s "about 120 M" is a rounded estimate — this layout has the same
    blocks and the same widths as the authors' module.

Segmentation sub-network (``SEG_PRESETS``, :class:`SegmentationUNet`)
----------------------------------------------------------------------
DiffusionAD's discriminative head (seed 003; the authors' ``Seg_subnetwork.py``),
a plain PyTorch U-Net on the 6-channel (image, reconstruction) pair. ``tiny``:
widths (16, 32, 64, 64), about 0.2 M parameters; ``paper``: (64, 128, 256, 512,
512, 512), the authors' layout (28.4 M parameters, the same count as theirs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch import nn

__all__ = ["UNET_PRESETS", "UNetConfig", "unet", "count_parameters", "ClassConditioned", "class_index",
           "SEG_PRESETS", "SegmentationUNet", "segmentation_net", "set_attention_heads"]


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
    flip_sin_to_cos: bool = True
    num_heads: int | None = None   # heads of every attention layer (None: width // attention_head_dim)

    def kwargs(self) -> dict:
        """Keyword arguments of `UNet2DModel` (``num_heads`` is applied after construction)."""
        d = asdict(self)
        d.pop("num_heads")
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
    "small": UNetConfig(
        sample_size=64,
        block_out_channels=(32, 48, 64, 64),
        down_block_types=("DownBlock2D",) * 3 + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * 3,
        layers_per_block=1,
        attention_head_dim=32,
        norm_num_groups=8,
    ),
    "lean": UNetConfig(
        sample_size=64,
        block_out_channels=(16, 32, 64, 64),
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
        attention_head_dim=64,            # replaced by num_heads=4 below
        resnet_time_scale_shift="default",
        downsample_type="resnet",
        upsample_type="resnet",
        flip_sin_to_cos=False,
        num_heads=4,
    ),
}


def unet(preset: str = "tiny", image_size: int | None = None, in_channels: int = 3,
         out_channels: int = 3, num_class_embeds: int | None = None) -> UNet2DModel:
    """Build a `UNet2DModel` from a preset (``"tiny"`` or ``"paper"``).

    ``image_size`` overrides the preset's ``sample_size`` (it must be divisible by
    2^(levels−1)); the UNet itself is fully convolutional, this only sets its config.
    ``num_class_embeds``: a class-conditional UNet (diffusers adds the class embedding to the time embedding).
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
    if num_class_embeds is not None:
        kwargs.update(num_class_embeds=num_class_embeds)
    model = UNet2DModel(**kwargs)
    if cfg.num_heads is not None:
        set_attention_heads(model, cfg.num_heads)
    return model


def class_index(classes: str, name: str, what: str = "model") -> int:
    """The index of class ``name`` in the comma-separated ``classes`` of a shared class-conditional model
    (``ValueError`` naming the classes it knows otherwise)."""
    names = [c for c in classes.split(",") if c]
    if name not in names:
        raise ValueError(f"category={name!r} is not one of the classes of this shared {what} ({', '.join(names)}); "
                         "pass one of them, or train a model of your own category (see the method's --classes)")
    return names.index(name)


class ClassConditioned(nn.Module):
    """A class-conditional `UNet2DModel` seen as the unconditional UNet of one class c:
    ``forward(x_t, t)`` is ε_θ(x_t, t, c) (diffusers adds the class embedding to the time embedding).

    One shared model of several categories serves each of them through the same interface as a model of
    its own; ``config`` and the parameters are the shared model's."""

    def __init__(self, model: UNet2DModel, label: int):
        super().__init__()
        if getattr(model.config, "num_class_embeds", None) is None:
            raise ValueError("ClassConditioned needs a class-conditional UNet2DModel (num_class_embeds set)")
        if not 0 <= int(label) < model.config.num_class_embeds:
            raise ValueError(f"label={label} is outside the model's {model.config.num_class_embeds} classes")
        self.model, self.label = model, int(label)

    @property
    def config(self):
        return self.model.config

    def forward(self, sample: torch.Tensor, timestep, *args, **kwargs):
        """ε_θ(x_t, t, c) for every image of the batch (diffusers' output: ``.sample``)."""
        c = torch.full((sample.shape[0],), self.label, dtype=torch.long, device=sample.device)
        return self.model(sample, timestep, *args, class_labels=c, **kwargs)


def set_attention_heads(model: torch.nn.Module, heads: int) -> torch.nn.Module:
    """Give every diffusers `Attention` layer of ``model`` ``heads`` heads, in place.

    Multi-head attention softmax(Q_h K_hᵀ / √d_h) V_h over h = 1…heads with d_h = width / heads
    (guided-diffusion's ``num_heads``): the projections keep their weights, only the split of
    the width into heads and the 1/√d_h scale change."""
    from diffusers.models.attention_processor import Attention

    for m in model.modules():
        if isinstance(m, Attention):
            if m.inner_dim % heads:
                raise ValueError(f"heads={heads} does not divide the attention width {m.inner_dim}")
            m.heads = m.sliceable_head_dim = heads
            m.scale = (m.inner_dim // heads) ** -0.5 if m.scale_qk else 1.0
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------
# DiffusionAD's segmentation sub-network
# ----------------------------------------------------------------------------------

SEG_PRESETS: dict[str, tuple[int, ...]] = {
    "tiny": (16, 32, 64, 64),
    "paper": (64, 128, 256, 512, 512, 512),
}


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(*_conv_bn_relu(c_in, c_out), *_conv_bn_relu(c_out, c_out))


class SegmentationUNet(nn.Module):
    """DiffusionAD's segmentation sub-network (seed 003 §IV; ``paper-settings.md``).

    Input: the channel concatenation of the image and its reconstruction
    (``in_channels=6``), any H x W with min(H, W) >= 2^(levels−1) (sizes not
    divisible by 2^(levels−1) are fine: max-pooling floors, and each decoder stage
    upsamples bilinearly to its skip's exact size).

    Encoder: one (conv3x3-BN-ReLU)x2 block per entry of ``widths``, 2x2 max-pool
    between levels. Decoder, from the bottom up, per level i: bilinear upsampling
    (align_corners=True) to the skip's size, conv3x3-BN-ReLU to width
    ``widths[max(i−1, 0)]``, concatenation with the skip, (conv3x3-BN-ReLU)x2 -- the
    channel layout of the authors' ``DecoderSegmentation`` (for the paper widths
    512, 256, 128, 64, 64 out of the decoder). Head: one conv of ``head_kernel``
    (the authors: 3x3; 1 gives a 1x1 head).

    ``forward`` returns **logits** (B, out_channels, H, W), not probabilities: apply
    ``torch.sigmoid`` for the anomaly map. The authors end with a sigmoid and compute
    the focal loss on probabilities; the losses in :mod:`lib.losses` take logits
    (focal, via BCE-with-logits, numerically stable) or ``sigmoid(logits)``
    (smooth L1).
    """

    def __init__(self, in_channels: int = 6, widths=(64, 128, 256, 512, 512, 512),
                 out_channels: int = 1, head_kernel: int = 3):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths needs at least two positive entries, got {widths}")
        if head_kernel % 2 != 1:
            raise ValueError(f"head_kernel must be odd, got {head_kernel}")
        self.widths = widths
        self.encoder = nn.ModuleList(
            _double_conv(in_channels if i == 0 else widths[i - 1], w) for i, w in enumerate(widths))
        self.pool = nn.MaxPool2d(2)
        self.up, self.fuse = nn.ModuleList(), nn.ModuleList()
        c = widths[-1]
        for i in reversed(range(len(widths) - 1)):
            d = widths[max(i - 1, 0)]
            self.up.append(nn.Sequential(*_conv_bn_relu(c, d)))
            self.fuse.append(_double_conv(d + widths[i], d))
            c = d
        self.head = nn.Conv2d(c, out_channels, head_kernel, padding=head_kernel // 2)

    @property
    def min_size(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"input must be B x C x H x W with min(H, W) >= {self.min_size} for "
                             f"{len(self.widths)} levels, got {tuple(x.shape)}")
        skips = []
        h = x
        for i, block in enumerate(self.encoder):
            h = block(self.pool(h) if i else h)
            skips.append(h)
        h = skips.pop()
        for up, fuse in zip(self.up, self.fuse):
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            h = fuse(torch.cat([up(h), skip], dim=1))
        return self.head(h)


def segmentation_net(preset: str = "tiny", in_channels: int = 6, out_channels: int = 1,
                     head_kernel: int = 3) -> SegmentationUNet:
    """Build a :class:`SegmentationUNet` from ``SEG_PRESETS`` (``"tiny"`` or ``"paper"``)."""
    if preset not in SEG_PRESETS:
        raise ValueError(f"preset={preset!r} is unknown; choose one of {sorted(SEG_PRESETS)}")
    return SegmentationUNet(in_channels, SEG_PRESETS[preset], out_channels, head_kernel)
