"""``python -m lib.tools.paper_smoke``: the paper profiles' own training commands, shortened, on a CPU dry run (its
times are not tested: a dry run proves the code path only)."""

import json

import pytest
import torch

from lib.tools import paper_smoke as PS


def test_smoke_argv_replaces_appends_and_leaves_options():
    argv = ["--category", "gravel", "--steps", "50000", "--name", "ddpm_paper_gravel256"]
    got = PS.smoke_argv(argv, steps=3, name="smoke", export_dir="/tmp/x", batch_size=None)
    assert got == ["--category", "gravel", "--steps", "3", "--name", "smoke", "--export-dir", "/tmp/x"]
    assert argv[3] == "50000"                                   # the caller's list is not modified


def test_a_dry_run_trains_each_paper_command_briefly_and_scores_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_FIGURES_DIR", str(tmp_path / "fig"))
    out = tmp_path / "rows.json"
    rc = PS.main(["--only", "1,4", "--device", "cpu", "--image-scale", "8", "--batch-size", "2", "--preset", "tiny",
                  "--steps", "3", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert rc == 0 and [r["notebook"] for r in rows] == ["01", "04"]
    for r in rows:
        assert r["status"] == "ok" and r["s_per_step"] > 0 and r["timed_steps"] == 2 and r["pass_s"] > 0
        assert r["epoch_s"] == pytest.approx(r["s_per_step"] * r["steps_per_epoch"])
    assert rows[0]["profile_steps"] == 50_000 and rows[1]["profile_steps"] == 300_000   # the paper profiles' steps
    assert (tmp_path / "fig" / "tables" / "timing" / "paper_smoke_cpu_dryrun.md").exists()


def test_a_dry_run_of_notebooks_02_and_05(tmp_path, monkeypatch):
    """02: both masked DDPMs, the crop baseline and FCOS (two runs' difference); 05: the classifier's epoch and one
    SDXL inpainting and SD img2img call on the tiny pipelines."""
    monkeypatch.setenv("KIT_FIGURES_DIR", str(tmp_path / "fig"))
    out = tmp_path / "rows.json"
    rc = PS.main(["--only", "2,5", "--device", "cpu", "--image-scale", "8", "--batch-size", "16", "--preset", "tiny",
                  "--sd-arch", "tiny", "--steps", "3", "--json", str(out)])
    rows = {r["model"].split(" (")[0]: r for r in json.loads(out.read_text())["rows"]}
    assert rc == 0 and all(r["status"] == "ok" for r in rows.values())
    assert set(rows) == {"masked DDPM, features", "masked DDPM, blur", "§3.1 crop baseline DDPM", "FCOS detector",
                         "classifier", "DIAG SDXL inpainting", "report's SD 1.5 img2img"}
    assert rows["masked DDPM, features"]["pass_s"] > 0            # the notebook generates with the feature-aware model
    assert rows["classifier"]["epoch_s"] == pytest.approx(rows["classifier"]["s_per_step"]
                                                          * rows["classifier"]["steps_per_epoch"])
    assert rows["DIAG SDXL inpainting"]["pass_s"] > 0 and rows["report's SD 1.5 img2img"]["pass_s"] > 0


def test_a_failing_case_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    def broken(s):
        raise RuntimeError("boom")

    monkeypatch.setitem(PS.CASES, "02", broken)
    monkeypatch.setitem(PS.CASES, "03", lambda s: [{"notebook": "03", "model": "stub", "status": "ok"}])
    rows = PS.run_smoke(PS.Smoke(tmp_path, torch.device("cpu")), ("02", "03"), json_path=str(tmp_path / "r.json"))
    assert rows[0]["status"] == "FAILED: RuntimeError: boom" and rows[1]["status"] == "ok"
    assert len(json.loads((tmp_path / "r.json").read_text())["rows"]) == 2
    assert "RuntimeError: boom" in capsys.readouterr().err                # the traceback is printed


@pytest.mark.parametrize("argv", [["--only", "07"], ["--steps", "1"], ["--image-scale", "0"]])
def test_bad_arguments_are_usage_errors(argv):
    with pytest.raises(SystemExit) as e:
        PS.main(argv)
    assert e.value.code == 2


def test_the_random_weight_pipelines_have_the_published_architectures():
    """Built on the meta device (no memory, no time): SD 1.5's and SDXL inpainting's parameter counts."""
    from lib.methods.balance import sd_img2img_random
    from lib.methods.diag import sdxl_inpaint_random

    def n(m):
        return sum(p.numel() for p in m.parameters())

    sd = sd_img2img_random(device="meta")
    assert (n(sd.unet), n(sd.vae), n(sd.text_encoder)) == (859_520_964, 83_653_863, 123_060_480)
    assert type(sd.scheduler).__name__ == "DPMSolverSDEScheduler" and sd.scheduler.config.use_karras_sigmas
    xl = sdxl_inpaint_random(torch.float16, device="meta")
    assert (n(xl.unet), n(xl.text_encoder_2)) == (2_567_478_084, 694_659_840) and xl.unet.config.in_channels == 9
