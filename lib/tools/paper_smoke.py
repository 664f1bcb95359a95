"""``python -m lib.tools.paper_smoke``: each notebook's ``paper`` profile smoke-tested where a researcher would run it.

    python -m lib.tools.paper_smoke                                  # a GPU: paper sizes, 5 training steps each
    python -m lib.tools.paper_smoke --only 04 --steps 5              # one notebook
    python -m lib.tools.paper_smoke --prepare-data                   # only generate the data it reads (CPU)
    python -m lib.tools.paper_smoke --device cpu --image-scale 8 --batch-size 2 --preset tiny --sd-arch tiny
                                                                     # a dry run on a CPU (the code path only)

For every model a notebook's paper profile trains, the smoke runs **the profile's own training command** (the one
``pretrained(..., "paper", retrain=True)`` runs, from the method's ``training_command``) with ``--steps`` steps instead
of the profile's tens of thousands, into a temporary folder, loads the export as the notebook does and makes **one
generation or scoring pass** with it:

* 01 — the DDPM (256², paper UNet): training steps, then DDIM sampling of one image (50 steps);
* 02 — both masked DDPMs (512², feature-aware and blur-conditioned), the §3.1 crop baseline and the FCOS detector at
  512²: training steps, then one assigned-defect image from the hybrid sampler (20 DDIM steps, DDPM below t = 10);
* 03 — the thesis DDPM (sigmoid schedule, 20 % held out) and the learned map: training steps, then the learned map's
  command on 2 pairs, which runs 2 self-aware reconstructions (Algorithms 1–2 at the thesis' full setting) first;
* 04 — DiffusionAD (paper UNet + segmentation net): training steps, then norm-guided scoring of 8 test images;
* 05 — the ResNet-50 classifier at 704 × 256 for one epoch, DIAG's SDXL inpainting of one image (30 steps, guidance
  20, 1024²) and the report's SD 1.5 img2img of one image. The SD weights cannot be fetched here: both pipelines
  are the real architectures with random weights (:func:`lib.methods.diag.sdxl_inpaint_random`,
  :func:`lib.methods.balance.sd_img2img_random`), which is what the timing needs.

Every row reports the seconds per training step (the median over the steps after the first, as the trainer measured
it; for the classifier and the detector, whose training functions return only the net, the difference of two runs of k
and 2k steps), the steps of one epoch over the training set named (the embedded sets are smaller than the real
datasets: scale by the image count) and so the epoch's time, and the profile's full training extrapolated from them
(the learned map: its reconstructions only, an upper bound), with the pass's seconds and the peak GPU memory. A case
that fails is reported with its error and the others still run; the exit status is 1 if any failed. The table goes to
``figures/tables/timing/paper_smoke_<gpu|cpu>`` (``--json`` also writes the rows). Data come from the embedded
benchmark at the profile's size (generated on first use; ``--prepare-data`` only generates them) or, for 01, 03 and
04, ``--data-root``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from datetime import date
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np
import torch

from ..core.device import device_label, pick_device
from ..core.nets import count_parameters
from ..core.timing import Stopwatch
from ..io.checkpoints import read_manifest
from ..io.training import TrainingCommand

__all__ = ["Smoke", "smoke_argv", "CASES", "run_smoke", "main"]

NOTEBOOKS = ("01", "02", "03", "04", "05")


def smoke_argv(argv: list[str], **options: str | int | None) -> list[str]:
    """``argv`` with each ``--option value`` of ``options`` (``export_dir`` → ``--export-dir``) set: replaced where
    present, appended where not; None leaves the option as it is."""
    out = list(argv)
    for key, value in options.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if flag in out:
            out[out.index(flag) + 1] = str(value)
        else:
            out += [flag, str(value)]
    return out


@dataclass
class Smoke:
    """One smoke run: where it writes, on which device, how many steps, and a dry run's reductions (image sizes
    divided by ``image_scale``, ``batch_size`` and UNet ``preset`` overrides, ``sd_arch`` "tiny")."""

    out: Path
    device: torch.device
    steps: int = 5
    image_scale: int = 1
    batch_size: int | None = None
    preset: str | None = None
    sd_arch: str = "full"
    data_root: Path | None = None
    category: str = "gravel"

    @property
    def gpu(self) -> bool:
        """Whether the smoke runs on a CUDA device."""
        return self.device.type == "cuda"

    def size(self, paper: int) -> int:
        """A paper image size, divided by ``image_scale`` for a dry run."""
        return max(8, paper // self.image_scale)

    def train(self, tc: TrainingCommand, module: ModuleType, *, state: bool = True, preset: bool = True,
              **extra: str | int | None) -> tuple[Path, dict]:
        """Run ``tc`` (a method's training command) through ``module.run`` with the smoke's steps, name, folders,
        device and dry-run reductions; returns the export's path and its manifest."""
        opts = dict(steps=self.steps if "--steps" in tc.argv else None, name="smoke_" + tc.name, export_dir=self.out,
                    state_dir=self.out / "state" if state else None, device=str(self.device),
                    preset=self.preset if preset else None, batch_size=self.batch_size)
        if self.image_scale != 1 and "--image-size" in tc.argv:
            opts["image_size"] = self.size(int(tc.argv[tc.argv.index("--image-size") + 1]))
        if self.image_scale != 1 and "--source-size" in tc.argv:
            opts["source_size"] = self.size(int(tc.argv[tc.argv.index("--source-size") + 1]))
        argv = smoke_argv(tc.argv, **{**opts, **extra})
        print(f"  $ python -m {tc.module} {' '.join(argv)}", flush=True)
        path = module.run(module.parser().parse_args(argv), command=f"paper smoke of {tc.name}", device=self.device)
        return Path(path), read_manifest(path)


def _row(notebook: str, part: str, manifest: dict | None, *, image_size: int, batch: int, profile_steps: int | None,
         n_train: int | None, params: int | None, pass_what: str = "", pass_s: float = float("nan")) -> dict:
    """One table row: seconds per step from the trainer's manifest, one epoch (⌈n_train / batch⌉ steps) and the
    profile's full training extrapolated from it."""
    extra = manifest or {}                # the trainer's extra fields sit at the manifest's top level
    sps = extra.get("seconds_per_step", float("nan"))
    n_train = n_train if n_train is not None else extra.get("n_images")
    per_epoch = math.ceil(n_train / batch) if n_train else None
    return {"notebook": notebook, "model": part, "image_size": image_size, "batch": batch,
            "params_M": params / 1e6 if params else float("nan"), "s_per_step": sps,
            "timed_steps": extra.get("timed_steps", 0), "train_images": n_train,
            "steps_per_epoch": per_epoch, "epoch_s": sps * per_epoch if per_epoch else float("nan"),
            "profile_steps": profile_steps,
            "full_training_h": sps * profile_steps / 3600 if profile_steps else float("nan"),
            "pass": pass_what, "pass_s": pass_s, "status": "ok"}


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    """``fn()`` and its wall time (a :class:`lib.core.timing.Stopwatch` lap: the device synchronised at both ends)."""
    clock = Stopwatch(device)
    with clock:
        out = fn()
    return out, clock.last


def _difference(run: Callable[[int], object], k: int, device: torch.device) -> tuple[float, object]:
    """Seconds of ``k`` training steps as t(2k) − t(k) of two runs, ``run(n)`` training n steps: what both runs spend
    once (building the net, resizing the data, warm-up) cancels (for trainers that do not report their steps).
    Returns the seconds and what the k-step run returned."""
    t_2k = _timed(lambda: run(2 * k), device)[1]
    out, t_k = _timed(lambda: run(k), device)
    return t_2k - t_k, out


def smoke_01(s: Smoke) -> list[dict]:
    """Notebook 01: the paper DDPM, then DDIM sampling of one image."""
    from ..core.diffusion import eps_fn, sample_ddim
    from ..methods import ddpm

    tc = ddpm.training_command(s.category, "paper", data_root=s.data_root)
    path, man = s.train(tc, ddpm)
    m = ddpm.load_ddpm(path, device=s.device)
    S = m.config.image_size
    g = torch.Generator().manual_seed(0)
    _, secs = _timed(lambda: sample_ddim(eps_fn(m.unet), (1, 3, S, S), m.diffusion, num_steps=50, generator=g,
                                         device=s.device), s.device)
    return [_row("01", f"DDPM ({m.config.preset} UNet)", man, image_size=S, batch=m.config.batch_size,
                 profile_steps=ddpm.PROFILES["paper"].config.steps, n_train=None, params=count_parameters(m.unet),
                 pass_what="DDIM sampling, 1 image, 50 steps", pass_s=secs)]


def smoke_02(s: Smoke) -> list[dict]:
    """Notebook 02: both masked DDPMs (feature-aware, blur), the crop baseline and the FCOS detector, then one
    assigned-defect image."""
    from .. import data as kit_data
    from ..data.mura import defect_set
    from ..methods import assigned_defects as AD
    from ..methods import detect as DT
    from ..methods import masked_ddpm as MD

    # the embedded MURA set holds 60 images per class, fewer than the paper profile's 140 (seed 000's ~700 patches):
    # on it the smoke trains on the quick profile's count per class
    n_train = MD.PROFILES["quick"].n_train
    rows, models = [], {}
    for variant in ("features", "blur"):
        tc = MD.training_command("paper", variant)
        path, man = s.train(tc, MD, n_train=n_train)
        m = models[variant] = MD.load_masked(path, device=s.device)
        S = m.config.image_size
        rows.append(_row("02", f"masked DDPM, {variant} ({m.config.preset} UNet, {n_train} images per class)", man,
                         image_size=S, batch=m.config.batch_size, profile_steps=MD.PROFILES["paper"].steps,
                         n_train=None, params=count_parameters(m.unet)))
    m = models["features"]                       # the notebook generates its detector data with this one
    cat = kit_data.load_category(Path(tc.argv[tc.argv.index("--data") + 1]), "display_panel", image_size=S)
    _, secs = _timed(lambda: AD.generate(m, cat.train.images[:2], m.classes[0], position=(S // 2, S // 2),
                                         size=max(4, S // 8), n=1, seed=0, num_steps=20, switch_t=10,
                                         device=s.device), s.device)
    rows[0].update({"pass": "1 assigned-defect image, hybrid sampler (20 DDIM steps, DDPM below t = 10)",
                    "pass_s": secs})
    tb = MD.baseline_command("paper")
    path_b, man_b = s.train(tb, MD, n_train=n_train)
    b = MD.ddpm.load_ddpm(path_b, device=s.device)
    rows.append(_row("02", f"§3.1 crop baseline DDPM ({b.config.preset} UNet)", man_b, image_size=b.config.image_size,
                     batch=b.config.batch_size, profile_steps=MD.BASELINE["paper"].steps, n_train=None,
                     params=count_parameters(b.unet)))
    defects = defect_set(cat)
    cfg = DT.DetectorConfig(image_size=S, batch_size=s.batch_size or DT.DetectorConfig.batch_size)
    k = s.steps

    def detector(n: int):
        return DT.train_detector(defects.images, [[bx] for bx in defects.boxes()], len(defects.names),
                                 replace(cfg, steps=n), progress=False, device=s.device)

    secs, _ = _difference(detector, k, s.device)
    row = _row("02", f"FCOS detector ({S}²)", None, image_size=S, batch=cfg.batch_size, profile_steps=None,
               n_train=len(defects), params=count_parameters(DT.build_detector(len(defects.names), cfg)))
    rows.append({**row, "s_per_step": secs / k, "timed_steps": k, "epoch_s": secs / k * row["steps_per_epoch"],
                 "pass": "notebook 02 trains each detector for detector_steps (120) batches"})
    return rows


def smoke_03(s: Smoke) -> list[dict]:
    """Notebook 03: the thesis DDPM, then the learned map's command on 2 pairs (2 self-aware reconstructions)."""
    from ..methods import ddpm
    from ..methods import learned_map as LM

    tc = ddpm.training_command(s.category, "thesis-paper", data_root=s.data_root)
    path, man = s.train(tc, ddpm)
    m = ddpm.load_ddpm(path, device=s.device)
    rows = [_row("03", f"thesis DDPM ({m.config.preset} UNet, sigmoid)", man, image_size=m.config.image_size,
                 batch=m.config.batch_size, profile_steps=ddpm.PROFILES["thesis-paper"].config.steps, n_train=None,
                 params=count_parameters(m.unet))]
    tl = LM.training_command(s.category, "paper", data_root=s.data_root)
    pairs = 2
    (path_l, man_l), secs = _timed(lambda: s.train(tl, LM, state=False, preset=False, steps=None, ddpm=path,
                                                   pairs=pairs, epochs=1, batch_size=pairs), s.device)
    lm = LM.load_learned_map(path_l, device=s.device)
    p = LM.PROFILES["paper"]
    per_pair = man_l["pair_seconds"] / pairs
    row = _row("03", f"learned map ({lm.config.seg_preset} seg net; {pairs} pairs)", man_l,
               image_size=m.config.image_size, batch=pairs, profile_steps=None, n_train=pairs,
               params=count_parameters(lm.seg),
               pass_what=f"the map's command: {pairs} self-aware reconstructions (thesis' full setting, "
                         f"{per_pair:.3g} s each) + 1 epoch", pass_s=secs)
    # the profile's map first reconstructs p.pairs pairs (in batches of 64; here of 2, so this is an upper bound),
    # then trains p.config.epochs epochs at batch p.config.batch_size (not measured here: left out)
    row["full_training_h"] = per_pair * p.pairs / 3600
    rows.append(row)
    return rows


def smoke_04(s: Smoke) -> list[dict]:
    """Notebook 04: DiffusionAD, then norm-guided scoring of 8 test images."""
    from .. import data as kit_data
    from ..core.scoring import image_score
    from ..methods import diffusionad as DA

    tc = DA.training_command(s.category, "paper", data_root=s.data_root)
    path, man = s.train(tc, DA, seg_preset=s.preset and "tiny")
    m = DA.load_diffusionad(path, device=s.device)
    S = m.config.image_size
    root = Path(tc.argv[tc.argv.index("--data") + 1]) if "--data" in tc.argv else \
        kit_data.embedded_benchmark(S, version=DA.DATA_VERSION["paper"])
    x = kit_data.to_tensor(kit_data.load_category(root, s.category, image_size=S).test.images[:8]).to(s.device)
    g = torch.Generator().manual_seed(0)

    def score():
        r = m.reconstruct(x, g)
        return image_score(m.anomaly_map(x, r.x0_g), reduction="topk", k=50)

    _, secs = _timed(score, s.device)
    return [_row("04", f"DiffusionAD ({m.config.preset} UNet + {m.config.seg_preset} seg net)", man, image_size=S,
                 batch=m.config.batch_size, profile_steps=DA.PROFILES["paper"].steps, n_train=None,
                 params=count_parameters(m.unet) + count_parameters(m.seg),
                 pass_what=f"norm-guided scoring of {len(x)} test images (eager fp32)", pass_s=secs)]


def smoke_05(s: Smoke) -> list[dict]:
    """Notebook 05: the ResNet-50 classifier for one epoch, one SDXL inpainting and one SD img2img image."""
    from .. import data as kit_data
    from ..data.ksdd2 import embedded_strip, ksdd2_split
    from ..methods import balance as BL
    from ..methods import classify as CL
    from ..methods import diag as DG

    split = ksdd2_split(kit_data.load_category(embedded_strip(64), "metal_strip"))
    paper = CL.PROFILES["paper"]
    cfg = replace(paper, height=s.size(paper.height), width=s.size(paper.width),
                  batch_size=s.batch_size or paper.batch_size)
    x = np.concatenate([split.negatives, split.positives])
    y = np.r_[np.zeros(len(split.negatives)), np.ones(len(split.positives))]
    steps = math.ceil(len(x) / cfg.batch_size)
    epoch, net = _difference(lambda n: CL.train_classifier(x, y, replace(cfg, epochs=n), device=s.device), 1,
                             s.device)
    _, secs_pred = _timed(lambda: CL.predict(net, split.test, cfg), s.device)
    rows = [{**_row("05", f"classifier ({cfg.arch}, {cfg.height}×{cfg.width})", None, image_size=cfg.height,
                    batch=cfg.batch_size, profile_steps=paper.epochs * steps, n_train=len(x),
                    params=count_parameters(net), pass_what=f"predict {len(split.test)} test images",
                    pass_s=secs_pred),
             "s_per_step": epoch / steps, "timed_steps": steps, "epoch_s": epoch,
             "full_training_h": epoch * paper.epochs / 3600}]
    del net
    dtype = torch.float16 if s.gpu else torch.float32
    if s.sd_arch == "full":                          # the random weights initialised where they run
        sdxl, sd = DG.sdxl_inpaint_random(dtype, device=s.device), BL.sd_img2img_random(device=s.device)
    else:
        sdxl, sd = DG.tiny_sdxl_inpaint(), BL.tiny_sd_img2img()
    diag_settings = replace(DG.PAPER, size=s.size(DG.PAPER.size))
    inpaint = DG.sdxl_inpaint_fn(sdxl.to(device=s.device, dtype=dtype), diag_settings)
    img, mask = split.positives[:1], split.positive_masks[:1]
    _, secs = _timed(lambda: inpaint(split.negatives[:1], mask, [DG.PROMPTS[0]], [0]), s.device)
    rows.append(_row("05", f"DIAG SDXL inpainting ({s.sd_arch} architecture, random weights)", None,
                     image_size=diag_settings.size, batch=1, profile_steps=None, n_train=None,
                     params=count_parameters(sdxl.unet),
                     pass_what=f"1 image, {diag_settings.num_inference_steps} steps, guidance "
                               f"{diag_settings.guidance_scale:g}, {diag_settings.size}²", pass_s=secs))
    del sdxl, inpaint
    if s.gpu:
        torch.cuda.empty_cache()
    settings = replace(BL.REPORT, size=s.size(BL.REPORT.size))
    img2img = BL.sd_img2img_fn(sd.to(device=s.device, dtype=dtype), settings)
    _, secs = _timed(lambda: img2img(img, ["scratch"], [0]), s.device)
    rows.append(_row("05", f"report's SD 1.5 img2img ({s.sd_arch} architecture, random weights)", None,
                     image_size=settings.size, batch=1, profile_steps=None, n_train=None,
                     params=count_parameters(sd.unet),
                     pass_what=f"1 image, strength {settings.strength:g}, {settings.num_inference_steps} steps, "
                               f"DPM++ SDE Karras, {settings.size}²", pass_s=secs))
    return rows


CASES: dict[str, Callable[[Smoke], list[dict]]] = {"01": smoke_01, "02": smoke_02, "03": smoke_03, "04": smoke_04,
                                                   "05": smoke_05}


def prepare_data(image_scale: int = 1) -> list[Path]:
    """Generate the embedded data the smoke and ``python -m lib.bench diffusionad`` read (the benchmark at 256²,
    default version and version 3; the MURA set at 512²; the strip at 64), so that a GPU call need not wait for it."""
    from .. import data as kit_data
    from ..data.ksdd2 import embedded_strip
    from ..data.mura import embedded_mura
    from ..methods import masked_ddpm as MD

    size = Smoke(Path("."), torch.device("cpu"), image_scale=image_scale).size
    return [kit_data.embedded_benchmark(size(256), version=3), kit_data.embedded_benchmark(size(256)),
            embedded_mura(size(512), version=MD.DATA_VERSION), embedded_strip(64)]


def run_smoke(s: Smoke, only: tuple[str, ...] = NOTEBOOKS, json_path: str | None = None) -> list[dict]:
    """Every case of ``only`` in turn; a failing case becomes a row with its error (the traceback is printed). The
    rows so far are written to ``json_path`` after each case, so a run stopped by a time limit keeps them."""
    rows = []
    for nb in only:
        print(f"notebook {nb}: {CASES[nb].__doc__}", flush=True)
        if s.gpu:
            torch.cuda.reset_peak_memory_stats(s.device)
        t0 = time.perf_counter()
        try:
            got = CASES[nb](s)
        except Exception as e:            # a crash is this tool's finding: report it, go on with the next notebook
            traceback.print_exc()
            got = [{"notebook": nb, "status": f"FAILED: {type(e).__name__}: {str(e)[:300]}"}]
        peak = torch.cuda.max_memory_allocated(s.device) / 2 ** 30 if s.gpu else float("nan")
        for r in got:
            r["case_s"], r["peak_GiB"] = time.perf_counter() - t0, peak
            print(f"  → {r.get('model', '')}: {r['status']}; {r.get('s_per_step', float('nan')):.3g} s/step, "
                  f"pass {r.get('pass_s', float('nan')):.3g} s", flush=True)
        rows += got
        if json_path:
            Path(json_path).write_text(json.dumps({"rows": rows}, indent=1, default=str))
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m lib.tools.paper_smoke [options]``: run the smoke, save its table; exit status 1 if a case failed."""
    p = argparse.ArgumentParser(prog="python -m lib.tools.paper_smoke", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(NOTEBOOKS), help="comma-separated notebooks (default: all)")
    p.add_argument("--device", default=None, help="auto (default: cuda → mps → cpu), cuda, cuda:N, mps or cpu")
    p.add_argument("--steps", type=int, default=5, help="training steps per model (the first is not timed)")
    p.add_argument("--data-root", default=None, help="notebooks 01, 03, 04: an MVTec-layout folder or a fetched "
                   "dataset's name (default: the embedded benchmark); 02 and 05 use the embedded MURA and strip sets")
    p.add_argument("--category", default="gravel", help="the category of notebooks 01, 03 and 04")
    p.add_argument("--image-scale", type=int, default=1, help="dry run: divide every image size by this")
    p.add_argument("--batch-size", type=int, default=None, help="dry run: this batch instead of the profiles'")
    p.add_argument("--preset", default=None, help="dry run: this UNet preset instead of the profiles' (e.g. tiny)")
    p.add_argument("--sd-arch", choices=["full", "tiny"], default=None,
                   help="SDXL / SD 1.5 architecture of the random-weight pipelines (default: full on a GPU)")
    p.add_argument("--prepare-data", action="store_true", help="only generate the embedded data the smoke and the "
                   "DiffusionAD benchmark read, then exit (CPU work a GPU call can do in the background)")
    p.add_argument("--keep", default=None, help="keep the checkpoints in this folder (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    a = p.parse_args(argv)
    only = tuple(x.strip().zfill(2) for x in a.only.split(",") if x.strip())
    bad = [x for x in only if x not in CASES]
    if bad or not only:
        p.error(f"--only {a.only!r}: choose among {', '.join(NOTEBOOKS)}")
    if a.steps < 2:
        p.error(f"--steps {a.steps}: give at least 2 (the first step is warm-up and not timed)")
    if a.image_scale < 1:
        p.error(f"--image-scale {a.image_scale}: give a positive integer")
    if a.batch_size is not None and a.batch_size < 1:
        p.error(f"--batch-size {a.batch_size}: give a positive integer (or leave it out for the profiles' batches)")
    if a.prepare_data:
        t0 = time.perf_counter()
        for root in prepare_data(a.image_scale):
            print(f"ready: {root}", flush=True)
        print(f"data prepared in {time.perf_counter() - t0:.0f} s", flush=True)
        return 0
    from .. import data as kit_data

    try:
        device = pick_device(a.device)
        data_root = kit_data.resolve_data_root(a.data_root)
    except ValueError as e:           # a bad --device, an unknown or unfetched --data-root (DatasetError)
        p.error(str(e))
    dry = a.image_scale != 1 or a.batch_size is not None or a.preset is not None
    with tempfile.TemporaryDirectory(prefix="paper_smoke_") as tmp:
        out = Path(a.keep) if a.keep else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        s = Smoke(out, device, steps=a.steps, image_scale=a.image_scale, batch_size=a.batch_size, preset=a.preset,
                  sd_arch=a.sd_arch or ("full" if device.type == "cuda" else "tiny"), data_root=data_root,
                  category=a.category)
        print(f"paper-profile smoke on {device_label(device)}; torch {torch.__version__}"
              + ("; DRY RUN (reduced sizes: the times say nothing about the paper profile)" if dry else ""), flush=True)
        rows = run_smoke(s, only, a.json)
    import pandas as pd

    from ..show.figures import save_table

    df = pd.DataFrame(rows)
    cap = (f"Paper-profile smoke on {device_label(device)} (torch {torch.__version__}, {date.today()}): each model's "
           "own training "
           f"command for {a.steps} steps (s/step: the median after the first), one epoch and the profile's full "
           "training extrapolated from it, and one generation / scoring pass. SDXL and SD 1.5 have random weights "
           "(the real architectures); data: " + (a.data_root or "the embedded synthetic benchmark") + "."
           + (f" DRY RUN: images / {a.image_scale}, batch {a.batch_size}, preset {a.preset}: the code path only."
              if dry else ""))
    name = f"paper_smoke_{'gpu' if device.type == 'cuda' else 'cpu'}" + ("_dryrun" if dry else "")
    save_table(df, name, cap, timing=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"caption": cap, "rows": rows}, indent=1, default=str))
    print()
    print(cap)
    cols = ["notebook", "model", "image_size", "batch", "params_M", "s_per_step", "epoch_s", "full_training_h",
            "pass", "pass_s", "peak_GiB", "status"]
    print(df[[c for c in cols if c in df]].to_markdown(index=False, floatfmt=".4g"))
    return int(any(str(r.get("status")) != "ok" for r in rows))


if __name__ == "__main__":
    sys.exit(main())
