"""SaeModule: training, validation figures, export, kill-and-resume and DDP through the real CLI."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from sae_lab.data.token_datamodule import FeatureTokenDataModule
from sae_lab.lit.sae_module import DEAD_LATENTS_KEY, SaeModule
from sae_lab.models.sae import TopKSAE
from sae_lab.models.tokens import fmap_to_tokens
from tests.helpers.common import REPO

NUM_LATENTS = 64
K = 4


@pytest.fixture(scope="module")
def trained(classifier_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("sae_run")
    L.seed_everything(0, verbose=False)
    dm = FeatureTokenDataModule(str(classifier_ckpt), batch_size=128, image_batch_size=16)
    module = SaeModule(num_latents=NUM_LATENTS, k=K, dead_window_tokens=256, lr=3e-3, export_dir=str(out / "export"))
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, val_check_interval=3)  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return trainer, module, dm, out / "export"


def test_training_lowers_fvu_and_logs_every_validation_figure(trained):
    trainer, module, _, _ = trained
    metrics = trainer.callback_metrics
    for key in ("val/fvu", "val/l0", "val/dead_frac", "val/acc_orig", "val/acc_spliced", "val/acc_mean_ablated",
                "val/acc_recovered", "val/kl", "train/loss", "train/fvu", "train/auxk_loss"):  # fmt: skip
        assert key in metrics, key
    assert 0.0 <= float(metrics["val/fvu"]) < 1.0
    assert float(metrics["val/l0"]) <= K


def test_decoder_rows_stay_unit_norm_through_training(trained):
    _, module, _, _ = trained
    assert torch.allclose(module.sae.W_dec.norm(dim=1), torch.ones(NUM_LATENTS), atol=1e-5)


def test_export_round_trips_and_validation_fvu_is_over_the_whole_split(trained):
    trainer, module, dm, export = trained
    assert sorted(p.name for p in export.iterdir()) == ["cfg.json", "sae.safetensors"]
    sae = TopKSAE.load_from_disk(export)
    assert sae.classifier == dm.classifier.fingerprint and sae.layer == "layer4"
    assert torch.equal(sae.mu, module.sae.mu) and torch.equal(sae.W_dec, module.sae.W_dec)
    # FVU by hand, over every validation token at once, in float64.
    with torch.no_grad():
        x = torch.cat([fmap_to_tokens(dm.classifier.net.features(b["image"])) for b in dm.val_dataloader()])
        x_tilde = sae.standardize(x).double()
        x_hat = sae(sae.standardize(x)).x_hat.double()
    fvu = ((x_tilde - x_hat) ** 2).sum() / ((x_tilde - x_tilde.mean(0)) ** 2).sum()
    assert float(trainer.callback_metrics["val/fvu"]) == pytest.approx(float(fvu), rel=1e-4)
    assert json.loads((export / "cfg.json").read_text())["metadata"]["val"]["fvu"] == pytest.approx(
        float(fvu), rel=1e-3
    )


def test_test_split_has_its_own_metrics_and_keys(trained):
    trainer, module, dm, _ = trained
    val = dict(module.last_val)
    trainer.test(module, datamodule=dm, verbose=False)
    for key in ("fvu", "l0", "dead_frac", "acc_orig", "acc_spliced", "acc_mean_ablated", "acc_recovered", "kl"):
        assert f"test/{key}" in trainer.callback_metrics, key
    assert module.last_val == val and 0.0 <= module.last_test["fvu"] < 1.0
    assert module.test_metrics is not module.val_metrics


@pytest.mark.parametrize("legacy", [False, True])
def test_checkpoint_restores_the_dead_latent_counters(trained, tmp_path, legacy):
    trainer, module, _, _ = trained
    path = tmp_path / "sae.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    counters = ckpt[DEAD_LATENTS_KEY]
    assert torch.equal(counters["tokens_since_fired"], module.dead_latents.tokens_since_fired.cpu())
    assert counters["tokens_since_fired"].max() > 0
    if legacy:  # written before the tracker: the counters were module buffers
        ckpt["state_dict"].update(ckpt.pop(DEAD_LATENTS_KEY))
        torch.save(ckpt, path)
    restored = SaeModule.load_from_checkpoint(path, weights_only=True)
    assert torch.equal(restored.dead_latents.tokens_since_fired, counters["tokens_since_fired"])
    assert torch.equal(restored.dead_latents.usage_ema, counters["usage_ema"])
    assert torch.equal(restored.sae.W_dec, module.sae.W_dec.cpu())


def sae_config(tmp_path: Path, classifier_ckpt: Path, callbacks: list, **trainer) -> Path:
    cfg = yaml.safe_load((REPO / "configs/quickstart/sae.yaml").read_text())
    cfg.update(name="sae", checkpoint_root=str(tmp_path / "checkpoints"))
    cfg["model"]["init_args"].update(num_latents=NUM_LATENTS, k=K, dead_window_tokens=256)
    cfg["data"]["init_args"].update(classifier=str(classifier_ckpt), batch_size=128, image_batch_size=16)
    cfg["trainer"].update({"enable_progress_bar": False, "enable_model_summary": False, "callbacks": callbacks,
                           **trainer})  # fmt: skip
    path = tmp_path / f"sae{len(list(tmp_path.glob('sae*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_killed_sae_training_resumes_step_dead_counters_and_optimizer(tmp_path, classifier_ckpt, cli):
    kill = [{"class_path": "tests.helpers.callbacks.KillAtStep", "init_args": {"step": 5}}]
    cfg = sae_config(tmp_path, classifier_ckpt, kill, max_epochs=3)
    r = cli("fit", "--config", str(cfg), "--checkpoint.every_n_train_steps", "3", "--checkpoint.monitor", "null",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 17, r.stderr[-3000:]
    last = tmp_path / "checkpoints/sae/last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 3
    record = tmp_path / "resumed.json"
    cfg = sae_config(tmp_path, classifier_ckpt,
                     [{"class_path": "tests.helpers.callbacks.RecordSaeState", "init_args": {"out": str(record)}}],
                     max_epochs=3)  # fmt: skip
    r = cli("fit", "--config", str(cfg), "--ckpt_path", "last", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    start = json.loads(record.read_text())
    assert start["global_step"] == 3
    assert start["tokens_since_fired"] == ckpt[DEAD_LATENTS_KEY]["tokens_since_fired"].tolist()
    assert max(start["tokens_since_fired"]) > 0  # counters were running, and were not reset
    saved = ckpt["optimizer_states"][0]["state"]
    assert start["adam_step"] == [float(saved[i]["step"]) for i in range(4)] == [3.0] * 4
    assert start["exp_avg_norm"] == pytest.approx([float(saved[i]["exp_avg"].norm()) for i in range(4)])
    assert (tmp_path / "checkpoints/sae/sae.safetensors").exists()


@pytest.mark.slow
def test_ddp_on_two_cpu_ranks_reports_one_rank_reduced_fvu(tmp_path, classifier_ckpt, cli):
    rec = [{"class_path": "tests.helpers.callbacks.RecordMetrics", "init_args": {"out": str(tmp_path / "rec")}}]
    cfg = sae_config(tmp_path, classifier_ckpt, rec, max_epochs=1, strategy="ddp", devices=2)
    r = cli("fit", "--config", str(cfg), cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rec/metrics{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["val/fvu"] == ranks[1]["val/fvu"]  # one figure, reduced over both ranks' tokens
    # It is the FVU over the whole validation split, which one process can recompute.
    dm = FeatureTokenDataModule(str(classifier_ckpt), batch_size=128, image_batch_size=16)
    dm.setup("fit")
    sae = TopKSAE.load_from_disk(tmp_path / "checkpoints/sae")
    with torch.no_grad():
        x = sae.standardize(torch.cat([fmap_to_tokens(dm.classifier.net.features(b["image"]))
                                       for b in dm.val_dataloader()]))  # fmt: skip
        x_hat = sae(x).x_hat
    fvu = float(((x - x_hat).double() ** 2).sum() / ((x - x.mean(0)).double() ** 2).sum())
    assert ranks[0]["val/fvu"] == pytest.approx(fvu, rel=1e-4)
