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

Two versions (``VERSIONS``; ``version=`` everywhere, ``DEFAULT_VERSION`` when omitted):

* **version 2** -- six categories with little normal variation and strong defects. The committed quick
  checkpoints were trained on it; it is saturated (trivial baselines reach image AUROC 0.85 on average).
* **version 3** -- nine categories: the six, harder (varied illumination, sensor noise, texture scale; faint
  defects: MURA a few grey levels above the panel's own non-uniformity), and three MVTec-style *object*
  categories (``objects``: ``screw``, ``pill``, ``cable``) with a pose, a foreground (written for the training
  images as ``<category>/foreground/train/good/000.png``, 0/255) and structural defects. Larger test sets:
  40 good and at least 40 anomalous images per category.

Categories come in families, one module each (a version is a tuple of family dicts in ``EDITIONS``; a new
family is a new module and one entry there):

* ``panel`` -- ``display_panel``, the MURA types of seed 000 (Fig. 1, §4.1);
* ``strip`` -- ``metal_strip``, the KSDD2 aspect of seed 001;
* ``textures`` -- ``brick``, ``grass``, ``gravel`` (photo crops) and ``fabric`` (procedural weave);
* ``objects`` (version 3) -- ``screw``, ``pill``, ``cable``.

``CATEGORIES``, ``DEFECT_TYPES``, ``RECIPES`` and ``FAMILIES`` describe ``DEFAULT_VERSION``; ``categories(v)``,
``defect_types(v)`` and ``recipes(v)`` any version.

Defect recipes are geometric (``defects``, ``panel``); **none uses Perlin-noise masks or
DTD-texture blending**, the pseudo-anomalies DRAEM and DiffusionAD train on (seed 003 §IV-D), so an
evaluation on this benchmark is not circular when a model was trained on those.

Pixel-exact masks: each defect is a hard boolean mask plus a change applied only inside it.
Pixels outside the mask are byte-identical to the defect-free image of the same seed (``render``
returns both), and every mask pixel changes by at least 2 grey levels (MURA) or 6 (the other surface
defects); a structural defect of an object (the scene re-rendered with a part changed) has exactly the
changed pixels as its mask (at least 1 grey level). This is enforced, not hoped.

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
from typing import Iterable, NamedTuple

import numpy as np
from PIL import Image

from ..core.checks import check_int
from ..core.paths import REPO
from . import objects, panel, strip, textures
from .draw import CategorySpec, Scene, apply_defect, stream
from .loader import PathLike, list_categories, load_category

__all__ = ["CATEGORIES", "DEFECT_TYPES", "RECIPES", "GENERATOR_VERSION", "FAMILIES", "EDITIONS", "VERSIONS",
           "DEFAULT_VERSION", "categories", "defect_types", "recipes", "category_kind", "make_benchmark",
           "embedded_benchmark", "default_data_dir", "image_shape", "Drawn", "draw_image", "render", "read_card",
           "SampleRow", "benchmark_samples"]

GENERATOR_VERSION = "2"   # the default version's number, as text (what benchmark.json records)
_GENERATOR = "lib.data.make_benchmark"

# The registry: per version, one entry per category family module, in the benchmark's category order.
EDITIONS: dict[int, tuple[dict[str, CategorySpec], ...]] = {
    2: (panel.CATEGORIES, strip.CATEGORIES, textures.CATEGORIES),
    3: (panel.CATEGORIES_V3, strip.CATEGORIES_V3, textures.CATEGORIES_V3, objects.CATEGORIES),
}
VERSIONS: tuple[int, ...] = tuple(EDITIONS)
DEFAULT_VERSION = int(GENERATOR_VERSION)
# Per version: training images, good test images, anomalous test images *per category* (spread over the types;
# None: n_test_defect per type as given)
_COUNTS = {2: dict(n_train=60, n_test_good=12, n_test_defect=6), 3: dict(n_train=80, n_test_good=40, n_test_defect=None)}
_MIN_DEFECTIVE = 40   # version 3: at least this many anomalous test images per category

_SPECS: dict[int, dict[str, CategorySpec]] = {
    v: {name: spec for family in families for name, spec in family.items()} for v, families in EDITIONS.items()}


def _version(version: int | None) -> int:
    v = DEFAULT_VERSION if version is None else version
    if v not in EDITIONS:
        raise ValueError(f"version={version!r}: the benchmark has versions {VERSIONS} (None: {DEFAULT_VERSION})")
    return int(v)


def categories(version: int | None = None) -> tuple[str, ...]:
    """The category names of a benchmark ``version`` (None: ``DEFAULT_VERSION``), in the benchmark's order."""
    return tuple(_SPECS[_version(version)])


def defect_types(version: int | None = None) -> dict[str, tuple[str, ...]]:
    """Per category of ``version``: its test defect types, in order."""
    return {name: tuple(spec.defects) for name, spec in _SPECS[_version(version)].items()}


def recipes(version: int | None = None) -> dict[str, str]:
    """Per defect type of ``version``: the one-line description of its recipe."""
    return {d: r.description for spec in _SPECS[_version(version)].values() for d, r in spec.defects.items()}


def category_kind(category: str, version: int | None = None) -> str:
    """"object" or "texture" (MVTec AD's two kinds of class) for a category of ``version``."""
    return _spec(category, version).kind


FAMILIES: tuple[dict[str, CategorySpec], ...] = EDITIONS[DEFAULT_VERSION]
DEFECT_TYPES: dict[str, tuple[str, ...]] = defect_types()
CATEGORIES: tuple[str, ...] = categories()
RECIPES: dict[str, str] = recipes()

_SIZE = (8, 1024)
_MAX_COUNT = 1000  # file names 000..999 keep their order when sorted


def _spec(category: str, version: int | None = None) -> CategorySpec:
    specs = _SPECS[_version(version)]
    if category not in specs:
        raise ValueError(f"unknown category {category!r} in benchmark version {_version(version)}; "
                         f"choose from {tuple(specs)}")
    return specs[category]


def image_shape(category: str, size: int, version: int | None = None) -> tuple[int, int]:
    """(H, W) of a category's images for a short side of ``size``: square, except ``metal_strip``
    (seed 001's KSDD2 aspect, 224 wide x 632 tall: W = size, H = size * 632 / 224 rounded to a
    multiple of 8)."""
    return _spec(category, version).shape(size)


class Drawn(NamedTuple):
    """One drawn image: ``clean`` and ``defective`` (uint8 H x W x 3), the defect ``mask`` (bool H x W, empty for a
    good image) and, for an object category, the clean object's ``foreground`` (bool H x W; None otherwise)."""

    clean: np.ndarray
    defective: np.ndarray
    mask: np.ndarray
    foreground: np.ndarray | None


def draw_image(category: str, index: int, defect: str = "good", seed: int = 0, size: int = 64,
               split: str = "test", version: int | None = None) -> Drawn:
    """Draw one image of a benchmark ``version`` (None: ``DEFAULT_VERSION``); see :func:`render`."""
    spec = _spec(category, version)
    if defect != "good" and (split != "test" or defect not in spec.defects):
        raise ValueError(f"{category!r} has no test defect {defect!r}; choose from {tuple(spec.defects)}")
    shape = spec.shape(size)
    name = f"{split}/{defect}"
    bg = spec.background(stream(seed, category, name, index, "background"), shape)
    scene = bg if isinstance(bg, Scene) else None
    clean = np.clip(np.rint(scene.image if scene else bg), 0, 255).astype(np.uint8)
    fg = scene.foreground if scene else None
    if defect == "good":
        return Drawn(clean, clean.copy(), np.zeros(shape, bool), fg)
    rng = stream(seed, category, name, index, "defect")
    recipe = spec.defects[defect]
    for _ in range(50):  # redraw the rare defect that mostly leaves the image
        image = clean.astype(np.float32)
        drawn = recipe.draw(rng, image, scene) if recipe.scene else recipe.draw(rng, image)
        if drawn.mask.sum() >= min(shape) / 4:
            return Drawn(clean, apply_defect(clean, drawn), drawn.mask, fg)
    raise RuntimeError(f"no visible {defect} drawn for {category} index {index} seed {seed}")


def render(category: str, index: int, defect: str = "good", seed: int = 0, size: int = 64,
           split: str = "test", version: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image: returns (clean uint8 HxWx3, defective uint8 HxWx3, mask bool HxW).

    ``defect`` is "good" or one of ``defect_types(version)[category]``; ``split`` is "train"
    (good only) or "test"; ``size`` is the short side. For a good image ``defective`` equals
    ``clean`` and the mask is empty. The background and the defect come from separate seeded
    streams, so ``clean`` is exactly the image the same seed gives without the defect. A
    defect covering fewer than a quarter of the short side in pixels (e.g. a
    scratch that mostly left the image) is redrawn from the same stream. :func:`draw_image` also
    returns an object's foreground.
    """
    return tuple(draw_image(category, index, defect, seed, size, split, version)[:3])


# ----------------------------------------------------------------------------------
# Writing the benchmark and its card (benchmark.json, README.md)
# ----------------------------------------------------------------------------------

def _per_type(n_test_defect: int | None, n_types: int) -> int:
    """Anomalous test images per defect type: as given, or (None) enough for ``_MIN_DEFECTIVE`` in all."""
    return -(-_MIN_DEFECTIVE // n_types) if n_test_defect is None else n_test_defect


def _config(size, seed, categories, n_train, n_test_good, n_test_defect, version) -> dict:
    """The checked generator config, as ``benchmark.json`` records it."""
    version = _version(version)
    known = tuple(_SPECS[version])
    chosen = list(known if categories is None else categories)
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise ValueError(f"unknown categories {unknown} in benchmark version {version}; choose from {known}")
    counts = _COUNTS[version]
    n_train = counts["n_train"] if n_train is None else n_train
    n_test_good = counts["n_test_good"] if n_test_good is None else n_test_good
    n_test_defect = counts["n_test_defect"] if n_test_defect is None else n_test_defect
    lo = 32 if version >= 3 else _SIZE[0]   # version 3's small structural defects need at least 32 pixels
    cfg = {"size": check_int("size", size, lo, _SIZE[1]), "seed": check_int("seed", seed, 0),
           "categories": chosen,
           "n_train": check_int("n_train", n_train, 1, _MAX_COUNT),
           "n_test_good": check_int("n_test_good", n_test_good, 0, _MAX_COUNT),
           "n_test_defect": None if n_test_defect is None else check_int("n_test_defect", n_test_defect, 0, _MAX_COUNT),
           "generator_version": str(version)}
    return cfg


def _save_png(path, array):
    Image.fromarray(array).save(path, format="PNG", compress_level=1)  # fast; same bytes every run


def _write_category(root, category, cfg):
    size, seed, version = cfg["size"], cfg["seed"], int(cfg["generator_version"])
    spec = _spec(category, version)
    base = root / category
    per_type = _per_type(cfg["n_test_defect"], len(spec.defects))
    counts = {"train/good": cfg["n_train"], "test/good": cfg["n_test_good"]}
    (base / "train" / "good").mkdir(parents=True)
    (base / "test" / "good").mkdir(parents=True)
    if spec.kind == "object":
        (base / "foreground" / "train" / "good").mkdir(parents=True)
    for i in range(cfg["n_train"]):
        d = draw_image(category, i, "good", seed, size, "train", version)
        _save_png(base / "train" / "good" / f"{i:03d}.png", d.defective)
        if d.foreground is not None:
            _save_png(base / "foreground" / "train" / "good" / f"{i:03d}.png", d.foreground.astype(np.uint8) * 255)
    for i in range(cfg["n_test_good"]):
        _save_png(base / "test" / "good" / f"{i:03d}.png", draw_image(category, i, "good", seed, size, "test",
                                                                        version).defective)
    for defect in spec.defects:
        (base / "test" / defect).mkdir(parents=True)
        (base / "ground_truth" / defect).mkdir(parents=True)
        for i in range(per_type):
            d = draw_image(category, i, defect, seed, size, "test", version)
            _save_png(base / "test" / defect / f"{i:03d}.png", d.defective)
            _save_png(base / "ground_truth" / defect / f"{i:03d}_mask.png", d.mask.astype(np.uint8) * 255)
        counts[f"test/{defect}"] = per_type
    return {"shape": list(spec.shape(size)), "kind": spec.kind, "defect_types": list(spec.defects),
            "foreground": "foreground/train/good" if spec.kind == "object" else None,
            "counts": counts, "recipes": {d: r.description for d, r in spec.defects.items()}}


def _readme(card):
    cfg = card["config"]
    version = int(cfg["generator_version"])
    lines = [
        "# Embedded inspection benchmark (synthetic)",
        "",
        f"Generated by `{_GENERATOR}` (benchmark version {version}) with seed {cfg['seed']} "
        f"and size {cfg['size']} (the short side; `metal_strip` is taller). **Every image is synthetic**: "
        "drawn by code, deterministic (same seed and size give byte-identical files). Layout: MVTec AD "
        "(`train/good`, `test/<defect>`, `ground_truth/<defect>/<name>_mask.png`, masks 0/255)"
        + ("; object categories also have `foreground/train/good/<name>.png` (0/255), the object's mask for "
           "synthesising training anomalies." if any(c["kind"] == "object" for c in card["categories"].values())
           else "."),
        "",
        "Test defects are drawn by geometric recipes (polylines, random walks, discs, Fourier blobs, "
        "sums of Gaussians, re-rendered object parts), not by the Perlin-noise / DTD-texture pseudo-anomalies "
        "that DRAEM and DiffusionAD train on. Masks are pixel-exact: outside the mask the image equals the "
        "defect-free image of the same seed; every mask pixel changed by at least 2 (MURA) or 6 grey levels "
        "(surface defects), or by at least 1 (structural defects: the mask is the set of changed pixels).",
        "",
        "| category | kind | H x W | train/good | test/good | defect types (test images each) |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in card["categories"].items():
        n = c["counts"]
        defects = ", ".join(f"`{d}` ({n['test/' + d]})" for d in c["defect_types"])
        lines.append(f"| {name} | {c['kind']} | {c['shape'][0]} x {c['shape'][1]} | {n['train/good']} "
                     f"| {n['test/good']} | {defects} |")
    lines += ["", "| category | defect | recipe |", "|---|---|---|"]
    lines += [f"| {name} | `{d}` | {r} |" for name, c in card["categories"].items() for d, r in c["recipes"].items()]
    lines += ["", "Backgrounds: `display_panel` near-uniform grey panel (seed 000 MURA types, Fig. 1); "
              "`metal_strip` brushed metal with the KSDD2 aspect (seed 001, 224 x 632); `brick`, `grass`, "
              "`gravel` random crops of scikit-image's bundled photographs; `fabric` procedural weave"
              + ("; `screw`, `pill`, `cable` objects in a random pose (`lib.data.objects`). Version 3 adds "
                 "normal variation to every category (illumination gain, tilt, vignetting, sensor noise; the "
                 "panel's own non-uniformity; texture scale) and uses fainter defects." if version >= 3 else "."),
              ""]
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
                   n_train: int | None = None, n_test_good: int | None = None, n_test_defect: int | None = None,
                   version: int | None = None) -> Path:
    """Generate the embedded benchmark into ``root`` and return ``root``.

    ``version``: 2 or 3 (None: ``DEFAULT_VERSION``; see the module docstring). ``size`` is the short side in
    pixels (8..1024, version 3: 32..1024; ``metal_strip`` is taller, see ``image_shape``); ``seed`` >= 0; ``n_train`` (1..1000) good
    training images, ``n_test_good`` (0..1000) good test images and ``n_test_defect`` (0..1000) anomalous test
    images per defect type, per category. None takes the version's defaults: 60 / 12 / 6 for version 2;
    80 / 40 / enough per type for at least 40 anomalous images per category for version 3.
    The folder is built in a temporary sibling and moved into place with
    ``os.replace``, so a reader never sees half a benchmark. An existing ``root`` is
    replaced only if this function generated it (its ``benchmark.json`` says so) or
    it is empty; anything else raises ``FileExistsError``.
    """
    root = Path(root)
    cfg = _config(size, seed, categories, n_train, n_test_good, n_test_defect, version)
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
        card = {"generator": _GENERATOR, "generator_version": cfg["generator_version"], "synthetic": True,
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


def embedded_benchmark(size: int = 64, seed: int = 0, root: PathLike | None = None,
                       version: int | None = None) -> Path:
    """The default benchmark folder ``<data dir>/embedded/size{size}_seed{seed}`` (version 2) or
    ``.../v{version}_size{size}_seed{seed}`` (``size``: the short side; ``version`` None: ``DEFAULT_VERSION``;
    ``root`` overrides the folder), generated with the version's default counts if it is missing or its
    ``benchmark.json`` holds another config."""
    cfg = _config(size, seed, None, None, None, None, version)
    v = int(cfg["generator_version"])
    name = f"size{cfg['size']}_seed{cfg['seed']}" if v == 2 else f"v{v}_size{cfg['size']}_seed{cfg['seed']}"
    root = Path(root) if root is not None else default_data_dir() / "embedded" / name
    card = read_card(root)
    if card is None or card.get("config") != cfg:
        make_benchmark(root, size=size, seed=seed, version=v)
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
