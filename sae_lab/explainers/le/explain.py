"""LE for many latents on a concept matrix: guards, ranking, greedy search, held-out r, typed results.

No files and no models here: :mod:`.runner` feeds it the probe set's activations and a concept matrix.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sae_lab.explainers.le.fit import STD_EPS, elastic_net, greedy_search, pearson, predict, rank_concepts
from sae_lab.run.records import Term, linear_text

NEVER_FIRES = "latent never fires on the probe images"
CONSTANT = "latent's activation is constant on the fit or select images (too sparse for a linear fit)"
NO_CONCEPTS = "no concept passed the filter (mean of top-5 presences >= min_top5, std >= min_std)"
NO_POSITIVE = "no concept predicts the latent on the select images (r <= 0 or undefined for every candidate)"


@dataclass
class LinearExplanation:
    """One latent's linear explanation, or why there is none."""

    terms: list[Term] = field(default_factory=list)
    """Concepts and weights on raw presences, largest weight first."""
    bias: float | None = None
    select_r: float | None = None
    """Pearson r of the prediction on the select images (what the greedy search maximised)."""
    heldout_r: float | None = None
    """Pearson r on the held-out images (None when the latent is constant there)."""
    candidates: list[dict] = field(default_factory=list)
    """The elastic net's ranking: ``{concept, score}`` (standardised weight), best first."""
    reason: str | None = None

    @property
    def text(self) -> str | None:
        """``"4.24*circle + 2.74*spokes + 0.33"``, None without terms."""
        return linear_text(self.terms, self.bias) if self.terms else None


@dataclass
class LeOptions:
    """The numbers the fit takes (a subset of :class:`~sae_lab.explainers.le.settings.LeSettings`)."""

    lam: float = 0.05
    alpha: float = 0.99
    max_concepts: int = 10
    min_gain: float = 0.02
    width: int = 10


SMALL_WORK = 5e7
"""Elastic-net steps (C²·M multiply-adds) below which the fit runs on one thread: its tensors are then so small
that intra-op threads only add synchronisation, which stalls badly when other jobs share the cores."""


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _num(x: Tensor | float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def explain_latents(presence: Tensor, names: list[str], targets: Tensor, parts: dict[str, Tensor],
                    options: LeOptions | None = None) -> list[LinearExplanation]:  # fmt: skip
    """Linear explanations of the columns of ``targets``.

    Args:
        presence: (N, C) concept presences of the probe images (raw, in [0, 1]).
        names: (C,) the concepts.
        targets: (N, M) pooled latent activations on the same images.
        parts: ``fit`` / ``select`` / ``heldout`` index tensors (:meth:`ProbeSet.partition`).

    Returns:
        One :class:`LinearExplanation` per column of ``targets``.
    """
    o = options or LeOptions()
    targets = targets.double()
    fit_i, sel_i, held_i = parts["fit"], parts["select"], parts["heldout"]
    out = [LinearExplanation() for _ in range(targets.shape[1])]
    never = (targets.abs().amax(0) == 0).tolist()
    flat = ((targets[fit_i].std(0) <= STD_EPS) | (targets[sel_i].std(0) <= STD_EPS)).tolist()
    for j, rec in enumerate(out):
        rec.reason = NEVER_FIRES if never[j] else CONSTANT if flat[j] else None
    cols = torch.tensor([j for j, rec in enumerate(out) if rec.reason is None], dtype=torch.long)
    if len(cols) == 0:
        return out
    if presence.shape[1] == 0:
        for j in cols.tolist():
            out[j].reason = NO_CONCEPTS
        return out
    y = targets[:, cols]
    small = presence.shape[1] ** 2 * len(cols) < SMALL_WORK
    with _threads(1 if small else torch.get_num_threads()):
        weights = elastic_net(presence[fit_i], y[fit_i], o.lam, o.alpha)  # (M', C)
        ranking = rank_concepts(weights)
        fit = greedy_search(presence[fit_i], y[fit_i], presence[sel_i], y[sel_i], ranking, o.max_concepts,
                            o.min_gain, o.width)  # fmt: skip
        held = pearson(predict(presence[held_i], fit), y[held_i])
    top = ranking[:, : o.width]
    top_w, top, lengths = weights.gather(1, top).tolist(), top.tolist(), fit.length.tolist()
    chosen, chosen_w = fit.concepts.tolist(), fit.weights.tolist()
    for row, j in enumerate(cols.tolist()):
        rec = out[j]
        rec.candidates = [{"concept": names[c], "score": round(w, 6)} for c, w in zip(top[row], top_w[row])]
        k = lengths[row]
        if k == 0:
            rec.reason = NO_POSITIVE
            continue
        terms = [Term(names[c], round(w, 6)) for c, w in zip(chosen[row][:k], chosen_w[row][:k])]
        rec.terms = sorted(terms, key=lambda t: -t.weight)
        rec.bias = round(float(fit.bias[row]), 6)
        rec.select_r, rec.heldout_r = _num(fit.select_r[row]), _num(held[row])
    return out


__all__ = ["CONSTANT", "NEVER_FIRES", "NO_CONCEPTS", "NO_POSITIVE", "LeOptions", "LinearExplanation",
           "explain_latents"]  # fmt: skip
