"""Speed benchmarks, measured side by side in one run (never timing assertions in tests).

    python -m lib.bench diffusionad                   # paper-size UNet at 256², GPU if present
    python -m lib.bench diag                          # DIAG's SDXL inpainting (lib.tools.bench_diag)
    python -m lib.bench diffusionad --device cpu --preset small --seg-preset tiny --image-size 64

``diffusionad`` times the *whole* norm-guided inference of DiffusionAD (seed 003 §IV-B/C):
two noisings, both UNet passes, eqs. 6–8, the segmentation sub-network, the sigmoid and the
top-50 image score, for

* the paper's setting — eager fp32, batch 1, the two noisings as two UNet calls
  (the authors report 23.5 images/s on an A100, Table VI);
* fast paths — the two noisings of an image in one batched UNet call, bf16 autocast,
  channels-last memory, ``torch.compile`` (default mode for large batches; "reduce-overhead",
  i.e. CUDA graphs, for batch-1 latency).

Every row also reports TFLOP/s from the FLOPs per image counted by
:func:`flops_per_image` with :func:`lib.core.flops.count_flops` (for the paper presets: 2 × 0.563 + 0.076
= 1.20 TFLOP, 98 % of it convolutions; the same count on every torch version); the times come from
:func:`lib.core.timing.throughput` (the device synchronised around every timed call). ``--breakdown``
times the UNet (batch 2B) and the segmentation net (batch B) alone to show where the time goes;
``--compile-mode`` and ``--coordinate-descent`` try inductor's autotuning.
``scripts/device_bench_diffusionad.sh`` runs the measurement plan in one GPU call.

It checks that the fast path computes the same function: anomaly maps and image scores of the
embedded benchmark's test split, with the same noise, against the fp32 path (max |Δ|), and the
image / pixel AUROC of both. Weights are random unless ``--checkpoint`` is given (speed does not
depend on the weights; the AUROC of random weights is meaningless and is labelled so — it is
only compared between the two paths).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import date
from pathlib import Path
from typing import Callable

import torch

from ..core.diffusion import Diffusion, make_betas
from ..core.checks import check_float, check_int
from ..core.scoring import image_score
from ..methods.diffusionad import norm_guided_core

from ..core.device import device_label, pick_device
from ..core.flops import count_flops
from ..core.metrics import image_auroc, pixel_auroc
from ..core import nets
from ..core.timing import matmul_ceiling, throughput


def make_pipeline(unet: torch.nn.Module, seg: torch.nn.Module, diffusion: Diffusion, t_s: int = 200,
                  t_b: int = 400, w: float = 1.0, one_call: bool = True, dtype: torch.dtype | None = None,
                  k: int = 50, model_dtype: torch.dtype | None = None
                  ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """x, noise_s, noise_b → (anomaly map (B,H,W) float32, image score (B,)).

    The same arithmetic as :func:`lib.methods.diffusionad.norm_guided` (it calls its check-free core;
    t_s, t_b, w and k are checked once here, when the pipeline is built), with the coefficients for
    fixed t_s, t_b precomputed as Python floats so nothing touches the host; image score = mean of the
    top-k map values (DiffusionAD's authors: k = 50).
    ``dtype`` runs everything under autocast; ``model_dtype`` instead expects networks whose
    weights were cast to that dtype and casts only at their boundaries (the arithmetic of
    eqs. 1, 6–8 and the score stay in float32; GroupNorm then runs in bf16 too)."""
    t_s = check_int("t_s", t_s, 0, diffusion.T - 1)
    t_b = check_int("t_b", t_b, t_s, diffusion.T - 1)
    w, k = check_float("w", w, 0.0), check_int("k", k, 1)
    ab = diffusion.alpha_bar
    coefs = (math.sqrt(ab[t_s]), math.sqrt(1 - ab[t_s]), math.sqrt(ab[t_b]), math.sqrt(1 - ab[t_b]))

    def eps_model(x_t, t):
        if model_dtype is not None:
            return unet(x_t.to(model_dtype), t).sample.float()
        return unet(x_t, t).sample

    def run(x, n_s, n_b):
        B = x.shape[0]
        ts = torch.full((B,), t_s, device=x.device, dtype=torch.long)
        tb = torch.full((B,), t_b, device=x.device, dtype=torch.long)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            r = norm_guided_core(eps_model, x, ts, tb, coefs, n_s, n_b, w, one_call)
            pair = torch.cat([x, r.x0_g.to(x.dtype)], 1)
            logits = seg(pair if model_dtype is None else pair.to(model_dtype))
        amap = torch.sigmoid(logits.float())[:, 0]
        return amap, image_score(amap, reduction="topk", k=k)

    return run


def flops_per_image(unet: torch.nn.Module, seg: torch.nn.Module, image_size: int,
                    device: str | torch.device) -> dict[str, int]:
    """FLOPs of one image's norm-guided inference: image = 2 · unet_forward + seg_forward (DiffusionAD §IV-C).

    Both noisings pass the UNet, the (image, reconstruction) pair the segmentation net; each forward
    is counted by :func:`lib.core.flops.count_flops` (convolutions, linear layers, attention; the
    elementwise eqs. 1, 6–8 are not counted)."""
    image_size = check_int("image_size", image_size, 1)
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    u = count_flops(unet, x, torch.zeros(1, dtype=torch.long, device=device))["total"]
    s = count_flops(seg, torch.cat([x, x], 1))["total"]
    return {"unet_forward": u, "seg_forward": s, "image": 2 * u + s}


def _load_models(args: argparse.Namespace,
                 device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, Diffusion, str]:
    torch.manual_seed(args.seed)
    if args.checkpoint:
        from ..methods.diffusionad import load_diffusionad

        m = load_diffusionad(args.checkpoint, category=args.category)   # a shared model: as --category's
        return m.unet, m.seg, m.diffusion, f"trained checkpoint {args.checkpoint}"
    u = nets.unet(args.preset, args.image_size)
    s = nets.segmentation_net(args.seg_preset)
    return u, s, Diffusion(make_betas("linear", 1000)), "random weights"


def _eval_set(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, masks and labels of ``--category``'s test split of the embedded benchmark (the quick profile's version)
    at ``--image-size``."""
    from .. import data as kit_data

    from ..methods.diffusionad import DATA_VERSION

    root = kit_data.embedded_benchmark(size=args.image_size, version=DATA_VERSION["quick"])
    cat = kit_data.load_category(root, args.category, image_size=args.image_size)
    x = kit_data.to_tensor(cat.test.images)
    masks = torch.as_tensor(cat.test.masks)
    labels = torch.as_tensor(cat.test.labels)
    return x, masks, labels


def bench_diffusionad(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Rows (one per inference path) and run metadata of the DiffusionAD speed benchmark (see the module docstring)."""
    device = pick_device(args.device)
    unet32, seg32, diffusion, weights = _load_models(args, device)
    unet32.to(device).eval().requires_grad_(False)
    seg32.to(device).eval().requires_grad_(False)
    print(f"device: {device_label(device)}; UNet "
          f"{args.preset} {nets.count_parameters(unet32) / 1e6:.1f} M params, seg net {args.seg_preset} "
          f"{nets.count_parameters(seg32) / 1e6:.1f} M, {args.image_size}², {weights}", flush=True)
    gpu = device.type == "cuda"
    flops = flops_per_image(unet32, seg32, args.image_size, device)
    print(f"FLOPs per image: UNet forward {flops['unet_forward'] / 1e12:.4f} T × 2 + seg net "
          f"{flops['seg_forward'] / 1e12:.4f} T = {flops['image'] / 1e12:.4f} TFLOP", flush=True)
    warm, reps = (args.warmup, args.repeats) if gpu else (1, 3)
    H = W = args.image_size
    half = getattr(torch, args.half)
    ceiling = (matmul_ceiling(device, half) if gpu else matmul_ceiling(device, torch.float32, n=1024, repeats=3))
    print(f"measured ceiling: {ceiling:.1f} TFLOP/s ({'8192³ ' + args.half if gpu else '1024³ float32'} matrix "
          "product, random data)", flush=True)

    # ---- correctness data: the embedded test split, one noise draw per image (shared by all paths)
    x_eval, masks, labels = _eval_set(args)
    g = torch.Generator().manual_seed(args.seed)
    n_s = torch.randn(x_eval.shape, generator=g)
    n_b = torch.randn(x_eval.shape, generator=g)

    Pipeline = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

    def eval_maps(fn: Pipeline, batch: int, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps and scores of the eval set through ``fn`` in chunks of ``batch`` (the last one padded)."""
        maps, scores = [], []
        n = len(x_eval)
        with torch.no_grad():
            for i in range(0, n, batch):
                idx = torch.arange(i, i + batch).clamp(max=n - 1)
                xb, sb, bb = (t[idx].to(device) for t in (x_eval, n_s, n_b))
                if channels_last:
                    xb, sb, bb = (t.contiguous(memory_format=torch.channels_last) for t in (xb, sb, bb))
                a, s = fn(xb, sb, bb)
                take = min(batch, n - i)
                maps.append(a[:take].float().cpu())
                scores.append(s[:take].float().cpu())
        return torch.cat(maps), torch.cat(scores)

    ref = make_pipeline(unet32, seg32, diffusion, one_call=False)
    ref_maps, ref_scores = eval_maps(ref, 1, False)
    rows = []

    def record(name: str, fn: Pipeline, batch: int, check: dict | None = None,
               per_image: int = flops["image"]) -> dict:
        x = torch.randn(batch, 3, H, W, device=device).clamp(-1, 1)
        xs = x.contiguous(memory_format=torch.channels_last) if "channels-last" in name else x

        def call():
            return fn(xs, torch.randn_like(xs), torch.randn_like(xs))

        if gpu:
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            first = throughput(call, batch, warmup=0, repeats=1, device=device)["seconds"]
            r = throughput(call, batch, warmup=warm, repeats=reps, device=device)
        ms = 1000 * r["seconds"]
        row = {"path": name, "batch": batch, "images_per_s": r["images_per_s"],
               "TFLOP_per_s": r["images_per_s"] * per_image / 1e12,
               "fraction_of_ceiling": r["images_per_s"] * per_image / 1e12 / ceiling,
               "latency_ms": ms if batch == 1 else float("nan"),
               "ms_per_call": ms, "first_call_s": first,
               "peak_GiB": torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")}
        if check is not None:
            row.update(check)
        rows.append(row)
        if args.json:            # the rows so far: a run stopped by a time limit keeps them
            Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))
        print(f"  {name:58s} batch {batch:4d}: {r['images_per_s']:9.2f} img/s, "
              f"{ms:9.2f} ms/call (first call {first:.1f} s)", flush=True)
        return row

    def check(fn: Pipeline, batch: int, channels_last: bool) -> dict:
        """Maps/scores of the eval set through ``fn`` vs the fp32 reference (max |Δ|), and their AUROCs."""
        maps, scores = eval_maps(fn, batch, channels_last)
        out = {"max_abs_map_diff": (maps - ref_maps).abs().max().item(),
               "max_abs_score_diff": (scores - ref_scores).abs().max().item()}
        if labels.min() != labels.max():
            out["image_AUROC"] = image_auroc(scores.numpy(), labels.numpy())
            out["pixel_AUROC"] = pixel_auroc(maps.numpy(), masks.numpy())
        return out

    ref_check = check(ref, 1, False)
    print("paths (all compute the full norm-guided inference + segmentation net + top-50 score):", flush=True)
    base = record("eager fp32, 2 UNet calls (paper setting)", ref, 1, ref_check)
    one = make_pipeline(unet32, seg32, diffusion, one_call=True)
    record("eager fp32, 1 batched UNet call", one, 1, check(one, 1, False))
    dtype = half if (gpu or args.cpu_bf16) else None
    if gpu:
        torch.backends.cudnn.benchmark = True
    import torch._inductor.config as inductor_config

    if args.freeze:
        inductor_config.freezing = True      # fold weights/BatchNorm into the compiled graph (inference only)
    if args.coordinate_descent:
        inductor_config.coordinate_descent_tuning = True   # tune the generated (GroupNorm, pointwise) kernels
    if args.pure_bf16 and dtype is not None:
        import copy

        unet_cl = copy.deepcopy(unet32).to(dtype=dtype, memory_format=torch.channels_last)
        seg_cl = copy.deepcopy(seg32).to(dtype=dtype, memory_format=torch.channels_last)
        fast = make_pipeline(unet_cl, seg_cl, diffusion, one_call=True, model_dtype=dtype)
        tag = f"{_short(dtype)} weights, channels-last" + (", frozen" if args.freeze else "")
    else:
        unet_cl = unet32.to(memory_format=torch.channels_last)
        seg_cl = seg32.to(memory_format=torch.channels_last)
        fast = make_pipeline(unet_cl, seg_cl, diffusion, one_call=True, dtype=dtype)
        tag = (f"{_short(dtype)} autocast" if dtype is not None else "fp32") + ", channels-last" + \
            (", frozen" if args.freeze else "")
    if args.coordinate_descent:
        tag += ", coordinate-descent tuning"
    def guarded(name: str, fn: Pipeline, batch: int) -> None:
        """A batch that does not fit is reported as such, and the run goes on."""
        try:
            record(name, fn, batch, check(fn, batch, True))
        except torch.cuda.OutOfMemoryError:  # the name every allowed torch (>= 2.2) has
            print(f"  {name:58s} batch {batch:4d}: out of memory", flush=True)
            rows.append({"path": name + " (out of memory)", "batch": batch, "images_per_s": float("nan")})
            torch.cuda.empty_cache()
        except Exception as e:  # a failing variant (e.g. a compiler error) is reported, the rest still runs
            print(f"  {name:58s} batch {batch:4d}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
            rows.append({"path": name + f" (failed: {type(e).__name__})", "batch": batch, "images_per_s": float("nan")})

    def _breakdown(B: int) -> None:
        """Where the time goes: each network alone, compiled like the fast path, at the batch it
        sees inside the pipeline (the UNet: 2B, both noisings; the segmentation net: B). Its
        images/s is the pipeline's ceiling if that network were the only cost."""
        cast = (lambda z: z.to(dtype)) if args.pure_bf16 and dtype is not None else (lambda z: z)
        t2 = torch.tensor([200, 400], device=device).repeat_interleave(B)

        def unet_only(x, *_):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None and not args.pure_bf16):
                return unet_cl(cast(torch.cat([x, x])), t2).sample

        def seg_only(x, *_):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None and not args.pure_bf16):
                return seg_cl(cast(torch.cat([x, x], 1)))

        mode = None if args.compile_mode == "default" else args.compile_mode
        for name, fn, per_image in (("UNet alone, both noisings (batch 2B)", unet_only, 2 * flops["unet_forward"]),
                                    ("segmentation net alone", seg_only, flops["seg_forward"])):
            try:
                record(f"component: {name}, compiled ({args.compile_mode}) {tag}",
                       torch.compile(fn, mode=mode), B, per_image=per_image)
            except torch.cuda.OutOfMemoryError:  # the name every allowed torch (>= 2.2) has
                print(f"  component {name}: out of memory", flush=True)
                torch.cuda.empty_cache()
            torch._dynamo.reset()

    guarded(f"eager {tag}, 1 call", fast, args.eager_batch)
    if args.compile:
        for b in args.batches:
            if b == 1 and gpu:
                comp = torch.compile(fast, mode="reduce-overhead")
                name = f"compiled (CUDA graphs) {tag}"
            else:
                comp = torch.compile(fast, mode=None if args.compile_mode == "default" else args.compile_mode)
                name = f"compiled ({args.compile_mode}) {tag}"
            guarded(name, comp, b)
            torch._dynamo.reset()
        if args.breakdown:
            _breakdown(max(args.batches))
    for r in rows:
        if not r["path"].startswith("component"):
            r["speedup_vs_paper_setting"] = r["images_per_s"] / base["images_per_s"]
        elif r["path"].startswith("component: UNet"):
            r["unet_forwards_per_s"] = 2 * r["images_per_s"]      # comparable with single-UNet figures
    return rows, {"device": device_label(device), "weights": weights,
                  "preset": args.preset, "seg_preset": args.seg_preset, "image_size": args.image_size,
                  "unet_params": nets.count_parameters(unet32), "seg_params": nets.count_parameters(seg32),
                  "tflop_per_image": flops["image"] / 1e12, "torch": torch.__version__,
                  "ceiling_TFLOP_per_s": ceiling, "ceiling_of": f"{args.half} matrix product" if gpu else "float32"}


def _short(dtype: torch.dtype) -> str:
    """bf16 / fp16 (tables and row names), else the dtype's own name."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype).replace("torch.", ""))


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.bench diffusionad|diag [options]``: run a benchmark, save its table under
    figures/tables/timing/ (``diag``: :mod:`lib.tools.bench_diag`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["diag"]:
        from .bench_diag import main as diag_main

        return diag_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["diffusionad", "diag"], help="diag: see python -m lib.bench diag --help")
    p.add_argument("--device", default=None, help="auto (default: cuda → mps → cpu), cuda, cuda:N, mps or cpu")
    p.add_argument("--preset", default="paper", help="UNet preset (lib.core.nets.UNET_PRESETS)")
    p.add_argument("--seg-preset", default="paper")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--checkpoint", default=None, help="a DiffusionAD checkpoint instead of random weights")
    p.add_argument("--category", default="gravel", help="embedded category for the correctness check")
    p.add_argument("--batches", default="1,64,128", help="batch sizes of the compiled fast path")
    p.add_argument("--eager-batch", type=int, default=32, help="batch of the eager bf16 path (eager "
                   "keeps every activation: 64+ images at 256² exceed 80 GB)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--cpu-bf16", action="store_true", help="use bf16 autocast on CPU too")
    p.add_argument("--half", choices=["bfloat16", "float16"], default="bfloat16", help="the fast path's half "
                   "precision (default bfloat16; float16 has more mantissa, less range)")
    p.add_argument("--pure-bf16", action="store_true", help="fast path: cast the networks' weights to --half "
                   "instead of autocast (GroupNorm and BatchNorm then run in half precision too)")
    p.add_argument("--freeze", action="store_true", help="torch._inductor.config.freezing: constant-fold the "
                   "weights into the compiled graph")
    p.add_argument("--compile-mode", default="default", choices=["default", "max-autotune-no-cudagraphs",
                   "max-autotune", "reduce-overhead"], help="torch.compile mode of the batched rows (batch 1 "
                   "on a GPU always uses CUDA graphs)")
    p.add_argument("--coordinate-descent", action="store_true", help="inductor's coordinate-descent tuning "
                   "of the generated kernels (GroupNorm, pointwise)")
    p.add_argument("--breakdown", action="store_true", help="also time the UNet and the segmentation net "
                   "alone at the largest batch (where the time goes)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    a = p.parse_args(argv)
    a.batches = sorted(int(b) for b in a.batches.split(","))
    if a.device in (None, "", "auto") and pick_device().type == "cpu":
        print("note: no CUDA or MPS device here; running on CPU and reporting CPU figures", file=sys.stderr)
    try:
        rows, meta = bench_diffusionad(a)
    except ValueError as e:  # a bad --device, --preset, --image-size, ...: say so, exit with status 2
        p.error(str(e))
    import pandas as pd

    from ..show.figures import save_table

    df = pd.DataFrame(rows)
    dev = "cpu" if meta["device"].startswith("cpu") else "gpu"
    cap = (f"DiffusionAD norm-guided inference on {meta['device']} ({meta['preset']} UNet "
           f"{meta['unet_params'] / 1e6:.1f} M params, {meta['seg_preset']} seg net "
           f"{meta['seg_params'] / 1e6:.1f} M, {meta['image_size']}², {meta['tflop_per_image']:.3f} TFLOP "
           f"per image, {meta['weights']}; torch {meta['torch']}, {date.today()}; measured ceiling "
           f"{meta['ceiling_TFLOP_per_s']:.3g} TFLOP/s, {meta['ceiling_of']}). "
           "AUROC columns compare the paths on the embedded benchmark only (synthetic data; random weights "
           "make the AUROC itself meaningless).")
    half = _short(getattr(torch, a.half))
    suffix = (f"_pure{half}" if a.pure_bf16 else ("_fp16" if half == "fp16" else "")) + \
        ("_frozen" if a.freeze else "") + \
        ("_cdt" if a.coordinate_descent else "") + \
        ("" if a.compile_mode == "default" else "_" + a.compile_mode.replace("-", ""))
    save_table(df, f"bench_diffusionad_{dev}_{meta['preset']}{meta['image_size']}{suffix}", cap, timing=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print()
    print(cap)
    cols = ["path", "batch", "images_per_s", "latency_ms", "TFLOP_per_s", "fraction_of_ceiling",
            "speedup_vs_paper_setting", "unet_forwards_per_s", "max_abs_map_diff",
            "image_AUROC", "pixel_AUROC", "peak_GiB"]
    print(df[[c for c in cols if c in df]].to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
