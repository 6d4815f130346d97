"""Ablation evidence: the classes whose accuracy drops most when a latent is zeroed in the Top-K code, measured.

Zhao et al. (arXiv 2310.10708) back a neuron's explanation with the per-class accuracy drop from ablating it.
Here both sides are spliced as in :func:`~sae_lab.stats.knockout.measured_knockout`: the reference predicts from
``head(unstandardize(decode(encode(x̃))))`` and the ablation decodes the same code with the latent's activation
set to 0. A single latent rarely flips a prediction, so classes with the same accuracy drop (often 0) are
ordered by the mean drop of their true-class logit. The images are encoded once; per latent only the images where it is in some token's Top-K are decoded
again (zeroing an inactive latent changes nothing), so hundreds of latents cost a few passes over the images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sae_lab.models.tokens import fmap_to_tokens, tokens_to_fmap


@torch.no_grad()
def ablation_drops(net, sae, images: Tensor, labels: Tensor, latents: Sequence[int], num_classes: int,
                   batch_size: int = 256) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Per latent and class, the accuracy and the true-class logit lost when the latent is zeroed.

    Args:
        net: the classifier's network (``features`` / ``head``).
        sae: the SAE.
        images: (N, S, S) uint8 ink of the held-out images.
        labels: (N,) int64 classes.
        latents: the L latents.
        num_classes: classes of the classifier.
        batch_size: images per forward pass.

    Returns:
        acc_drop (L, classes) float64: accuracy on the class's images with the SAE spliced in, minus with the
        latent zeroed (0 for a class without images); logit_drop (L, classes) float64: the mean decrease of the
        true-class logit over the class's images; per_class (classes,) int64 images of each class.
    """
    device = sae.W_dec.device
    codes, shapes, correct, true_logit = [], [], [], []
    for x in images.split(batch_size):
        fmap = net.features(x.float().div(255.0).unsqueeze(1).to(device)).to(sae.dtype)
        acts, idx = sae.encode(sae.standardize(fmap_to_tokens(fmap)))
        t = fmap.shape[2] * fmap.shape[3]
        codes.append((acts.reshape(len(x), t, -1), idx.reshape(len(x), t, -1)))
        shapes.append(fmap.shape)
        logits = net.head(tokens_to_fmap(sae.unstandardize(sae.decode(acts, idx)), fmap.shape).to(fmap.dtype))
        correct.append(logits.argmax(1).cpu())
        true_logit.append(logits.double().cpu())
    acts_all = torch.cat([a for a, _ in codes])
    idx_all = torch.cat([i for _, i in codes])
    _, c, h, w = shapes[0]
    labels = labels.long()
    base_ok = torch.cat(correct) == labels
    base_true = torch.cat(true_logit).gather(1, labels[:, None])[:, 0]
    per_class = torch.bincount(labels, minlength=num_classes)
    drops = torch.zeros(len(latents), num_classes, dtype=torch.float64)
    logit_drops = torch.zeros_like(drops)
    for row, latent in enumerate(latents):
        hit = (idx_all == int(latent)).flatten(1).any(1).nonzero().squeeze(1)
        if len(hit) == 0:
            continue
        lost = torch.zeros(num_classes, dtype=torch.float64)
        lower = torch.zeros(num_classes, dtype=torch.float64)
        for chunk in hit.split(batch_size):
            acts, idx = acts_all[chunk], idx_all[chunk]
            ablated = acts.masked_fill(idx == int(latent), 0.0)
            k = acts.shape[-1]
            x_hat = sae.decode(ablated.reshape(-1, k), idx.reshape(-1, k))
            logits = net.head(tokens_to_fmap(sae.unstandardize(x_hat), (len(chunk), c, h, w)))
            rows, y = chunk.cpu(), labels[chunk.cpu()]
            ok = logits.argmax(1).cpu() == y
            lost.index_add_(0, y, base_ok[rows].double() - ok.double())  # +1 lost, −1 gained
            lower.index_add_(0, y, base_true[rows] - logits.double().cpu().gather(1, y[:, None])[:, 0])
        drops[row] = lost / per_class.clamp_min(1)
        logit_drops[row] = lower / per_class.clamp_min(1)
    return drops, logit_drops, per_class


def top_drops(drops: Tensor, logit_drops: Tensor, per_class: Tensor, class_names: Sequence[str], k: int = 3
              ) -> list[dict]:  # fmt: skip
    """The ``k`` largest drops of one latent, by accuracy then true-class logit: ``[{class, acc_drop, logit_drop,
    n}]`` (n: the class's held-out images; classes without held-out images are left out)."""
    keys = [(-float(drops[c]), -float(logit_drops[c]), c) for c in range(len(per_class)) if per_class[c] > 0]
    return [{"class": class_names[c], "acc_drop": round(float(drops[c]), 4),
             "logit_drop": round(float(logit_drops[c]), 4), "n": int(per_class[c])}
            for _, _, c in sorted(keys)[:k]]  # fmt: skip


__all__ = ["ablation_drops", "top_drops"]
