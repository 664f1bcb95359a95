"""Seed 000 §3.3-3.4: the masked forward process, the masked loss, the feature bank, masked generation, assigned
generation with its labels, and the training CLI."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lib import data
from lib.data.labels import Box, boxes_to_mask, from_coco, from_yolo
from lib.data.mura import box_patches, defect_set, embedded_mura, split_defect_set
from lib.methods import assigned_defects as A
from lib.methods import masked_ddpm as M


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def mura(tmp_path_factory):
    return embedded_mura(32, root=tmp_path_factory.mktemp("mura") / "set")


@pytest.fixture(scope="module")
def model(mura, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    M.main(["--data", str(mura), "--name", "m", "--image-size", "32", "--steps", "2", "--batch-size", "4",
            "--n-train", "6", "--export-dir", str(out), "--state-dir", str(out / "state"), "--export-half"])
    return M.load_masked(out / "m.pt")


def test_masked_forward_leaves_unmasked_pixels_untouched():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((2, 3, 16, 16), generator=g) * 2 - 1
    m = torch.zeros(2, 1, 16, 16)
    m[:, :, 4:9, 3:12] = 1
    eps = torch.randn(x0.shape, generator=g)
    a = torch.tensor([0.3, 0.9])
    x_t = M.q_sample_masked(x0, a, eps, m)
    keep = m.expand_as(x0) == 0
    assert torch.equal(x_t[keep], x0[keep])
    want = a.view(-1, 1, 1, 1).sqrt() * x0 + (1 - a.view(-1, 1, 1, 1)).sqrt() * eps
    assert torch.allclose(x_t[~keep], want.expand_as(x0)[~keep])


def test_masked_loss_ignores_pixels_outside_the_mask():
    g = torch.Generator().manual_seed(1)
    eps = torch.randn((2, 3, 8, 8), generator=g)
    pred = torch.randn((2, 3, 8, 8), generator=g, requires_grad=True)
    m = torch.zeros(2, 1, 8, 8)
    m[0, :, 2:5, 2:5] = 1
    loss = M.masked_loss(pred, eps, m)
    loss.backward()
    assert (pred.grad[m.expand_as(pred) == 0] == 0).all()
    assert (pred.grad[m.expand_as(pred) == 1] != 0).all()
    inside = m.expand_as(pred) == 1
    assert torch.isclose(loss, ((pred - eps)[inside] ** 2).mean())
    with torch.no_grad():                                    # changing the outside changes nothing
        pred2 = pred.detach().clone()
        pred2[~inside] += 100
    assert torch.isclose(M.masked_loss(pred2, eps, m), loss)


def test_condition_channels():
    ctx = torch.full((1, 8, 8), 0.25)
    f = torch.zeros(1, 8, 8)
    f[0, 1:3, 1:3] = 1
    b = torch.zeros(1, 8, 8)
    b[0, 5:7, 5:7] = 1
    feat = torch.ones(1, 8, 8)
    c = (M.condition(ctx, f, b, feat) + 1) / 2
    assert c.shape == (1, 2, 8, 8)
    assert (c[0, 0][f[0] == 1] == 1).all() and (c[0, 0][b[0] == 1] == 0).all()
    assert torch.allclose(c[0, 0][(f[0] + b[0]) == 0], torch.tensor(0.25))
    assert torch.equal(c[0, 1], f[0])                          # features only inside the defect boxes


def test_training_writes_a_verified_bank_and_generation_keeps_the_outside(model, mura):
    assert model.bank is not None and set(model.bank.classes) == set(model.classes)
    assert sum(len(v) for v in model.bank.features.values()) == 6 * len(model.classes)
    cat = data.load_category(mura, "display_panel")
    canvases = cat.train.images[:3]
    bank_before = _tree_digest(model.bank.folder)
    data_before = _tree_digest(mura)
    gen = A.generate(model, canvases, "white_spot", position=(16, 12), size=(10, 8), n=3, seed=0, num_steps=2,
                     switch_t=1)
    assert gen.images.shape == (3, 32, 32, 3) and gen.masks.shape == (3, 32, 32)
    assert gen.boxes[0] == [Box(0, 11, 8, 21, 16)]
    outside = ~gen.masks
    assert np.array_equal(gen.images[outside], gen.canvases[outside])        # byte-identical outside the box
    assert np.array_equal(gen.masks[0], boxes_to_mask(gen.boxes[0], (32, 32)))
    again = A.generate(model, canvases, "white_spot", position=(16, 12), size=(10, 8), n=3, seed=0, num_steps=2,
                       switch_t=1)
    assert np.array_equal(again.images, gen.images)                         # seeded
    assert _tree_digest(model.bank.folder) == bank_before and _tree_digest(mura) == data_before


def test_written_labels_round_trip(model, mura, tmp_path):
    cat = data.load_category(mura, "display_panel")
    gen = A.generate(model, cat.train.images[:2], "seal_gap", position=(5, 16), size=10, n=2, seed=3, num_steps=2,
                     switch_t=1)
    folder = gen.write(tmp_path / "gen")
    coco = json.loads((folder / "annotations.json").read_text())
    assert from_coco(coco) == {f"images/{i:04d}.png": gen.boxes[i] for i in range(2)}
    for i in range(2):
        assert from_yolo((folder / "labels" / f"{i:04d}.txt").read_text(), (32, 32)) == gen.boxes[i]
    with pytest.raises(FileExistsError, match="not empty"):
        gen.write(folder)


def test_bad_requests_raise_clear_errors(model, mura):
    canvases = data.load_category(mura, "display_panel").train.images[:2]
    with pytest.raises(ValueError, match="not inside the 32×32 image"):
        A.generate(model, canvases, "white_spot", position=(30, 16), size=10)
    with pytest.raises(ValueError, match=r"size \(width\) must be an integer >= 1, got 0"):
        A.generate(model, canvases, "white_spot", position=(16, 16), size=0)
    with pytest.raises(ValueError, match="'crack' is unknown.*white_spot"):
        A.generate(model, canvases, "crack", position=(16, 16), size=8)
    with pytest.raises(ValueError, match="canvases must be"):
        A.generate(model, canvases.astype(np.float32), "white_spot", position=(16, 16), size=8)


def test_feature_bank_errors_name_the_file(model, tmp_path):
    import shutil

    bad = tmp_path / "bank"
    with pytest.raises(M.FeatureBankError, match="does not exist"):
        M.FeatureBank.load(bad)
    bad.mkdir()
    with pytest.raises(M.FeatureBankError, match="no index.json"):
        M.FeatureBank.load(bad)
    shutil.copytree(model.bank.folder, bad, dirs_exist_ok=True)
    first = bad / model.bank.entries[0]["file"]
    first.write_bytes(first.read_bytes()[:-3] + b"xyz")
    with pytest.raises(M.FeatureBankError, match=f"{first.name}.*sha256"):
        M.FeatureBank.load(bad)
    first.unlink()
    with pytest.raises(M.FeatureBankError, match=f"{first.name}.*missing"):
        M.FeatureBank.load(bad)
    (bad / "index.json").write_text(json.dumps({"classes": ["a"], "entries": []}))
    with pytest.raises(M.FeatureBankError, match="lists no feature images"):
        M.FeatureBank.load(bad)
    (bad / "index.json").write_text("{not json")
    with pytest.raises(M.FeatureBankError, match="not a feature-bank index"):
        M.FeatureBank.load(bad)


def test_cli_smoke_paper_preset_and_baseline(mura, tmp_path):
    paper = M.PROFILES["paper"]
    assert (paper.preset, paper.image_size) == ("paper", 512)          # the paper profile validates at 512²
    M.main(["--data", str(mura), "--name", "p", "--preset", "paper", "--image-size", "32", "--steps", "2",
            "--batch-size", "1", "--n-train", "2", "--no-features", "--export-dir", str(tmp_path),
            "--state-dir", str(tmp_path / "s")])
    p = M.load_masked(tmp_path / "p.pt")
    assert p.bank is None and p.config.preset == "paper" and len(p.losses) == 2
    M.main(["--baseline", "--data", str(mura), "--name", "b", "--image-size", "16", "--source-size", "32",
            "--steps", "2", "--batch-size", "4", "--n-train", "3", "--export-dir", str(tmp_path),
            "--state-dir", str(tmp_path / "s")])
    from lib.methods.ddpm import load_ddpm
    assert load_ddpm(tmp_path / "b.pt").config.image_size == 16
    with pytest.raises(SystemExit):
        M.main(["--data", str(mura), "--name", "x", "--image-size", "30", "--steps", "1"])


def test_held_out_split_follows_the_profile_and_refuses_too_little_data(mura):
    """notebook 02's split: the quick generators' first n_train per class; the paper profile's 140 per class do not fit
    the embedded set, and the error names the data and the fix."""
    ds = defect_set(data.load_category(mura, "display_panel"))
    tr, real, test = M.held_out_split(ds, "quick", 3)
    assert set(tr.counts().values()) == {M.PROFILES["quick"].n_train} and len(real) == 3 * len(ds.names)
    assert not set(test.paths) & set(tr.paths)
    with pytest.raises(ValueError, match=r"profile='paper' trains its generators on the first 140 .*"
                                         r"here has .*pass data_root="):
        M.held_out_split(ds, "paper", 3, source="here")
    with pytest.raises(ValueError, match="profile"):
        M.held_out_split(ds, "big", 3)


def test_defect_split_and_patches(mura):
    ds = defect_set(data.load_category(mura, "display_panel"))
    tr, real, test = split_defect_set(ds, 10, 3)
    assert len(tr) == 50 and len(real) == 15 and len(test) == len(ds) - 50
    assert set(real.paths) <= set(tr.paths) and not set(test.paths) & set(tr.paths)
    with pytest.raises(ValueError, match="n_real=4 must be <= n_train=3"):
        split_defect_set(ds, 3, 4)
    p = box_patches(tr.images, tr.boxes(), 8)
    assert p.shape == (50, 64) and 0 <= p.min() and p.max() <= 1
    crops = M.defect_crops(tr, 16)
    assert crops.shape == (50, 16, 16, 3)
