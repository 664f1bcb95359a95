"""One model shared by several categories: a class-conditional UNet seen as each category's own model
(ClassConditioned), shared DDPM and DiffusionAD training, their exports, loading by category and the errors."""

import pytest
import torch

from lib.core.diffusion import eps_fn
from lib.core.nets import ClassConditioned, class_index, unet
from lib.data import make_benchmark
from lib.data.synth import anomaly_sources
from lib.io.checkpoints import read_manifest
from lib.methods import ddpm, diffusionad
from lib.methods.ddpm import TrainConfig, check_classes, load_ddpm, shared_fingerprint, train_ddpm
from lib.methods.diffusionad import ADConfig, anomaly_mode, load_diffusionad, train_diffusionad


def _images(n=6, size=16, seed=123):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=g) * 2 - 1


def test_class_conditioned_is_the_shared_unet_with_its_class_fixed():
    torch.manual_seed(0)
    net = unet("tiny", 16, num_class_embeds=3).eval()
    x, t = _images(2), torch.tensor([5, 40])
    with torch.no_grad():
        for c in range(3):
            ours = ClassConditioned(net, c)(x, t).sample
            assert torch.equal(ours, net(x, t, class_labels=torch.full((2,), c)).sample)
        # the class matters: another class gives another ε
        assert not torch.allclose(ClassConditioned(net, 0)(x, t).sample, ClassConditioned(net, 2)(x, t).sample)
    assert ClassConditioned(net, 1).config is net.config             # size checks (eps_fn) read the shared config
    assert eps_fn(ClassConditioned(net, 1))(x, t).shape == x.shape
    with pytest.raises(ValueError, match="needs a class-conditional UNet2DModel"):
        ClassConditioned(unet("tiny", 16), 0)
    with pytest.raises(ValueError, match="label=3 is outside the model's 3 classes"):
        ClassConditioned(net, 3)


def test_class_index_and_classes_are_checked():
    assert class_index("brick,screw", "screw") == 1
    with pytest.raises(ValueError, match=r"category='nut' is not one of the classes .* \(brick, screw\)"):
        class_index("brick,screw", "nut")
    for bad in ("brick,brick", "brick,,screw", ",brick", "brick,"):
        with pytest.raises(ValueError, match="must be distinct category names joined by commas"):
            check_classes(bad)
    with pytest.raises(ValueError, match="classes="):
        TrainConfig(classes="a,a")
    with pytest.raises(ValueError, match="classes="):
        ADConfig(classes="a,a")


def test_a_shared_ddpm_trains_exports_and_loads_per_category(tmp_path):
    x = torch.cat([_images(4, seed=1), _images(4, seed=2)])
    y = torch.tensor([0] * 4 + [1] * 4)
    cfg = TrainConfig(preset="tiny", image_size=16, T=50, steps=3, batch_size=4, classes="brick,screw")
    _, ema, losses = train_ddpm(x, cfg, tmp_path / "s.pt", export=tmp_path / "w.pt", labels=y, device="cpu",
                                progress=False)
    assert len(losses) == 3 and ema.config.num_class_embeds == 2
    m = load_ddpm(tmp_path / "w.pt", category="screw")
    assert isinstance(m.unet, ClassConditioned) and m.unet.label == 1 and m.config == cfg
    with torch.no_grad():
        t = torch.tensor([10, 10])
        assert torch.allclose(m.unet(x[:2], t).sample, ema(x[:2], t, class_labels=torch.tensor([1, 1])).sample,
                              atol=1e-5)
    with pytest.raises(ValueError, match=r"shared by the classes brick,screw: pass category="):
        load_ddpm(tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"category='pill' is not one of the classes"):
        load_ddpm(tmp_path / "w.pt", category="pill")
    # an unconditional checkpoint ignores category
    plain = TrainConfig(preset="tiny", image_size=16, T=50, steps=1, batch_size=2)
    train_ddpm(x, plain, tmp_path / "s2.pt", export=tmp_path / "p.pt", device="cpu", progress=False)
    assert not isinstance(load_ddpm(tmp_path / "p.pt", category="brick").unet, ClassConditioned)


@pytest.mark.parametrize("labels, match", [(None, "labels must be one class index"),
                                           (torch.tensor([0, 1, 2, 0, 1, 0]), "labels must be one class index"),
                                           (torch.tensor([0, 1]), "labels must be one class index")])
def test_shared_ddpm_training_checks_its_labels(tmp_path, labels, match):
    cfg = TrainConfig(preset="tiny", image_size=16, T=50, steps=1, batch_size=2, classes="a,b")
    with pytest.raises(ValueError, match=match):
        train_ddpm(_images(6), cfg, tmp_path / "s.pt", labels=labels, device="cpu", progress=False)


def test_labels_without_classes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="cfg.classes is empty"):
        train_ddpm(_images(2), TrainConfig(preset="tiny", image_size=16, T=50, steps=1, batch_size=2),
                   tmp_path / "s.pt", labels=torch.zeros(2, dtype=torch.long), device="cpu", progress=False)


def test_a_shared_diffusionad_trains_with_each_class_recipe_and_loads_per_category(tmp_path):
    x = torch.cat([_images(4, 32, seed=1), _images(4, 32, seed=2)])
    y = torch.tensor([0] * 4 + [1] * 4)
    modes = ["texture"] * 4 + ["object"] * 4
    fg = torch.zeros(8, 32, 32, dtype=torch.bool)
    fg[:, 8:24, 8:24] = True
    cfg = ADConfig(preset="tiny", image_size=32, steps=2, batch_size=4, pool=6, mode="kind", classes="grass,screw")
    src = anomaly_sources((32, 32))
    train_diffusionad(x, cfg, tmp_path / "s.pt", export=tmp_path / "w.pt", sources=src, labels=y, modes=modes,
                      foreground=fg, device="cpu", progress=False)
    m = load_diffusionad(tmp_path / "w.pt", category="grass")
    assert isinstance(m.unet, ClassConditioned) and m.unet.label == 0 and m.config == cfg
    r = m.reconstruct(x[:2], torch.Generator().manual_seed(0))
    assert r.x0_g.shape == (2, 3, 32, 32) and m.anomaly_map(x[:2], r.x0_g).shape == (2, 32, 32)
    with pytest.raises(ValueError, match="pass category="):
        load_diffusionad(tmp_path / "w.pt")
    with pytest.raises(ValueError, match="modes must be given"):
        train_diffusionad(x, cfg, tmp_path / "s2.pt", sources=src, labels=y, device="cpu", progress=False)
    assert [anomaly_mode(cfg, k) for k in ("object", "texture", None)] == ["object", "texture", "texture"]
    assert anomaly_mode(ADConfig(mode="object"), "texture") == "object"


@pytest.fixture(scope="module")
def tiny_v3(tmp_path_factory):
    """Benchmark version 3 at 32² (its smallest size), two categories: one texture, one object."""
    root = tmp_path_factory.mktemp("v3")
    return make_benchmark(root, size=32, seed=0, version=3, categories=["grass", "screw"])


def test_the_shared_clis_train_on_every_class_and_record_the_joint_fingerprint(tiny_v3, tmp_path):
    common = ["--data", str(tiny_v3), "--preset", "lean", "--image-size", "32", "--classes", "grass,screw",
              "--export-dir", str(tmp_path), "--state-dir", str(tmp_path / "st"), "--device", "cpu"]
    ddpm.main(common + ["--steps", "1", "--batch-size", "4", "--val-fraction", "0.2", "--name", "d"])
    man = read_manifest(tmp_path / "d.pt")
    assert man["data_fingerprint"] == shared_fingerprint(tiny_v3, "grass,screw")
    assert set(man["validation_images"]) == {"grass", "screw"} and man["device"].startswith("cpu: ")
    assert load_ddpm(tmp_path / "d.pt", category="screw").unet.label == 1
    diffusionad.main(common + ["--steps", "1", "--batch-size", "4", "--pool", "8", "--mode", "kind", "--name", "a"])
    assert load_diffusionad(tmp_path / "a.pt", category="grass").unet.label == 0
    # the fingerprint is the classes' in their order: another order or another subset is other data
    assert shared_fingerprint(tiny_v3, "screw,grass") != shared_fingerprint(tiny_v3, "grass,screw")
    assert shared_fingerprint(tiny_v3, "grass") != shared_fingerprint(tiny_v3, "grass,screw")


def test_the_quick_profiles_are_one_shared_model_of_version_3():
    from lib.data.benchmark import categories

    for name, cfg in (("ddpm", ddpm.PROFILES["thesis-quick"].config), ("diffusionad", diffusionad.PROFILES["quick"])):
        assert cfg.classes.split(",") == list(categories(3)), name
    assert ddpm.checkpoint_name("screw", "thesis-quick") == ddpm.checkpoint_name("brick", "thesis-quick") \
        == "ddpm_lean_sigmoid_shared64"
    assert diffusionad.checkpoint_name("pill", "quick") == "diffusionad_lean_shared64"
    with pytest.raises(ValueError, match=r"category='nut' is not one of the classes"):
        ddpm.pretrained("nut", "thesis-quick", device="cpu")
    with pytest.raises(ValueError, match=r"category='nut' is not one of the classes"):
        diffusionad.pretrained("nut", "quick", device="cpu")
