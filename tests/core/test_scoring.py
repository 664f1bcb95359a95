"""lib.core.scoring: the anomaly maps (|x̂ − x|, the thesis' multi-scale map, the segmentation map) and
the image score with its named reduction (thesis: max; DiffusionAD's authors: mean of the top 50)."""

import pytest
import torch

from lib.core.nets import segmentation_net
from lib.core.scoring import image_score, multiscale_error_map, reconstruction_error, segmentation_map


def maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item()


def images(seed, shape):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------ image score
def test_image_score_max_and_top_k_mean():
    amap = torch.zeros(2, 10, 10)
    amap[0].view(-1)[:60] = torch.linspace(0, 1, 60)
    top = torch.linspace(0, 1, 60)[-50:].mean()
    s = image_score(amap, reduction="topk", k=50)
    assert torch.allclose(s[0], top) and s[1] == 0
    assert torch.allclose(image_score(amap, reduction="topk", k=1)[0], torch.tensor(1.0))
    assert torch.equal(image_score(amap, reduction="max"), torch.tensor([1.0, 0.0]))
    assert torch.equal(image_score(amap, reduction="topk", k=1), image_score(amap, reduction="max"))
    # fewer pixels than k: the mean of all of them
    assert torch.allclose(image_score(amap, reduction="topk", k=1000), amap.flatten(1).mean(1))


def test_image_score_checks_its_arguments():
    amap = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1, got 0"):
        image_score(amap, reduction="topk", k=0)          # used to be the mean of nothing: NaN
    with pytest.raises(ValueError, match=r"k must be an integer >= 1, got 2.5"):
        image_score(amap, reduction="topk", k=2.5)
    with pytest.raises(ValueError, match=r"reduction='mean' is not one of \('max', 'topk'\)"):
        image_score(amap, reduction="mean")
    with pytest.raises(TypeError):
        image_score(amap)                                 # the reduction is always named
    with pytest.raises(ValueError, match=r"anomaly_map must be a \(B, H, W\) tensor"):
        image_score(amap[0], reduction="max")
    with pytest.raises(ValueError, match=r"anomaly_map must be a \(B, H, W\) tensor with B >= 1"):
        image_score(amap[:0], reduction="max")


# ------------------------------------------------------------------------------ maps
def test_reconstruction_error_and_segmentation_map():
    x, x_hat = images(0, (2, 3, 16, 12)), images(1, (2, 3, 16, 12))
    err = reconstruction_error(x, x_hat)
    assert err.shape == (2, 16, 12) and torch.allclose(err, (x_hat - x).abs().mean(1))
    torch.manual_seed(0)
    seg = segmentation_net("tiny").eval()
    m = segmentation_map(seg, x, x_hat)
    with torch.no_grad():
        want = torch.sigmoid(seg(torch.cat([x, x_hat], 1)))[:, 0]
    assert m.shape == (2, 16, 12) and torch.equal(m, want) and not m.requires_grad
    assert float(m.min()) >= 0 and float(m.max()) <= 1


@pytest.mark.parametrize("fn", [reconstruction_error, multiscale_error_map,
                                lambda x, x_hat: segmentation_map(segmentation_net("tiny").eval(), x, x_hat)])
def test_maps_refuse_bad_pairs(fn):
    x = images(0, (2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"x_hat must have the shape of x, \(2, 3, 16, 16\), got \(2, 3, 8, 8\)"):
        fn(x, x[..., :8, :8])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x holds 1 NaN"):
        fn(bad, x)
    with pytest.raises(ValueError, match="x_hat holds 1 NaN"):
        fn(x, bad)
    with pytest.raises(ValueError, match="empty batch"):
        fn(x[:0], x[:0])


def test_multiscale_map_zero_for_identical_images():
    x = images(0, (2, 3, 32, 24))
    amap = multiscale_error_map(x, x.clone(), filter_size=5)
    assert amap.shape == (2, 32, 24) and amap.abs().max().item() == 0
    assert torch.equal(image_score(amap, reduction="max"), torch.zeros(2))


@pytest.mark.parametrize("pixel", [(13, 9), (20, 5), (3, 17)])
def test_multiscale_map_peaks_at_a_single_changed_pixel(pixel):
    x = images(0, (1, 3, 32, 24))
    x_hat = x.clone()
    x_hat[0, :, pixel[0], pixel[1]] += 0.5
    flat = multiscale_error_map(x, x_hat, filter_size=1)[0]
    assert divmod(flat.argmax().item(), 24) == pixel
    s = 3
    smooth = multiscale_error_map(x, x_hat, filter_size=s)[0]
    r, c = divmod(smooth.argmax().item(), 24)
    assert abs(r - pixel[0]) <= s // 2 and abs(c - pixel[1]) <= s // 2
    assert image_score(smooth[None], reduction="max").item() == smooth.max().item()


@pytest.mark.parametrize("s", [3, 5])
def test_mean_filter_is_s_by_s(s):
    x = torch.zeros(1, 3, 20, 16)
    x_hat = x.clone()
    x_hat[0, :, 10, 7] = 0.9
    amap = multiscale_error_map(x, x_hat, scales=(1,), filter_size=s)[0]
    want = torch.zeros(20, 16)
    want[10 - s // 2:10 + s // 2 + 1, 7 - s // 2:7 + s // 2 + 1] = 0.9 / s**2
    assert maxdiff(amap, want) <= 1e-7
    x_hat[0, :, 0, 0] = 0.6  # at the border only the in-image pixels are averaged
    amap = multiscale_error_map(x, x_hat, scales=(1,), filter_size=s)[0]
    assert amap[0, 0].item() == pytest.approx(0.6 / (s // 2 + 1) ** 2)
    assert torch.equal(multiscale_error_map(x, x_hat, scales=(1,), filter_size=1)[0],
                       reconstruction_error(x, x_hat)[0])


@pytest.mark.parametrize("kw, msg", [(dict(filter_size=4), r"filter_size must be an odd int >= 1, got 4"),
                                     (dict(filter_size=0), r"filter_size .*got 0"),
                                     (dict(filter_size=3.0), r"filter_size .*got 3.0"),
                                     (dict(scales=()), r"scales must be a non-empty"),
                                     (dict(scales=(1, 0)), r"scales .*\(0, 1\]"),
                                     (dict(scales=(2,)), r"scales .*\(0, 1\]")])
def test_multiscale_map_checks_filter_and_scales(kw, msg):
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match=msg):
        multiscale_error_map(x, x, **kw)


def test_multiscale_map_downsamples_images_before_the_error():
    """At scale 1/2 a ±d checkerboard averages out in each 2×2 block: no error at that scale."""
    x = torch.zeros(1, 3, 8, 8)
    board = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2 - 1.0
    amap = multiscale_error_map(x, x + 0.1 * board, scales=(0.5,), filter_size=1)
    assert amap.abs().max().item() <= 1e-7
    assert multiscale_error_map(x, x + 0.1 * board, scales=(1,), filter_size=1).min().item() == pytest.approx(0.1)
