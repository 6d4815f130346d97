"""Validation figures of an SAE spliced into its classifier, as ``torchmetrics`` metrics (no Lightning).

Every state is a sum (``dist_reduce_fx="sum"``), so ``compute()`` reduces over all ranks and gives the
figure of the whole split, not a mean of per-rank figures. Definitions: DESIGN.md, "Metric definitions".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from sae_lab.models.tokens import fmap_to_tokens, tokens_to_fmap

_F64 = torch.float64


def _zero(*shape: int) -> Tensor:
    return torch.zeros(shape, dtype=_F64)


class EmptySplitError(ValueError):
    """Figures asked of a split in which nothing was measured (on any rank): they would be 0 / 0."""

    def __init__(self, what: str = "no image was measured") -> None:
        super().__init__(f"{what} (the split is empty, or every image in it was unreadable): its FVU, L0, "
                         "accuracies and KL are undefined")  # fmt: skip


def _nonempty(count: Tensor) -> None:
    if float(count) == 0:  # compute() sees the states summed over ranks: empty everywhere
        raise EmptySplitError()


class FractionOfVarianceUnexplained(Metric):
    """FVU = Σ‖x̃ − x̂‖² / Σ‖x̃ − mean(x̃)‖² over every token seen; the mean predicts 1, a perfect recon 0.

    Accumulates Σx̃ (C,), Σ‖x̃‖², Σ‖x̃ − x̂‖² and the token count in float64, so the total variance
    Σ‖x̃‖² − ‖Σx̃‖²/N is exact enough over millions of tokens.

    Args:
        d_in: token width C.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, d_in: int, **kwargs):
        super().__init__(**kwargs)
        self.d_in = d_in
        self.add_state("sum_x", _zero(d_in), dist_reduce_fx="sum")
        self.add_state("sum_sq", _zero(), dist_reduce_fx="sum")
        self.add_state("sum_err", _zero(), dist_reduce_fx="sum")
        self.add_state("count", _zero(), dist_reduce_fx="sum")

    def update(self, x_tilde: Tensor, x_hat: Tensor) -> None:
        """Add tokens x_tilde (N, C) and their reconstructions x_hat (N, C)."""
        x = x_tilde.detach().reshape(-1, self.d_in).to(_F64)
        err = x - x_hat.detach().reshape(-1, self.d_in).to(_F64)
        self.sum_x += x.sum(0)
        self.sum_sq += x.pow(2).sum()
        self.sum_err += err.pow(2).sum()
        self.count += len(x)

    def compute(self) -> Tensor:
        """Scalar float64 FVU.

        Raises:
            EmptySplitError: no token was seen.
        """
        _nonempty(self.count)
        return self.sum_err / (self.sum_sq - self.sum_x.pow(2).sum() / self.count)


class LatentSparsity(Metric):
    """L0 (mean count of non-zero latents per token) and dead fraction (latents that fired on no token seen).

    Args:
        num_latents: dictionary size M.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, num_latents: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("fired", _zero(num_latents), dist_reduce_fx="sum")
        self.add_state("active", _zero(), dist_reduce_fx="sum")
        self.add_state("tokens", _zero(), dist_reduce_fx="sum")

    def update(self, latent_acts: Tensor, latent_indices: Tensor) -> None:
        """Add the Top-K codes of N tokens: latent_acts (N, K) and latent_indices (N, K)."""
        on = latent_acts > 0
        self.fired.index_add_(0, latent_indices[on], torch.ones(int(on.sum()), dtype=_F64, device=on.device))
        self.active += on.sum()
        self.tokens += len(latent_acts)

    def compute(self) -> dict[str, Tensor]:
        _nonempty(self.tokens)
        return {"l0": self.active / self.tokens, "dead_frac": (self.fired == 0).to(_F64).mean()}


class SplicedAccuracy(Metric):
    """Top-1 accuracy with the map as is (``orig``), spliced (the SAE reconstruction) and mean-ablated (every
    token → the per-channel mean), ``acc_recovered = (spliced − mean_ablated) / (orig − mean_ablated)`` (nan
    when orig = mean_ablated) and KL(orig ‖ spliced) per image."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("images", "correct_orig", "correct_spliced", "correct_ablated", "kl"):
            self.add_state(name, _zero(), dist_reduce_fx="sum")

    def update(self, logits: Tensor, spliced: Tensor, ablated: Tensor, labels: Tensor) -> None:
        """Add B images: logits (B, classes) of the original, spliced and mean-ablated maps; labels (B,)."""
        self.images += len(labels)
        self.correct_orig += (logits.argmax(-1) == labels).sum()
        self.correct_spliced += (spliced.argmax(-1) == labels).sum()
        self.correct_ablated += (ablated.argmax(-1) == labels).sum()
        self.kl += F.kl_div(spliced.log_softmax(-1), logits.log_softmax(-1), log_target=True, reduction="sum")

    def compute(self) -> dict[str, Tensor]:
        _nonempty(self.images)
        orig, spliced = self.correct_orig / self.images, self.correct_spliced / self.images
        ablated = self.correct_ablated / self.images
        gap = orig - ablated
        recovered = (spliced - ablated) / gap if abs(float(gap)) > 1e-12 else torch.full_like(gap, float("nan"))
        return {"acc_orig": orig, "acc_spliced": spliced, "acc_mean_ablated": ablated, "acc_recovered": recovered,
                "kl": self.kl / self.images}  # fmt: skip


class SpliceMetrics(nn.Module):
    """Every validation figure of an SAE spliced between ``features`` and ``head``, over a whole split.

    Keep one instance per split (its states are summed over ranks at :meth:`compute`). The figures, in
    order: ``fvu``, ``l0``, ``dead_frac``, ``acc_orig``, ``acc_spliced``, ``acc_mean_ablated``,
    ``acc_recovered``, ``kl``.

    Args:
        d_in: token width C.
        num_latents: dictionary size M.
    """

    def __init__(self, d_in: int, num_latents: int):
        super().__init__()
        self.fvu = FractionOfVarianceUnexplained(d_in)
        self.sparsity = LatentSparsity(num_latents)
        self.accuracy = SplicedAccuracy()

    @torch.no_grad()
    def update(self, sae, head, fmap: Tensor, labels: Tensor, fmap_mean: Tensor) -> None:
        """Add a batch of images.

        Args:
            sae: a :class:`~sae_lab.models.sae.TopKSAE` (or anything with standardize/unstandardize/forward).
            head: the classifier's ``head``: (B, C, H, W) map → (B, classes) logits.
            fmap: (B, C, H, W) maps at the explained layer.
            labels: (B,) class indices.
            fmap_mean: (C,) per-channel mean of the training tokens (the mean-ablation reference).
        """
        x_tilde = sae.standardize(fmap_to_tokens(fmap))
        out = sae(x_tilde)
        self.fvu.update(x_tilde, out.x_hat)
        self.sparsity.update(out.latent_acts, out.latent_indices)
        spliced = head(tokens_to_fmap(sae.unstandardize(out.x_hat), fmap.shape))
        ablated = head(fmap_mean.view(1, -1, 1, 1).expand_as(fmap))
        self.accuracy.update(head(fmap), spliced, ablated, labels)

    def compute(self) -> dict[str, float]:
        """The split's figures, reduced over all ranks (every rank must call this).

        Raises:
            EmptySplitError: no image was measured on any rank.
        """
        figures = {"fvu": self.fvu.compute(), **self.sparsity.compute(), **self.accuracy.compute()}
        return {k: float(v) for k, v in figures.items()}

    def reset(self) -> None:
        for metric in (self.fvu, self.sparsity, self.accuracy):
            metric.reset()
