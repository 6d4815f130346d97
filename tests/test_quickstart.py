"""`python -m sae_lab quickstart --smoke`: every stage wired together, and a re-run resumes."""

import json

import pytest


@pytest.mark.slow
def test_quickstart_smoke_writes_every_block_and_a_rerun_skips_finished_stages(tmp_path, cli):
    r = cli("quickstart", "--smoke", "--root", str(tmp_path), cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "reports/quickstart/summary.json").read_text())
    assert set(summary["classifier"]) >= {"val_acc", "seconds"}
    assert set(summary["sae"]) >= {"fvu", "l0", "dead_frac", "acc_recovered", "kl", "seconds"}
    assert set(summary["report"]) >= {"primitives_recovered", "primitives_total", "latents_matched", "seconds"}
    assert set(summary["labels"]) >= {"labelled", "failed", "seconds"} and summary["labels"]["labelled"] > 0
    assert set(summary["line"]) >= {"latents", "gt_named_rate", "images_generated", "seconds"}
    assert set(summary["why"]) >= {"images", "top_latent_gt_rate", "seconds"}
    assert summary["total_seconds"] >= summary["classifier"]["seconds"] + summary["sae"]["seconds"]
    assert (tmp_path / "reports/quickstart/index.html").exists()
    assert "logit" in r.stdout  # the why stage printed its explanations
    assert (tmp_path / "checkpoints/quickstart/sae/sae.safetensors").exists()

    again = cli("quickstart", "--smoke", "--root", str(tmp_path), cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already done") == 3  # classifier, sae, report; later stages resume on their own
    assert json.loads((tmp_path / "reports/quickstart/summary.json").read_text())["sae"] == summary["sae"]
