"""LE's greedy search as its authors run it, for the tests and ``benchmarks/le_speed.py`` only.

:func:`reference_greedy` follows ``linear_explanation.greedy_search`` / ``train_linear_model`` of the Linear
Explanations repository: one latent at a time, a fresh ``nn.Linear`` per candidate trained by 100 full-batch epochs
of Adam (lr 0.3) on the mean squared error, Pearson r of its predictions on the select split. It implements what
that code means to do where the code slips: it returns the chosen concepts (the original returns the last set
tried, which differs from the chosen one when the search stops at ``max_length``).

:func:`reference_greedy_batched` trains the same models with the same Adam arithmetic (Adam is element-wise, so
one Adam over a stacked parameter equals one Adam per model) for all of a round's candidates of all latents at
once; the tests check it against :func:`reference_greedy` and use it on hundreds of latents.

Initial weights are drawn as ``nn.Linear`` draws them, U(±1/√fan_in) for weight and bias, from a generator seeded
per (latent, round), so the two functions start every candidate from the same point.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sae_lab.explainers.le.fit import GreedyFit, candidates, pearson

EPOCHS = 100
LR = 0.3


def _init(latent: int, round_: int, width: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """(W, k) weights and (W,) biases of a round's candidate models, as ``nn.Linear(k, 1)`` initialises them."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + latent * 1009 + round_)
    bound = 1 / math.sqrt(k)
    w = (torch.rand(width, k, generator=gen) * 2 - 1) * bound
    b = (torch.rand(width, generator=gen) * 2 - 1) * bound
    return w, b


def train_linear(x_fit: Tensor, y_fit: Tensor, x_sel: Tensor, y_sel: Tensor, w0: Tensor, b0: Tensor
                 ) -> tuple[float, Tensor, float]:  # fmt: skip
    """LE's ``train_linear_model``: ``nn.Linear`` from (w0, b0), 100 Adam epochs, r on the select split.

    Args:
        x_fit: (Nf, k) presences; ``y_fit`` (Nf,) activations; ``x_sel``/``y_sel`` the select split.

    Returns:
        r (NaN when the prediction is constant), weights (k,), bias.
    """
    linear = torch.nn.Linear(x_fit.shape[1], 1)
    with torch.no_grad():
        linear.weight.copy_(w0.view(1, -1))
        linear.bias.copy_(b0.view(1))
    opt = torch.optim.Adam(linear.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = torch.nn.MSELoss()
    target = y_fit.view(-1, 1)
    for _ in range(EPOCHS):
        loss = loss_fn(linear(x_fit), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        r = pearson(linear(x_sel).double(), y_sel.view(-1, 1).double())[0]
    return float(r), linear.weight.detach()[0].clone(), float(linear.bias.detach()[0])


def reference_greedy(p_fit: Tensor, y_fit: Tensor, p_sel: Tensor, y_sel: Tensor, ranking: Tensor,
                     latents: list[int] | None = None, max_concepts: int = 10, min_gain: float = 0.02,
                     width: int = 10, seed: int = 0) -> GreedyFit:  # fmt: skip
    """LE's greedy search, one latent and one candidate model at a time (arguments as
    :func:`~sae_lab.explainers.le.fit.greedy_search`; ``latents`` picks columns of ``y`` and rows of
    ``ranking``, default all). Returns float32-trained weights in a :class:`GreedyFit` over those latents."""
    latents = list(range(ranking.shape[0])) if latents is None else latents
    p_fit, p_sel = p_fit.float(), p_sel.float()
    k_max = min(max_concepts, ranking.shape[1])
    out = GreedyFit(torch.full((len(latents), k_max), -1, dtype=torch.long),
                    torch.zeros(len(latents), k_max, dtype=torch.float64),
                    torch.full((len(latents),), float("nan"), dtype=torch.float64),
                    torch.full((len(latents),), float("nan"), dtype=torch.float64))  # fmt: skip
    for row, latent in enumerate(latents):
        order = ranking[latent].tolist()
        chosen: list[int] = []  # ranking positions, as LE keeps them
        rejected: set[int] = set()
        best, best_w, best_b = 0.0, None, None
        while len(chosen) < k_max:
            cands = [i for i in range(len(order)) if i not in chosen and i not in rejected][:width]
            w0, b0 = _init(latent, len(chosen), width, len(chosen) + 1, seed)
            round_best, round_pick = best, None
            for slot, pos in enumerate(cands):
                cols = [order[i] for i in [*chosen, pos]]
                r, w, b = train_linear(p_fit[:, cols], y_fit[:, latent].float(), p_sel[:, cols],
                                       y_sel[:, latent].float(), w0[slot], b0[slot])  # fmt: skip
                if chosen and r - best < min_gain:  # never again (a NaN r is neither rejected nor kept)
                    rejected.add(pos)
                elif r > round_best:
                    round_best, round_pick, best_w, best_b = r, pos, w, b
            if round_pick is None:
                break
            chosen.append(round_pick)
            best = round_best
        if chosen:
            out.concepts[row, : len(chosen)] = torch.tensor([order[i] for i in chosen])
            out.weights[row, : len(chosen)] = best_w.double()
            out.bias[row], out.select_r[row] = best_b, best
    return out


def _adam_fit(x_fit: Tensor, y_fit: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """100 Adam epochs of many linear models at once.

    Args:
        x_fit: (B, W, Nf, k) inputs; y_fit (B, 1, Nf) targets; w (B, W, k), b (B, W) initial parameters.
    """
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    opt = torch.optim.Adam([w, b], lr=LR, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(EPOCHS):
        pred = torch.einsum("bwnk,bwk->bwn", x_fit, w) + b.unsqueeze(-1)
        loss = (pred - y_fit).square().mean(-1).sum()  # each model's own MSE: gradients stay separate
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def reference_greedy_batched(p_fit: Tensor, y_fit: Tensor, p_sel: Tensor, y_sel: Tensor, ranking: Tensor,
                             max_concepts: int = 10, min_gain: float = 0.02, width: int = 10,
                             seed: int = 0) -> GreedyFit:  # fmt: skip
    """:func:`reference_greedy` for all latents at once (the same models, initialisations and Adam steps)."""
    p_fit, p_sel, y_fit, y_sel = p_fit.float(), p_sel.float(), y_fit.float(), y_sel.float()
    m, c = ranking.shape
    k_max = min(max_concepts, c)
    out = GreedyFit(torch.full((m, k_max), -1, dtype=torch.long), torch.zeros(m, k_max, dtype=torch.float64),
                    torch.full((m,), float("nan"), dtype=torch.float64),
                    torch.full((m,), float("nan"), dtype=torch.float64))  # fmt: skip
    best = torch.zeros(m, dtype=torch.float64)
    available = torch.ones(m, c, dtype=torch.bool)
    searching = torch.arange(m)
    for t in range(k_max):
        if len(searching) == 0:
            break
        positions, valid = candidates(ranking[searching], available[searching], width)
        cand = ranking[searching].gather(1, positions)
        sets = torch.cat([out.concepts[searching, :t].unsqueeze(1).expand(-1, cand.shape[1], -1),
                          cand.unsqueeze(2)], 2)  # fmt: skip
        inits = [_init(int(i), t, width, t + 1, seed) for i in searching]
        w0 = torch.stack([w[: cand.shape[1]] for w, _ in inits])
        b0 = torch.stack([b[: cand.shape[1]] for _, b in inits])
        x = p_fit[:, sets].permute(1, 2, 0, 3)  # (B, W, Nf, k)
        w, b = _adam_fit(x, y_fit[:, searching].T.unsqueeze(1), w0, b0)
        pred = torch.einsum("nbwk,bwk->nbw", p_sel[:, sets], w) + b
        r = pearson(
            pred.reshape(len(p_sel), -1).double(), y_sel[:, searching].double().repeat_interleave(cand.shape[1], 1)
        ).view(len(searching), -1)
        gain = r - best[searching].unsqueeze(1)
        rejected = valid & (gain < min_gain) if t > 0 else torch.zeros_like(valid)
        ok = valid & ~rejected & (gain > 0)
        pick = torch.where(ok, r, torch.full_like(r, -torch.inf)).argmax(1)
        found = ok.any(1)
        rows = searching.unsqueeze(1).expand_as(positions)
        available[rows[rejected], positions[rejected]] = False
        won, j = searching[found], pick[found]
        available[won, positions[found, j]] = False
        out.concepts[won, t] = cand[found, j]
        out.weights[won, : t + 1] = w[found, j].double()
        out.bias[won] = b[found, j].double()
        best[won] = r[found, j]
        searching = won
    out.select_r = torch.where(out.concepts[:, 0] >= 0, best, out.select_r)
    return out


__all__ = ["EPOCHS", "LR", "reference_greedy", "reference_greedy_batched", "train_linear"]
