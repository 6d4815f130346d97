"""The offline proposer: a deterministic walk over the vocabulary, led by the latent's statistics and the scores."""

from sae_lab.explainers.line.offline_proposer import OfflineProposer
from tests.explainers.line.proposal_helpers import CLASS_NAMES, context, scored


def test_offline_proposer_walks_from_the_primitive_the_statistics_suggest():
    proposer = OfflineProposer(CLASS_NAMES)
    ctx = context(scored_items=[scored("sun", 0.9), scored("target", 0.85), scored("house", 0.3)])
    first = proposer.propose_one(ctx)
    assert first.concept == "circle" and "circle" in first.reasoning and first.attempts == 0
    assert proposer.propose_one(ctx).concept == "circle"  # deterministic
    # circle tried and scoring poorly, spokes-like concepts scoring well: the walk moves on to spokes
    ctx = context(scored_items=[scored("sun", 0.9), scored("wheel", 0.95), scored("firework", 0.9),
                                scored("target", 0.4), scored("circle", 0.3, 1)], tried=["circle"])  # fmt: skip
    assert proposer.propose_one(ctx).concept == "spokes"


def test_offline_summary_names_what_the_top_three_share():
    proposer = OfflineProposer(CLASS_NAMES)
    ctx = context(scored_items=[scored("sun", 0.9), scored("wheel", 0.92), scored("rays", 0.91)], tried=["rays"])
    assert proposer.propose_one(ctx, summary=True).concept == "spokes"
