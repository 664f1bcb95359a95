"""The image classifiers of notebook 05: DIAG's binary defect classifier (seed 001 §III-C, eq. 8) and the
multi-class defect classifier of the img2img report (seed 004), both torchvision ResNets trained by the kit's loop.

DIAG: torchvision ResNet-50 with ImageNet weights, the fully connected layer replaced by one logit, BCE with logits
(eq. 8), Adam lr 1e-4, batch 32, input 704×256 (H×W) with ImageNet normalisation, 50 epochs (the code defaults to
30; ``shared/reference/paper-settings.md``); AP on the logits and precision/recall at the best-F1 threshold
(:func:`lib.core.metrics.best_f1_report`). No ImageNet weights can be downloaded here, so the quick profile trains a
ResNet-10 at half width (torchvision's ``ResNet`` with one ``BasicBlock`` per stage, stage widths 32-64-128-256) from
scratch at 92×32 (about an eighth of 704×256 per side), with
lr 1e-3 (1e-4 is a fine-tuning rate); ``weights=`` takes a local ResNet-50 state dict for the paper profile.
The report used YOLOv5's classifier (``yolov5l-cls``); the kit uses the same ResNet for both tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import BasicBlock, ResNet, conv1x1

from ..core.checks import check_choice, check_float, check_int
from ..core.metrics import best_f1_report
from ..io.training import Trainer

__all__ = ["ClassifierConfig", "PROFILES", "build_classifier", "train_classifier", "predict", "binary_report"]

_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class ClassifierConfig:
    """A ResNet classifier: ``arch``, input ``height``×``width``, ``num_classes`` (1: binary, one logit + BCE)."""

    arch: str = "resnet10"
    width_factor: float = 1.0      # ResNet-10 only: stage widths 64·f, 128·f, 256·f, 512·f (torchvision's: f = 1)
    height: int = 92
    width: int = 32
    num_classes: int = 1
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    weights: str | None = None     # a local torchvision state dict (e.g. ImageNet ResNet-50); fc is replaced

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, ("resnet10", "resnet18", "resnet50"))
        for name in ("height", "width", "num_classes", "epochs", "batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("width_factor", self.width_factor, 0.0, 4.0, lo_open=True)
        if self.arch != "resnet10" and self.width_factor != 1.0:
            raise ValueError(f"width_factor={self.width_factor} applies to arch='resnet10' only; torchvision's "
                             f"{self.arch} has fixed widths (set width_factor=1.0)")


PROFILES = {
    "quick": ClassifierConfig(width_factor=0.5),       # half width: 3× faster on a CPU, AP as good on the strips
    "paper": ClassifierConfig(arch="resnet50", height=704, width=256, epochs=50, lr=1e-4),
}


def build_classifier(cfg: ClassifierConfig) -> torch.nn.Module:
    """A torchvision ResNet with ``cfg.num_classes`` outputs (weights from ``cfg.weights`` when given, fc new)."""
    if cfg.arch == "resnet10":
        net = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=cfg.num_classes)
        if cfg.width_factor != 1.0:
            net = _narrow(net, [max(1, round(w * cfg.width_factor)) for w in (64, 128, 256, 512)], cfg.num_classes)
    else:
        net = getattr(torchvision.models, cfg.arch)(weights=None)
        if cfg.weights is not None:
            path = Path(cfg.weights)
            if not path.is_file():
                raise FileNotFoundError(f"classifier weights {path} do not exist; pass a torchvision {cfg.arch} state "
                                        "dict (e.g. ResNet50_Weights.IMAGENET1K_V2 saved on a machine with internet) "
                                        "or weights=None to train from scratch")
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.fc = torch.nn.Linear(net.fc.in_features, cfg.num_classes)
    return net


def _narrow(net: ResNet, widths: list[int], num_classes: int) -> ResNet:
    """``net`` with its four stages rebuilt from torchvision's ``BasicBlock`` at ``widths`` (one block each, stride
    1, 2, 2, 2 with a 1×1 projection where the shape changes) and a new fc, initialised as torchvision does."""
    inplanes, layers = 64, []
    for i, w in enumerate(widths):
        stride = 1 if i == 0 else 2
        down = (torch.nn.Sequential(conv1x1(inplanes, w, stride), torch.nn.BatchNorm2d(w))
                if stride != 1 or inplanes != w else None)
        layers.append(torch.nn.Sequential(BasicBlock(inplanes, w, stride, down)))
        inplanes = w
    net.layer1, net.layer2, net.layer3, net.layer4 = layers
    net.fc = torch.nn.Linear(inplanes, num_classes)
    for m in [*net.layer1.modules(), *net.layer2.modules(), *net.layer3.modules(), *net.layer4.modules()]:
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight), torch.nn.init.zeros_(m.bias)
    return net


def _inputs(images: np.ndarray, cfg: ClassifierConfig) -> torch.Tensor:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 N×H×W×3, got {images.dtype} {images.shape}")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    x = F.interpolate(x, size=(cfg.height, cfg.width), mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(_MEAN).view(1, 3, 1, 1)) / torch.tensor(_STD).view(1, 3, 1, 1)


def train_classifier(images: np.ndarray, labels: np.ndarray, cfg: ClassifierConfig, *, progress: bool = False,
                     device: str | torch.device | None = "cpu") -> torch.nn.Module:
    """Train on uint8 ``images`` with integer ``labels`` (binary: 0/1 with BCE, eq. 8; else cross-entropy) for
    ``cfg.epochs`` × ⌈N / batch⌉ random batches with horizontal/vertical flips. Deterministic for a seed."""
    labels = np.asarray(labels).astype(np.int64)
    if len(labels) != len(images) or not len(labels):
        raise ValueError(f"{len(images)} images and {len(labels)} labels: give one label per image")
    hi = 1 if cfg.num_classes == 1 else cfg.num_classes - 1
    if labels.min() < 0 or labels.max() > hi:
        raise ValueError(f"labels must lie in 0..{hi} for num_classes={cfg.num_classes}, got {labels.min()}.."
                         f"{labels.max()}")
    x_all, y_all = _inputs(images, cfg), torch.from_numpy(labels)
    trainer = Trainer(cfg, None, data=(x_all, y_all), device=device, progress=progress, desc="train classifier")
    net = build_classifier(cfg).to(trainer.device)
    gen, dev, B = trainer.generator, trainer.device, cfg.batch_size

    def loss(nets, shard):
        idx = torch.randint(0, len(x_all), (B,), generator=gen)
        x, y = x_all[idx], y_all[idx]
        flips = torch.rand(B, 2, generator=gen) < 0.5
        x = torch.where(flips[:, 0, None, None, None], x.flip(-1), x)
        x = torch.where(flips[:, 1, None, None, None], x.flip(-2), x)
        rows = shard.rows(B)
        out = nets["model"](x[rows].to(dev))
        y = y[rows].to(dev)
        if cfg.num_classes == 1:
            return {"loss": F.binary_cross_entropy_with_logits(out[:, 0], y.float())}
        return {"loss": F.cross_entropy(out, y)}

    steps = cfg.epochs * -(-len(x_all) // B)
    trainer.fit(loss, {"model": net}, [{"params": net.parameters(), "lr": cfg.lr}], steps=steps)
    return net.eval()


@torch.no_grad()
def predict(net: torch.nn.Module, images: np.ndarray, cfg: ClassifierConfig, batch_size: int = 128) -> np.ndarray:
    """The logits (N, or N×C for a multi-class net) of uint8 ``images``."""
    net.eval()
    dev = next(net.parameters()).device
    x = _inputs(images, cfg)
    out = torch.cat([net(x[s:s + batch_size].to(dev)).cpu() for s in range(0, len(x), batch_size)])
    return out[:, 0].numpy() if cfg.num_classes == 1 else out.numpy()


def binary_report(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """DIAG's metrics: AP on the logits, precision and recall at the best-F1 threshold (seed 001 §IV-A)."""
    return best_f1_report(logits, labels)
