"""DIAG (seed 001) plumbing: the request plan, the resumable folder, a tiny random SDXL inpainting pipeline built in
code, the weights errors, the stand-in's sampler and training CLI, the MemSeg-style baseline."""

import json

import numpy as np
import pytest
import torch

from lib.methods import diag


def _inputs(n=3, H=48, W=32, seed=0):
    rng = np.random.default_rng(seed)
    normals = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    masks = np.zeros((n, H, W), bool)
    for i in range(n):
        masks[i, 8 + 2 * i:20 + 2 * i, 6:18] = True
    return normals, masks


@pytest.fixture(scope="module")
def pipe():
    return diag.tiny_sdxl_inpaint(seed=0)


def test_plan_cycles_prompts_and_is_a_function_of_its_arguments():
    plan = diag.plan_requests(10, 4, diag.PROMPTS, 7, seed=3)
    assert [r.prompt for r in plan] == [diag.PROMPTS[i % 2] for i in range(7)]
    assert all(0 <= r.normal < 10 and 0 <= r.mask < 4 for r in plan)
    assert plan == diag.plan_requests(10, 4, diag.PROMPTS, 7, seed=3)
    assert plan != diag.plan_requests(10, 4, diag.PROMPTS, 7, seed=4)
    assert len({r.seed for r in plan}) == 7
    with pytest.raises(ValueError, match="n_aug"):
        diag.plan_requests(10, 4, diag.PROMPTS, 0)
    with pytest.raises(ValueError, match="prompt"):
        diag.plan_requests(10, 4, [" "], 3)


def test_prompts_map_to_the_standin_classes():
    assert [diag.prompt_class(p) for p in diag.PROMPTS] == ["spot", "scratch"]
    assert diag.prompt_class("contamination") == "contamination"
    with pytest.raises(ValueError, match="keyword"):
        diag.prompt_class("a cat on a sofa")


def test_sdxl_call_passes_prompts_negative_prompt_seeds_and_sizes(pipe):
    calls = []

    class Spy:
        def __init__(self, p):
            self.p, self.device = p, p.device
            self.mask_processor, self.image_processor = p.mask_processor, p.image_processor

        def __call__(self, **kw):
            calls.append(kw)
            return self.p(**kw)

    settings = diag.PaperSettings(size=64, num_inference_steps=2)
    fn = diag.sdxl_inpaint_fn(Spy(pipe), settings)
    normals, masks = _inputs(2)
    out = fn(normals, masks, list(diag.PROMPTS), [5, 6])
    assert out.shape == normals.shape and out.dtype == np.uint8
    kw = calls[0]
    assert kw["prompt"] == list(diag.PROMPTS) and kw["negative_prompt"] == [diag.NEGATIVE_PROMPT] * 2
    assert (kw["height"], kw["width"], kw["num_inference_steps"]) == (64, 64, 2)
    assert (kw["guidance_scale"], kw["strength"]) == (diag.PAPER.guidance_scale, diag.PAPER.strength)
    assert kw["image"].shape == (2, 3, 64, 64) and kw["mask_image"].shape == (2, 1, 64, 64)
    assert [g.initial_seed() for g in kw["generator"]] == [5, 6]
    assert np.array_equal(out, fn(normals, masks, list(diag.PROMPTS), [5, 6]))       # seeded
    assert not np.array_equal(out, fn(normals, masks, list(diag.PROMPTS), [7, 8]))


def test_batched_crop_equals_diags_one_image_call(pipe):
    from PIL import Image

    settings = diag.PaperSettings(size=64, num_inference_steps=2)
    normals, masks = _inputs(2)
    batch = diag.sdxl_inpaint_fn(pipe, settings)(normals, masks, list(diag.PROMPTS), [1, 2])
    for i in range(2):
        one = pipe(prompt=diag.PROMPTS[i], negative_prompt=diag.NEGATIVE_PROMPT,
                   image=Image.fromarray(normals[i]).resize((64, 64), Image.BICUBIC),
                   mask_image=Image.fromarray(masks[i].astype(np.uint8) * 255).resize((64, 64), Image.NEAREST),
                   height=64, width=64, num_inference_steps=2, guidance_scale=settings.guidance_scale,
                   strength=settings.strength, padding_mask_crop=settings.padding_mask_crop,
                   generator=torch.Generator().manual_seed(i + 1)).images[0]
        one = np.asarray(one.convert("RGB").resize((32, 48), Image.BICUBIC)).astype(int)
        assert np.abs(one - batch[i].astype(int)).max() <= 2


def test_missing_or_incomplete_weights_name_the_folder(tmp_path):
    with pytest.raises(diag.WeightsError, match=r"does not exist.*huggingface-cli download"):
        diag.load_sdxl_inpaint(tmp_path / "sdxl")
    (tmp_path / "sdxl").mkdir()
    (tmp_path / "sdxl" / "model_index.json").write_text("{}")
    (tmp_path / "sdxl" / "unet").mkdir()
    with pytest.raises(diag.WeightsError, match=r"incomplete: vae, text_encoder"):
        diag.load_sdxl_inpaint(tmp_path / "sdxl")


def test_generation_folder_resumes_and_refuses_other_runs(tmp_path):
    normals, masks = _inputs(4)
    plan = diag.plan_requests(4, 4, diag.PROMPTS, 5, seed=1)
    seen = []

    def fake(images, m, prompts, seeds):                      # an inpainter that paints the mask white
        seen.extend(seeds)
        return np.where(m[..., None], np.uint8(255), images)

    class Stop(Exception):
        pass

    def fails_second_batch(images, m, prompts, seeds):
        if len(seen) >= 2:
            raise Stop
        return fake(images, m, prompts, seeds)

    with pytest.raises(Stop):
        diag.generate(fails_second_batch, normals, masks, plan, tmp_path / "out", generator="fake", batch_size=2,
                      progress=False)
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 2
    assert not list((tmp_path / "out").rglob("*.tmp"))
    images, got_masks, done = diag.generate(fake, normals, masks, plan, tmp_path / "out", generator="fake",
                                            batch_size=2, progress=False)
    assert seen == [r.seed for r in plan]                      # the first two were not redone
    assert len(done) == 5 and images.shape == (5, 48, 32, 3)
    for img, mk, r in zip(images, got_masks, done):
        assert np.array_equal(mk, masks[r.mask])
        assert np.array_equal(img[~mk], normals[r.normal][~mk]) and (img[mk] == 255).all()
    with pytest.raises(diag.GenerationError, match="another generation run"):
        diag.generate(fake, normals, masks, diag.plan_requests(4, 4, diag.PROMPTS, 6, seed=1), tmp_path / "out",
                      generator="fake", progress=False)
    with pytest.raises(diag.GenerationError, match="inside the dataset"):
        diag.generate(fake, normals, masks, plan, tmp_path / "data" / "gen", generator="fake", progress=False,
                      data_root=tmp_path / "data")
    assert json.loads((tmp_path / "out" / "plan.json").read_text())["inputs"]["generator"] == "fake"


def test_bad_masks_and_settings_raise_clear_errors(standin):
    normals, masks = _inputs(2)
    with pytest.raises(diag.GenerationError, match="empty"):
        diag.sample_standin(standin, normals, np.zeros_like(masks), ["spot"] * 2, [0, 1], num_steps=2)
    with pytest.raises(diag.GenerationError, match="same image size"):
        diag.sample_standin(standin, normals, masks[:, :40], ["spot"] * 2, [0, 1], num_steps=2)
    with pytest.raises(diag.GenerationError, match="unknown class 'cat'"):
        diag.sample_standin(standin, normals, masks, ["cat", "spot"], [0, 1], num_steps=2)
    with pytest.raises(ValueError, match="strength"):
        diag.sample_standin(standin, normals, masks, ["spot"] * 2, [0, 1], num_steps=2, strength=1.5)
    with pytest.raises(ValueError, match="strength"):
        diag.PaperSettings(strength=0.0)


@pytest.mark.parametrize("scheduler", ["ddim", "dpmpp_sde_karras"])
def test_standin_changes_only_the_mask_and_is_seeded(standin, scheduler):
    normals, masks = _inputs(2)
    kw = dict(num_steps=4, strength=0.99, scheduler=scheduler, guidance_scale=2.0)
    out = diag.sample_standin(standin, normals, masks, ["spot", "scratch"], [0, 1], **kw)
    assert np.array_equal(out[~masks], normals[~masks])
    assert not np.array_equal(out[masks], normals[masks])
    assert np.array_equal(out, diag.sample_standin(standin, normals, masks, ["spot", "scratch"], [0, 1], **kw))
    weak = diag.sample_standin(standin, normals, np.ones_like(masks), ["spot"] * 2, [0, 1], num_steps=10,
                               strength=0.2, scheduler=scheduler)
    strong = diag.sample_standin(standin, normals, np.ones_like(masks), ["spot"] * 2, [0, 1], num_steps=10,
                                 strength=0.9, scheduler=scheduler)
    d = lambda a: np.abs(a.astype(int) - normals.astype(int)).mean()   # noqa: E731
    assert d(weak) < d(strong)                      # img2img: a low strength stays near the source


def test_standin_training_cli_skips_the_target(tmp_path):
    from lib.data import make_benchmark

    root = make_benchmark(tmp_path / "bench", size=32, categories=["brick", "metal_strip"], n_train=2,
                          n_test_good=1, n_test_defect=1, version=3)
    images, masks, classes, names = diag.standin_training_set(root, "metal_strip", 32)
    assert names and all(n.startswith("brick/") for n in names) and masks.any((1, 2)).all()
    diag.main(["--data", str(root), "--image-size", "32", "--steps", "2", "--batch-size", "2", "--name", "s",
               "--export-dir", str(tmp_path / "ck"), "--state-dir", str(tmp_path / "st"), "--export-half"])
    model = diag.load_standin(tmp_path / "ck" / "s.pt")
    assert model.manifest["never_saw"] == "metal_strip" and model.manifest["trained_on"] == ["brick"]
    with pytest.raises(diag.GenerationError, match="not a category"):
        diag.standin_training_set(root, "cable", 32)


def test_memseg_baseline_pastes_inside_its_mask_only():
    normals, _ = _inputs(3, 64, 64)
    images, masks = diag.memseg_augment(normals, 4, seed=0)
    assert images.shape == (4, 64, 64, 3) and masks.any((1, 2)).all()
    again, _ = diag.memseg_augment(normals, 4, seed=0)
    assert np.array_equal(images, again)
