"""The embedded inspection benchmark: the category registry, the generator and its dataset card.

Every notebook runs offline on a small benchmark that this package *draws by code*: seeded and
deterministic (same seed and size give byte-identical PNGs), written in the MVTec AD layout::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png     (0/255, one channel)

``size`` is the images' **short side**: every category is ``size`` x ``size`` except
``metal_strip``, which is ``size`` wide and about 2.8x taller (``image_shape``). The loader's
``image_size`` is another thing: the side of the square it resizes to.

Categories come in families, one module each (``CATEGORIES``, ``DEFECT_TYPES``, ``RECIPES`` are
built from ``FAMILIES`` below; a new family is a new module and one line there):

* ``panel`` -- ``display_panel``, the MURA types of seed 000 (Fig. 1, §4.1);
* ``strip`` -- ``metal_strip``, the KSDD2 aspect of seed 001;
* ``textures`` -- ``brick``, ``grass``, ``gravel`` (photo crops) and ``fabric`` (procedural weave).

Defect recipes are geometric (``defects``, ``panel``); **none uses Perlin-noise masks or
DTD-texture blending**, the pseudo-anomalies DRAEM and DiffusionAD train on (seed 003 §IV-D), so an
evaluation on this benchmark is not circular when a model was trained on those.

Pixel-exact masks: each defect is a hard boolean mask plus a change applied only inside it.
Pixels outside the mask are byte-identical to the defect-free image of the same seed (``render``
returns both), and every mask pixel changes by at least 2 grey levels (MURA) or 6 (the others);
this is enforced, not hoped.

Example::

    from lib import data
    root = data.embedded_benchmark(size=64)             # generated on first use
    cat = data.load_category(root, "display_panel")
    x = data.to_tensor(cat.train.images)               # N x 3 x H x W in [-1, 1]
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from ..core.checks import check_int
from ..core.paths import REPO
from . import panel, strip, textures
from .draw import CategorySpec, apply_defect, stream
from .loader import PathLike, list_categories, load_category

__all__ = ["CATEGORIES", "DEFECT_TYPES", "RECIPES", "GENERATOR_VERSION", "FAMILIES", "make_benchmark",
           "embedded_benchmark", "default_data_dir", "image_shape", "render", "read_card",
           "SampleRow", "benchmark_samples"]

GENERATOR_VERSION = "2"
_GENERATOR = "lib.data.make_benchmark"

# The registry: one entry per category family module, in the benchmark's category order.
FAMILIES: tuple[dict[str, CategorySpec], ...] = (panel.CATEGORIES, strip.CATEGORIES, textures.CATEGORIES)

_SPECS: dict[str, CategorySpec] = {name: spec for family in FAMILIES for name, spec in family.items()}
DEFECT_TYPES: dict[str, tuple[str, ...]] = {name: tuple(spec.defects) for name, spec in _SPECS.items()}
CATEGORIES: tuple[str, ...] = tuple(DEFECT_TYPES)
RECIPES: dict[str, str] = {d: r.description for spec in _SPECS.values() for d, r in spec.defects.items()}

_SIZE = (8, 1024)
_MAX_COUNT = 1000  # file names 000..999 keep their order when sorted


def _spec(category: str) -> CategorySpec:
    if category not in _SPECS:
        raise ValueError(f"unknown category {category!r}; choose from {CATEGORIES}")
    return _SPECS[category]


def image_shape(category: str, size: int) -> tuple[int, int]:
    """(H, W) of a category's images for a short side of ``size``: square, except ``metal_strip``
    (seed 001's KSDD2 aspect, 224 wide x 632 tall: W = size, H = size * 632 / 224 rounded to a
    multiple of 8)."""
    return _spec(category).shape(size)


def render(category: str, index: int, defect: str = "good", seed: int = 0, size: int = 64,
           split: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image: returns (clean uint8 HxWx3, defective uint8 HxWx3, mask bool HxW).

    ``defect`` is "good" or one of ``DEFECT_TYPES[category]``; ``split`` is "train"
    (good only) or "test"; ``size`` is the short side. For a good image ``defective`` equals
    ``clean`` and the mask is empty. The background and the defect come from separate seeded
    streams, so ``clean`` is exactly the image the same seed gives without the defect. A
    defect covering fewer than a quarter of the short side in pixels (e.g. a
    scratch that mostly left the image) is redrawn from the same stream.
    """
    spec = _spec(category)
    if defect != "good" and (split != "test" or defect not in spec.defects):
        raise ValueError(f"{category!r} has no test defect {defect!r}; choose from {DEFECT_TYPES[category]}")
    shape = spec.shape(size)
    name = f"{split}/{defect}"
    bg = spec.background(stream(seed, category, name, index, "background"), shape)
    clean = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
    if defect == "good":
        return clean, clean.copy(), np.zeros(shape, bool)
    rng = stream(seed, category, name, index, "defect")
    for _ in range(50):  # redraw the rare defect that mostly leaves the image
        drawn = spec.defects[defect].draw(rng, clean.astype(np.float32))
        if drawn.mask.sum() >= min(shape) / 4:
            return clean, apply_defect(clean, drawn), drawn.mask
    raise RuntimeError(f"no visible {defect} drawn for {category} index {index} seed {seed}")


# ----------------------------------------------------------------------------------
# Writing the benchmark and its card (benchmark.json, README.md)
# ----------------------------------------------------------------------------------

def _config(size, seed, categories, n_train, n_test_good, n_test_defect) -> dict:
    """The checked generator config, as ``benchmark.json`` records it."""
    categories = list(CATEGORIES if categories is None else categories)
    unknown = [c for c in categories if c not in DEFECT_TYPES]
    if unknown:
        raise ValueError(f"unknown categories {unknown}; choose from {CATEGORIES}")
    return {"size": check_int("size", size, *_SIZE), "seed": check_int("seed", seed, 0),
            "categories": categories,
            "n_train": check_int("n_train", n_train, 1, _MAX_COUNT),
            "n_test_good": check_int("n_test_good", n_test_good, 0, _MAX_COUNT),
            "n_test_defect": check_int("n_test_defect", n_test_defect, 0, _MAX_COUNT),
            "generator_version": GENERATOR_VERSION}


def _save_png(path, array):
    Image.fromarray(array).save(path, format="PNG", compress_level=1)  # fast; same bytes every run


def _write_category(root, category, cfg):
    size, seed = cfg["size"], cfg["seed"]
    base = root / category
    counts = {"train/good": cfg["n_train"], "test/good": cfg["n_test_good"]}
    (base / "train" / "good").mkdir(parents=True)
    (base / "test" / "good").mkdir(parents=True)
    for i in range(cfg["n_train"]):
        _save_png(base / "train" / "good" / f"{i:03d}.png", render(category, i, "good", seed, size, "train")[1])
    for i in range(cfg["n_test_good"]):
        _save_png(base / "test" / "good" / f"{i:03d}.png", render(category, i, "good", seed, size)[1])
    for defect in DEFECT_TYPES[category]:
        (base / "test" / defect).mkdir(parents=True)
        (base / "ground_truth" / defect).mkdir(parents=True)
        for i in range(cfg["n_test_defect"]):
            _, img, mask = render(category, i, defect, seed, size)
            _save_png(base / "test" / defect / f"{i:03d}.png", img)
            _save_png(base / "ground_truth" / defect / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
        counts[f"test/{defect}"] = cfg["n_test_defect"]
    return {"shape": list(image_shape(category, size)), "defect_types": list(DEFECT_TYPES[category]),
            "counts": counts, "recipes": {d: RECIPES[d] for d in DEFECT_TYPES[category]}}


def _readme(card):
    cfg = card["config"]
    lines = [
        "# Embedded inspection benchmark (synthetic)",
        "",
        f"Generated by `{_GENERATOR}` (generator version {GENERATOR_VERSION}) with seed {cfg['seed']} "
        f"and size {cfg['size']} (the short side; `metal_strip` is taller). **Every image is synthetic**: "
        "drawn by code, deterministic (same seed and size give byte-identical files). Layout: MVTec AD "
        "(`train/good`, `test/<defect>`, `ground_truth/<defect>/<name>_mask.png`, masks 0/255).",
        "",
        "Test defects are drawn by geometric recipes (polylines, random walks, discs, Fourier blobs, "
        "sums of Gaussians), not by the Perlin-noise / DTD-texture pseudo-anomalies that DRAEM and "
        "DiffusionAD train on. Masks are pixel-exact: outside the mask the image equals the defect-free "
        "image of the same seed; every mask pixel changed by at least 2 (MURA) or 6 grey levels.",
        "",
        "| category | H x W | train/good | test/good | defect types (test images each) |",
        "|---|---|---|---|---|",
    ]
    for name, c in card["categories"].items():
        n = c["counts"]
        defects = ", ".join(f"`{d}` ({n['test/' + d]})" for d in c["defect_types"])
        lines.append(f"| {name} | {c['shape'][0]} x {c['shape'][1]} | {n['train/good']} "
                     f"| {n['test/good']} | {defects} |")
    lines += ["", "| defect | recipe |", "|---|---|"]
    used = sorted({d for c in card["categories"].values() for d in c["defect_types"]})
    lines += [f"| `{d}` | {RECIPES[d]} |" for d in used]
    lines += ["", "Backgrounds: `display_panel` near-uniform grey panel (seed 000 MURA types, Fig. 1); "
              "`metal_strip` brushed metal with the KSDD2 aspect (seed 001, 224 x 632); `brick`, `grass`, "
              "`gravel` random crops of scikit-image's bundled photographs; `fabric` procedural weave.", ""]
    return "\n".join(lines)


def read_card(root: PathLike) -> dict | None:
    """The stored ``benchmark.json`` if ``root`` holds a benchmark ``make_benchmark`` wrote, else None."""
    try:
        card = json.loads((Path(root) / "benchmark.json").read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("generator") == _GENERATOR else None


def _install(tmp: Path, root: Path, config: dict) -> None:
    """Move the finished ``tmp`` folder to ``root`` (``os.replace``). A concurrent
    writer that already installed the same config wins; an older one is replaced."""
    old = read_card(root) if root.exists() else None
    if old is not None and old["config"] == config:
        shutil.rmtree(tmp)
        return
    if root.exists():
        aside = root.with_name(f".{root.name}.{os.getpid()}.old.tmp")
        os.replace(root, aside)
        os.replace(tmp, root)
        shutil.rmtree(aside)
    else:
        os.replace(tmp, root)


def make_benchmark(root: PathLike, size: int = 64, seed: int = 0, categories: Iterable[str] | None = None,
                   n_train: int = 60, n_test_good: int = 12, n_test_defect: int = 6) -> Path:
    """Generate the embedded benchmark into ``root`` and return ``root``.

    ``size`` is the short side in pixels (8..1024; ``metal_strip`` is taller, see ``image_shape``);
    ``seed`` >= 0; ``n_train`` (1..1000) good training images and ``n_test_good`` (0..1000) good
    and ``n_test_defect`` (0..1000) anomalous test images per defect type, per category.
    The folder is built in a temporary sibling and moved into place with
    ``os.replace``, so a reader never sees half a benchmark. An existing ``root`` is
    replaced only if this function generated it (its ``benchmark.json`` says so) or
    it is empty; anything else raises ``FileExistsError``.
    """
    root = Path(root)
    cfg = _config(size, seed, categories, n_train, n_test_good, n_test_defect)
    if root.exists() and any(root.iterdir()) and read_card(root) is None:
        raise FileExistsError(
            f"{root} exists and was not generated by {_GENERATOR} (no matching benchmark.json); "
            "refusing to overwrite it. Pass another root or delete that folder yourself.")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        card = {"generator": _GENERATOR, "generator_version": GENERATOR_VERSION, "synthetic": True,
                "config": cfg, "categories": {c: _write_category(tmp, c, cfg) for c in cfg["categories"]}}
        (tmp / "benchmark.json").write_text(json.dumps(card, indent=2) + "\n")
        (tmp / "README.md").write_text(_readme(card))
        _install(tmp, root, cfg)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def default_data_dir() -> Path:
    """``$KIT_DATA_DIR`` if set, else ``data/`` at the repository root (the parent of
    the ``lib`` package)."""
    env = os.environ.get("KIT_DATA_DIR")
    return Path(env) if env else REPO / "data"


def embedded_benchmark(size: int = 64, seed: int = 0, root: PathLike | None = None) -> Path:
    """The default benchmark folder ``<data dir>/embedded/size{size}_seed{seed}`` (``size``: the
    short side; ``root`` overrides the folder), generated with the default counts if it is missing
    or its ``benchmark.json`` holds another config."""
    cfg = _config(size, seed, None, 60, 12, 6)
    root = Path(root) if root is not None else default_data_dir() / "embedded" / f"size{cfg['size']}_seed{cfg['seed']}"
    card = read_card(root)
    if card is None or card.get("config") != cfg:
        make_benchmark(root, size=size, seed=seed)
    return root


# ----------------------------------------------------------------------------------
# Samples for the dataset card figure (drawn by lib.show.benchmark_card)
# ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleRow:
    """One category's row of sample images: ``kinds`` ('good', then each defect type), and per kind
    one test image (uint8 H x W x 3) and its ground-truth mask (bool H x W)."""

    category: str
    kinds: tuple[str, ...]
    images: tuple[np.ndarray, ...]
    masks: tuple[np.ndarray, ...]


def benchmark_samples(root: PathLike, index: int = 0) -> list[SampleRow]:
    """Per category of ``root``: a good test image, then one image per defect type (the
    ``index``-th image of each kind, or the last if there are fewer), with its mask. Categories and
    defects follow ``benchmark.json`` when the folder has one, else alphabetical order."""
    root = Path(root)
    index = check_int("index", index, 0)
    card = read_card(root)
    rows = []
    for name in (list(card["categories"]) if card else list_categories(root)):
        cat = load_category(root, name)
        kinds = ["good"] + (card["categories"][name]["defect_types"] if card else cat.defect_types)
        picked = []
        for kind in kinds:
            idx = [i for i, k in enumerate(cat.test.defect_types) if k == kind]
            picked.append(idx[min(index, len(idx) - 1)])
        rows.append(SampleRow(name, tuple(kinds), tuple(cat.test.images[i] for i in picked),
                              tuple(cat.test.masks[i] for i in picked)))
    return rows
