"""LE's two steps for every latent at once (Oikarinen & Weng, ICML 2024, "Linear Explanations for Individual
Neurons"): an elastic net ranks the concepts, then a greedy search adds them one at a time.

Everything is batched over latents (M) and, in the greedy step, over each round's candidates (W): one proximal
gradient run for all elastic nets (a matrix product per step), one batched solve of the normal equations per round. LE fits each candidate by 100
Adam epochs on ``nn.Linear``; least squares in closed form reaches the optimum those epochs approach
(:mod:`.reference` re-implements LE's way for the tests and the benchmark).

Shapes: N images, C concepts, M latents, K concepts in an explanation, W candidates per round.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

STD_EPS = 1e-8
"""A target or concept with a standard deviation below this is constant."""


def pearson(pred: Tensor, target: Tensor) -> Tensor:
    """Column-wise Pearson r of (N, M) predictions and targets; NaN where either column is constant."""
    p = pred - pred.mean(0)
    t = target - target.mean(0)
    den = (p.square().sum(0) * t.square().sum(0)).sqrt()
    return torch.where(den > 0, (p * t).sum(0) / den.clamp_min(1e-300), torch.full_like(den, float("nan")))


def _standardize(x: Tensor) -> Tensor:
    """Columns to mean 0, std 1 (unbiased, as LE's ``torch.std``); constant columns become 0."""
    std = x.std(0)
    return torch.where(std > STD_EPS, (x - x.mean(0)) / std.clamp_min(STD_EPS), torch.zeros_like(x))


def elastic_net(x: Tensor, y: Tensor, lam: float = 0.05, alpha: float = 0.99, max_iter: int = 5000,
                tol: float = 1e-8) -> Tensor:  # fmt: skip
    """Elastic nets of every latent on standardised concepts, by accelerated proximal gradient (FISTA, Beck &
    Teboulle 2009) with adaptive restart (O'Donoghue & Candès 2015), all latents in one matrix product per step.

    Per latent, on standardised ``x`` and ``y`` (so the bias is 0), minimises the objective of LE's solver
    (glm-saga, gaussian family): ``1/(2N)·|y − x·w|² + λ·α·|w|₁ + λ·(1 − α)/2·|w|²``. Concepts such as a class
    and its superclass are collinear, so the problem is barely strongly convex; acceleration with restarts
    converges in hundreds of steps where coordinate descent takes thousands of sweeps. A latent stops once no
    weight moves more than ``tol`` in a step, so its weights do not depend on the other latents.

    Args:
        x: (N, C) concept presences of the fit images.
        y: (N, M) latent activations of the same images.
        lam: λ, the overall penalty.
        alpha: α, the share of L1 in it.

    Returns:
        (M, C) float64 weights in standardised units.
    """
    xs, ys = _standardize(x.double()), _standardize(y.double())
    n = xs.shape[0]
    gram = xs.T @ xs / n  # (C, C)
    cross = xs.T @ ys / n  # (C, M)
    c, m = cross.shape
    l1, l2 = lam * alpha, lam * (1 - alpha)
    step = 1.0 / (float(torch.linalg.eigvalsh(gram)[-1]) + l2 + 1e-12)  # 1 / Lipschitz constant of the smooth part
    w = torch.zeros(c, m, dtype=torch.float64)
    z = w.clone()
    t = torch.ones(m, dtype=torch.float64)
    active = torch.ones(m, dtype=torch.bool)
    for _ in range(max_iter):
        u = z - step * (gram @ z - cross + l2 * z)
        new = torch.sign(u) * (u.abs() - step * l1).clamp_min(0)
        moved = new - w
        restart = ((z - new) * moved).sum(0) > 0  # momentum points uphill: drop it
        t_next = torch.where(restart, torch.ones_like(t), (1 + torch.sqrt(1 + 4 * t * t)) / 2)
        momentum = torch.where(restart, torch.zeros_like(t), (t - 1) / t_next)
        going = active & (moved.abs().amax(0) > tol)
        w = torch.where(active, new, w)
        z = torch.where(going, new + momentum * moved, w)
        t, active = t_next, going
        if not bool(active.any()):
            break
    return w.T.contiguous()


def rank_concepts(weights: Tensor) -> Tensor:
    """(M, C) concept indices by signed weight, largest first (ties in concept order)."""
    return torch.sort(weights, dim=1, descending=True, stable=True).indices


@dataclass
class GreedyFit:
    """The greedy search's outcome for every latent."""

    concepts: Tensor
    """(M, K) long concept indices in the order chosen, -1 after the last."""
    weights: Tensor
    """(M, K) float64 weights on raw presences (0 after the last)."""
    bias: Tensor
    """(M,) float64 bias (NaN without an explanation)."""
    select_r: Tensor
    """(M,) float64 Pearson r on the select split (NaN without an explanation)."""

    @property
    def length(self) -> Tensor:
        """(M,) number of concepts of each explanation."""
        return (self.concepts >= 0).sum(1)


class _Moments:
    """Sufficient statistics of the fit split (for least squares) and the select split (for r)."""

    def __init__(self, p_fit: Tensor, y_fit: Tensor, p_sel: Tensor, y_sel: Tensor) -> None:
        a = torch.cat([p_fit.double(), torch.ones(len(p_fit), 1, dtype=torch.float64)], 1)  # bias = column C
        self.gram = a.T @ a  # (C+1, C+1)
        self.cross = a.T @ y_fit.double()  # (C+1, M)
        pc = p_sel.double() - p_sel.double().mean(0)
        yc = y_sel.double() - y_sel.double().mean(0)
        self.cov = pc.T @ pc  # (C, C)
        self.cov_y = pc.T @ yc  # (C, M)
        self.var_y = yc.square().sum(0)  # (M,)
        self.bias_index = p_fit.shape[1]

    def fit(self, latents: Tensor, sets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Least squares with a bias for each latent × concept set, and its r on the select split.

        Args:
            latents: (B,) latent of each row.
            sets: (B, W, k) concept indices.

        Returns:
            weights (B, W, k), bias (B, W), r (B, W) (NaN where the prediction is constant).
        """
        b, wd, k = sets.shape
        idx = torch.cat([sets, torch.full((b, wd, 1), self.bias_index, dtype=torch.long)], 2)
        g = self.gram[idx.unsqueeze(-1), idx.unsqueeze(-2)]  # (B, W, k+1, k+1)
        h = self.cross[idx, latents.view(b, 1, 1)]  # (B, W, k+1)
        # A candidate collinear with the chosen concepts (a duplicate, a sum of them) makes g singular; a ridge far
        # below the data's scale gives the minimum-norm-like solution with the same predictions.
        ridge = 1e-10 * g.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)
        g = g + ridge[..., None, None] * torch.eye(k + 1, dtype=g.dtype)
        coef = torch.linalg.solve(g, h.unsqueeze(-1)).squeeze(-1)
        w, bias = coef[..., :k], coef[..., k]
        cov = self.cov[sets.unsqueeze(-1), sets.unsqueeze(-2)]  # (B, W, k, k)
        var_pred = torch.einsum("bwi,bwij,bwj->bw", w, cov, w)
        cov_y = (w * self.cov_y[sets, latents.view(b, 1, 1)]).sum(-1)
        den = (var_pred * self.var_y[latents].unsqueeze(1)).clamp_min(0).sqrt()
        r = torch.where(den > 1e-12 * self.var_y[latents].unsqueeze(1).clamp_min(1e-300).sqrt(),
                        cov_y / den.clamp_min(1e-300), torch.full_like(den, float("nan")))  # fmt: skip
        return w, bias, r


def candidates(ranking: Tensor, available: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """The first ``width`` available positions of each ranking.

    Args:
        ranking: (B, C) concept indices.
        available: (B, C) bool over ranking positions (not chosen, not rejected).

    Returns:
        positions (B, W) and valid (B, W) (False where fewer than W are left).
    """
    c = ranking.shape[1]
    pos = torch.arange(c).expand_as(available)
    key = torch.where(available, pos, pos + c)
    positions = torch.sort(key, dim=1).values[:, : min(width, c)] % c
    return positions, available.gather(1, positions)


def greedy_search(p_fit: Tensor, y_fit: Tensor, p_sel: Tensor, y_sel: Tensor, ranking: Tensor,
                  max_concepts: int = 10, min_gain: float = 0.02, width: int = 10) -> GreedyFit:  # fmt: skip
    """LE's greedy search (``linear_explanation.greedy_search``) for every latent at once.

    Each round, every latent still searching tries the first ``width`` concepts of its ranking that are neither
    chosen nor rejected, each added to its chosen ones: least squares with a bias on the fit split, Pearson r on
    the select split. Once a concept has been chosen, a candidate gaining less than ``min_gain`` over the current
    r is rejected for good. The best candidate is kept if it beats the current r (0 at the start, so a first
    concept must correlate positively); a latent stops when none does or it has ``max_concepts``.

    Args:
        p_fit: (Nf, C) raw presences of the fit images; ``p_sel`` (Ns, C) of the select images.
        y_fit: (Nf, M) activations on the fit images; ``y_sel`` (Ns, M) on the select images.
        ranking: (M, C) concept indices, best first (:func:`rank_concepts`).
    """
    m, c = ranking.shape
    mom = _Moments(p_fit, y_fit, p_sel, y_sel)
    k_max = min(max_concepts, c)
    chosen = torch.full((m, k_max), -1, dtype=torch.long)
    weights = torch.zeros(m, k_max, dtype=torch.float64)
    bias = torch.full((m,), float("nan"), dtype=torch.float64)
    best = torch.zeros(m, dtype=torch.float64)
    # A concept constant on the fit images has no least-squares weight of its own (it is the bias), yet it may
    # vary on the select images: never a candidate. (LE tries it; the filter on all images rarely leaves one.)
    available = (p_fit.std(0) > STD_EPS)[ranking]
    searching = torch.arange(m)
    for t in range(k_max):
        if len(searching) == 0:
            break
        positions, valid = candidates(ranking[searching], available[searching], width)
        cand = ranking[searching].gather(1, positions)  # (B, W)
        sets = torch.cat([chosen[searching, :t].unsqueeze(1).expand(-1, cand.shape[1], -1), cand.unsqueeze(2)], 2)
        w, b, r = mom.fit(searching, sets)
        gain = r - best[searching].unsqueeze(1)
        rejected = valid & (gain < min_gain) if t > 0 else torch.zeros_like(valid)  # NaN r: neither
        ok = valid & ~rejected & (gain > 0)
        pick = torch.where(ok, r, torch.full_like(r, -torch.inf)).argmax(1)  # first best, as LE's strict ">"
        found = ok.any(1)
        rows = searching.unsqueeze(1).expand_as(positions)
        available[rows[rejected], positions[rejected]] = False
        won, j = searching[found], pick[found]
        available[won, positions[found, j]] = False
        chosen[won, t] = cand[found, j]
        weights[won, : t + 1] = w[found, j]
        bias[won] = b[found, j]
        best[won] = r[found, j]
        searching = won
    select_r = torch.where(chosen[:, 0] >= 0, best, torch.full_like(best, float("nan")))
    return GreedyFit(chosen, weights, bias, select_r)


def predict(presence: Tensor, fit: GreedyFit) -> Tensor:
    """(N, M) activations the explanations predict from (N, C) presences: Σ wᵢ·P(cᵢ | x) + b."""
    idx = fit.concepts.clamp_min(0)  # padded terms carry weight 0
    terms = presence.double()[:, idx]  # (N, M, K)
    return (terms * fit.weights).sum(-1) + fit.bias.nan_to_num(0.0)


__all__ = ["GreedyFit", "candidates", "elastic_net", "greedy_search", "pearson", "predict", "rank_concepts"]
