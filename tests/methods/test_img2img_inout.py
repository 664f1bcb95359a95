"""Seed 004's img2img paths (a tiny random StableDiffusionImg2ImgPipeline built in code, the stand-in) and the
In&Out-style baseline of seed 001 (the stand-in fine-tuned on the positives, sampled from noise)."""

import copy
import numpy as np
import pytest
import torch

from lib.io.pretrained import WeightsError
from lib.methods import balance, diag, inout


def _images(n=3, H=40, W=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sd():
    return balance.tiny_sd_img2img(seed=0)


def test_sd_img2img_uses_karras_sde_prompts_and_per_image_seeds(sd):
    calls = []
    real_call = type(sd).__call__

    def spy(self, **kw):
        calls.append(kw)
        return real_call(self, **kw)

    fn = balance.sd_img2img_fn(sd, balance.Img2ImgSettings(size=64, num_inference_steps=4), batch_size=2)
    ims = _images()
    type(sd).__call__ = spy
    try:
        out = fn(ims, ["scratch", "black_spot", "stain"], [1, 2, 3])
    finally:
        type(sd).__call__ = real_call
    assert out.shape == ims.shape and out.dtype == np.uint8
    assert [len(c["prompt"]) for c in calls] == [2, 1]                    # batches of batch_size
    assert calls[0]["prompt"][1] == balance.class_prompt("black_spot") and "black spot" in calls[0]["prompt"][1]
    assert calls[0]["strength"] == balance.REPORT.strength and calls[0]["image"][0].size == (64, 64)
    assert type(sd.scheduler).__name__ == "DPMSolverSDEScheduler" and sd.scheduler.config.use_karras_sigmas
    alone = fn(ims[1:2], ["black_spot"], [2])              # an image does not depend on its batch (up to rounding)
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).max()   # noqa: E731
    assert diff(alone[0], out[1]) <= 2
    assert diff(fn(ims[1:2], ["black_spot"], [5])[0], out[1]) > 2


def test_sd_img2img_round_trips_through_from_pretrained(sd, tmp_path):
    sd.save_pretrained(tmp_path / "sd")
    pipe = balance.load_sd_img2img(tmp_path / "sd", dtype="float32", device="cpu")
    assert type(pipe.scheduler).__name__ == "DPMSolverSDEScheduler" and pipe.safety_checker is None
    (tmp_path / "sd" / "model_index.json").unlink()
    with pytest.raises(WeightsError, match=r"incomplete: model_index.json missing.*huggingface-cli download"):
        balance.load_sd_img2img(tmp_path / "sd")
    with pytest.raises(ValueError, match="strength"):
        balance.Img2ImgSettings(strength=1.5)
    with pytest.raises(ValueError, match="multiple of 8"):
        balance.Img2ImgSettings(size=500)


def test_standin_img2img_keeps_near_the_source_at_low_strength(standin):
    ims = _images(2, 32, 32)
    fn = balance.standin_img2img_fn(standin, num_steps=10, strength=0.2)
    weak = fn(ims, ["scratch", "spot"], [0, 1])
    strong = balance.standin_img2img_fn(standin, num_steps=10, strength=0.9)(ims, ["scratch", "spot"], [0, 1])
    d = lambda a: np.abs(a.astype(int) - ims.astype(int)).mean()   # noqa: E731
    assert d(weak) < d(strong)
    alone = fn(ims[1:], ["spot"], [1])[0]                               # one Brownian tree per image
    assert np.abs(alone.astype(int) - weak[1].astype(int)).max() <= 2


def test_inout_finetunes_on_the_positives_and_samples_whole_images(standin, tmp_path):
    ims = _images(4, 32, 16)
    cfg = inout.InOutConfig(steps=2, batch_size=2, ckpt_every=2)
    model, ema, losses = inout.finetune(standin, ims, ["scratch", "spot", "contamination", "scratch"], cfg,
                                        tmp_path / "st.pt", export=tmp_path / "io.pt", progress=False)
    assert len(losses) == 2 and np.isfinite(losses).all()
    changed = any(not torch.equal(a, b) for a, b in zip(model.parameters(), standin.unet.parameters()))
    assert changed                                                       # trained
    base = standin._replace(unet=copy.deepcopy(standin.unet))
    with torch.no_grad():                                                # weights no fresh initialisation has
        for p in base.unet.parameters():
            p.add_(0.01)
    still, _, _ = inout.finetune(base, ims, ["scratch"] * 4, inout.InOutConfig(steps=1, batch_size=2, lr=1e-12),
                                 None, progress=False)
    gap = max((a - b).abs().max().item() for a, b in zip(still.parameters(), base.unet.parameters()))
    assert gap < 1e-6                                                    # it starts from the base's weights
    m = diag.load_standin(tmp_path / "io.pt")
    assert m.config.p_full == 1.0 and "I_p" in m.manifest["trained_on"][0]
    out = inout.sample(m, ims[:2], ["scratch", "spot"], [0, 1], num_steps=3)
    assert out.shape == (2, 32, 16, 3) and not np.array_equal(out, ims[:2])
    with pytest.raises(ValueError, match="one defect type per image"):
        inout.finetune(standin, ims, ["scratch"], cfg, None)
    with pytest.raises(ValueError, match="no class"):
        inout.finetune(standin, ims, ["wobble"] * 4, cfg, None)
