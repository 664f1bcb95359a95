"""lib.models.SegmentationUNet and lib.core.losses (DiffusionAD's segmentation sub-network)."""

import math

import pytest
import torch
import torch.nn.functional as F

from lib.core.losses import focal_loss, smooth_l1_map_loss
from lib.core.nets import SEG_PRESETS, SegmentationUNet, count_parameters, segmentation_net


@pytest.mark.parametrize("shape", [(64, 64), (184, 64), (37, 50)])
def test_tiny_output_shape(shape):
    torch.manual_seed(0)
    net = segmentation_net("tiny").eval()
    with torch.no_grad():
        y = net(torch.randn(2, 6, *shape))
    assert y.shape == (2, 1, *shape) and torch.isfinite(y).all()


def test_param_counts_and_presets():
    assert SEG_PRESETS["paper"] == (64, 128, 256, 512, 512, 512)
    assert 1e5 < count_parameters(segmentation_net("tiny")) < 5e5
    # the authors' Seg_subnetwork.py (EncoderSegmentation + DecoderSegmentation) has 28,373,569
    assert count_parameters(segmentation_net("paper")) == 28_373_569
    assert count_parameters(segmentation_net("tiny", head_kernel=1)) < count_parameters(segmentation_net("tiny"))
    with pytest.raises(ValueError, match="preset"):
        segmentation_net("huge")


def test_returns_logits_and_trains():
    torch.manual_seed(0)
    net = SegmentationUNet(6, (8, 16, 16), 1)
    with torch.no_grad():
        net.head.bias.fill_(5.0)
        assert net.eval()(torch.randn(1, 6, 32, 32)).min() > 1     # not squashed into [0, 1]
    net.train()
    x = torch.randn(2, 6, 24, 20)
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="min"):
        net(torch.randn(1, 6, 3, 32))                              # 3 levels need >= 4 px


def focal_by_hand(logit, y, alpha, gamma):
    p = 1 / (1 + math.exp(-logit))
    pt = p if y == 1 else 1 - p
    at = alpha if y == 1 else 1 - alpha
    return -at * (1 - pt) ** gamma * math.log(pt)


def test_focal_loss_matches_hand_computation():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0, 0.0], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    for alpha, gamma in [(0.5, 4.0), (0.25, 2.0), (0.8, 1.0)]:
        got = focal_loss(logits, target, alpha, gamma, reduction="none")
        want = torch.tensor([focal_by_hand(z, y, alpha, gamma) for z, y in zip(logits.tolist(), target.tolist())],
                            dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(focal_loss(logits, target, alpha, gamma), want.mean())
        torch.testing.assert_close(focal_loss(logits, target, alpha, gamma, reduction="sum"), want.sum())


def test_focal_gamma_zero_is_alpha_weighted_bce():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    w = torch.where(target == 1, 0.3, 0.7)
    torch.testing.assert_close(focal_loss(logits, target, alpha=0.3, gamma=0.0, reduction="none"), w * bce)
    torch.testing.assert_close(focal_loss(logits, target, alpha=0.5, gamma=0.0), 0.5 * bce.mean())


def test_focal_confident_correct_is_small_and_stable():
    y = torch.tensor([1.0])
    losses = [focal_loss(torch.tensor([z]), y).item() for z in (-2.0, 0.0, 2.0, 6.0)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 1e-8
    # gamma down-weights easy pixels relative to BCE
    assert focal_loss(torch.tensor([3.0]), y) < 0.5 * F.binary_cross_entropy_with_logits(torch.tensor([3.0]), y)
    big = focal_loss(torch.tensor([-200.0, 200.0]), torch.tensor([1.0, 0.0]), reduction="none")
    torch.testing.assert_close(big, torch.tensor([100.0, 100.0]))   # 0.5 * 1 * 200, no inf/nan
    assert focal_loss(torch.tensor([200.0]), y).item() == 0.0


def test_smooth_l1_map_loss():
    p = torch.tensor([0.1, 0.9, 0.5, 0.0])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(smooth_l1_map_loss(p, y), (0.5 * (p - y) ** 2).mean())
    torch.testing.assert_close(smooth_l1_map_loss(p, y), F.smooth_l1_loss(p, y))
    with pytest.raises(ValueError, match="sigmoid"):
        smooth_l1_map_loss(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]))
