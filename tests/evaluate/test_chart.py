"""The evaluation chart (inline SVG, bars with error bars) and the report section's template."""

import xml.etree.ElementTree as ET

import pytest

from sae_lab.evaluate import evaluation_chart_svg

SVG = "{http://www.w3.org/2000/svg}"


def stat(mean, se, n):
    return {"mean": mean, "se": se, "n": n}


EVALUATION = {
    "latents": [1, 2, 3], "seed": 0, "simulator": "offline", "gt_latents": 2, "gt_auc": 0.9,
    "generator": {"spec": "renderer", "template": "a quick pencil sketch of {concept}", "seeds": [5, 8], "n_images": 3},
    "methods": {
        "le-vlm": {"cosy_auc": stat(0.8, 0.05, 3), "cosy_mad": stat(2.0, 0.5, 3), "simulation_r": stat(0.6, 0.1, 3),
                   "named_strict": stat(0.5, 0.5, 2), "named_lenient": stat(1.0, 0.0, 2), "missing": 0, "undrawable": 1,
                   "gt": {"cosy_auc": stat(0.91, 0.01, 2), "cosy_mad": stat(3.0, 1.0, 2), "simulation_r": stat(0.7, 0.1, 2)},
                   "cost": {"llm_calls": 0, "images_generated": 0, "captions": 0, "vlm_images": 3, "forward_images": 0,
                            "seconds": 0.2}},
        "random": {"cosy_auc": stat(0.5, 0.1, 3), "cosy_mad": stat(None, None, 0), "simulation_r": stat(-0.1, 0.1, 3),
                   "named_strict": stat(0.0, 0.0, 2), "named_lenient": stat(None, None, 0), "missing": 0,
                   "undrawable": 0, "cost": {}},
    },
    "rows": [], "work": {"heldout_images": 7},
}  # fmt: skip


def test_chart_is_svg_with_a_bar_and_whisker_per_method_and_metric():
    root = ET.fromstring(evaluation_chart_svg(EVALUATION))
    assert root.tag == f"{SVG}svg"
    bars = root.findall(f"{SVG}rect")
    assert len(bars) == 2 * 4 - 1  # random has no lenient value: no bar, "n/a"
    titles = [b.find(f"{SVG}title").text for b in bars]
    assert "le-vlm: 0.800 ± 0.050 (n = 3)" in titles
    whiskers = root.findall(f"{SVG}path")
    assert len(whiskers) == 5  # every bar with se > 0
    assert "n/a" in "".join(t.text or "" for t in root.iter(f"{SVG}text"))


def test_report_section_links_methods_and_shows_the_chart():
    pages = pytest.importorskip("sae_lab.report.pages")
    from markupsafe import Markup

    html = pages.render("evaluation.html.j2", evaluation=EVALUATION, chart_svg=Markup(evaluation_chart_svg(EVALUATION)))
    assert '<a href="#method-le-vlm">' in html and '<a href="#method-random">' not in html  # baselines: no link
    assert "<svg" in html and "1 undrawable" in html and "0.800" in html
    assert 'id="evaluation-gt"' in html and "0.910" in html  # the ground-truth latents' table
