"""Ablation evidence: the classes whose accuracy drops most when a latent is zeroed in the Top-K code, measured.

Zhao et al. (arXiv 2310.10708) back a neuron's explanation with the per-class accuracy drop from ablating it.
Here both sides are spliced as in :func:`~sae_lab.stats.knockout.measured_knockout`: the reference predicts from
``head(unstandardize(decode(encode(x̃))))`` and the ablation decodes the same code with the latent's activation
set to 0. The images are encoded once; per latent only the images where it is in some token's Top-K are decoded
again (zeroing an inactive latent changes nothing), so hundreds of latents cost a few passes over the images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sae_lab.models.tokens import fmap_to_tokens, tokens_to_fmap


@torch.no_grad()
def ablation_drops(net, sae, images: Tensor, labels: Tensor, latents: Sequence[int], num_classes: int,
                   batch_size: int = 256) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Per latent and class, the accuracy lost when the latent is zeroed.

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
        latent zeroed (0 for a class without images); per_class (classes,) int64 images of each class.
    """
    device = sae.W_dec.device
    codes, shapes, correct = [], [], []
    for x in images.split(batch_size):
        fmap = net.features(x.float().div(255.0).unsqueeze(1).to(device)).to(sae.dtype)
        acts, idx = sae.encode(sae.standardize(fmap_to_tokens(fmap)))
        t = fmap.shape[2] * fmap.shape[3]
        codes.append((acts.reshape(len(x), t, -1), idx.reshape(len(x), t, -1)))
        shapes.append(fmap.shape)
        logits = net.head(tokens_to_fmap(sae.unstandardize(sae.decode(acts, idx)), fmap.shape).to(fmap.dtype))
        correct.append(logits.argmax(1).cpu())
    acts_all = torch.cat([a for a, _ in codes])
    idx_all = torch.cat([i for _, i in codes])
    _, c, h, w = shapes[0]
    labels = labels.long()
    base_ok = torch.cat(correct) == labels
    per_class = torch.bincount(labels, minlength=num_classes)
    drops = torch.zeros(len(latents), num_classes, dtype=torch.float64)
    for row, latent in enumerate(latents):
        hit = (idx_all == int(latent)).flatten(1).any(1).nonzero().squeeze(1)
        if len(hit) == 0:
            continue
        lost = torch.zeros(num_classes, dtype=torch.float64)
        for chunk in hit.split(batch_size):
            acts, idx = acts_all[chunk], idx_all[chunk]
            ablated = acts.masked_fill(idx == int(latent), 0.0)
            k = acts.shape[-1]
            x_hat = sae.decode(ablated.reshape(-1, k), idx.reshape(-1, k))
            logits = net.head(tokens_to_fmap(sae.unstandardize(x_hat), (len(chunk), c, h, w)))
            ok = logits.argmax(1).cpu() == labels[chunk.cpu()]
            change = base_ok[chunk.cpu()].double() - ok.double()  # +1 lost, −1 gained
            lost.index_add_(0, labels[chunk.cpu()], change)
        drops[row] = lost / per_class.clamp_min(1)
    return drops, per_class


def top_drops(drops: Tensor, per_class: Tensor, class_names: Sequence[str], k: int = 3) -> list[dict]:
    """The ``k`` largest drops of one latent: ``[{class, acc_drop, n}]`` (n: the class's held-out images; classes
    without held-out images are left out)."""
    order = torch.argsort(drops.masked_fill(per_class == 0, -torch.inf), descending=True, stable=True)
    order = order[per_class[order] > 0][:k]
    return [{"class": class_names[int(i)], "acc_drop": round(float(drops[i]), 4), "n": int(per_class[i])}
            for i in order]  # fmt: skip


__all__ = ["ablation_drops", "top_drops"]
