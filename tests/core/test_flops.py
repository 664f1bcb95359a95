"""lib.core.flops: FLOPs by kind, and an attention count that does not depend on the kernel torch picks."""

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor

from lib.core.flops import FLOP_KINDS, attention_flops, count_flops
from lib.core.nets import unet


def math_attention_only():
    """Force the unfused (math) attention kernel, as torch versions whose CPU attention is not fused run it."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch 2.2
        return torch.backends.cuda.sdp_kernel(enable_flash=False, enable_mem_efficient=False, enable_math=True)
    return sdpa_kernel(SDPBackend.MATH)


def test_convolution_and_linear_against_their_formulas():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1, groups=2),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 5 * 6, 7))
    f = count_flops(net, torch.zeros(2, 3, 5, 6))
    out = 2 * 8 * 5 * 6                                   # output elements of each convolution
    assert f["convolution"] == 2 * out * 3 * 9 + 2 * out * (8 // 2) * 9
    assert f["matmul"] == 2 * 2 * (8 * 5 * 6) * 7
    assert f["attention"] == f["batched_matmul"] == f["other"] == 0
    assert set(f) == {*FLOP_KINDS, "total"} and f["total"] == f["convolution"] + f["matmul"]


def test_attention_flops_formula():
    # Q Kᵀ: 2·B·h·N_q·N_k·d, softmax·V: 2·B·h·N_q·N_k·d_v
    assert attention_flops((2, 4, 16, 8), (2, 4, 9, 8), (2, 4, 9, 5)) == 2 * 2 * 4 * 16 * 9 * (8 + 5)
    with pytest.raises(ValueError, match="attention shapes"):
        attention_flops((2, 4, 16, 8), (2, 4, 9, 7), (2, 4, 9, 5))


def test_attention_count_does_not_depend_on_the_kernel():
    """The fused kernel (counted by our formula), the math kernel and diffusers' classic processor (both
    counted by torch as bmm) give the same number, equal to 4·N²·C per attention layer."""
    torch.manual_seed(0)
    m = unet("small", 32).eval()
    x, t = torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)
    layers = [a for a in m.modules() if isinstance(a, Attention)]
    n = (32 >> 3) ** 2                                     # every attention layer of `small` runs at 4×4
    expected = sum(4 * n * n * a.inner_dim for a in layers)
    assert len(layers) >= 3

    fused = count_flops(m, x, t)
    with math_attention_only():
        unfused = count_flops(m, x, t)
    for a in layers:
        a.set_processor(AttnProcessor())                    # baddbmm + bmm, no scaled_dot_product_attention
    classic = count_flops(m, x, t)
    for f in (fused, unfused, classic):
        assert f["attention"] + f["batched_matmul"] == expected
        assert f["total"] == fused["total"]
    assert classic["attention"] == 0 and classic["batched_matmul"] == expected
