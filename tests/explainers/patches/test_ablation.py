"""Ablation evidence: zeroing a latent in the Top-K code, only on the images where it is active, equals ablating it
on every image; classes ranked by accuracy drop, then true-class logit drop."""

from __future__ import annotations

import torch

from sae_lab.data.world import SketchWorld
from sae_lab.explainers.patches.ablation import ablation_drops, top_drops
from sae_lab.models.sae import SaeConfig, TopKSAE
from sae_lab.models.tokens import fmap_to_tokens, tokens_to_fmap
from tests.helpers.common import IMAGE_SIZE
from tests.helpers.threads import one_thread  # noqa: F401

N_IMAGES = 40
NUM_LATENTS = 16
K = 3


def brute_force(net, sae, images, labels, latent, num_classes):
    """Every image decoded with the latent's activations zeroed (dense decode): accuracy and logit per class."""
    x = images.float().div(255.0).unsqueeze(1)
    fmap = net.features(x)
    acts, idx = sae.encode(sae.standardize(fmap_to_tokens(fmap)))
    base = net.head(tokens_to_fmap(sae.unstandardize(sae.decode_dense(acts, idx)), fmap.shape))
    cut = net.head(tokens_to_fmap(sae.unstandardize(sae.decode_dense(acts.masked_fill(idx == latent, 0), idx)),
                                  fmap.shape))  # fmt: skip
    per = torch.bincount(labels, minlength=num_classes).clamp_min(1).double()
    lost = torch.zeros(num_classes, dtype=torch.float64).index_add_(
        0, labels, (base.argmax(1) == labels).double() - (cut.argmax(1) == labels).double()
    )
    lower = torch.zeros(num_classes, dtype=torch.float64).index_add_(
        0, labels, (base - cut).double().gather(1, labels[:, None])[:, 0])  # fmt: skip
    return lost / per, lower / per


@torch.no_grad()
def test_only_active_images_matter_and_the_result_is_exact(classifier_ckpt):
    from sae_lab.models.classifier_io import load_classifier

    clf = load_classifier(classifier_ckpt)
    net = clf.net.eval()
    torch.manual_seed(0)
    sae = TopKSAE(SaeConfig(d_in=net.channels, num_latents=NUM_LATENTS, k=K))
    world = SketchWorld(image_size=IMAGE_SIZE, seed=0)
    samples = [world.sample(i) for i in range(N_IMAGES)]
    images = torch.stack([torch.from_numpy(255 - s.image) for s in samples])
    labels = torch.tensor([s.label for s in samples])
    n = len(clf.class_names)
    latents = list(range(NUM_LATENTS))
    acc, logit, per_class = ablation_drops(net, sae, images, labels, latents, n, batch_size=7)
    assert per_class.tolist() == torch.bincount(labels, minlength=n).tolist()
    for row, latent in enumerate(latents):
        want_acc, want_logit = brute_force(net, sae, images, labels, latent, n)
        torch.testing.assert_close(acc[row], want_acc, atol=1e-9, rtol=0)
        torch.testing.assert_close(logit[row], want_logit, atol=1e-4, rtol=0)
    assert logit.abs().sum() > 0  # the latents do something


def test_top_drops_order():
    acc = torch.tensor([0.0, 0.5, 0.0, 0.0, 0.9], dtype=torch.float64)
    logit = torch.tensor([0.3, 0.1, 0.7, -0.2, 5.0], dtype=torch.float64)
    per_class = torch.tensor([4, 2, 3, 5, 0])
    got = top_drops(acc, logit, per_class, ["a", "b", "c", "d", "e"], k=3)
    assert [g["class"] for g in got] == ["b", "c", "a"]  # "e" has no held-out images
    assert got[0] == {"class": "b", "acc_drop": 0.5, "logit_drop": 0.1, "n": 2}
