"""The benchmark's pipeline computes the same function as lib.methods.diffusionad (its speed is not tested here)."""

import pytest
import torch

from lib.tools.bench import make_pipeline
from lib.core.diffusion import Diffusion, eps_fn, make_betas
from lib.core.nets import segmentation_net, unet
from lib.core.scoring import image_score, segmentation_map
from lib.methods.diffusionad import norm_guided


def test_pipeline_equals_library_path():
    torch.manual_seed(0)
    u, s = unet("small", 32).eval(), segmentation_net("tiny").eval()
    d = Diffusion(make_betas("linear", 1000))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    n_s, n_b = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    with torch.no_grad():
        ref = norm_guided(eps_fn(u), x, d, 200, 400, n_s, n_b, w=1.0)
        ref_map = segmentation_map(s, x, ref.x0_g)
        for one_call in (False, True):
            amap, score = make_pipeline(u, s, d, one_call=one_call)(x, n_s, n_b)
            assert (amap - ref_map).abs().max() < 1e-5
            assert (score - image_score(ref_map, reduction="topk", k=50)).abs().max() < 1e-5
        # bf16 autocast (CPU) changes the numbers only slightly
        amap16, _ = make_pipeline(u, s, d, dtype=torch.bfloat16)(x, n_s, n_b)
        assert (amap16 - ref_map).abs().max() < 0.1


def test_flops_per_image_is_two_unet_forwards_and_one_seg_forward():
    from lib.core.flops import count_flops
    from lib.tools.bench import flops_per_image

    u, s = unet("small", 32).eval(), segmentation_net("tiny").eval()
    f = flops_per_image(u, s, 32, torch.device("cpu"))
    x = torch.zeros(1, 3, 32, 32)
    assert f["unet_forward"] == count_flops(u, x, torch.zeros(1, dtype=torch.long))["total"] > 0
    assert f["seg_forward"] == count_flops(s, torch.zeros(1, 6, 32, 32))["total"] > 0
    assert f["image"] == 2 * f["unet_forward"] + f["seg_forward"]


def test_pipeline_checks_its_settings_once_when_built():
    """The hot path (norm_guided_core) checks nothing; make_pipeline checks t_s, t_b, w, k up front."""
    d = Diffusion(make_betas("linear", 1000))
    for kw, msg in [(dict(t_s=-1), r"t_s must be an integer in \[0, 999\], got -1"),
                    (dict(t_b=1000), r"t_b must be an integer in \[200, 999\], got 1000"),
                    (dict(t_s=500, t_b=400), r"t_b must be an integer in \[500, 999\], got 400"),
                    (dict(w=float("nan")), r"w must be a finite number >= 0.0"),
                    (dict(k=0), r"k must be an integer >= 1, got 0")]:
        with pytest.raises(ValueError, match=msg):
            make_pipeline(None, None, d, **kw)


def test_diag_bench_runs_on_the_tiny_pipeline(tmp_path, monkeypatch, capsys):
    """``python -m lib.bench diag`` on CPU: DIAG's one-image call and the kit's batched call, same images and seeds."""
    import json

    from lib.tools.bench import main

    monkeypatch.setenv("KIT_FIGURES_DIR", str(tmp_path / "fig"))
    out = tmp_path / "rows.json"
    main(["diag", "--device", "cpu", "--size", "64", "--steps", "2", "--images", "2", "--batches", "2",
          "--no-compile", "--warmup", "0", "--also-dtypes", "bfloat16", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["path"] for r in rows] == ["DIAG's call (one image per call)", "kit, batched", "kit, batched, bfloat16"]
    assert rows[1]["batch"] == 2 and rows[1]["max_diff_vs_diag_call"] <= 1      # the batch equals the one-image call
    assert (tmp_path / "fig" / "tables" / "timing" / "bench_diag_cpu_tiny64_float32.md").exists()
    with pytest.raises(SystemExit):
        main(["diag", "--images", "3", "--batches", "2"])                        # not a multiple: usage error


def test_diffusionad_bench_reports_the_fraction_of_a_measured_ceiling(tmp_path, monkeypatch):
    """``python -m lib.bench diffusionad`` on CPU (tiny nets, no compile): every row carries TFLOP/s and its fraction of
    the matrix-product ceiling measured in the same run; --half float16 names the table."""
    import json

    from lib.core.timing import matmul_ceiling
    from lib.tools.bench import main

    assert matmul_ceiling("cpu", torch.float32, n=256, repeats=2) > 0
    monkeypatch.setenv("KIT_FIGURES_DIR", str(tmp_path / "fig"))
    out = tmp_path / "rows.json"
    main(["diffusionad", "--device", "cpu", "--preset", "tiny", "--seg-preset", "tiny", "--image-size", "32",
          "--batches", "2", "--eager-batch", "2", "--no-compile", "--cpu-bf16", "--half", "float16", "--pure-bf16",
          "--json", str(out)])
    got = json.loads(out.read_text())
    assert got["meta"]["ceiling_TFLOP_per_s"] > 0
    for r in got["rows"]:
        assert r["fraction_of_ceiling"] == pytest.approx(r["TFLOP_per_s"] / got["meta"]["ceiling_TFLOP_per_s"])
    assert got["rows"][-1]["path"].startswith("eager fp16 weights") and got["rows"][-1]["max_abs_map_diff"] < 0.1
    assert (tmp_path / "fig" / "tables" / "timing" / "bench_diffusionad_cpu_tiny32_purefp16.md").exists()
