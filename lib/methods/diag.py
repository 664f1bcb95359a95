"""Seed 001 (DIAG, Girella et al.) §III: training-free in-distribution anomaly generation by text-guided inpainting
of *normal* images inside expert masks, and the offline stand-in the kit trains in its place.

DIAG (§III-B): given defect-free images I_n, expert descriptions D_a (text prompts) and expert regions M_a (binary
masks), an anomalous image i_a is the inpainting of i_n ∈ I_n inside m_a ∈ M_a by a pretrained latent diffusion model
conditioned on d_a ∈ D_a; repeating with other seeds gives the augmented set I_a. The paper's call (its code, see
``shared/reference/paper-settings.md``): diffusers' ``StableDiffusionXLInpaintPipeline`` with
"diffusers/stable-diffusion-xl-1.0-inpainting-0.1" in float16, 30 steps, guidance 20, strength 0.99,
``padding_mask_crop`` 2, 1024² working size; prompts "white marks on the wall" and "copper metal scratches", negative
prompt "smooth, plain, black, dark, shadow"; the expert masks are the ground-truth masks of the positive training
images, each pasted onto a random negative image (§IV-B).

The kit's two paths share everything but the inpainter (an :data:`InpaintFn`):

* ``paper``: :func:`load_sdxl_inpaint` + :func:`sdxl_inpaint_fn` (GPU, the weights in a local folder or the hub).
* ``quick``: :class:`Standin`, a small class-conditioned inpainting DDPM trained here on the embedded benchmark's
  defects of every category *but the target*, so the zero-shot setting stays honest (it never sees a positive image
  of the target); prompts map to its classes by keyword (:func:`prompt_class`). It is trained like seed 000's masked
  model (:func:`lib.methods.masked_ddpm.q_sample_masked`, :func:`~lib.methods.masked_ddpm.masked_loss`): noise inside
  the (dilated) defect mask, clean pixels outside, loss on the mask; with probability ``p_full`` the mask is the whole
  image (so img2img with the same network works, seed 004), with ``p_uncond`` the class is the null class
  (classifier-free guidance). It is a stand-in, and labelled so wherever it is shown.

Generation (:func:`generate`) is batched, seeded per image and resumable: a :class:`GenerationFolder` keeps a plan
and writes each image atomically, so an interrupted run of N images continues where it stopped.

Command line (trains the stand-in)::

    python -m lib.methods.diag --name diag_standin_lean_metal_strip64 --target metal_strip --steps 2500
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..core.checks import check_choice, check_float, check_int, check_multiple
from ..core.device import pick_device
from ..core.diffusion import SCHEDULES, Diffusion, make_betas
from ..core.nets import UNET_PRESETS, unet
from ..core.paths import CHECKPOINTS
from ..data.labels import write_json_atomic
from ..io.checkpoints import CheckpointKind, checkpoint_path, half_precision, open_checkpoint, register_kind
from ..io.cli import cli_main, command_line, config_argv, config_from_args, training_parser
from ..io.pretrained import CLIP_VIT_L, OPENCLIP_VIT_BIGG, WeightsError, load_pipeline, tiny_clip_tokenizer
from ..io.training import Trainer, find_or_train, training_time
from .masked_ddpm import masked_loss, q_sample_masked

if TYPE_CHECKING:
    from diffusers import StableDiffusionXLInpaintPipeline

__all__ = ["PaperSettings", "PAPER", "PROMPTS", "NEGATIVE_PROMPT", "CLASSES", "DEFECT_CLASS", "prompt_class",
           "InpaintFn", "Request", "plan_requests", "GenerationFolder", "default_folder", "GenerationError", "generate",
           "load_sdxl_inpaint", "sdxl_inpaint_fn", "tiny_sdxl_inpaint", "sdxl_inpaint_random", "WeightsError", "StandinConfig", "standin_training_set",
           "train_standin", "Standin", "load_standin", "sample_standin", "standin_inpaint_fn", "memseg_augment",
           "PROFILES", "checkpoint_name", "pretrained", "parser", "run", "main"]

MODULE = "lib.methods.diag"


# ----------------------------------------------------------------------------------------------
# the paper's settings (§IV-B and the authors' code)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperSettings:
    """DIAG's inpainting call (``shared/reference/paper-settings.md``)."""

    model: str = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
    num_inference_steps: int = 30
    guidance_scale: float = 20.0
    strength: float = 0.99
    padding_mask_crop: int | None = 2
    size: int = 1024                 # KSDD2 images and masks resized to 1024² "to overcome the SDXL shape bias"
    dtype: str = "float16"

    def __post_init__(self) -> None:
        check_int("num_inference_steps", self.num_inference_steps, 1)
        check_float("guidance_scale", self.guidance_scale, 0.0)
        check_float("strength", self.strength, 0.0, 1.0, lo_open=True)
        check_int("size", self.size, 8)
        check_choice("dtype", self.dtype, ("float16", "bfloat16", "float32"))


PAPER = PaperSettings()
#: the paper's expert descriptions D_a (§IV-B) and the stand-in class each maps to (by :func:`prompt_class`)
PROMPTS = ("white marks on the wall", "copper metal scratches")
NEGATIVE_PROMPT = "smooth, plain, black, dark, shadow"

#: the stand-in's classes: coarse kinds of the benchmark's defect types (the last index is the null class)
CLASSES = ("scratch", "spot", "stain", "contamination", "crack", "hole", "structural")
DEFECT_CLASS = {
    "scratch": "scratch", "white_spot": "spot", "black_spot": "spot", "particle_spot": "spot", "spot": "spot",
    "stain": "stain", "color_shift": "stain", "shapeless_mura": "stain", "contamination": "contamination",
    "crack": "crack", "hole": "hole", "poke": "hole", "seal_gap": "structural", "thread_damage": "structural",
    "bent_tip": "structural", "chipped_head": "structural", "chip": "structural", "faulty_print": "structural",
    "swapped_cores": "structural", "missing_core": "structural", "cut_insulation": "structural",
}
_KEYWORDS = (("scratch", "scratch"), ("mark", "spot"), ("spot", "spot"), ("dot", "spot"), ("stain", "stain"),
             ("discolo", "stain"), ("contamina", "contamination"), ("particle", "contamination"),
             ("dirt", "contamination"), ("crack", "crack"), ("hole", "hole"), ("dent", "hole"),
             ("missing", "structural"), ("broken", "structural"), ("bent", "structural"))


def prompt_class(prompt: str) -> str:
    """The stand-in class a text prompt asks for: the first keyword of ``_KEYWORDS`` it contains (or a class name)."""
    text = str(prompt).lower()
    if text in CLASSES:
        return text
    for word, cls in _KEYWORDS:
        if word in text:
            return cls
    raise ValueError(f"prompt {prompt!r} names no class the stand-in knows: use a class name ({', '.join(CLASSES)}) "
                     f"or a keyword ({', '.join(w for w, _ in _KEYWORDS)}), e.g. 'copper metal scratches'")


# ----------------------------------------------------------------------------------------------
# the orchestration both paths share
# ----------------------------------------------------------------------------------------------
#: inpaint(images uint8 B×H×W×3, masks bool B×H×W, prompts, seeds) -> uint8 B×H×W×3
InpaintFn = Callable[[np.ndarray, np.ndarray, Sequence[str], Sequence[int]], np.ndarray]


class GenerationError(ValueError):
    """A generation request or output folder is invalid; the message names it and the fix."""


@dataclass(frozen=True)
class Request:
    """One image of I_a: inpaint normal image ``normal`` inside expert mask ``mask`` with ``prompt``, seed ``seed``."""

    index: int
    normal: int
    mask: int
    prompt: str
    seed: int


def plan_requests(n_normals: int, n_masks: int, prompts: Sequence[str], n_aug: int, seed: int = 0) -> list[Request]:
    """N_aug requests (§IV-B): the prompts in turn, each with a random negative image and a random expert mask;
    image i's generator seed is ``seed·1_000_003 + i`` (the plan is a pure function of its arguments)."""
    check_int("n_aug", n_aug, 1)
    check_int("n_normals", n_normals, 1)
    check_int("n_masks", n_masks, 1)
    prompts = [str(p) for p in prompts]
    if not prompts or any(not p.strip() for p in prompts):
        raise GenerationError(f"prompts={prompts!r}: give at least one non-empty prompt, e.g. {PROMPTS}")
    rng = np.random.default_rng(check_int("seed", seed, 0))
    normals, masks = rng.integers(0, n_normals, n_aug), rng.integers(0, n_masks, n_aug)
    return [Request(i, int(normals[i]), int(masks[i]), prompts[i % len(prompts)], seed * 1_000_003 + i)
            for i in range(n_aug)]


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes() + str(a.shape).encode()).hexdigest()


def _check_inputs(normals: np.ndarray, masks: np.ndarray) -> None:
    if normals.dtype != np.uint8 or normals.ndim != 4 or normals.shape[-1] != 3:
        raise GenerationError(f"normals must be uint8 N×H×W×3 images, got {normals.dtype} {normals.shape}")
    if masks.ndim != 3:
        raise GenerationError(f"expert masks must be N×H×W, got shape {masks.shape}")
    if masks.shape[1:] != normals.shape[1:3]:
        raise GenerationError(f"expert masks are {masks.shape[1]}×{masks.shape[2]}, the normal images "
                              f"{normals.shape[1]}×{normals.shape[2]}: load both at the same image size")
    empty = np.flatnonzero(~masks.reshape(len(masks), -1).any(1))
    if len(empty):
        raise GenerationError(f"expert masks {empty[:5].tolist()}{'…' if len(empty) > 5 else ''} are empty: an "
                              "expert mask must mark the region to inpaint (use the positive images' ground truth)")


class GenerationFolder:
    """A resumable output folder: ``plan.json`` (the requests, the inputs' digests and the generator's
    description), ``images/<i>.png`` and ``masks/<i>.png``, each written atomically. Re-opening it with another plan
    or other inputs is refused (the message names what differs); images already written are not redone."""

    def __init__(self, folder: str | os.PathLike, requests: Sequence[Request], inputs: dict, *,
                 data_root: str | os.PathLike | None = None):
        self.folder = Path(folder)
        if data_root is not None:
            root = Path(data_root).resolve()
            if self.folder.resolve() == root or self.folder.resolve().is_relative_to(root):
                raise GenerationError(f"output folder {self.folder} lies inside the dataset {root}; datasets are "
                                      "read-only to the kit: write to build/ or another folder")
        if self.folder.exists() and not self.folder.is_dir():
            raise GenerationError(f"output folder {self.folder} is a file; pass a folder")
        if (self.folder / "train").is_dir() or (self.folder / "ground_truth").is_dir():
            raise GenerationError(f"output folder {self.folder} looks like a dataset (train/ or ground_truth/ in it);"
                                  " write generated images to a folder of their own")
        self.requests = list(requests)
        self.plan = {"requests": [asdict(r) for r in self.requests], "inputs": inputs}
        plan_file = self.folder / "plan.json"
        if plan_file.exists():
            old = json.loads(plan_file.read_text())
            if old != self.plan:
                diff = [k for k in ("requests", "inputs") if old.get(k) != self.plan[k]]
                raise GenerationError(f"{self.folder} holds another generation run ({' and '.join(diff)} differ); "
                                      "choose a new folder or delete this one to start over")
        else:
            (self.folder / "images").mkdir(parents=True, exist_ok=True)
            (self.folder / "masks").mkdir(exist_ok=True)
            write_json_atomic(plan_file, self.plan)

    def image_path(self, r: Request) -> Path:
        """Where request ``r``'s image goes."""
        return self.folder / "images" / f"{r.index:05d}.png"

    def pending(self) -> list[Request]:
        """The requests whose image is not written yet."""
        return [r for r in self.requests if not self.image_path(r).exists()]

    def write(self, r: Request, image: np.ndarray, mask: np.ndarray) -> None:
        """Write request ``r``'s image and mask atomically (mask first: an image on disk means both are there)."""
        for path, arr in ((self.folder / "masks" / f"{r.index:05d}.png", mask.astype(np.uint8) * 255),
                          (self.image_path(r), image)):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            Image.fromarray(arr).save(tmp, format="PNG")
            os.replace(tmp, path)

    def load(self) -> tuple[np.ndarray, np.ndarray, list[Request]]:
        """Every written image (uint8 N×H×W×3), its mask (bool) and its request, in request order."""
        done = [r for r in self.requests if self.image_path(r).exists()]
        if not done:
            return np.zeros((0, 0, 0, 3), np.uint8), np.zeros((0, 0, 0), bool), []
        images = np.stack([np.asarray(Image.open(self.image_path(r)).convert("RGB")) for r in done])
        masks = np.stack([np.asarray(Image.open(self.folder / "masks" / f"{r.index:05d}.png")) > 127 for r in done])
        return images, masks, done


def default_folder(generator: str, seed: int = 0) -> Path:
    """``build/05/diag_<generator>_seed<seed>``: where notebook 05 keeps its generated positives (resumable)."""
    from ..core.paths import BUILD

    return BUILD / "05" / f"diag_{generator}_seed{check_int('seed', seed, 0)}"


def generate(inpaint: InpaintFn, normals: np.ndarray, masks: np.ndarray, requests: Sequence[Request],
             folder: str | os.PathLike, *, generator: str, batch_size: int = 8, progress: bool = True,
             data_root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, list[Request]]:
    """Run ``requests`` through ``inpaint`` in batches into the resumable ``folder`` (images already there are not
    redone) and return every image, mask and request (:meth:`GenerationFolder.load`). ``generator`` describes the
    inpainter (it goes into the plan, so another generator's run is never mixed in)."""
    normals, masks = np.asarray(normals), np.asarray(masks).astype(bool)
    _check_inputs(normals, masks)
    batch_size = check_int("batch_size", batch_size, 1)
    for r in requests:
        if not (0 <= r.normal < len(normals) and 0 <= r.mask < len(masks)):
            raise GenerationError(f"request {r.index} names normal image {r.normal} and mask {r.mask}, but there "
                                  f"are {len(normals)} images and {len(masks)} masks; plan with plan_requests")
    out = GenerationFolder(folder, requests, {"normals": _digest(normals), "masks": _digest(masks),
                                              "generator": generator}, data_root=data_root)
    todo = out.pending()
    bar = tqdm(total=len(requests), initial=len(requests) - len(todo), desc="generate", disable=not progress)
    for s in range(0, len(todo), batch_size):
        batch = todo[s:s + batch_size]
        m = masks[[r.mask for r in batch]]
        images = inpaint(normals[[r.normal for r in batch]], m, [r.prompt for r in batch], [r.seed for r in batch])
        if images.shape != (len(batch), *normals.shape[1:]) or images.dtype != np.uint8:
            raise GenerationError(f"the inpainter returned {images.dtype} {images.shape}, expected uint8 "
                                  f"{(len(batch), *normals.shape[1:])}")
        for r, img, mk in zip(batch, images, m):
            out.write(r, img, mk)
        bar.update(len(batch))
    bar.close()
    return out.load()


# ----------------------------------------------------------------------------------------------
# the paper path: SDXL inpainting (GPU, weights present)
# ----------------------------------------------------------------------------------------------
_SDXL_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")


def load_sdxl_inpaint(source: str | os.PathLike = PAPER.model, *, device: str | torch.device | None = None,
                      dtype: str = PAPER.dtype, local_files_only: bool = False):
    """``StableDiffusionXLInpaintPipeline.from_pretrained(source)`` (a hub id or a local folder) in ``dtype`` on
    ``device``; a local folder that is missing or lacks a component raises :class:`WeightsError` naming it."""
    from diffusers import StableDiffusionXLInpaintPipeline

    return load_pipeline(StableDiffusionXLInpaintPipeline, source, parts=_SDXL_PARTS, what="SDXL inpainting",
                         hub_id=PAPER.model, device=device, dtype=dtype, local_files_only=local_files_only)


def sdxl_inpaint_fn(pipe, settings: PaperSettings = PAPER, negative_prompt: str | None = NEGATIVE_PROMPT) -> InpaintFn:
    """An :data:`InpaintFn` calling ``pipe`` (a ``StableDiffusionXLInpaintPipeline``) with DIAG's settings, one
    seeded generator per image. Images and masks are resized to ``settings.size``² as DIAG does and the output is
    resized back (bicubic). diffusers accepts ``padding_mask_crop`` for one PIL image per call only; to batch, the
    kit does that call's crop itself with the pipeline's own processors (``get_crop_region``, ``preprocess`` with
    ``resize_mode="fill"``, ``apply_overlay``), so a batch equals DIAG's one-image calls."""
    device = getattr(pipe, "device", torch.device("cpu"))
    S = settings.size

    def inpaint(images: np.ndarray, masks: np.ndarray, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        H, W = images.shape[1:3]
        pil = [Image.fromarray(im).resize((S, S), Image.BICUBIC) for im in images]
        pil_m = [Image.fromarray(m.astype(np.uint8) * 255).resize((S, S), Image.NEAREST) for m in masks]
        kw = dict(prompt=list(prompts), height=S, width=S, num_inference_steps=settings.num_inference_steps,
                  guidance_scale=settings.guidance_scale, strength=settings.strength,
                  negative_prompt=None if negative_prompt is None else [negative_prompt] * len(prompts),
                  generator=[torch.Generator(device=device).manual_seed(int(s)) for s in seeds], output_type="pil")
        if settings.padding_mask_crop is None:
            out = pipe(image=pil, mask_image=pil_m, **kw).images
        else:
            crops = [pipe.mask_processor.get_crop_region(m, S, S, pad=settings.padding_mask_crop) for m in pil_m]
            x = torch.cat([pipe.image_processor.preprocess(im, height=S, width=S, crops_coords=c, resize_mode="fill")
                           for im, c in zip(pil, crops)]).add(1).div(2)       # [0, 1], as the pipeline expects
            m = torch.cat([pipe.mask_processor.preprocess(mk, height=S, width=S, crops_coords=c, resize_mode="fill")
                           for mk, c in zip(pil_m, crops)])
            out = pipe(image=x, mask_image=m, **kw).images
            out = [pipe.image_processor.apply_overlay(mk, im, o, c) for mk, im, o, c in zip(pil_m, pil, out, crops)]
        return np.stack([np.asarray(im.convert("RGB").resize((W, H), Image.BICUBIC)) for im in out])

    return inpaint


def tiny_sdxl_inpaint(seed: int = 0) -> StableDiffusionXLInpaintPipeline:
    """A randomly initialised, tiny ``StableDiffusionXLInpaintPipeline`` built in code (no download): the real
    pipeline class with small components, for plumbing tests and the CPU run of ``python -m lib.bench diag``.
    Its images are noise; it proves the orchestration, not the method."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(check_int("seed", seed, 0))
    net = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=9,
                               out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                               up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                               use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                               transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
                               cross_attention_dim=64)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, sample_size=128)
    text = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                          layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2,
                          vocab_size=len(tiny_clip_tokenizer()), hidden_act="gelu", projection_dim=32)
    return _sdxl_inpaint_pipeline(net, vae, CLIPTextModel(text), CLIPTextModelWithProjection(text))


def sdxl_inpaint_random(dtype: torch.dtype = torch.float16, seed: int = 0,
                        device: str | torch.device = "cpu") -> StableDiffusionXLInpaintPipeline:
    """``StableDiffusionXLInpaintPipeline`` with SDXL 1.0 inpainting's architecture (UNet 2.6 G parameters, 9 input
    channels; VAE; CLIP ViT-L and OpenCLIP ViT-bigG text encoders) and random weights initialised on ``device``, built
    in code (no download), for timing and smoke tests where the weights cannot be fetched; its images are noise."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(check_int("seed", seed, 0))
    with torch.device(device):               # initialise where it will run: seconds on a GPU, not minutes on a CPU
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=9, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024, scaling_factor=0.13025,
                            force_upcast=True)
        te1 = CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**OPENCLIP_VIT_BIGG))
    return _sdxl_inpaint_pipeline(unet, vae, te1, te2).to(dtype=dtype)


def _sdxl_inpaint_pipeline(unet, vae, te1, te2) -> StableDiffusionXLInpaintPipeline:
    """The SDXL inpainting pipeline around the given networks: Euler (SDXL's scheduler config), the offline
    tokenizer for both encoders, no aesthetics score, no progress bar."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline

    tok = tiny_clip_tokenizer()
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
                                   timestep_spacing="leading")
    pipe = StableDiffusionXLInpaintPipeline(vae=vae, text_encoder=te1, tokenizer=tok, text_encoder_2=te2,
                                            tokenizer_2=tok, unet=unet, scheduler=sched,
                                            requires_aesthetics_score=False, force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------------------------
# the quick path: the stand-in inpainting DDPM
# ----------------------------------------------------------------------------------------------
@dataclass
class StandinConfig:
    """The stand-in: a class-conditioned inpainting DDPM ([x_t, mask] → ε) on the defects of every category but
    ``target``."""

    preset: str = "lean"
    image_size: int = 64
    schedule: str = "linear"
    T: int = 1000
    steps: int = 2500
    batch_size: int = 16
    lr: float = 2e-4
    seed: int = 0
    ckpt_every: int = 500
    ema_decay: float = 0.995      # 0.999 over 2500 steps kept ~8 % of the initial weights in the EMA (speckled output)
    target: str = "metal_strip"   # never trained on: its positives stay unseen (zero-shot)
    dilate: int = 2               # the defect mask grown by this many pixels (the model learns the boundary)
    p_full: float = 0.2           # the whole image as mask (img2img, seed 004)
    p_uncond: float = 0.1         # the null class (classifier-free guidance)
    benchmark_version: int = 3

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Range checks (``ValueError`` naming the field, its value and the valid range)."""
        check_choice("preset", self.preset, sorted(UNET_PRESETS))
        check_choice("schedule", self.schedule, SCHEDULES)
        for name in ("steps", "batch_size", "T", "ckpt_every"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_int("dilate", self.dilate, 0)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_float("ema_decay", self.ema_decay, 0.0, 1.0, hi_open=True)
        check_float("p_full", self.p_full, 0.0, 1.0)
        check_float("p_uncond", self.p_uncond, 0.0, 1.0)
        levels = len(UNET_PRESETS[self.preset].block_out_channels)
        check_multiple("image_size", self.image_size, 2 ** (levels - 1), f"the {self.preset!r} UNet down-samples "
                       f"by 2^{levels - 1}")


KIND = register_kind(CheckpointKind("diag_standin", "DIAG's offline stand-in (a class-conditioned inpainting DDPM: "
                                    "ε-prediction UNet on [x_t, mask], EMA weights)", f"{MODULE}.load_standin",
                                    StandinConfig, weights=("ema",), fields=("config", "step", "losses", "sources")))


def _dilate(m: torch.Tensor, k: int) -> torch.Tensor:
    return m if k == 0 else F.max_pool2d(m, 2 * k + 1, 1, k)


def standin_training_set(root: str | os.PathLike, target: str, image_size: int) -> tuple[np.ndarray, np.ndarray,
                                                                                            np.ndarray, list[str]]:
    """The stand-in's training data: every defective test image of every category of ``root`` except ``target``,
    with its mask and class (:data:`DEFECT_CLASS`): ``(images uint8, masks bool, class ids, source names)``."""
    from .. import data as kit_data

    root = Path(root)
    cats = sorted(p.name for p in root.iterdir() if (p / "test").is_dir())
    if target not in cats:
        raise GenerationError(f"target={target!r} is not a category of {root} ({', '.join(cats)})")
    images, masks, classes, names = [], [], [], []
    for c in cats:
        if c == target:
            continue
        test = kit_data.load_category(root, c, image_size=image_size).test
        for i in np.flatnonzero(test.labels == 1):
            d = test.defect_types[i]
            if d not in DEFECT_CLASS:
                raise GenerationError(f"defect type {d!r} of {c} has no stand-in class; add it to DEFECT_CLASS")
            images.append(test.images[i]), masks.append(test.masks[i])
            classes.append(CLASSES.index(DEFECT_CLASS[d])), names.append(f"{c}/{d}")
    return np.stack(images), np.stack(masks), np.asarray(classes), names


def train_standin(images: np.ndarray, masks: np.ndarray, classes: np.ndarray, cfg: StandinConfig,
                  out: str | os.PathLike | None, *, export: str | os.PathLike | None = None,
                  device: str | torch.device | None = None, data_fingerprint: str = "unknown",
                  command: str | None = None, progress: bool = True, stop_after: int | None = None,
                  export_half: bool = False, sources: Sequence[str] = (), init: dict | None = None,
                  export_extra: dict | None = None):
    """Train the stand-in (from the weights ``init`` when given, e.g. to fine-tune it): x_t = m ⊙ (√ᾱ_t x_0 + √(1−ᾱ_t) ε) + (1 − m) ⊙ x_0, L on m only (seed 000 §3.3's masked
    process), m the dilated defect mask (or the whole image), class c (or the null class). Returns
    ``(model, ema, losses)``."""
    cfg.validate()
    x0_all = torch.from_numpy(images).float().div(127.5).sub(1).permute(0, 3, 1, 2).contiguous()
    m_all = _dilate(torch.from_numpy(masks.astype(np.float32))[:, None], cfg.dilate)
    c_all = torch.as_tensor(classes, dtype=torch.long)
    trainer = Trainer(cfg, out, data=(x0_all, m_all, c_all), device=device, data_fingerprint=data_fingerprint,
                      command=command, progress=progress, desc="train DIAG stand-in",
                      extra={"n_images": len(images), "classes": list(CLASSES)})
    dev, gen, B = trainer.device, trainer.generator, cfg.batch_size
    alpha_bar = Diffusion(make_betas(cfg.schedule, cfg.T)).alpha_bar.to(device=dev, dtype=torch.float32)
    model = unet(cfg.preset, cfg.image_size, in_channels=4, num_class_embeds=len(CLASSES) + 1).to(dev)
    if init is not None:
        model.load_state_dict({k: v.float() for k, v in init.items()})
    ema = unet(cfg.preset, cfg.image_size, in_channels=4, num_class_embeds=len(CLASSES) + 1).to(dev)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)

    def loss(nets, shard):
        idx = torch.randint(0, len(x0_all), (B,), generator=gen)
        x0, m, c = x0_all[idx], m_all[idx], c_all[idx].clone()
        flip = torch.rand(B, 2, generator=gen) < 0.5
        x0 = torch.where(flip[:, 0, None, None, None], x0.flip(-1), x0)
        m = torch.where(flip[:, 0, None, None, None], m.flip(-1), m)
        x0 = torch.where(flip[:, 1, None, None, None], x0.flip(-2), x0)
        m = torch.where(flip[:, 1, None, None, None], m.flip(-2), m)
        m = torch.where((torch.rand(B, generator=gen) < cfg.p_full)[:, None, None, None], torch.ones_like(m), m)
        c[torch.rand(B, generator=gen) < cfg.p_uncond] = len(CLASSES)
        t = torch.randint(0, cfg.T, (B,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        rows = shard.rows(B)
        x0, m, c, eps, t = (v[rows].to(dev) for v in (x0, m, c, eps, t))
        x_t = q_sample_masked(x0, alpha_bar[t], eps, m)
        return {"loss": masked_loss(nets["model"](torch.cat([x_t, m], 1), t, class_labels=c).sample, eps, m)}

    @torch.no_grad()
    def ema_update():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - cfg.ema_decay)

    history = trainer.fit(loss, {"model": model}, [{"params": model.parameters(), "lr": cfg.lr}], steps=cfg.steps,
                          ckpt_every=cfg.ckpt_every, keep={"ema": ema}, after_step=ema_update, stop_after=stop_after)
    losses = history.get("loss", [])
    weights = half_precision(ema.state_dict()) if export_half else ema.state_dict()
    trainer.export(export, KIND, {"config": asdict(cfg), "step": trainer.step, "losses": losses, "ema": weights,
                                  "sources": sorted(set(sources))},
                   weights=f"EMA (decay {cfg.ema_decay:g}){', stored as float16' if export_half else ''}",
                   extra=export_extra if export_extra is not None else
                   {"trained_on": sorted({s.split('/')[0] for s in sources}), "never_saw": cfg.target})
    return model, ema, losses


class Standin(NamedTuple):
    """A trained stand-in: UNet (EMA), schedule, config, manifest, losses, the defect types it learned from, path."""

    unet: torch.nn.Module
    diffusion: Diffusion
    config: StandinConfig
    manifest: dict | None
    losses: list[float]
    sources: tuple[str, ...]
    path: Path


def load_standin(path: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True) -> Standin:
    """A trained stand-in (float32 EMA weights) from an exported checkpoint."""
    state, cfg, manifest = open_checkpoint(path, KIND, verify)
    model = unet(cfg.preset, cfg.image_size, in_channels=4, num_class_embeds=len(CLASSES) + 1)
    model.load_state_dict({k: v.float() for k, v in state["ema"].items()})
    return Standin(model.to(device).eval(), Diffusion(make_betas(cfg.schedule, cfg.T)), cfg, manifest,
                   list(state["losses"]), tuple(state["sources"]), Path(path))


def _scheduler(model: Standin, name: str, seeds: Sequence[int]):
    """A diffusers scheduler on the stand-in's betas, x̂_0 clipped to [−1, 1]: "ddim" (η = 0), "ddpm" (ancestral
    steps on a coarse grid) or "dpmpp_sde_karras" (DPM++ SDE Karras, seed 004's sampler; one Brownian tree per
    image, seeded with ``seeds[i]``)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverSDEScheduler

    betas = model.diffusion.betas.double().numpy()
    T = model.diffusion.T
    if name == "ddim":
        return DDIMScheduler(num_train_timesteps=T, trained_betas=betas, clip_sample=True, set_alpha_to_one=True,
                             timestep_spacing="trailing")
    if name == "ddpm":
        return DDPMScheduler(num_train_timesteps=T, trained_betas=betas, clip_sample=True,
                             timestep_spacing="trailing", variance_type="fixed_small")
    if name == "dpmpp_sde_karras":
        sched = DPMSolverSDEScheduler(num_train_timesteps=T, trained_betas=betas, use_karras_sigmas=True)
        sched.noise_sampler_seed = [int(s) for s in seeds]    # one Brownian tree per image (diffusers' batched tree)
        return sched
    raise ValueError(f"scheduler={name!r} is unknown; choose 'ddim', 'ddpm' or 'dpmpp_sde_karras'")


@torch.no_grad()
def sample_standin(model: Standin, images: np.ndarray, masks: np.ndarray, classes: Sequence[str],
                   seeds: Sequence[int], *, num_steps: int = 30, strength: float = 0.99, guidance_scale: float = 1.0,
                   scheduler: str = "ddim", device: str | torch.device | None = None) -> np.ndarray:
    """Inpaint ``images`` (uint8 N×H×W×3) inside ``masks`` with class ``classes[i]`` by a diffusers scheduler loop
    (img2img timesteps as diffusers' pipelines: the last ⌊num_steps·strength⌋ of the grid, x_{t_start} =
    √ᾱ x_0 + √(1−ᾱ) ε inside the mask); the known pixels are put back after every step, and ε̂ = ε_u + w (ε_c − ε_u)
    when ``guidance_scale`` w ≠ 1. Each image has its own generator (``seeds[i]``)."""
    images, masks = np.asarray(images), np.asarray(masks).astype(bool)
    _check_inputs(images, masks)
    n = len(images)
    if len(classes) != n or len(seeds) != n:
        raise GenerationError(f"need one class and one seed per image ({n}), got {len(classes)} and {len(seeds)}")
    num_steps = check_int("num_steps", num_steps, 1, model.diffusion.T)
    strength = check_float("strength", strength, 0.0, 1.0, lo_open=True)
    check_float("guidance_scale", guidance_scale, 0.0)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise GenerationError(f"unknown class {unknown[0]!r}; the stand-in knows {', '.join(CLASSES)}")
    levels = len(UNET_PRESETS[model.config.preset].block_out_channels)
    H, W = images.shape[1:3]
    if H % 2 ** (levels - 1) or W % 2 ** (levels - 1):
        raise GenerationError(f"images are {H}×{W}; the stand-in needs sides divisible by {2 ** (levels - 1)}")
    dev = pick_device(None if device is None else str(device))
    net = model.unet.to(dev)
    x0 = torch.from_numpy(images).float().div(127.5).sub(1).permute(0, 3, 1, 2).to(dev)
    m = torch.from_numpy(masks.astype(np.float32))[:, None].to(dev)
    c = torch.tensor([CLASSES.index(k) for k in classes], device=dev)
    null = torch.full_like(c, len(CLASSES))
    sched = _scheduler(model, scheduler, seeds)
    sched.set_timesteps(num_steps, device=dev)
    init = min(int(num_steps * strength), num_steps)
    timesteps = sched.timesteps[max(num_steps - init, 0) * sched.order:]
    if len(timesteps) == 0:
        raise GenerationError(f"strength={strength} with num_steps={num_steps} leaves no step; raise either")
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(max(num_steps - init, 0) * sched.order)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens])
    step_kw = {"generator": gens} if scheduler == "ddpm" else {}     # ancestral noise, per image
    x = sched.add_noise(x0, noise.to(dev), timesteps[:1].repeat(n))
    for t in timesteps:
        scale = sched.scale_model_input(torch.ones(()), t).item()    # 1 for DDIM, 1/√(σ²+1) for DPM++
        x = m * x + (1 - m) * x0 / scale                              # known pixels enter the network as x_0
        xin = sched.scale_model_input(x, t)
        tt = t.expand(n).to(dev)
        if guidance_scale == 1.0:
            eps = net(torch.cat([xin, m], 1), tt, class_labels=c).sample
        else:
            both = net(torch.cat([xin, m], 1).repeat(2, 1, 1, 1), tt.repeat(2), class_labels=torch.cat([c, null])).sample
            eps = both[n:] + guidance_scale * (both[:n] - both[n:])
        x = sched.step(eps, t, x, **step_kw).prev_sample
    x = m * x + (1 - m) * x0
    out = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.where(masks[..., None], out, images)         # the input's own bytes outside the mask


def standin_inpaint_fn(model: Standin, *, num_steps: int = 30, strength: float = 0.99, guidance_scale: float = 1.0,
                       scheduler: str = "ddim", device: str | torch.device | None = None) -> InpaintFn:
    """An :data:`InpaintFn` with the stand-in: each prompt maps to a class (:func:`prompt_class`)."""

    def inpaint(images, masks, prompts, seeds):
        return sample_standin(model, images, masks, [prompt_class(p) for p in prompts], seeds, num_steps=num_steps,
                              strength=strength, guidance_scale=guidance_scale, scheduler=scheduler, device=device)

    return inpaint


# ----------------------------------------------------------------------------------------------
# the MemSeg-style baseline (§II: Perlin ROI × foreground, a noise/texture source pasted in)
# ----------------------------------------------------------------------------------------------
def memseg_augment(normals: np.ndarray, n_aug: int, seed: int = 0, *, foreground: np.ndarray | None = None,
                   category: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """N_aug MemSeg-style positives: a random normal image, a Perlin region of interest (× the foreground when
    given), a texture photo blended in (:func:`lib.data.synth.synthesize`, texture mode). Returns uint8 images and
    bool masks."""
    from ..data import synth
    from ..data.loader import to_tensor

    normals = np.asarray(normals)
    check_int("n_aug", n_aug, 1)
    H, W = normals.shape[1:3]
    sources = synth.anomaly_sources((H, W), exclude=category)
    gen = torch.Generator().manual_seed(check_int("seed", seed, 0))
    picks = torch.randint(0, len(normals), (n_aug,), generator=gen).tolist()
    images, masks = [], []
    for i in picks:
        fg = None if foreground is None else torch.from_numpy(foreground[i].astype(np.float32))
        s = synth.synthesize(to_tensor(normals[i]), gen, sources, mode="texture", foreground=fg)
        images.append(((s.image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy())
        masks.append(s.mask[0].numpy() > 0)
    return np.stack(images), np.stack(masks)


# ----------------------------------------------------------------------------------------------
# profiles, the committed stand-in, command line
# ----------------------------------------------------------------------------------------------
PROFILES = {"quick": StandinConfig()}
SECONDS_PER_STEP = {"quick": {"on one thread of a 2-core CPU": 0.8}}


def checkpoint_name(profile: str = "quick", target: str = "metal_strip", seed: int = 0) -> str:
    """``diag_standin_<preset>_<target><size>[_seed<seed>]``."""
    cfg = PROFILES[check_choice("profile", profile, list(PROFILES))]
    return f"diag_standin_{cfg.preset}_{target}{cfg.image_size}" + (f"_seed{seed}" if seed else "")


def pretrained(profile: str = "quick", *, target: str = "metal_strip", data_root: str | os.PathLike | None = None,
               seed: int = 0, retrain: bool = False, device: str | torch.device | None = "auto") -> Standin:
    """The committed stand-in for ``target`` (trained first when ``retrain``); a missing checkpoint raises
    ``FileNotFoundError`` with the command that trains it."""
    from .. import data as kit_data

    cfg = replace(PROFILES[check_choice("profile", profile, list(PROFILES))], seed=check_int("seed", seed, 0),
                  target=target)
    name = checkpoint_name(profile, target, seed)
    root = Path(data_root) if data_root is not None else kit_data.embedded_benchmark(
        size=cfg.image_size, version=cfg.benchmark_version)
    options = config_argv(cfg, always=("image_size", "steps", "target")) + ["--export-half", "--name", name]
    shown = command_line(MODULE, options if data_root is None else ["--data", str(root)] + options)
    run_argv = ["--data", str(root)] + options
    path = find_or_train(checkpoint_path(CHECKPOINTS, name), retrain=retrain, command=shown,
                         train=lambda: run(parser().parse_args(run_argv), command=shown, device=device),
                         cost=training_time(cfg.steps, SECONDS_PER_STEP.get(profile, {})),
                         expected_config=asdict(cfg), data_fingerprint=_fingerprint(root, target))
    return load_standin(path, device=pick_device(device))


def _fingerprint(root: Path, target: str) -> str:
    from .. import data as kit_data

    h = hashlib.sha256()
    for p in sorted(root.iterdir()):
        if (p / "test").is_dir() and p.name != target:
            h.update(p.name.encode() + kit_data.fingerprint(p).encode())
    return h.hexdigest()


def parser() -> argparse.ArgumentParser:
    """The ``python -m lib.methods.diag`` argument parser (trains the stand-in)."""
    return training_parser(MODULE, "Train DIAG's offline stand-in, a class-conditioned inpainting DDPM, on the defects "
                           "of every category but --target", StandinConfig, example="diag_standin_lean_metal_strip64")


def run(a: argparse.Namespace, *, command: str, device: str | torch.device | None = None) -> Path:
    """Train what the parsed options ``a`` describe; returns the exported checkpoint's path."""
    from .. import data as kit_data

    cfg = config_from_args(StandinConfig, a)
    root = Path(a.data) if a.data is not None else kit_data.embedded_benchmark(size=cfg.image_size,
                                                                               version=cfg.benchmark_version)
    images, masks, classes, names = standin_training_set(root, cfg.target, cfg.image_size)
    export = checkpoint_path(a.export_dir, a.name)
    train_standin(images, masks, classes, cfg, checkpoint_path(a.state_dir, a.name), export=export,
                  device=device or a.device, command=command, data_fingerprint=_fingerprint(root, cfg.target),
                  export_half=a.export_half, sources=names)
    return export


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.methods.diag``: parse, train, export; errors exit with status 2."""
    cli_main(MODULE, parser, run, argv)


if __name__ == "__main__":
    main()
