"""Seed 004 (internship report): class balancing of a defect dataset with img2img generation — the per-class quota
planner, an automatic filter in place of the report's manual picking, and the report's inspection rates.

The report (§三(二), Figure 3) generated defect images with Stable Diffusion img2img (denoising strength 0.2–0.3,
DPM++ SDE Karras sampler) from real defect images of the classes that had few, "as far as possible balancing the
number of each defect type", until every small class reached about 300 images; then it picked the usable images by
hand, avoiding ones "too identical to the source" and ones "too unlike real defects". The kit's planner:

    g_c = 0                                   if n_c ≥ target
    g_c = ⌈(target − n_c) / quantum⌉ · quantum  otherwise

(the report generated in round batches; :data:`REPORT_TABLES` holds its original and generated rows, and
:func:`compare_with_report` shows where the planner and the report's hand-made numbers agree).

The filter (:func:`filter_generated`) rejects a generated image whose feature distance to its own source is below
the ``copy_quantile`` of the real images' nearest-neighbour distances within their class (a near-copy), or whose
distance to the nearest real image of its class is above the ``outlier_quantile`` of those distances (unlike any
real defect). The report's metrics (§三(四)) are named but not defined there; :func:`inspection_rates` states the
kit's reading.

Generation (:data:`Img2ImgFn`: images, class names, seeds → images): the paper profile calls diffusers'
``StableDiffusionImg2ImgPipeline`` with DPM++ SDE Karras (:func:`load_sd_img2img`, :func:`sd_img2img_fn`; the report
used the Stable Diffusion web UI, whose defaults — SD 1.5, 20 steps, CFG 7 — :data:`REPORT` takes, as the report
names only the strength and the sampler); the quick profile runs DIAG's offline stand-in with the whole image as its
mask (:func:`standin_img2img_fn`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import torch

from ..core.checks import check_choice, check_float, check_int
from ..io.pretrained import CLIP_VIT_L, load_pipeline, tiny_clip_tokenizer

if TYPE_CHECKING:
    from diffusers import StableDiffusionImg2ImgPipeline

__all__ = ["REPORT_TABLES", "plan_quotas", "compare_with_report", "pixel_features", "FilterResult",
           "filter_generated", "inspection_rates", "Img2ImgSettings", "REPORT", "Img2ImgFn", "class_prompt",
           "load_sd_img2img", "sd_img2img_fn", "tiny_sd_img2img", "sd_img2img_random", "standin_img2img_fn"]

#: Figure 3 of the report: the pad (焊盘) and substrate (基材) abnormal classes, original and generated counts
REPORT_TABLES = {
    "pad": {
        "classes": ["movable foreign matter (可移动异物)", "foreign matter (异物)", "discolouration (异色)",
                    "damage (损伤)", "oxidation (氧化)", "exposed copper (漏铜)", "pad dent (焊盘凹凸)", "dirt (脏污)"],
        "original": [38, 62, 111, 567, 357, 80, 78, 506],
        "generated": [268, 240, 200, 0, 0, 220, 230, 0],
    },
    "substrate": {
        "classes": ["false exposed copper (假性漏铜)", "substrate scratch (基材划痕)", "substrate dot (基材小点)",
                    "substrate damage (基材损坏)", "foreign matter (异物)", "scuff (擦花)", "bubble (气泡)",
                    "exposed copper (漏铜)", "dirt (脏污)", "edge damage (边缘损坏)"],
        "original": [1139, 303, 248, 67, 154, 333, 169, 450, 88, 145],
        "generated": [0, 0, 60, 240, 150, 0, 140, 0, 220, 150],
    },
}


def plan_quotas(counts: Mapping[str, int], target: int = 300, quantum: int = 10) -> dict[str, int]:
    """Images to generate per class: g_c = ⌈(target − n_c)/quantum⌉·quantum for n_c < target, else 0."""
    target, quantum = check_int("target", target, 1), check_int("quantum", quantum, 1)
    out = {}
    for c, n in counts.items():
        n = check_int(f"counts[{c!r}]", n, 0)
        out[c] = 0 if n >= target else math.ceil((target - n) / quantum) * quantum
    return out


def compare_with_report(table: str, target: int = 300, quantum: int = 10) -> list[dict]:
    """The planner on the report's original row of ``table`` ("pad" or "substrate") beside the report's generated
    row: one dict per class (original, report, planner, difference, totals)."""
    if table not in REPORT_TABLES:
        raise ValueError(f"table={table!r} is unknown; choose one of {sorted(REPORT_TABLES)}")
    t = REPORT_TABLES[table]
    plan = plan_quotas(dict(zip(t["classes"], t["original"])), target, quantum)
    return [{"class": c, "original": n, "report": g, "planner": plan[c], "difference": plan[c] - g,
             "report total": n + g, "planner total": n + plan[c]}
            for c, n, g in zip(t["classes"], t["original"], t["generated"])]


def pixel_features(images: np.ndarray, size: int = 16) -> np.ndarray:
    """The filter's default features: each uint8 image area-averaged to ``size``×``size`` RGB in [0, 1], flattened."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float().div(255)
    return F.adaptive_avg_pool2d(x, size).flatten(1).numpy()


@dataclass
class FilterResult:
    """Which generated images pass: ``keep`` (bool), ``reason`` ("kept", "near-copy" or "outlier") per image, the
    distances to the source and to the nearest real image of the class, and the two thresholds per class."""

    keep: np.ndarray
    reason: list[str]
    to_source: np.ndarray
    to_real: np.ndarray
    thresholds: dict[str, tuple[float, float]]

    def counts(self) -> dict[str, int]:
        """How many images each reason got."""
        return {r: self.reason.count(r) for r in ("kept", "near-copy", "outlier")}


def _cdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0))


def filter_generated(generated: np.ndarray, sources: Sequence[int], classes: Sequence[str], real: np.ndarray,
                     real_classes: Sequence[str], *, copy_quantile: float = 0.05, outlier_quantile: float = 0.95,
                     features: Callable[[np.ndarray], np.ndarray] = pixel_features) -> FilterResult:
    """The automatic filter: generated image i (made from ``real[sources[i]]``, class ``classes[i]``) is a
    near-copy when d(f_i, f_source) < q_copy and an outlier when min_j d(f_i, f_j) over the class's real images >
    q_out; q_copy and q_out are the ``copy_quantile`` and ``outlier_quantile`` of the real images' nearest-neighbour
    distances within the class (each real image to the others)."""
    check_float("copy_quantile", copy_quantile, 0.0, 1.0)
    check_float("outlier_quantile", outlier_quantile, copy_quantile, 1.0)
    generated, real = np.asarray(generated), np.asarray(real)
    if len(sources) != len(generated) or len(classes) != len(generated):
        raise ValueError(f"need one source index and one class per generated image ({len(generated)}), got "
                         f"{len(sources)} and {len(classes)}")
    if len(real_classes) != len(real):
        raise ValueError(f"need one class per real image ({len(real)}), got {len(real_classes)}")
    fg, fr = features(generated), features(real)
    real_classes = np.asarray(real_classes)
    thresholds: dict[str, tuple[float, float]] = {}
    to_source = np.linalg.norm(fg - fr[np.asarray(sources, int)], axis=1) if len(generated) else np.zeros(0)
    to_real = np.zeros(len(generated))
    keep, reason = np.ones(len(generated), bool), ["kept"] * len(generated)
    for c in sorted(set(classes)):
        members = np.flatnonzero(real_classes == c)
        if len(members) < 2:
            raise ValueError(f"class {c!r} has {len(members)} real image(s); the filter needs at least 2 to set its "
                             "thresholds")
        d = _cdist(fr[members], fr[members])
        np.fill_diagonal(d, np.inf)
        nn = d.min(1)
        q_copy, q_out = float(np.quantile(nn, copy_quantile)), float(np.quantile(nn, outlier_quantile))
        thresholds[c] = (q_copy, q_out)
        rows = [i for i, k in enumerate(classes) if k == c]
        to_real[rows] = _cdist(fg[rows], fr[members]).min(1)
        for i in rows:
            if to_source[i] < q_copy:
                keep[i], reason[i] = False, "near-copy"
            elif to_real[i] > q_out:
                keep[i], reason[i] = False, "outlier"
    return FilterResult(keep, reason, to_source, to_real, thresholds)


def inspection_rates(predicted_abnormal: Sequence[bool], abnormal: Sequence[bool]) -> dict[str, float]:
    """The report's binary rates (§三(四)), abnormal = positive; the report names them without formulas, so the kit
    reads them as automated optical inspection does: accuracy (TP+TN)/N, recall TP/(TP+FN), miss rate FN/(TP+FN),
    overkill rate FP/(FP+TN) (good parts rejected) and filter rate (TN+FN)/N (images the model passes as good, which
    a person then need not re-inspect)."""
    p, y = np.asarray(predicted_abnormal, bool), np.asarray(abnormal, bool)
    if p.shape != y.shape or p.ndim != 1 or not len(p):
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must be two equal non-empty vectors")
    if y.all() or not y.any():
        raise ValueError("the labels need both abnormal and normal images to give every rate")
    tp, tn = int((p & y).sum()), int((~p & ~y).sum())
    fp, fn = int((p & ~y).sum()), int((~p & y).sum())
    n = len(y)
    return {"accuracy": (tp + tn) / n, "recall": tp / (tp + fn), "miss rate": fn / (tp + fn),
            "overkill rate": fp / (fp + tn), "filter rate": (tn + fn) / n}


# ----------------------------------------------------------------------------------------------
# img2img generation (§三(二)): Stable Diffusion (paper profile) or DIAG's stand-in (quick)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Img2ImgSettings:
    """The report's img2img call: ``strength`` 0.2–0.3 and DPM++ SDE Karras (stated); model, steps, CFG and size are
    the web UI's defaults (not stated in the report)."""

    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    strength: float = 0.25
    num_inference_steps: int = 20
    guidance_scale: float = 7.0
    size: int = 512
    dtype: str = "float16"
    prompt: str = "a close-up photo of an industrial surface with a {} defect"

    def __post_init__(self) -> None:
        check_float("strength", self.strength, 0.0, 1.0, lo_open=True)
        check_int("num_inference_steps", self.num_inference_steps, 1)
        check_float("guidance_scale", self.guidance_scale, 0.0)
        check_int("size", self.size, 8)
        if self.size % 8:
            raise ValueError(f"size={self.size} must be a multiple of 8 (the VAE downsamples by 8)")
        check_choice("dtype", self.dtype, ("float16", "bfloat16", "float32"))


REPORT = Img2ImgSettings()

#: ``img2img(images uint8 N×H×W×3, class names, seeds) → uint8 images of the same shape``
Img2ImgFn = Callable[[np.ndarray, Sequence[str], Sequence[int]], np.ndarray]

_SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def class_prompt(defect_class: str, settings: Img2ImgSettings = REPORT) -> str:
    """The text prompt of a defect class, ``settings.prompt`` with the class name (underscores as spaces)."""
    return settings.prompt.format(str(defect_class).replace("_", " "))


def _karras_sde(scheduler):
    from diffusers import DPMSolverSDEScheduler

    return DPMSolverSDEScheduler.from_config(scheduler.config, use_karras_sigmas=True)


def load_sd_img2img(source: str | os.PathLike = REPORT.model, *, device: str | torch.device | None = None,
                    dtype: str = REPORT.dtype, local_files_only: bool = False):
    """``StableDiffusionImg2ImgPipeline.from_pretrained(source)`` with its scheduler replaced by DPM++ SDE Karras
    (``DPMSolverSDEScheduler``, ``use_karras_sigmas=True``; needs torchsde), safety checker off; a local folder that
    is missing or incomplete raises :class:`lib.io.pretrained.WeightsError` naming it."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = load_pipeline(StableDiffusionImg2ImgPipeline, source, parts=_SD_PARTS, what="Stable Diffusion img2img",
                         hub_id=REPORT.model, device=device, dtype=dtype, local_files_only=local_files_only,
                         safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = _karras_sde(pipe.scheduler)
    return pipe


def sd_img2img_fn(pipe, settings: Img2ImgSettings = REPORT, batch_size: int = 8) -> Img2ImgFn:
    """An :data:`Img2ImgFn` calling ``pipe`` (a ``StableDiffusionImg2ImgPipeline`` with DPM++ SDE Karras) at the
    report's strength: images resized to ``settings.size``² and back (bicubic), the class's :func:`class_prompt`, one
    generator and one Brownian tree per image (``seeds[i]``), ``batch_size`` images per call."""
    from PIL import Image

    check_int("batch_size", batch_size, 1)
    device = getattr(pipe, "device", torch.device("cpu"))
    S = settings.size

    def img2img(images: np.ndarray, classes: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 N×H×W×3, got {images.dtype} {images.shape}")
        if len(classes) != len(images) or len(seeds) != len(images):
            raise ValueError(f"need one class and one seed per image ({len(images)}), got {len(classes)} and "
                             f"{len(seeds)}")
        H, W = images.shape[1:3]
        out = []
        for s in range(0, len(images), batch_size):
            ims, cls, sd = images[s:s + batch_size], classes[s:s + batch_size], [int(v) for v in seeds[s:s + batch_size]]
            if hasattr(pipe.scheduler, "noise_sampler_seed"):
                pipe.scheduler.noise_sampler_seed = sd if len(sd) > 1 else sd[0]
            res = pipe(prompt=[class_prompt(c, settings) for c in cls],
                       image=[Image.fromarray(im).resize((S, S), Image.BICUBIC) for im in ims],
                       strength=settings.strength, num_inference_steps=settings.num_inference_steps,
                       guidance_scale=settings.guidance_scale, output_type="pil",
                       generator=[torch.Generator(device=device).manual_seed(v) for v in sd]).images
            out += [np.asarray(im.convert("RGB").resize((W, H), Image.BICUBIC)) for im in res]
        return np.stack(out)

    return img2img


def tiny_sd_img2img(seed: int = 0) -> StableDiffusionImg2ImgPipeline:
    """A randomly initialised, tiny ``StableDiffusionImg2ImgPipeline`` with DPM++ SDE Karras, built in code (no
    download), for plumbing tests: its images are noise."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(check_int("seed", seed, 0))
    net = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
                               out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                               up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                               attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, sample_size=32)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32,
                                        intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4,
                                        num_hidden_layers=2, vocab_size=len(tiny_clip_tokenizer()), hidden_act="gelu"))
    return _sd_img2img_pipeline(net, vae, text)


def sd_img2img_random(seed: int = 0, device: str | torch.device = "cpu") -> StableDiffusionImg2ImgPipeline:
    """``StableDiffusionImg2ImgPipeline`` with Stable Diffusion 1.5's architecture (UNet 860 M parameters, VAE, CLIP
    ViT-L/14 text encoder) and random weights initialised on ``device``, built in code (no download), with the
    report's DPM++ SDE Karras: for timing and smoke tests where the weights cannot be fetched; its images are noise."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(check_int("seed", seed, 0))
    with torch.device(device):               # initialise where it will run
        net = UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                                   block_out_channels=(320, 640, 1280, 1280),
                                   down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                   up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                                   cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215)
        text = CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L))
    return _sd_img2img_pipeline(net, vae, text)


def _sd_img2img_pipeline(net, vae, text) -> StableDiffusionImg2ImgPipeline:
    """The img2img pipeline around the given networks: SD's DDPM schedule as DPM++ SDE Karras, the offline tokenizer,
    no safety checker, no progress bar."""
    from diffusers import DDPMScheduler, StableDiffusionImg2ImgPipeline

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text, tokenizer=tiny_clip_tokenizer(), unet=net,
                                          scheduler=_karras_sde(sched), safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def standin_img2img_fn(model, *, num_steps: int = 20, strength: float = REPORT.strength,
                       scheduler: str = "dpmpp_sde_karras", device: str | torch.device | None = None) -> Img2ImgFn:
    """An :data:`Img2ImgFn` with DIAG's offline stand-in (:func:`lib.methods.diag.sample_standin`, the whole image as
    mask): class names are the source's defect types, mapped by :data:`lib.methods.diag.DEFECT_CLASS`."""
    from . import diag

    def img2img(images: np.ndarray, classes: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        images = np.asarray(images)
        full = np.ones(images.shape[:3], bool)
        kinds = [diag.DEFECT_CLASS.get(c, c) for c in classes]
        return diag.sample_standin(model, images, full, kinds, seeds, num_steps=num_steps, strength=strength,
                                   scheduler=scheduler, device=device)

    return img2img
