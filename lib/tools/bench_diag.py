"""``python -m lib.bench diag``: seconds per image of DIAG's SDXL inpainting (seed 001 §III-B), side by side in one run.

    python -m lib.bench diag                                  # GPU: the SDXL architecture, random weights, 1024²
    python -m lib.bench diag --weights /data/sdxl-inpaint     # the real weights (a local folder or the hub id)
    python -m lib.bench diag --device cpu --arch tiny --size 128 --steps 4 --images 4 --batches 2 --no-compile

Rows, each at DIAG's settings (30 steps, guidance 20 — so every step runs the UNet on the prompt and the negative
prompt —, strength 0.99, ``padding_mask_crop`` 2, the mask crop resized to ``--size``², float16):

* **DIAG's call**: one ``StableDiffusionXLInpaintPipeline`` call per image with PIL inputs, as the authors' code;
* **kit, batch B**: :func:`lib.methods.diag.sdxl_inpaint_fn`, which does the pipeline's mask crop itself so that B
  images go through one call (the test suite checks it equals the one-image call);
* **kit, batch B, <dtype>** (``--also-dtypes bfloat16``): the same eager call in another precision;
* **kit, batch B, compiled**: the same with ``torch.compile`` on the UNet (default mode; the first call compiles and
  is not timed), and channels-last memory.

Each row reports seconds per image, the speed-up over DIAG's call and the peak GPU memory; one column gives the
largest difference (grey levels) between the row's images and DIAG's call's for the same seeds. The issue's target
is ≤ 0.8 s per 1024² image on one H100/H200 (DIAG's own call: 3.69 s with random weights). Without ``--weights``
the weights are random (speed does not depend on them; the images are noise). ``--arch full`` builds SDXL's
UNet, VAE and both text encoders in code from their published configs; ``--arch tiny`` the test suite's tiny
pipeline (the CPU run proves the script works, its times say nothing about SDXL).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from ..core.device import pick_device
from ..core.timing import throughput
from ..methods import diag as DG

__all__ = ["bench_diag", "main"]


def _inputs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` KSDD2-sized (632 × 224) noise images and box masks: the speed does not depend on the content."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 632, 224, 3), dtype=np.uint8)
    masks = np.zeros((n, 632, 224), bool)
    for i in range(n):
        y, x = rng.integers(40, 500), rng.integers(20, 150)
        masks[i, y:y + 80, x:x + 40] = True
    return images, masks


def _diag_call(pipe, settings: DG.PaperSettings):
    """DIAG's own call: one pipeline call per image with PIL inputs and ``padding_mask_crop``."""
    from PIL import Image

    device = pipe.device
    S = settings.size

    def inpaint(images, masks, prompts, seeds):
        out = []
        for im, m, p, s in zip(images, masks, prompts, seeds):
            res = pipe(prompt=p, negative_prompt=DG.NEGATIVE_PROMPT,
                       image=Image.fromarray(im).resize((S, S), Image.BICUBIC),
                       mask_image=Image.fromarray(m.astype(np.uint8) * 255).resize((S, S), Image.NEAREST),
                       height=S, width=S, num_inference_steps=settings.num_inference_steps,
                       guidance_scale=settings.guidance_scale, strength=settings.strength,
                       padding_mask_crop=settings.padding_mask_crop,
                       generator=torch.Generator(device=device).manual_seed(int(s))).images[0]
            out.append(np.asarray(res.convert("RGB").resize((im.shape[1], im.shape[0]), Image.BICUBIC)))
        return np.stack(out)

    return inpaint


def bench_diag(a: argparse.Namespace) -> tuple[list[dict], dict]:
    """Time DIAG's one-image call and the kit's batched calls (eager, compiled) on the same images and seeds."""
    device = pick_device(a.device)
    cuda = device.type == "cuda"
    dtype = getattr(torch, a.dtype)
    if a.weights:
        pipe = DG.load_sdxl_inpaint(a.weights, device=device, dtype=a.dtype)
        weights = f"weights {a.weights}"
    elif a.arch == "full":
        pipe = DG.sdxl_inpaint_random(dtype, device=device).to(device)   # initialised on the GPU: seconds, not minutes
        weights = "random weights (SDXL architecture)"
    else:
        pipe, weights = DG.tiny_sdxl_inpaint(seed=a.seed).to(device=device, dtype=dtype), "random weights (tiny)"
    settings = DG.PaperSettings(num_inference_steps=a.steps, size=a.size)
    images, masks = _inputs(a.images, a.seed)
    prompts = [DG.PROMPTS[i % len(DG.PROMPTS)] for i in range(a.images)]
    seeds = list(range(a.seed, a.seed + a.images))
    rows: list[dict] = []

    def record(name: str, fn, batch: int, ref: np.ndarray | None):
        outs = []

        def call():
            outs.clear()
            for s in range(0, a.images, batch):
                outs.append(fn(images[s:s + batch], masks[s:s + batch], prompts[s:s + batch], seeds[s:s + batch]))

        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        r = throughput(call, a.images, warmup=a.warmup, repeats=a.repeats, device=device)
        got = np.concatenate(outs)
        rows.append({"path": name, "batch": batch, "s_per_image": r["seconds"] / a.images,
                     "images_per_s": r["images_per_s"],
                     "max_diff_vs_diag_call": (float(np.abs(got.astype(int) - ref.astype(int)).max())
                                               if ref is not None else 0.0),
                     "peak_GiB": torch.cuda.max_memory_allocated(device) / 2 ** 30 if cuda else float("nan")})
        print(f"{name:40s} batch {batch:3d}: {rows[-1]['s_per_image']:.3f} s/image", file=sys.stderr)
        if a.json:               # the rows so far: a run stopped by a time limit keeps them
            Path(a.json).write_text(json.dumps({"rows": rows}, indent=1))
        return got

    # one short untimed call first (2 steps, one image): the device's context, kernels and allocator warm up here, so
    # --warmup 0 times every row's first call without charging the first row for them
    _diag_call(pipe, DG.PaperSettings(num_inference_steps=2, size=a.size))(images[:1], masks[:1], prompts[:1],
                                                                          seeds[:1])
    ref = record("DIAG's call (one image per call)", _diag_call(pipe, settings), 1, None)
    kit = DG.sdxl_inpaint_fn(pipe, settings)
    for B in a.batches:
        record("kit, batched", kit, B, ref)
    for other in a.also_dtypes:            # the same call in another precision (eager, the largest batch)
        pipe.to(dtype=getattr(torch, other))
        record(f"kit, batched, {other}", kit, a.batches[-1], ref)
    pipe.to(dtype=dtype)
    if a.compile:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.unet = torch.compile(pipe.unet, mode=a.compile_mode)
        t0 = time.perf_counter()
        kit(images[:a.batches[-1]], masks[:a.batches[-1]], prompts[:a.batches[-1]], seeds[:a.batches[-1]])
        compile_s = time.perf_counter() - t0
        for B in a.batches:
            record(f"kit, batched, torch.compile ({a.compile_mode}), channels-last", kit, B, ref)
        rows[-1]["first_call_s"] = compile_s
    base = rows[0]["s_per_image"]
    for r in rows:
        r["speedup_vs_diag_call"] = base / r["s_per_image"]
    meta = {"device": torch.cuda.get_device_name(device) if cuda else device.type.upper(), "weights": weights,
            "dtype": a.dtype, "size": a.size, "steps": a.steps, "images": a.images, "torch": torch.__version__,
            "unet_params": sum(p.numel() for p in pipe.unet.parameters())}
    return rows, meta


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.bench diag [options]``: run the benchmark, save its table under figures/tables/timing/."""
    p = argparse.ArgumentParser(prog="python -m lib.bench diag", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="auto (default: cuda → mps → cpu), cuda, cuda:N, mps or cpu")
    p.add_argument("--weights", default=None, help="SDXL inpainting weights (local folder or hub id); default: "
                   "random weights")
    p.add_argument("--arch", choices=["full", "tiny"], default=None, help="architecture of the random weights "
                   "(default: full on a GPU, tiny on CPU)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None,
                   help="default: float16 on a GPU (DIAG's), float32 on CPU")
    p.add_argument("--also-dtypes", default="", help="comma-separated other precisions for an eager row of the kit's "
                   "largest batch, e.g. bfloat16 (its max difference is to DIAG's call in --dtype)")
    p.add_argument("--size", type=int, default=None, help="working size (DIAG: 1024; default 1024 on a GPU, 128 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="inference steps (DIAG: 30; default 30 on a GPU, 4 on CPU)")
    p.add_argument("--images", type=int, default=8, help="images per timed call (a multiple of every batch)")
    p.add_argument("--batches", default="4,8", help="batch sizes of the kit's rows")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-mode", default="default", choices=["default", "max-autotune-no-cudagraphs"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    a = p.parse_args(argv)
    try:
        a.batches = sorted(int(b) for b in a.batches.split(","))
    except ValueError:
        p.error(f"--batches {a.batches!r}: give comma-separated integers, e.g. 4,8")
    a.also_dtypes = [d for d in a.also_dtypes.split(",") if d]
    if any(d not in ("float16", "bfloat16", "float32") for d in a.also_dtypes):
        p.error(f"--also-dtypes {','.join(a.also_dtypes)!r}: choose among float16, bfloat16, float32")
    gpu = pick_device(a.device).type == "cuda"
    a.arch = a.arch or ("full" if gpu else "tiny")
    a.dtype = a.dtype or ("float16" if gpu else "float32")
    a.size = a.size or (1024 if gpu else 128)
    a.steps = a.steps or (30 if gpu else 4)
    bad = [b for b in a.batches if b < 1 or a.images % b]
    if bad or a.images < 1:
        p.error(f"--images {a.images} must be a positive multiple of every batch in --batches ({bad or a.batches})")
    if not gpu:
        print("note: no CUDA device here; the times are CPU times of the chosen architecture", file=sys.stderr)
    try:
        rows, meta = bench_diag(a)
    except ValueError as e:
        p.error(str(e))
    import pandas as pd

    from ..show.figures import save_table

    df = pd.DataFrame(rows)
    cap = (f"DIAG SDXL inpainting on {meta['device']} ({meta['weights']}, UNet {meta['unet_params'] / 1e6:.0f} M "
           f"params, {meta['dtype']}, {meta['size']}², {meta['steps']} steps, guidance 20, padding_mask_crop 2, "
           f"{meta['images']} images per timed call; torch {meta['torch']}, {date.today()}). Target: ≤ 0.8 s per 1024² "
           "image on one H100/H200.")
    name = f"bench_diag_{'gpu' if gpu else 'cpu'}_{a.arch}{meta['size']}_{meta['dtype']}"
    save_table(df, name, cap, timing=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print()
    print(cap)
    print(df.to_markdown(index=False, floatfmt=".4g"))
