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
    assert summary["total_seconds"] >= summary["classifier"]["seconds"]
    assert (tmp_path / "checkpoints/quickstart/sae/sae.safetensors").exists()

    again = cli("quickstart", "--smoke", "--root", str(tmp_path), cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already done") == 2
    assert json.loads((tmp_path / "reports/quickstart/summary.json").read_text())["sae"] == summary["sae"]
