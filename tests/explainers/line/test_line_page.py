"""LINE's page of one latent: rendered from the package's template with the report's stylesheet and formatter."""

from sae_lab.explainers.line import outputs, page
from sae_lab.explainers.line.config import LineConfig
from sae_lab.report.pages import environment

CONCEPT = "spiral <b>shell</b>"  # must stay text


def latent_page() -> str:
    result = {"latent": 3, "best_concept": CONCEPT, "best_score": 0.93, "auc": 0.93, "mad": float("nan"), "mean": 1.2,
              "iterations": 2, "proposals": 2, "fallbacks": 1,
              "ground_truth": {"primitive": "spiral", "image_auc": 0.97, "source": "report"}}  # fmt: skip
    scored = {"concept": CONCEPT, "score": 0.93, "auc": 0.93, "mad": 2.0, "mean": 1.2, "iteration": 1}
    ls = {
        "proposals": [
            {**scored, "reasoning": "curls", "fallback": True, "summary": False},
            {
                "iteration": 2,
                "concept": "wave",
                "score": None,
                "auc": None,
                "mad": None,
                "mean": None,
                "reasoning": None,
                "fallback": False,
                "summary": True,
            },
        ],  # fmt: skip
        "history": [
            {"iteration": 0, "best_score": 0.6},
            {"iteration": 1, "best_score": 0.93},
            {"iteration": 2, "best_score": 0.93},
        ],  # fmt: skip
        "pool": [{"concept": "cat", "score": 0.6, "auc": 0.6, "mad": 0.1, "mean": 0.2, "iteration": 0}, scored],
        "scored": {"cat": {"iteration": 0, "score": 0.6}, CONCEPT: {"iteration": 1, "score": 0.93}},
        "top_classes": ["cat"],
        "random_classes": ["dog"],
    }
    return page.render_latent_page(result, ls, {CONCEPT: ["../cache/a.png", "../cache/b.png"]}, LineConfig())


def test_the_loop_writes_this_page():
    assert outputs.render_latent_page is page.render_latent_page


def test_the_page_is_one_file_with_the_shared_stylesheet_and_formatter():
    html = latent_page()
    css, _, _ = environment().loader.get_source(environment(), "base.css")
    assert css.strip() in html and "<link" not in html and "<script" not in html
    assert "<b>shell</b>" not in html and "spiral &lt;b&gt;shell&lt;/b&gt;" in html
    assert "MAD –," in html and "mean activation 1.20" in html  # NaN and 2 decimals through `num`
    assert html.count("<circle") == 2  # the initial concept and the one scored proposal; the unscored one has no dot
    assert html.count('src="../cache/a.png"') == 3  # best concept, its proposal row, its pool row
    # The pool is shown best first.
    assert html.index("<td>cat</td>") > html.index("<td>spiral &lt;b&gt;shell&lt;/b&gt;</td>")
