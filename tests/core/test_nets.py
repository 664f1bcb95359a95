from dataclasses import replace

import pytest
import torch

from diffusers.models.attention_processor import Attention

from lib.core.device import pick_device
from lib.core.flops import count_flops
from lib.core.nets import UNET_PRESETS, count_parameters, set_attention_heads, unet


def test_tiny_preset_shapes():
    m = unet("tiny", 32)
    x = torch.randn(2, 3, 32, 32)
    assert m(x, torch.tensor([0, 999])).sample.shape == x.shape
    assert 1e6 < count_parameters(m) < 5e6


def test_paper_preset_matches_paper_settings():
    cfg = UNET_PRESETS["paper"]
    assert cfg.sample_size == 256 and cfg.block_out_channels == (128, 128, 256, 256, 512, 512)
    assert cfg.layers_per_block == 2 and cfg.downsample_type == "resnet"
    # attention at resolutions 32, 16, 8 of a 256 input: the last three levels
    attn = [256 // 2 ** i for i, b in enumerate(cfg.down_block_types) if b.startswith("Attn")]
    assert attn == [32, 16, 8]
    m = unet("paper")
    # the authors' UNet (seed 003 §V-A, their code), counted block by block independently of diffusers
    assert count_parameters(m) == authors_unet_parameters() == 131_654_403
    heads = {(a.inner_dim, a.heads) for a in m.modules() if isinstance(a, Attention)}
    assert heads == {(256, 4), (512, 4)}          # "the number of heads to 4" at every width


def authors_unet_parameters(base=128, mults=(1, 1, 2, 2, 4, 4), blocks=2, attn_ds=(8, 16, 32), cin=3):
    """Parameters of DiffusionAD's UNet walked from its definition: ResBlocks (GroupNorm, 3×3 convs,
    time embedding *added*: one Linear(4·base → C)), attention (GroupNorm, qkv, out), BigGAN up/down
    ResBlocks, decoder with num_res_blocks + 1 blocks per level taking the skip concatenation."""
    E = 4 * base

    def res(i, o):
        return 2 * i + 9 * i * o + o + E * o + o + 2 * o + 9 * o * o + o + (i * o + o if i != o else 0)

    def attn(c):
        return 2 * c + 3 * c * c + 3 * c + c * c + c

    n = base * E + E + E * E + E + cin * base * 9 + base       # time MLP, input conv
    ch, chans, ds = base, [base], 1
    for lvl, m in enumerate(mults):
        for _ in range(blocks):
            n += res(ch, base * m) + (attn(base * m) if ds in attn_ds else 0)
            ch = base * m
            chans.append(ch)
        if lvl != len(mults) - 1:
            n += res(ch, ch)
            ds *= 2
            chans.append(ch)
    n += 2 * res(ch, ch) + attn(ch)                              # middle
    for lvl in reversed(range(len(mults))):
        for j in range(blocks + 1):
            o = base * mults[lvl]
            n += res(ch + chans.pop(), o) + (attn(o) if ds in attn_ds else 0)
            ch = o
            if lvl and j == blocks:
                n += res(ch, ch)
                ds //= 2
    return n + 2 * ch + ch * cin * 9 + cin                       # output norm and conv


def authors_unet_flops(size, base=128, mults=(1, 1, 2, 2, 4, 4), blocks=2, attn_levels=(3, 4, 5), cin=3,
                       time_outputs=1):
    """Multiply-adds × 2 of one forward of the same UNet at size², walked from its definition, as
    (layers, attention products): the layers are the 3×3 / 1×1 convolutions at the resolution they run
    at (BigGAN down-blocks convolve after pooling, up-blocks after upsampling), the time-embedding
    Linears (E → time_outputs·C per ResBlock: 1 for the authors' additive embedding, 2 for a
    scale-shift norm) and attention's four projections (8·N·C²); the products are attention's two
    N×N products Q Kᵀ and softmax·V (4·N²·C)."""
    E = 4 * base

    def res(i, o, r):
        return 2 * 9 * r * r * (i * o + o * o) + (2 * i * o * r * r if i != o else 0) + 2 * E * time_outputs * o

    def attn(c, r):
        return 8 * r * r * c * c

    def products(c, r):
        return 4 * r ** 4 * c

    f = 2 * base * E + 2 * E * E + 2 * 9 * cin * base * size * size
    p = 0
    ch, chans = base, [base]
    for lvl, m in enumerate(mults):
        r = size >> lvl
        for _ in range(blocks):
            if lvl in attn_levels:
                f, p = f + attn(base * m, r), p + products(base * m, r)
            f += res(ch, base * m, r)
            ch = base * m
            chans.append(ch)
        if lvl != len(mults) - 1:
            f += res(ch, ch, r // 2)
            chans.append(ch)
    r = size >> (len(mults) - 1)
    f, p = f + 2 * res(ch, ch, r) + attn(ch, r), p + products(ch, r)
    for lvl in reversed(range(len(mults))):
        r = size >> lvl
        for j in range(blocks + 1):
            o = base * mults[lvl]
            if lvl in attn_levels:
                f, p = f + attn(o, r), p + products(o, r)
            f += res(ch + chans.pop(), o, r)
            ch = o
            if lvl and j == blocks:
                f += res(ch, ch, 2 * r)
    return f + 2 * 9 * ch * cin * size * size, p


def paper_unet_flops_64():
    """lib's count (lib.core.flops.count_flops) of one forward of the `paper` preset at 64²."""
    return count_flops(unet("paper", 64).eval(), torch.zeros(1, 3, 64, 64), torch.zeros(1, dtype=torch.long))


def test_paper_unet_flops_match_the_authors_layout():
    """lib.core.flops.count_flops equals the walk above (at 64² to stay cheap; at 256² the walk gives
    0.5632 TFLOP per forward), on every torch the package allows (torch>=2.2).

    The torch-version issue: torch's FlopCounterMode alone counts attention differently between versions.
    On torch 2.14.1 (CPU) F.scaled_dot_product_attention runs aten._scaled_dot_product_flash_attention_for_cpu,
    which FlopCounterMode has no formula for, so attention's N×N products counted 0 and the total came out
    23,789,568 FLOPs short (34,830,811,136 instead of 34,854,600,704); where attention runs unfused the
    products are counted as bmm. So the layers (convolutions and linear layers, whose counts are the same on
    every version) are compared with the walk on their own, and attention's products separately: count_flops
    gives every fused attention kernel the formula of lib.core.flops.attention_flops, and an unfused
    attention's bmm counts the same (tests/core/test_flops.py checks both kernels give one number).
    """
    f = paper_unet_flops_64()
    layers, products = authors_unet_flops(64)
    assert f["convolution"] + f["matmul"] == layers
    assert f["attention"] + f["batched_matmul"] == products == 23_789_568
    assert f["other"] == 0 and f["total"] == layers + products
    assert sum(authors_unet_flops(256)) == 563_174_703_104


def test_flop_walk_tells_the_scale_shift_layout_apart(monkeypatch):
    """The old layout (time embedding → scale and shift of the norm: Linear(E, 2C) per ResBlock) counts
    13 MFLOP more at 64²: the comparison above would fail on it, and the walk with two outputs matches it."""
    monkeypatch.setitem(UNET_PRESETS, "paper", replace(UNET_PRESETS["paper"], resnet_time_scale_shift="scale_shift"))
    f = paper_unet_flops_64()
    layers, _ = authors_unet_flops(64)
    scale_shift_layers, _ = authors_unet_flops(64, time_outputs=2)
    assert f["convolution"] + f["matmul"] == scale_shift_layers
    assert scale_shift_layers - layers == 13_238_272


def test_set_attention_heads_is_multi_head_attention():
    """4 heads of width C/4 (softmax(QKᵀ/√(C/4))V per head), checked against torch's MultiheadAttention."""
    torch.manual_seed(0)
    m = unet("small", 32)
    set_attention_heads(m, 4)
    attn = next(a for a in m.modules() if isinstance(a, Attention))
    C = attn.inner_dim
    x = torch.randn(2, C, 4, 4)
    mha = torch.nn.MultiheadAttention(C, 4, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([attn.to_q.weight, attn.to_k.weight, attn.to_v.weight]))
        mha.in_proj_bias.copy_(torch.cat([attn.to_q.bias, attn.to_k.bias, attn.to_v.bias]))
        mha.out_proj.weight.copy_(attn.to_out[0].weight)
        mha.out_proj.bias.copy_(attn.to_out[0].bias)
        h = attn.group_norm(x.flatten(2)).transpose(1, 2)
        want = x + mha(h, h, h, need_weights=False)[0].transpose(1, 2).reshape(x.shape)
        got = attn(x)
    assert (got - want).abs().max() < 1e-5
    with pytest.raises(ValueError, match="heads=5"):
        set_attention_heads(m, 5)


def test_errors():
    with pytest.raises(ValueError, match="preset"):
        unet("huge")
    with pytest.raises(ValueError, match="divisible"):
        unet("tiny", 36)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")
    assert pick_device("cpu").type == "cpu"
