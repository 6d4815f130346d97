"""A tiny run on the test classifier, for the explainers' tests: a random SAE and a hand-written report."""

from __future__ import annotations

from pathlib import Path

import torch

from sae_lab.run import NeuronRecord, RunFiles, write_json
from sae_lab.run.identity import IDENTITY_KEY, identity_of
from sae_lab.run.store import write_neurons


def make_tiny_run(root: Path, classifier_ckpt: Path, *, name: str = "tiny", num_latents: int = 12, k: int = 4,
                  dead: int = 0, matched: int = 4) -> Path:  # fmt: skip
    """``root/checkpoints/<name>/sae`` (a random SAE whose latent ``dead`` never fires) and ``root/reports/<name>``:
    ``neurons.jsonl`` (latents below ``matched`` matched to circle at image AUC 0.95) and a ``report.json`` recording
    the SAE + classifier identity; returns the report folder."""
    from sae_lab.models.classifier_io import load_classifier
    from sae_lab.models.sae import SaeConfig, TopKSAE

    clf = load_classifier(classifier_ckpt)
    torch.manual_seed(0)
    sae = TopKSAE(SaeConfig(d_in=clf.net.channels, num_latents=num_latents, k=k), layer=clf.net.layer,
                  classifier=clf.fingerprint, metadata={"classifier_checkpoint": str(classifier_ckpt)})  # fmt: skip
    with torch.no_grad():
        sae.b_enc.fill_(0.5)
        sae.b_enc[dead] = -1e4
    sae.save_to_disk(root / "checkpoints" / name / "sae")
    out = root / "reports" / name
    out.mkdir(parents=True)
    # report.json with the identity of the pair, as the report stage writes it (readers check it)
    write_json(RunFiles(out).report, {"run": name, IDENTITY_KEY: identity_of(sae, clf).to_json()})
    gt = {"primitive": "circle", "image_auc": 0.95}
    write_neurons(RunFiles(out).neurons, [NeuronRecord(latent=i, dead=i == dead, ground_truth=gt if i < matched else None)
                                          for i in range(num_latents)])  # fmt: skip
    return out
