"""Shared fixtures of the method tests."""

import pytest
import torch

from lib.core.diffusion import Diffusion, make_betas
from lib.core.nets import unet
from lib.methods import diag


@pytest.fixture(scope="module")
def standin():
    """DIAG's stand-in with random weights (one configured step, never trained): for plumbing tests."""
    torch.manual_seed(0)
    cfg = diag.StandinConfig(steps=1)
    net = unet(cfg.preset, cfg.image_size, in_channels=4, num_class_embeds=len(diag.CLASSES) + 1).eval()
    return diag.Standin(net, Diffusion(make_betas(cfg.schedule, cfg.T)), cfg, None, [], (), None)
