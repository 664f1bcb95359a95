"""Fréchet Inception Distance (FID) with pytorch-fid's network, and the policy for its weights.

FID-64 / FID-192 are DIAG's generation-quality measures (seed 001, Table III); 2048 dims is the
usual FID. The distance itself is :func:`lib.core.metrics.frechet_distance`; this module adds the
FID Inception network (pytorch-fid's, assembled from its parts) and where its weights come from:
the file ``FID_WEIGHTS_FILE`` is read from the ``weights_path`` argument, else from the path in
``$KIT_FID_WEIGHTS`` (``FID_WEIGHTS_ENV``), else from torch hub's checkpoint folder. It is never
downloaded at run time and an FID is never computed with other weights: a missing file raises
:class:`FIDWeightsMissing`, which says where to get it (``FID_WEIGHTS_URL``) and where to put it.

Device: ``device=None`` (or ``"auto"``) runs the network on :func:`lib.core.device.pick_device`'s
choice, cuda → mps → cpu (the features come back to the CPU as float64 either way); pass
``device="cpu"`` for features that do not depend on the accelerator's kernels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_int
from .device import pick_device
from .metrics import ArrayLike, finite_scores, frechet_distance, to_numpy

__all__ = [
    "FID_WEIGHTS_FILE",
    "FID_WEIGHTS_URL",
    "FID_WEIGHTS_ENV",
    "FIDWeightsMissing",
    "inception_features",
    "fid",
]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE
)
FID_WEIGHTS_ENV = "KIT_FID_WEIGHTS"


class FIDWeightsMissing(FileNotFoundError):
    """The FID Inception weights file is not on this machine (it is never downloaded)."""


def _fid_weights_file(weights_path: str | Path | None) -> Path:
    """The weights file: `weights_path`, else $KIT_FID_WEIGHTS, else torch hub's checkpoints."""
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE
    if weights_path is not None:
        path, source = Path(weights_path), "the weights_path argument"
    elif os.environ.get(FID_WEIGHTS_ENV):
        path, source = Path(os.environ[FID_WEIGHTS_ENV]), f"${FID_WEIGHTS_ENV}"
    else:
        path, source = hub_file, "torch hub's checkpoint folder"
    if not path.is_file():
        raise FIDWeightsMissing(
            f"FID Inception weights {FID_WEIGHTS_FILE} not found at {path} (from {source}).\n"
            f"The file is looked for at the weights_path argument if given, else at the path "
            f"in the environment variable {FID_WEIGHTS_ENV} if set, else at {hub_file}.\n"
            f"Download it from {FID_WEIGHTS_URL} on a machine with internet access, then "
            f"pass weights_path=..., set {FID_WEIGHTS_ENV}=/path/to/{FID_WEIGHTS_FILE}, "
            f"or copy it to {hub_file}. FID is never computed with other weights."
        )
    return path


def _fid_inception(dims: int, weights_path: str | Path | None) -> torch.nn.Sequential:
    """pytorch-fid's FID Inception up to the block giving `dims` features, local weights.

    The same network as `pytorch_fid.inception.InceptionV3([block], use_fid_inception=True)`
    (its input resizing and scaling are done in `_inception_batches`), assembled from
    pytorch-fid's own parts because that constructor downloads the weights.
    """
    from pytorch_fid import inception as pf

    block_by_dims = pf.InceptionV3.BLOCK_INDEX_BY_DIM
    if dims not in block_by_dims:
        raise ValueError(f"dims must be one of {sorted(block_by_dims)}, got {dims}.")
    weights_file = _fid_weights_file(weights_path)
    state_dict = torch.load(weights_file, map_location="cpu", weights_only=True)

    # pytorch_fid.inception.fid_inception_v3(), minus its download; built on the meta
    # device (no random initialisation) and given the loaded tensors.
    with torch.device("meta"):
        net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = pf.FIDInceptionE_1(1280)
        net.Mixed_7c = pf.FIDInceptionE_2(2048)
    net.load_state_dict(state_dict, assign=True)

    # InceptionV3's blocks 0-3, ending in 64, 192, 768 and 2048 channels; the final
    # average pooling is applied to every block's output in `_inception_batches`.
    blocks = [
        [net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, torch.nn.MaxPool2d(3, stride=2)],
        [net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, torch.nn.MaxPool2d(3, stride=2)],
        [net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a,
         net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e],
        [net.Mixed_7a, net.Mixed_7b, net.Mixed_7c],
    ]
    block = block_by_dims[dims]
    return torch.nn.Sequential(*[m for b in blocks[: block + 1] for m in b]).eval()


def _fid_images(images: ArrayLike, name: str) -> torch.Tensor:
    """N x 3 x H x W float in [0, 1], or uint8 N x H x W x 3 (divided by 255, as PNG loading)."""
    x = to_numpy(images)
    if x.dtype == np.uint8:
        if x.ndim != 4 or x.shape[3] != 3:
            raise ValueError(
                f"uint8 {name} must be N x H x W x 3, got shape {x.shape}; "
                "pass N x 3 x H x W images as floats in [0, 1], e.g. x / 255."
            )
        x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    else:
        x = finite_scores(name, x)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{name} must be N x 3 x H x W float in [0, 1] (or uint8 N x H x W x 3), got "
                f"shape {x.shape}; repeat grey images to 3 channels, e.g. x.repeat(1, 3, 1, 1)."
            )
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"{name} must lie in [0, 1]; map [-1, 1] images with (x + 1) / 2.")
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return x


@torch.no_grad()
def _inception_batches(model: torch.nn.Module, x: torch.Tensor, device: str | torch.device | None,
                       batch_size: int) -> np.ndarray:
    device = pick_device(device)
    model = model.to(device)
    out = []
    for batch in x.split(batch_size):
        batch = F.interpolate(
            batch.to(device), size=(299, 299), mode="bilinear", align_corners=False
        )
        features = model(2 * batch - 1)  # pytorch-fid scales [0, 1] to [-1, 1]
        out.append(F.adaptive_avg_pool2d(features, 1).flatten(1).cpu().double().numpy())
    return np.concatenate(out)


def inception_features(images: ArrayLike, dims: int = 2048, device: str | torch.device | None = None,
                       batch_size: int = 50, weights_path: str | Path | None = None) -> np.ndarray:
    """FID Inception features (N x dims, float64): pytorch-fid's InceptionV3 block for ``dims``, average-pooled.

    images: N x 3 x H x W float in [0, 1] or uint8 N x H x W x 3; resized to 299 x 299
    (bilinear), the output of the block for `dims` (64, 192, 768, 2048) average-pooled.
    Weights are looked up as in `fid`; raises `FIDWeightsMissing` if absent. ``device`` as
    in the module docstring (None: cuda → mps → cpu).
    """
    images = _fid_images(images, "images")
    batch_size = check_int("batch_size", batch_size, 1)
    model = _fid_inception(dims, weights_path)
    return _inception_batches(model, images, device, batch_size)


def fid(images_a: ArrayLike, images_b: ArrayLike, dims: int = 2048, device: str | torch.device | None = None,
        batch_size: int = 50, weights_path: str | Path | None = None) -> float:
    """FID = frechet_distance(inception_features(images_a), inception_features(images_b)) with pytorch-fid's network.

    dims 64 / 192 give the FID-64 / FID-192 of DIAG Table III (seed 001); 2048 is the
    usual FID. Images as in `inception_features`. The weights file
    pt_inception-2015-12-05-6726825d.pth is read from `weights_path`, else from
    $KIT_FID_WEIGHTS, else from torch hub's checkpoint folder; it is never downloaded,
    and a `FIDWeightsMissing` error says where to get it.
    """
    images_a, images_b = _fid_images(images_a, "images_a"), _fid_images(images_b, "images_b")
    for name, images in (("images_a", images_a), ("images_b", images_b)):
        if len(images) < 2:
            raise ValueError(f"{name} needs at least 2 images for a covariance, got {len(images)}.")
    batch_size = check_int("batch_size", batch_size, 1)
    model = _fid_inception(dims, weights_path)
    features_a = _inception_batches(model, images_a, device, batch_size)
    features_b = _inception_batches(model, images_b, device, batch_size)
    return frechet_distance(features_a, features_b)
