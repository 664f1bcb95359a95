"""The benchmark's pipeline computes the same function as lib.methods.diffusionad (its speed is not tested here)."""

import torch

from lib.tools.bench import make_pipeline
from lib.core.diffusion import Diffusion, eps_fn, make_betas
from lib.methods.diffusionad import anomaly_map, image_score, norm_guided
from lib.core.nets import segmentation_net, unet


def test_pipeline_equals_library_path():
    torch.manual_seed(0)
    u, s = unet("small", 32).eval(), segmentation_net("tiny").eval()
    d = Diffusion(make_betas("linear", 1000))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    n_s, n_b = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    with torch.no_grad():
        ref = norm_guided(eps_fn(u), x, d, 200, 400, n_s, n_b, w=1.0)
        ref_map = anomaly_map(s, x, ref.x0_g)
        for one_call in (False, True):
            amap, score = make_pipeline(u, s, d, one_call=one_call)(x, n_s, n_b)
            assert (amap - ref_map).abs().max() < 1e-5
            assert (score - image_score(ref_map)).abs().max() < 1e-5
        # bf16 autocast (CPU) changes the numbers only slightly
        amap16, _ = make_pipeline(u, s, d, dtype=torch.bfloat16)(x, n_s, n_b)
        assert (amap16 - ref_map).abs().max() < 0.1
