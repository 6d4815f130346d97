"""index.html from the package's templates: every method's explanation on its latent's card (read through the run
layer), the threshold passed in, the evaluation section; and the page opened from disk in headless Chromium
(Debian's `chromium` package, driven by the `playwright` Python package; the test skips only when no Chromium
binary is installed)."""

import json
import os
import re
import shutil
from fnmatch import fnmatch
from pathlib import Path

import pytest

from sae_lab.report import run_report, write_index
from sae_lab.report.pages import num
from sae_lab.run import Cost, ExplanationRecord, ExplanationStore, NeuronRecord, RunFiles, Term, files, write_json
from sae_lab.run.store import read_neurons, write_neurons
from tests.helpers.common import REPO
from tests.report.test_report_pipeline import NUM_LATENTS, make_sae

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
LABEL = "zebra </script><b>stripes</b> & co"  # must neither end the data script nor become markup
TEMPLATES = REPO / "sae_lab" / "report" / "templates"
EVALUATION = {"latents": [0, 1], "seed": 0, "simulator": "offline", "methods": {
    "line": {"cosy_auc": {"mean": 0.91, "se": 0.02, "n": 2}, "simulation_r": {"mean": None, "se": None, "n": 0},
             "missing": 0, "cost": {"images_generated": 30}},
    "random": {"cosy_auc": {"mean": 0.52, "se": 0.05, "n": 2}, "missing": 0}}}  # fmt: skip


def chromium_binary() -> str | None:
    """$SAE_LAB_CHROMIUM, or the first Chromium/Chrome on PATH."""
    if os.environ.get("SAE_LAB_CHROMIUM"):
        return os.environ["SAE_LAB_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def page_data(page: str) -> dict:
    return json.loads(page.split('<script id="report-data" type="application/json">')[1].split("</script>")[0])


def explain(run, latent: int, crop: str | None = None) -> None:
    """Four methods' records for ``latent`` (and two more of the labeller), written through the run layer."""
    with ExplanationStore(run, "labels") as store:
        store.append([ExplanationRecord.single(latent, "labels", "round things", cost=Cost(llm_calls=1, seconds=1.5),
                                               detail={"evidence": "top classes"}),
                      ExplanationRecord.single(latent + 1, "labels", LABEL),
                      ExplanationRecord.single(latent + 2, "labels", None, reason="backend failed")])  # fmt: skip
    with ExplanationStore(run, "line") as store:
        store.append(ExplanationRecord.single(latent, "line", "spiral shell", cost=Cost(images_generated=30),
                                              candidates=[{"concept": "spiral shell", "score": 0.93},
                                                          {"concept": "wave", "score": 0.7}]))  # fmt: skip
    with ExplanationStore(run, "le-label") as store:
        terms = [Term("circle", 0.62), Term("wheel", 0.21), Term("square", -0.31)]
        store.append(ExplanationRecord(latent, "le-label", "0.62*circle + 0.21*wheel - 0.31*square + 0.05",
                                       terms=terms, bias=0.05, detail={"r_select": 0.71}))  # fmt: skip
    with ExplanationStore(run, "dnd") as store:
        store.append(ExplanationRecord.single(latent, "dnd", "bicycle wheel", detail={"crops": [crop] if crop else []}))


@pytest.fixture
def tiny_run(tmp_path) -> Path:
    """A report folder written by hand: three latents (one dead, one matched to a primitive at AUC 0.92)."""
    run = RunFiles(tmp_path / "run")
    gt = {"primitive": "circle", "image_auc": 0.92, "token_auc": 0.8, "all": {"circle": 0.92, "square": 0.4}}
    write_neurons(run.neurons, [
        NeuronRecord(0, frequency=0.02, top_classes=[{"class": "wheel", "S": 0.4, "pmi": 1.2}], ground_truth=gt),
        NeuronRecord(1, frequency=0.01), NeuronRecord(2, frequency=0.0, dead=True), NeuronRecord(3, frequency=0.003)])  # fmt: skip
    write_json(run.report, {"run": "tiny", "num_latents": 4, "live_latents": 3, "primitives_total": 1,
                            "primitives_recovered": 1, "latents_matched": 1, "dead_latents": [2],
                            "primitives": [{"primitive": "circle", "latent": 0, "image_auc": 0.92,
                                            "token_auc": 0.8, "recovered": True}]})  # fmt: skip
    return run.root


def test_num_is_the_one_formatter():
    assert [num(None), num(float("nan")), num(float("inf")), num(3), num(True)] == ["–", "–", "–", "3", "True"]
    assert (num(0.123456), num(0.5, 2), num(0.00004), num(0.0)) == ("0.123", "0.50", "4.0e-05", "0.000")


def test_the_card_shows_every_methods_explanation_and_the_list_the_preferred_one(tiny_run):
    explain(tiny_run, 0)
    latents = {x["latent"]: x for x in page_data((write_index(tiny_run)).read_text())["latents"]}
    card = latents[0]["card"]["explanations"]
    assert [e["method"] for e in card] == ["line", "dnd", "labels", "le-label"]  # the documented preference
    assert (latents[0]["label"], latents[0]["label_method"]) == ("spiral shell", "line")
    assert (latents[1]["label"], latents[1]["label_method"]) == (LABEL, "labels")
    assert latents[2]["label"] == "" and latents[2]["card"]["explanations"][0]["reason"] == "backend failed"
    line, _, labels, le = card
    assert line["candidates"] == [{"concept": "spiral shell", "score": "0.930"}, {"concept": "wave", "score": "0.700"}]
    assert line["cost"] == "30 images generated" and labels["cost"] == "1 LLM call · 1.5 s"
    assert line["terms"] == [] and labels["facts"] == [["evidence", "top classes"]]
    # The linear explanation's terms: signed, largest weight first, bar lengths halves of the track.
    assert [(t["concept"], t["weight"], t["neg"]) for t in le["terms"]] == [
        ("circle", "0.62", False), ("wheel", "0.21", False), ("square", "-0.31", True)]  # fmt: skip
    assert [t["width"] for t in le["terms"]] == pytest.approx([50.0, 50 * 0.21 / 0.62, 25.0], abs=0.1)
    assert le["bias"] == "0.05" and le["facts"] == [["r_select", "0.710"]]
    assert "method:le-label" in latents[0]["search"] and "zebra" in latents[1]["search"]


def test_the_threshold_is_passed_in_not_typed(tiny_run, monkeypatch):
    page = write_index(tiny_run).read_text()
    assert page_data(page)["latents"][0]["matched"] and "recovered at ≥ 0.90" in page
    monkeypatch.setattr(files, "GT_AUC", 0.95)
    page = write_index(tiny_run).read_text()
    assert not page_data(page)["latents"][0]["matched"] and "recovered at ≥ 0.95" in page
    for path in TEMPLATES.iterdir():  # neither a script nor a template spells a threshold
        assert not re.search(r"(?<![\d.])0\.9\d*(?![\d%])", path.read_text()), path.name


def test_the_evaluation_section_appears_with_evaluation_json(tiny_run):
    explain(tiny_run, 0)
    assert 'id="evaluation"' not in write_index(tiny_run).read_text()
    write_json(RunFiles(tiny_run).evaluation, EVALUATION)
    page = write_index(tiny_run).read_text()
    section = page.split('<section id="evaluation">')[1].split("</section>")[0]
    assert 'href="#method-line"' in section and "0.910" in section and "0.020" in section
    assert "random" in section and 'href="#method-random"' not in section  # a baseline has no explanations
    assert 'id="method-line"' in page  # the anchor it links to


def test_write_index_needs_a_report(tmp_path):
    with pytest.raises(FileNotFoundError, match="no neuron report"):
        write_index(tmp_path)


def test_the_templates_ship_with_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sae_lab"]
    names = [p.relative_to(REPO / "sae_lab").as_posix() for p in TEMPLATES.iterdir()]
    assert names and all(any(fnmatch(n, g) for g in data) for n in names)


# ------------------------------------------------------------------------------------------------ in a browser
@pytest.fixture(scope="module")
def run_dir(classifier_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    run = root / "reports" / "page"
    run_report(make_sae(classifier_ckpt, root / "sae"), run, n_exemplars=6, progress=False)
    live = [n for n in read_neurons(run) if not n.dead]
    explain(run, live[0].latent, crop=live[0].exemplars[0]["image"])
    write_json(RunFiles(run).evaluation, EVALUATION)
    write_index(run)
    return run


def test_the_page_works_in_headless_chromium(run_dir):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium, or set SAE_LAB_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Chromium is installed but the `playwright` package is not: pip install playwright")
    neurons = read_neurons(run_dir)
    explained = next(n.latent for n in neurons if not n.dead)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 4000})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed to load {r.url}"))
            page.goto(Path(run_dir / "index.html").as_uri())
            page.wait_for_load_state("load")
            rows = page.locator("#latent-list tbody tr")
            assert rows.count() == NUM_LATENTS
            assert page.locator("#primitives tbody tr").count() == 12
            assert page.locator("#freq-hist rect").count() > 0
            # Every thumbnail in the (tall) viewport has loaded.
            page.wait_for_function("[...document.querySelectorAll('img.thumb')].every(i => i.complete)")
            widths = page.eval_on_selector_all("img.thumb", "imgs => imgs.map(i => i.naturalWidth)")
            assert widths and all(w > 0 for w in widths)

            # The evaluation table, its method linking to the method's row of the Explanations table.
            assert page.locator("#evaluation-table tbody tr").count() == 2
            page.click("#evaluation-table a[href='#method-line']")
            assert page.evaluate("location.hash") == "#method-line"
            # That row's button filters the list to the method's latents.
            page.click("#method-line button[data-filter]")
            assert rows.count() == 1 and rows.first.get_attribute("data-id") == str(explained)

            # Search: by an explanation's text (the list shows the preferred one), by nonsense, then cleared.
            page.fill("#filter", "zebra")
            assert rows.count() == 1 and rows.first.get_attribute("data-id") == str(explained + 1)
            assert LABEL in rows.first.inner_text()
            page.fill("#filter", "bicycle")
            assert rows.count() == 1 and "spiral shell" in rows.first.inner_text()
            page.fill("#filter", "no-such-latent-anywhere")
            assert rows.count() == 0
            page.fill("#filter", "")
            assert rows.count() == NUM_LATENTS

            # Sorting: by id (ascending), by frequency (descending), then the column header flips the order.
            page.select_option("#sort", "id")
            assert [int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")] == list(range(NUM_LATENTS))
            page.select_option("#sort", "frequency")
            freq = {n.latent: n.frequency for n in neurons}
            shown = [freq[int(r)] for r in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")]
            assert shown == sorted(shown, reverse=True)
            page.click("#latent-list th[data-sort=frequency]")
            shown = [freq[int(r)] for r in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")]
            assert shown == sorted(shown)
            page.select_option("#sort", "gt_auc")
            page.select_option("#sort", "monosemanticity")

            # A card opens with its exemplars, every method's explanation (the linear one as signed bars, DnD's
            # crop as a loaded thumbnail) and its class bars; Escape closes it.
            page.click(f"#latent-list tr[data-id='{explained}']")
            card = page.locator("#card")
            card.wait_for(state="visible")
            text = card.inner_text()
            assert f"Latent #{explained}" in text and "spiral shell" in text and "round things" in text
            methods = card.locator(".explanation").evaluate_all("es => es.map(e => e.dataset.method)")
            assert methods == ["line", "dnd", "labels", "le-label"]
            assert card.locator(".terms .bar").count() == 3 and card.locator(".terms .bar.neg").count() == 1
            assert "wave" in card.locator(".explanation[data-method=line]").inner_text()
            page.wait_for_function("[...document.querySelectorAll('#card img')].every(i => i.complete)")
            widths = page.eval_on_selector_all("#card img", "imgs => imgs.map(i => i.naturalWidth)")
            assert widths and all(w > 0 for w in widths)
            assert card.locator(".explanation[data-method=dnd] .thumbs img").count() == 1
            assert page.locator("#card .bars:not(.terms) .bar").count() >= 10
            page.keyboard.press("Escape")
            card.wait_for(state="hidden")

            # A link to a latent (as the primitive table has) opens its card; the escaped label stays text.
            page.goto(Path(run_dir / "index.html").as_uri() + f"#latent-{explained + 1}")
            page.wait_for_selector("#card:not([hidden])")
            assert f"Latent #{explained + 1}" in card.inner_text() and LABEL in card.inner_text()
            assert card.locator("b", has_text="stripes").count() == 0
        finally:
            browser.close()
    assert not problems, problems
