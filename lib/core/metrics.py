"""The papers' evaluation metrics.

- Anomaly detection and localisation, as DiffusionAD (seed 003) reports them:
  `image_auroc`, `pixel_auroc`, `pro_auc` (MVTec AD per-region overlap), `pixel_ap`.
- The detection report of DIAG (seed 001, §IV-A): `best_f1_report`
  (AP, and precision/recall at the best-F1 threshold).
- Generation quality, DIAG Table III: `fid` with dims 64 or 192 (FID-64 / FID-192),
  built on `inception_features` and `frechet_distance`.
- Speed: `throughput` (images per second of a callable).

Inputs may be numpy arrays or torch tensors of any float dtype. Anomaly maps and
masks are N x H x W or N x 1 x H x W; masks are binary (bool or 0/1). A higher score
means "more anomalous", and a score counts as anomalous at threshold t when score >= t.
"""

import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

__all__ = [
    "image_auroc",
    "pixel_auroc",
    "pro_auc",
    "pixel_ap",
    "best_f1_report",
    "frechet_distance",
    "inception_features",
    "fid",
    "throughput",
    "FIDWeightsMissing",
    "FID_WEIGHTS_FILE",
    "FID_WEIGHTS_URL",
    "FID_WEIGHTS_ENV",
]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE
)
FID_WEIGHTS_ENV = "KIT_FID_WEIGHTS"


# --------------------------------------------------------------------------- inputs


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:  # numpy has no bfloat16
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _scores(x, name):
    x = _to_numpy(x)
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{name} must hold real-valued scores, got dtype {x.dtype}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; replace or drop those scores first.")
    return x


def _binary(x, name):
    x = _to_numpy(x)
    if x.dtype != bool:
        if not ((x == 0) | (x == 1)).all():
            raise ValueError(
                f"{name} must be binary (bool or 0/1); threshold it first, e.g. {name} > 0.5."
            )
        x = x == 1
    return x


def _scores_and_labels(scores, labels):
    scores = _scores(scores, "scores")
    labels = _binary(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores has shape {scores.shape} but labels has shape {labels.shape}; "
            "give one score per label."
        )
    return scores.ravel(), labels.ravel()


def _as_nhw(x, name):
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"{name} must be N x H x W or N x 1 x H x W, got shape {x.shape}.")
    return x


def _maps_and_masks(anomaly_maps, masks):
    maps = _as_nhw(_scores(anomaly_maps, "anomaly_maps"), "anomaly_maps")
    masks = _as_nhw(_binary(masks, "masks"), "masks")
    if maps.shape != masks.shape:
        raise ValueError(
            f"anomaly_maps has shape {maps.shape} but masks has shape {masks.shape}; "
            "resize the maps to the mask resolution first."
        )
    return maps, masks


def _require_both_classes(labels, name):
    if labels.all() or not labels.any():
        kind = "anomalous (1)" if labels.all() else "normal (0)"
        raise ValueError(
            f"{name} are all {kind}; AUROC and AP need at least one normal (0) "
            "and one anomalous (1) sample."
        )


# ----------------------------------------------------------- detection / localisation


def image_auroc(scores, labels):
    """Area under the ROC curve of image-level anomaly scores (DiffusionAD, seed 003).

    scores: one score per image; labels: 1 = anomalous image. Computed by
    scikit-learn's `roc_auc_score` (ties count half).
    """
    scores, labels = _scores_and_labels(scores, labels)
    _require_both_classes(labels, "labels")
    return float(roc_auc_score(labels, scores))


def pixel_auroc(anomaly_maps, masks):
    """Area under the ROC curve over all pixels of all images (DiffusionAD, seed 003)."""
    maps, masks = _maps_and_masks(anomaly_maps, masks)
    _require_both_classes(masks, "masks")
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


def pixel_ap(anomaly_maps, masks):
    """Average precision over all pixels of all images (DiffusionAD, seed 003).

    Step-wise AP = sum_k (R_k - R_{k-1}) P_k, as scikit-learn's
    `average_precision_score` (no trapezoid interpolation).
    """
    maps, masks = _maps_and_masks(anomaly_maps, masks)
    _require_both_classes(masks, "masks")
    return float(average_precision_score(masks.ravel(), maps.ravel()))


def best_f1_report(scores, labels):
    """AP, and precision/recall at the threshold maximising F1 (DIAG, seed 001, §IV-A).

    F1 = 2PR / (P + R) over the points of scikit-learn's `precision_recall_curve`
    (one per distinct score; a sample is predicted anomalous when score >= threshold).
    DIAG's code comment says F2 but the code computes F1, as done here.
    scores/labels may have any (equal) shape, e.g. image scores or flattened pixel maps.

    Returns {"ap", "precision", "recall", "f1", "threshold"} as floats.
    """
    scores, labels = _scores_and_labels(scores, labels)
    _require_both_classes(labels, "labels")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the final (P=1, R=0) has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return {
        "ap": float(average_precision_score(labels, scores)),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "f1": float(f1[best]),
        "threshold": float(thresholds[best]),
    }


def pro_auc(anomaly_maps, masks, fpr_limit=0.3):
    """Normalised area under the per-region-overlap curve up to `fpr_limit` (MVTec AD).

    The localisation metric of MVTec AD, reported by DiffusionAD (seed 003).
    Regions are the 8-connected components of each ground-truth mask. At threshold t
    (pixel anomalous when score >= t):
      PRO(t) = mean over all regions R of all images of |{p in R : score_p >= t}| / |R|,
      FPR(t) = fraction of all normal pixels of all images with score >= t.
    The curve is exact: it has a point for every distinct score (no binning) and starts
    at (FPR 0, PRO 0), the threshold above the maximum score. Pixels with equal scores
    enter together, so a tie between normal and anomalous pixels is one straight
    (diagonal) segment. The curve is integrated with the trapezoid rule from FPR 0 to
    `fpr_limit`, the PRO at `fpr_limit` being linearly interpolated on the segment that
    crosses it (also when that segment is a tie group straddling the limit), and divided
    by `fpr_limit`: a perfect map scores 1.0, a constant map `fpr_limit / 2`.
    """
    maps, masks = _maps_and_masks(anomaly_maps, masks)
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}.")
    if not masks.any():
        raise ValueError("masks has no anomalous pixel; PRO needs at least one defect region.")
    if masks.all():
        raise ValueError("masks has no normal pixel; PRO needs normal pixels for its FPR axis.")

    # Give every anomalous pixel the weight 1 / |its region|: then K * PRO(t) is the
    # total weight of the anomalous pixels scoring >= t (K = number of regions).
    eight_connected = np.ones((3, 3), dtype=int)
    region_sizes, n_regions = [], 0
    for mask in masks:
        regions, k = scipy.ndimage.label(mask, structure=eight_connected)
        region_sizes.append(np.bincount(regions.ravel())[regions[mask]])
        n_regions += k
    anomalous = maps[masks]  # same (C) order as the concatenated sizes
    order = np.argsort(anomalous, kind="stable")
    anomalous = anomalous[order]
    weight = 1.0 / np.concatenate(region_sizes)[order]
    weight_below = np.concatenate(([0.0], np.cumsum(weight)))  # [i]: weight of first i scores

    # The FPR axis only moves at distinct normal scores u_1 > u_2 > ...; x_j is the FPR
    # once all normal pixels >= u_j are in. Only the u_j up to the first x_j >= fpr_limit
    # matter: those are the normal scores >= the ceil(fpr_limit * n)-th largest.
    normal = maps[~masks]
    n_top = min(normal.size, math.ceil(fpr_limit * normal.size))
    cutoff = np.partition(normal, normal.size - n_top)[normal.size - n_top]
    u, counts = np.unique(normal[normal >= cutoff], return_counts=True)
    u, counts = u[::-1], counts[::-1]
    x = np.cumsum(counts) / normal.size
    x_prev = np.concatenate(([0.0], x[:-1]))

    # Segment j runs from (x_{j-1}, PRO just above u_j) to (x_j, PRO at u_j): at u_j the
    # tied normal and anomalous pixels enter together. Vertical steps (anomalous pixels
    # between two normal scores) add no area.
    total = weight_below[-1]
    pro_above = (total - weight_below[np.searchsorted(anomalous, u, side="right")]) / n_regions
    pro_at = (total - weight_below[np.searchsorted(anomalous, u, side="left")]) / n_regions

    # Keep the segments up to the one that crosses fpr_limit, and end that one at the
    # limit, interpolating its PRO linearly.
    end = min(int(np.searchsorted(x, fpr_limit, side="left")), x.size - 1) + 1
    x, x_prev, pro_above, pro_at = x[:end], x_prev[:end], pro_above[:end], pro_at[:end]
    t = (fpr_limit - x_prev[-1]) / (x[-1] - x_prev[-1])
    pro_at[-1] = pro_above[-1] + t * (pro_at[-1] - pro_above[-1])
    x[-1] = fpr_limit
    area = np.sum((x - x_prev) * (pro_above + pro_at) / 2)
    return float(area / fpr_limit)


# ---------------------------------------------------------------------------- FID


def frechet_distance(features_a, features_b):
    """Fréchet distance between Gaussians fitted to two N x D feature sets.

    d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrt(S_a S_b)), with the sample means and
    covariances (np.cov, N - 1), exactly as pytorch-fid's `calculate_frechet_distance`:
    if sqrt(S_a S_b) is not finite, 1e-6 is added to both diagonals; a small imaginary
    part from numerical error is dropped (a large one raises). Written out here because
    pytorch-fid passes the `disp` argument that SciPy >= 1.16 deprecates.
    """
    a = _scores(features_a, "features_a").astype(np.float64)
    b = _scores(features_b, "features_b").astype(np.float64)
    for name, f in (("features_a", a), ("features_b", b)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"{name} must be N x D with N >= 2 samples, got shape {f.shape}.")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"features_a has D={a.shape[1]} but features_b has D={b.shape[1]}; "
            "use the same feature extractor for both."
        )
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))

    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(cov_a.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"sqrt(S_a S_b) has an imaginary component {np.abs(covmean.imag).max():.3g}; "
                "use more samples than feature dimensions."
            )
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


class FIDWeightsMissing(FileNotFoundError):
    """The FID Inception weights file is not on this machine (it is never downloaded)."""


def _fid_weights_file(weights_path):
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


def _fid_inception(dims, weights_path):
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


def _fid_images(images, name):
    """N x 3 x H x W float in [0, 1], or uint8 N x H x W x 3 (divided by 255, as PNG loading)."""
    x = _to_numpy(images)
    if x.dtype == np.uint8:
        if x.ndim != 4 or x.shape[3] != 3:
            raise ValueError(
                f"uint8 {name} must be N x H x W x 3, got shape {x.shape}; "
                "pass N x 3 x H x W images as floats in [0, 1], e.g. x / 255."
            )
        x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    else:
        x = _scores(x, name)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{name} must be N x 3 x H x W float in [0, 1] (or uint8 N x H x W x 3), got "
                f"shape {x.shape}; repeat grey images to 3 channels, e.g. x.repeat(1, 3, 1, 1)."
            )
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"{name} must lie in [0, 1]; map [-1, 1] images with (x + 1) / 2.")
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return x


def _default_device(device):
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def _inception_batches(model, x, device, batch_size):
    device = _default_device(device)
    model = model.to(device)
    out = []
    for batch in x.split(batch_size):
        batch = F.interpolate(
            batch.to(device), size=(299, 299), mode="bilinear", align_corners=False
        )
        features = model(2 * batch - 1)  # pytorch-fid scales [0, 1] to [-1, 1]
        out.append(F.adaptive_avg_pool2d(features, 1).flatten(1).cpu().double().numpy())
    return np.concatenate(out)


def inception_features(images, dims=2048, device=None, batch_size=50, weights_path=None):
    """FID Inception features (N x dims, float64) of images, as pytorch-fid computes them.

    images: N x 3 x H x W float in [0, 1] or uint8 N x H x W x 3; resized to 299 x 299
    (bilinear), the output of the block for `dims` (64, 192, 768, 2048) average-pooled.
    Weights are looked up as in `fid`; raises `FIDWeightsMissing` if absent.
    """
    images = _fid_images(images, "images")
    model = _fid_inception(dims, weights_path)
    return _inception_batches(model, images, device, batch_size)


def fid(images_a, images_b, dims=2048, device=None, batch_size=50, weights_path=None):
    """Fréchet Inception Distance between two image sets (pytorch-fid's network).

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
    model = _fid_inception(dims, weights_path)
    features_a = _inception_batches(model, images_a, device, batch_size)
    features_b = _inception_batches(model, images_b, device, batch_size)
    return frechet_distance(features_a, features_b)


# ---------------------------------------------------------------------------- speed


def _synchronize(device):
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def throughput(fn, n_images, warmup=2, repeats=5, device=None):
    """Images per second of `fn()`, a no-argument callable processing `n_images` images.

    Calls fn `warmup` times untimed, then times `repeats` calls; when `device` is a CUDA
    or MPS device, it is synchronised before starting and before stopping the clock.
    Returns {"seconds": median time per call, "images_per_s": n_images / median,
    "times": every timed call in seconds}.
    """
    if not callable(fn):
        raise ValueError("fn must be a callable taking no arguments, e.g. lambda: model(x).")
    if n_images <= 0:
        raise ValueError(f"n_images must be positive (images per call of fn), got {n_images}.")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}.")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"seconds": seconds, "images_per_s": n_images / seconds, "times": times}
