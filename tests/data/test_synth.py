"""lib.data.synth: Perlin masks, augmentations, grid shuffle, anomaly sources, blending."""

import math

import numpy as np
import pytest
import torch

from lib.data import synth
from lib.data import CATEGORIES, to_tensor

H, W = 184, 64          # non-square, like the metal_strip category at 64 px


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand_image(seed=0, shape=(H, W)):
    """A random image on the uint8 grid (to_tensor), so uint8 round trips are exact."""
    return to_tensor(np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8))


def draem_rand_perlin_2d(shape, res, generator):
    """DRAEM's rand_perlin_2d (perlin.py of VitjanZ/DRAEM), with a generator; needs
    shape divisible by res."""
    delta = (res[0] / shape[0], res[1] / shape[1])
    d = (shape[0] // res[0], shape[1] // res[1])
    grid = torch.stack(torch.meshgrid(torch.arange(0, res[0], delta[0]), torch.arange(0, res[1], delta[1]),
                                      indexing="ij"), dim=-1) % 1
    angles = 2 * math.pi * torch.rand(res[0] + 1, res[1] + 1, generator=generator)
    gradients = torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1)

    def tile(s1, s2):
        return gradients[s1[0]:s1[1], s2[0]:s2[1]].repeat_interleave(d[0], 0).repeat_interleave(d[1], 1)

    def dot(grad, shift):
        return (torch.stack((grid[..., 0] + shift[0], grid[..., 1] + shift[1]), dim=-1) * grad).sum(dim=-1)

    n00 = dot(tile([0, -1], [0, -1]), [0, 0])
    n10 = dot(tile([1, None], [0, -1]), [-1, 0])
    n01 = dot(tile([0, -1], [1, None]), [0, -1])
    n11 = dot(tile([1, None], [1, None]), [-1, -1])
    t = 6 * grid ** 5 - 15 * grid ** 4 + 10 * grid ** 3
    return math.sqrt(2) * torch.lerp(torch.lerp(n00, n10, t[..., 0]), torch.lerp(n01, n11, t[..., 0]), t[..., 1])


# ---------------------------------------------------------------------------------- Perlin

@pytest.mark.parametrize("shape,res", [((64, 64), (4, 8)), ((H, W), (8, 32)), ((32, 96), (1, 2))])
def test_perlin_noise_matches_draem(shape, res):
    ours = synth.perlin_noise(shape, res, gen(3))
    ref = draem_rand_perlin_2d(shape, res, gen(3))
    assert ours.shape == shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_perlin_noise_non_divisible_is_crop_of_padded():
    ours = synth.perlin_noise((H, W), (5, 7), gen(1))
    padded = synth.perlin_noise((185, 70), (5, 7), gen(1))      # ceil(184/5)*5, ceil(64/7)*7
    assert ours.shape == (H, W)
    assert torch.equal(ours, padded[:H, :W])
    assert torch.isfinite(ours).all() and ours.abs().max() < 1.5 and ours.std() > 0.05


def test_perlin_mask_binary_nonempty_reproducible():
    m = synth.perlin_mask((H, W), gen(0))
    assert m.shape == (H, W) and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0} and m.sum() > 0
    assert torch.equal(m, synth.perlin_mask((H, W), gen(0)))
    assert not torch.equal(m, synth.perlin_mask((H, W), gen(1)))


def test_perlin_mask_scales_and_angles(monkeypatch):
    seen_res, seen_angles = [], []
    real_noise, real_rotate = synth.perlin_noise, synth.TF.rotate

    def spy_noise(shape, res, generator):
        seen_res.append(res)
        return real_noise(shape, res, generator)

    def spy_rotate(x, angle, **kw):
        seen_angles.append(angle)
        return real_rotate(x, angle, **kw)

    monkeypatch.setattr(synth, "perlin_noise", spy_noise)
    monkeypatch.setattr(synth.TF, "rotate", spy_rotate)
    g = gen(0)
    for _ in range(150):
        synth.perlin_mask((128, 128), g)
    ry, rx = zip(*seen_res)
    assert set(ry) == set(rx) == {1, 2, 4, 8, 16, 32}            # 2^0 ... 2^5, both axes
    assert any(a != b for a, b in seen_res)                      # drawn independently
    assert all(-90 <= a < 90 for a in seen_angles) and min(seen_angles) < -60 and max(seen_angles) > 60
    seen_res.clear()
    for _ in range(30):
        synth.perlin_mask((128, 128), g, min_scale=2, max_scale=3)
    assert set(seen_res) == {(4, 4)}


def test_perlin_mask_is_thresholded_noise():
    # rotate=0: the mask is exactly noise > threshold for the noise drawn after the two scales
    m = synth.perlin_mask((H, W), gen(5), min_scale=2, max_scale=3, rotate=0)
    g = gen(5)
    torch.randint(2, 3, (1,), generator=g), torch.randint(2, 3, (1,), generator=g)
    noise = synth.perlin_noise((H, W), (4, 4), g)
    assert torch.equal(m, (noise > 0.5).float()) and m.sum() > 0


def test_perlin_mask_threshold_and_foreground():
    g1, g2 = gen(5), gen(5)
    lo = synth.perlin_mask((64, 64), g1, min_scale=2, max_scale=3, threshold=0.2)
    hi = synth.perlin_mask((64, 64), g2, min_scale=2, max_scale=3, threshold=0.5)
    assert lo.sum() > hi.sum() and torch.all(hi <= lo)            # same noise, higher threshold
    fg = torch.zeros(64, 64, dtype=torch.bool)
    fg[20:44, 10:30] = True
    m = synth.perlin_mask((64, 64), gen(2), foreground=fg)
    assert m.sum() > 0 and not m[~fg].any()                       # retried until it hits fg
    empty = synth.perlin_mask((64, 64), gen(2), foreground=torch.zeros(64, 64), max_tries=3)
    assert empty.sum() == 0                                       # bounded: gives up, empty


# ---------------------------------------------------------------------------------- foreground

def test_foreground_mask_otsu_picks_the_object():
    yy, xx = np.mgrid[0:H, 0:W]
    disc = (yy - 90) ** 2 + (xx - 30) ** 2 < 20 ** 2
    for obj, bg in [(40, 210), (220, 30)]:                        # dark on bright, bright on dark
        img = np.where(disc[..., None], obj, bg).astype(np.uint8).repeat(3, axis=2)
        fg = synth.foreground_mask(to_tensor(img))
        assert fg.dtype == torch.bool and fg.shape == (H, W)
        assert torch.equal(fg, torch.from_numpy(disc))
    # an object covering most of the image is still the foreground (border rule)
    big = (np.abs(yy - 92) < 80) & (np.abs(xx - 32) < 28)
    img = np.where(big[..., None], 200, 20).astype(np.uint8).repeat(3, axis=2)
    assert torch.equal(synth.foreground_mask(to_tensor(img)), torch.from_numpy(big))


def test_foreground_mask_none_constant_and_batch():
    x = rand_image()
    assert synth.foreground_mask(x, "none").all()
    assert synth.foreground_mask(torch.zeros(3, H, W)).all()
    assert synth.foreground_mask(torch.stack([x, x])).shape == (2, H, W)
    with pytest.raises(ValueError, match="otsu"):
        synth.foreground_mask(x, "kmeans")


# ---------------------------------------------------------------------------------- augment

def test_augment_range_levels_reproducible():
    x = rand_image()
    y = synth.augment(x, gen(0))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.min() >= -1 and y.max() <= 1
    levels = (y + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)      # uint8 internally
    assert torch.equal(y, synth.augment(x, gen(0)))
    assert not torch.equal(y, synth.augment(x, gen(1)))
    assert synth.augment(torch.stack([x, x]), gen(0)).shape == (2, 3, H, W)


def test_augment_draws_n_distinct_ops(monkeypatch):
    calls = []
    fake = {name: (lambda u, g, name=name: (calls.append(name), u)[1]) for name in synth._OPS}
    monkeypatch.setattr(synth, "_OPS", fake)
    g = gen(0)
    chosen = set()
    for _ in range(30):
        calls.clear()
        synth.augment(rand_image(), g, n=3)
        assert len(calls) == 3 and len(set(calls)) == 3 and set(calls) <= set(synth.AUGMENTATIONS)
        chosen |= set(calls)
    assert chosen == set(synth.AUGMENTATIONS)
    with pytest.raises(ValueError, match="distinct"):
        synth.augment(rand_image(), g, n=8)


@pytest.mark.parametrize("op", synth.AUTHORS_AUGMENTATIONS)
def test_each_augmentation_runs_and_changes_something(op):
    x = rand_image(1)[:, :64]                                     # 64 x 64
    x = x * 0.6                                                   # not full range: autocontrast acts
    y = synth.augment(x, gen(0), n=1, ops=(op,))
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert (y - x).abs().max() > 0.01


# ---------------------------------------------------------------------------------- grid shuffle

def cells(img, grid):
    c, h, w = img.shape
    ch, cw = h // grid, w // grid
    x = img[:, :grid * ch, :grid * cw].reshape(c, grid, ch, grid, cw).permute(1, 3, 0, 2, 4)
    return [tuple(v.flatten().tolist()) for v in x.reshape(grid * grid, -1)]


@pytest.mark.parametrize("shape", [(64, 64), (H, W), (70, 61)])
def test_grid_shuffle_is_a_permutation_of_cells(shape):
    x = rand_image(2, shape)
    y = synth.grid_shuffle(x, gen(0), grid=8)
    assert y.shape == x.shape
    assert sorted(cells(y, 8)) == sorted(cells(x, 8))
    assert cells(y, 8) != cells(x, 8)
    h8, w8 = 8 * (shape[0] // 8), 8 * (shape[1] // 8)
    assert torch.equal(y[:, h8:], x[:, h8:]) and torch.equal(y[:, :, w8:], x[:, :, w8:])
    assert torch.equal(y, synth.grid_shuffle(x, gen(0)))


# ---------------------------------------------------------------------------------- sources

def test_anomaly_sources_exclude_and_shape():
    all_src = synth.anomaly_sources((H, W))
    assert len(all_src) == len(synth.SOURCE_PHOTOS) >= 10
    assert all(s.shape == (3, H, W) and s.min() >= -1 and s.max() <= 1 for s in all_src)
    brick = all_src[synth.SOURCE_PHOTOS.index("brick")]
    no_brick = synth.anomaly_sources((H, W), exclude="brick")
    assert len(no_brick) == len(all_src) - 1
    assert not any(torch.equal(s, brick) for s in no_brick)
    for cat in CATEGORIES:                                        # a category's own photo never
        own = [n for n in synth.SOURCE_PHOTOS if n == cat]
        names = [n for n in synth.SOURCE_PHOTOS if n not in own]
        got = synth.anomaly_sources((H, W), exclude=cat)
        assert len(got) == len(names)
        for n in own:
            assert not any(torch.equal(s, all_src[synth.SOURCE_PHOTOS.index(n)]) for s in got)
    assert len(synth.anomaly_sources(32, exclude=("grass", "gravel"))) == len(all_src) - 2


# ---------------------------------------------------------------------------------- synthesize

@pytest.fixture(scope="module")
def sources():
    return synth.anomaly_sources((H, W), exclude="brick")


def test_synthesize_mask_binary_outside_bit_identical(sources):
    x = rand_image(3)
    for seed in range(4):
        s = synth.synthesize(x, gen(seed), sources)
        assert s.mask.shape == (1, H, W) and set(s.mask.unique().tolist()) <= {0.0, 1.0}
        assert s.mask.sum() > 0 and s.image.shape == x.shape
        out = ~s.mask.bool().expand_as(x)
        assert torch.equal(s.image[out].view(torch.int32), x[out].view(torch.int32))  # bit-identical
        assert not torch.equal(s.image, x)
        assert 0.2 <= s.beta < 0.8


def test_synthesize_signed_zero_outside_mask_kept(sources):
    x = torch.full((3, H, W), -0.0)
    s = synth.synthesize(x, gen(0), sources)
    out = ~s.mask.bool().expand_as(x)
    assert torch.equal(s.image[out].view(torch.int32), x[out].view(torch.int32))


def test_blend_formula_exact():
    x = rand_image(4)
    src = rand_image(5)                    # on the uint8 grid: augment(n=0) returns it unchanged
    s = synth.synthesize(x, gen(0), [src], n_aug=0)
    M, b = s.mask, s.beta
    expected = x * (1 - M) + (1 - b) * src * M + b * x * M        # DiffusionAD eq. (12)
    assert torch.equal(s.image, expected)
    # hand-built: constant image 0.5, constant source -1, beta fixed at 0.3
    img, a = torch.full((3, H, W), 0.5), torch.full((3, H, W), -1.0)
    s = synth.synthesize(img, gen(0), [a], beta_range=(0.3, 0.3), n_aug=0)
    inside = s.mask.bool().expand_as(img)
    assert s.beta == 0.3
    torch.testing.assert_close(s.image[inside], torch.full_like(s.image[inside], 0.7 * -1 + 0.3 * 0.5))
    s2 = synth.synthesize(img, gen(0), [a], beta_range=(0.3, 0.3), n_aug=0, beta_on="source")
    torch.testing.assert_close(s2.image[inside], torch.full_like(s2.image[inside], 0.7 * 0.5 + 0.3 * -1))
    # the conventions are each other's mirror: beta_source = 1 - beta_image
    s3 = synth.synthesize(img, gen(0), [a], beta_range=(0.7, 0.7), n_aug=0, beta_on="source")
    torch.testing.assert_close(s3.image, s.image)


def test_beta_range(sources):
    g = gen(0)
    x = rand_image(6, (64, 64))
    src = synth.anomaly_sources(64)
    betas = [synth.synthesize(x, g, src, max_scale=3).beta for _ in range(40)]
    assert min(betas) >= 0.2 and max(betas) < 0.8 and max(betas) - min(betas) > 0.3
    betas = [synth.synthesize(x, g, src, beta_range=(0.1, 1.0), beta_on="source", max_scale=3).beta
             for _ in range(40)]
    assert min(betas) >= 0.1 and max(betas) <= 1.0 and max(betas) > 0.8


def test_synthesize_reproducible(sources):
    x = rand_image(7)
    a, b = synth.synthesize(x, gen(11), sources), synth.synthesize(x, gen(11), sources)
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and a.beta == b.beta
    c = synth.synthesize(x, gen(12), sources)
    assert not torch.equal(a.image, c.image)
    o1 = synth.synthesize(x, gen(11), sources, mode="object")
    o2 = synth.synthesize(x, gen(11), sources, mode="object")
    assert torch.equal(o1.image, o2.image)


def test_object_mask_within_foreground(sources):
    x = rand_image(8)
    fg = torch.zeros(H, W, dtype=torch.bool)
    fg[40:150, 8:56] = True
    for seed in range(5):
        s = synth.synthesize(x, gen(seed), sources, mode="object", foreground=fg)
        assert s.mask.sum() > 0 and not s.mask[0][~fg].any()
    # default object foreground: Otsu on the image
    yy, xx = np.mgrid[0:H, 0:W]
    disc = (yy - 90) ** 2 + (xx - 30) ** 2 < 25 ** 2
    img = to_tensor(np.where(disc[..., None], 50, 200).astype(np.uint8).repeat(3, axis=2))
    for seed in range(5):
        s = synth.synthesize(img, gen(seed), sources, mode="object")
        assert s.mask.sum() > 0 and not s.mask[0][torch.from_numpy(~disc)].any()


def test_source_choice_texture_vs_object(monkeypatch, sources):
    calls = []
    real = synth.grid_shuffle
    monkeypatch.setattr(synth, "grid_shuffle", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    x = rand_image(9)
    for seed in range(10):
        synth.synthesize(x, gen(seed), sources, mode="texture", self_aug_prob=1.0)
    assert not calls                                              # textures: photos only
    for seed in range(10):
        synth.synthesize(x, gen(seed), sources, mode="object", self_aug_prob=1.0)
    assert len(calls) == 10
    calls.clear()
    for seed in range(10):
        synth.synthesize(x, gen(seed), sources, mode="object", self_aug_prob=0.0)
    assert not calls
    for seed in range(40):
        synth.synthesize(x, gen(seed), sources, mode="object", max_scale=3)
    assert 8 <= len(calls) <= 32                                  # about half
    synth.synthesize(x, gen(0), [], mode="object")                # no photos: self-aug only
    with pytest.raises(ValueError, match="sources"):
        synth.synthesize(x, gen(0), [], mode="texture")


def test_synthesize_batch_first_half_normal(sources):
    imgs = torch.stack([rand_image(i) for i in range(6)])
    out, masks, labels = synth.synthesize_batch(imgs, gen(0), sources)
    assert out.shape == imgs.shape and masks.shape == (6, 1, H, W) and labels.shape == (6,)
    assert torch.equal(out[:3], imgs[:3]) and masks[:3].sum() == 0
    assert labels.tolist() == [0, 0, 0, 1, 1, 1] and labels.dtype == torch.int64
    assert all(masks[i].sum() > 0 and not torch.equal(out[i], imgs[i]) for i in range(3, 6))
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    out2, masks2, _ = synth.synthesize_batch(imgs, gen(0), sources)
    assert torch.equal(out, out2) and torch.equal(masks, masks2)
    _, _, labels = synth.synthesize_batch(imgs[:5], gen(0), sources)
    assert labels.tolist() == [0, 0, 0, 1, 1]                     # odd batch: the extra one is normal
    _, masks, labels = synth.synthesize_batch(imgs[:2], gen(0), sources, anomaly_fraction=0.0)
    assert labels.sum() == 0 and masks.sum() == 0


def test_synthesize_batch_per_image_foreground(sources):
    imgs = torch.stack([rand_image(i) for i in range(4)])
    fg = torch.zeros(4, H, W, dtype=torch.bool)
    fg[2, :50], fg[3, 100:] = True, True
    _, masks, labels = synth.synthesize_batch(imgs, gen(0), sources, mode="object", foreground=fg)
    assert labels.tolist() == [0, 0, 1, 1]
    assert not masks[2, 0, 50:].any() and not masks[3, 0, :100].any()
