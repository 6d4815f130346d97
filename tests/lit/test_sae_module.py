"""SaeModule: training, validation figures, export, kill-and-resume and DDP through the real CLI."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from sae_lab.data.token_datamodule import FeatureTokenDataModule
from sae_lab.data.tokens import fmap_to_tokens
from sae_lab.lit.sae_module import SaeModule, SpliceEvaluator
from sae_lab.models.sae import TopKSAE
from tests.helpers.common import REPO

NUM_LATENTS = 64
K = 4


class IdentitySae:
    """Stands in for an SAE that reconstructs perfectly (or predicts the mean, with `mean=True`)."""

    def __init__(self, mean: bool = False):
        self.mean = mean

    def standardize(self, x):
        return x

    def unstandardize(self, x):
        return x

    def __call__(self, x):
        from types import SimpleNamespace

        x_hat = x.mean(0, keepdim=True).expand_as(x) if self.mean else x
        return SimpleNamespace(
            x_hat=x_hat, latent_acts=torch.ones(len(x), 2), latent_indices=torch.zeros(len(x), 2).long()
        )


def test_evaluator_gives_fvu_0_and_full_recovery_for_a_perfect_sae():
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 3))
    fmap, labels = torch.randn(10, 6, 2, 2), torch.randint(0, 3, (10,))
    ev = SpliceEvaluator(6, 4, torch.device("cpu"))
    ev.update(IdentitySae(), head, fmap, labels, fmap_mean=torch.zeros(6))
    figures = ev.compute()
    assert figures["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert figures["acc_spliced"] == figures["acc_orig"] and figures["kl"] == pytest.approx(0.0, abs=1e-6)
    assert figures["dead_frac"] == 0.75  # only latent 0 fired
    mean = SpliceEvaluator(6, 4, torch.device("cpu"))
    mean.update(IdentitySae(mean=True), head, fmap, labels, fmap_mean=torch.zeros(6))
    assert mean.compute()["fvu"] == pytest.approx(1.0)


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
    assert start["tokens_since_fired"] == ckpt["state_dict"]["tokens_since_fired"].tolist()
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
