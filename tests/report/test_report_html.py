"""index.html: re-rendered with labels, and opened from disk in headless Chromium (Debian's `chromium` package,
driven by the `playwright` Python package; the test skips only when no Chromium binary is installed)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from sae_lab.report import run_report, write_index, writer
from tests.report.test_report_pipeline import NUM_LATENTS, make_sae

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
LABEL = "zebra </script><b>stripes</b> & co"  # must neither end the data script nor become markup


def chromium_binary() -> str | None:
    """$SAE_LAB_CHROMIUM, or the first Chromium/Chrome on PATH."""
    if os.environ.get("SAE_LAB_CHROMIUM"):
        return os.environ["SAE_LAB_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def run_dir(classifier_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    run = root / "reports" / "page"
    run_report(make_sae(classifier_ckpt, root / "sae"), run, n_exemplars=6, progress=False)
    live = [n["id"] for n in writer.read_jsonl(run / "neurons.jsonl") if not n["dead"]]
    labels = [{"latent": live[0], "label": LABEL, "evidence": "top classes", "source": "offline"},
              {"latent": live[0], "label": "second opinion", "evidence": "", "source": "llm"}]  # fmt: skip
    (run / "labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in labels) + '{"latent": 1, "lab')
    (run / "line").mkdir()
    (run / "line" / "summary.jsonl").write_text(json.dumps({"latent": live[-1], "best_concept": "spiral shell",
                                                            "best_score": 0.93}) + "\n")  # fmt: skip
    write_index(run)
    return run


def test_write_index_rerenders_with_labels_and_line_results(run_dir):
    page = (run_dir / "index.html").read_text()
    data = page.split('<script id="report-data" type="application/json">')[1].split("</script>")[0]
    labels = json.loads(data)["labels"]
    assert [x["label"] for x in next(iter(labels.values()))] == [LABEL, "second opinion"]
    assert "spiral shell" in data and '"1"' not in labels  # the half-written last line is skipped


def test_write_index_needs_a_report(tmp_path):
    with pytest.raises(FileNotFoundError, match="no neuron report"):
        write_index(tmp_path)


def test_the_page_works_in_headless_chromium(run_dir):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium, or set SAE_LAB_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Chromium is installed but the `playwright` package is not: pip install playwright")
    neurons = writer.read_jsonl(run_dir / "neurons.jsonl")
    labelled = next(n["id"] for n in neurons if not n["dead"])
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

            # Search: by label, by nonsense, then cleared.
            page.fill("#filter", "zebra")
            assert rows.count() == 1 and rows.first.get_attribute("data-id") == str(labelled)
            assert LABEL in rows.first.inner_text()
            page.fill("#filter", "no-such-latent-anywhere")
            assert rows.count() == 0
            page.fill("#filter", "")
            assert rows.count() == NUM_LATENTS

            # Sorting: by id (ascending), by frequency (descending), then the column header flips the order.
            page.select_option("#sort", "id")
            assert [int(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")] == list(range(NUM_LATENTS))
            page.select_option("#sort", "frequency")
            freq = {n["id"]: n["frequency"] for n in neurons}
            shown = [freq[int(r)] for r in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")]
            assert shown == sorted(shown, reverse=True)
            page.click("#latent-list th[data-sort=frequency]")
            shown = [freq[int(r)] for r in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")]
            assert shown == sorted(shown)
            page.select_option("#sort", "gt_auc")
            page.select_option("#sort", "monosemanticity")

            # A card opens with its exemplars loaded, its labels and its class bars; Escape closes it.
            page.click(f"#latent-list tr[data-id='{labelled}']")
            card = page.locator("#card")
            card.wait_for(state="visible")
            assert f"Latent #{labelled}" in card.inner_text() and LABEL in card.inner_text()
            page.wait_for_function("[...document.querySelectorAll('#card img')].every(i => i.complete)")
            widths = page.eval_on_selector_all("#card img", "imgs => imgs.map(i => i.naturalWidth)")
            assert widths and all(w > 0 for w in widths)
            assert page.locator("#card .bar").count() >= 10
            page.keyboard.press("Escape")
            card.wait_for(state="hidden")

            # A link to a latent (as the primitive table has) opens its card.
            page.goto(Path(run_dir / "index.html").as_uri() + f"#latent-{neurons[-1]['id']}")
            page.wait_for_selector("#card:not([hidden])")
            assert f"Latent #{neurons[-1]['id']}" in card.inner_text()
        finally:
            browser.close()
    assert not problems, problems
