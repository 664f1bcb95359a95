"""The thesis' learned anomaly map: training pairs, a short training run, and the validation hold-out."""

import numpy as np
import pytest
import torch

from lib import data as kd
from lib.core.diffusion import Diffusion
from lib.methods.learned_map import LearnedMapConfig, SelfAwareSettings, learned_map, make_pairs, train_learned_map
from lib.data.synth import anomaly_sources


def test_pairs_half_normal_and_known_region_kept():
    d = Diffusion.from_schedule("sigmoid", 1000)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    calls = []

    def stub(x_t, t):
        calls.append(len(x_t))
        return torch.zeros_like(x_t)

    settings = SelfAwareSettings(t=9, n_resample=2, num_steps=3, t_start=299, t_end=319, t_stride=10)
    q_p = torch.full((16, 16), 10.0)          # nothing exceeds it: empty masks, every pixel known
    eps = torch.randn(1, 3, 16, 16, generator=g)
    x_a, x_hat, M = make_pairs(stub, images, d, q_p, eps, settings, anomaly_sources((16, 16)),
                               torch.Generator().manual_seed(1), n=6, batch_size=4, progress=False)
    assert x_a.shape == x_hat.shape == (6, 3, 16, 16) and M.shape == (6, 1, 16, 16)
    assert M[0::2].sum() == 0 and all(M[i].sum() > 0 for i in range(1, 6, 2))
    assert torch.equal(x_hat, x_a)            # an all-known inpainting returns its input exactly
    seg, hist = train_learned_map(x_a, x_hat, M, LearnedMapConfig(epochs=2, batch_size=2), device="cpu", progress=False)
    assert len(hist) == 2 * 3 and np.isfinite(hist).all()
    amap = learned_map(seg, x_a, x_hat)
    assert amap.shape == (6, 16, 16) and float(amap.min()) >= 0 and float(amap.max()) <= 1


def test_split_validation_is_deterministic_and_disjoint():
    root = kd.embedded_benchmark(image_size=64)
    cat = kd.load_category(root, "gravel", image_size=64)
    tr, val = kd.split_validation(cat.train, 0.2)
    assert len(tr) + len(val) == len(cat.train) and len(val) == round(0.2 * len(cat.train))
    assert not set(tr.paths) & set(val.paths)
    assert val.paths == cat.train.paths[len(tr):]
    with pytest.raises(ValueError, match="fraction"):
        kd.split_validation(cat.train, 1.0)
