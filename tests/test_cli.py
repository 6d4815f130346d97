"""The real command line, end to end, as a user runs it (subprocesses, CPU)."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from sae_lab.__main__ import main
from sae_lab.cli import SaeLabCLI
from tests.helpers.common import IMAGE_SIZE, REPO

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def tiny_config(tmp_path: Path, world_dir: Path, **trainer) -> Path:
    """The quickstart classifier config pointed at the test world, small and fast."""
    cfg = yaml.safe_load((REPO / "configs/quickstart/classifier.yaml").read_text())
    cfg["name"] = "tiny"
    cfg["checkpoint_root"] = str(tmp_path / "checkpoints")
    cfg["data"]["init_args"].update(
        data=str(world_dir), image_size=IMAGE_SIZE, batch_size=8, num_workers=0, val_fraction=0.25
    )
    cfg["trainer"].update({"enable_progress_bar": False, "enable_model_summary": False, **trainer})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "world", "cache-tokens", "report", "explain", "label",
                    "evaluate", "why", "serve", "quickstart"):  # fmt: skip
        assert f"  {command} " in out


def test_unknown_command_is_an_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(REPO)) for c in CONFIGS])
def test_every_shipped_yaml_parses_and_instantiates(config, tmp_path, request):
    extra, layers = [], ["--config", str(config)]
    if config.name == "pipeline.yaml":  # a layer on the SAE config beside it
        layers = ["--config", str(config.with_name("sae.yaml")), *layers]
    if "FeatureTokenDataModule" in config.read_text() or config.name == "pipeline.yaml":
        extra = ["--data.init_args.classifier", str(request.getfixturevalue("classifier_ckpt"))]  # SAE configs
    args = [*layers, *extra, "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.precision", "32-true", "--trainer.strategy", "auto",
            "--checkpoint_root", str(tmp_path)]  # fmt: skip
    cli = SaeLabCLI(args=args, run=False)
    assert cli.model is not None and cli.datamodule is not None
    assert cli.trainer.checkpoint_callback.dirpath.startswith(str(tmp_path))


def test_world_command_writes_tu_berlin_parquet(tmp_path, cli):
    out = tmp_path / "world"
    r = cli("world", "--out", str(out), "--n-train", "40", "--n-test", "8", "--image-size", "32", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "data/train-00000-of-00001.parquet").exists() and (out / "world.json").exists()
    again = cli("world", "--out", str(out), "--n-train", "40", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.slow
def test_fast_dev_run_through_the_real_cli(tmp_path, world_dir, cli):
    r = cli("fit", "--config", str(tiny_config(tmp_path, world_dir)), "--trainer.fast_dev_run", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]


def test_unknown_config_key_is_named(tmp_path, world_dir, cli):
    cfg = tiny_config(tmp_path, world_dir)
    r = cli("fit", "--config", str(cfg), "--model.init_args.learning_rat", "0.1", cwd=tmp_path)
    assert r.returncode != 0 and "learning_rat" in r.stderr


def test_missing_data_path_is_named(tmp_path, world_dir, cli):
    cfg = tiny_config(tmp_path, world_dir)
    r = cli("fit", "--config", str(cfg), "--data.init_args.data", str(tmp_path / "no_such_dir"), cwd=tmp_path)
    assert r.returncode != 0 and "no_such_dir" in r.stderr and "does not exist" in r.stderr


@pytest.mark.slow
def test_training_killed_mid_run_resumes_from_last_ckpt(tmp_path, world_dir, cli):
    cfg = yaml.safe_load(tiny_config(tmp_path, world_dir, max_epochs=4).read_text())
    cfg["checkpoint"].update(every_n_train_steps=3, monitor=None, mode="min")
    killed = dict(cfg, trainer={**cfg["trainer"], "callbacks": [
        {"class_path": "tests.helpers.callbacks.KillAtStep", "init_args": {"step": 5}}]})  # fmt: skip
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump(killed))
    r = cli("fit", "--config", str(tmp_path / "killed.yaml"), cwd=tmp_path)
    assert r.returncode == 17, r.stderr[-3000:]  # died without any cleanup
    last = tmp_path / "checkpoints/tiny/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3

    resumed = dict(cfg, trainer={**cfg["trainer"], "callbacks": [
        {"class_path": "tests.helpers.callbacks.RecordRun", "init_args": {"out": str(tmp_path / "record")}}]})  # fmt: skip
    (tmp_path / "resumed.yaml").write_text(yaml.safe_dump(resumed))
    r = cli("fit", "--config", str(tmp_path / "resumed.yaml"), "--ckpt_path", "last", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((tmp_path / "record/rank0.json").read_text())
    steps_per_epoch = 108 // 8
    assert record["start_step"] == 3  # continued the step count, not from 0
    # Lightning restarts an interrupted epoch's loader, so the run may end a batch short of 4 full epochs.
    assert 4 * steps_per_epoch - 1 <= record["end_step"] <= 4 * steps_per_epoch
    assert 4 * steps_per_epoch - 1 <= torch.load(last, weights_only=True)["global_step"] <= 4 * steps_per_epoch


@pytest.mark.slow
def test_ddp_on_two_cpu_ranks_sees_disjoint_data_and_writes_one_checkpoint(tmp_path, world_dir, cli):
    cfg = yaml.safe_load(tiny_config(tmp_path, world_dir, max_epochs=1).read_text())
    cfg["trainer"].update(strategy="ddp", devices=2, accelerator="cpu", limit_train_batches=4, limit_val_batches=2,
                          callbacks=[{"class_path": "tests.helpers.callbacks.RecordRun",
                                      "init_args": {"out": str(tmp_path / "record")}}])  # fmt: skip
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    r = cli("fit", "--config", str(tmp_path / "ddp.yaml"), cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"record/rank{i}.json").read_text()) for i in (0, 1)]
    assert all(rk["world_size"] == 2 for rk in ranks)
    a, b = (set(rk["indices"]) for rk in ranks)
    assert len(a) == len(b) == 4 * 8 and not a & b
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints/tiny").glob("*.ckpt"))
    assert ckpts == ["best.ckpt", "last.ckpt"]
