import pytest
import torch

from diffusers.models.attention_processor import Attention

from lib.core.device import pick_device
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


def authors_unet_flops(size, base=128, mults=(1, 1, 2, 2, 4, 4), blocks=2, attn_levels=(3, 4, 5), cin=3):
    """Multiply-adds × 2 of one forward of the same UNet at size², walked from its definition:
    3×3 / 1×1 convolutions at the resolution they run at (BigGAN down-blocks convolve after
    pooling, up-blocks after upsampling), the time-embedding Linears, attention's four
    projections (8·N·C²) and its two N×N products (4·N²·C)."""
    E = 4 * base

    def res(i, o, r):
        return 2 * 9 * r * r * (i * o + o * o) + (2 * i * o * r * r if i != o else 0) + 2 * E * o

    def attn(c, r):
        return 8 * r * r * c * c + 4 * r ** 4 * c

    f = 2 * base * E + 2 * E * E + 2 * 9 * cin * base * size * size
    ch, chans = base, [base]
    for lvl, m in enumerate(mults):
        r = size >> lvl
        for _ in range(blocks):
            f += res(ch, base * m, r) + (attn(base * m, r) if lvl in attn_levels else 0)
            ch = base * m
            chans.append(ch)
        if lvl != len(mults) - 1:
            f += res(ch, ch, r // 2)
            chans.append(ch)
    r = size >> (len(mults) - 1)
    f += 2 * res(ch, ch, r) + attn(ch, r)
    for lvl in reversed(range(len(mults))):
        r = size >> lvl
        for j in range(blocks + 1):
            o = base * mults[lvl]
            f += res(ch + chans.pop(), o, r) + (attn(o, r) if lvl in attn_levels else 0)
            ch = o
            if lvl and j == blocks:
                f += res(ch, ch, 2 * r)
    return f + 2 * 9 * ch * cin * size * size


def test_paper_unet_flops_match_the_authors_layout():
    """lib.tools.bench's FLOP count (torch's FlopCounterMode) equals the walk above (at 64² to stay cheap;
    at 256² both give 0.5632 TFLOP per forward)."""
    from lib.tools.bench import flops_per_image
    from lib.core.nets import segmentation_net

    f = flops_per_image(unet("paper", 64).eval(), segmentation_net("tiny").eval(), 64, torch.device("cpu"))
    assert f["unet_forward"] == authors_unet_flops(64)
    assert authors_unet_flops(256) == 563_174_703_104
    assert f["image"] == 2 * f["unet_forward"] + f["seg_forward"] and f["seg_forward"] > 0


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
