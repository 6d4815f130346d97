"""``explain le`` on a tiny run: records through the run layer, resume, settings checks, concept files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sae_lab.explainers.base import get_explainer
from sae_lab.explainers.le import LeSettings, run_le
from sae_lab.explainers.le.concepts import filter_concepts, label_concepts, read_concept_file, vlm_concept_set
from sae_lab.explainers.le.explain import NEVER_FIRES
from sae_lab.run import ExplanationStore, RunFiles
from tests.helpers.runs import make_tiny_run
from tests.helpers.threads import one_thread  # noqa: F401

NUM_LATENTS = 16
K = 4
DEAD = 0
RUN = "tiny"
FAST = {"split": "train", "n_images": 144, "device": "cpu", "batch_size": 64}


@pytest.fixture(scope="module")
def run_dir(classifier_ckpt, tmp_path_factory) -> Path:
    """``root/checkpoints/tiny/sae`` (a random SAE on the test classifier, latent 0 never firing) and
    ``root/reports/tiny/neurons.jsonl``."""
    return make_tiny_run(tmp_path_factory.mktemp("le_run"), classifier_ckpt, name=RUN, num_latents=NUM_LATENTS, k=K,
                         dead=DEAD, matched=4)  # fmt: skip


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_label_variant_end_to_end_and_resume(run_dir):
    block = run_le(LeSettings(run=str(run_dir), variants="label", **FAST))
    path = RunFiles(run_dir).explanations("le-label")
    first = lines(path)
    assert [r["latent"] for r in first] == list(range(1, NUM_LATENTS))  # "all" = the live latents
    assert block["latents"] == NUM_LATENTS - 1 and block["vlm_images"] == 0 and "vlm" not in block
    label = block["label"]
    assert label["explained"] + label["missing"] == NUM_LATENTS - 1 and label["explained"] > 0
    assert label["gt_named"]["n"] == 3  # latents 1-3 (0 is dead, not asked)
    ok = [r for r in first if r["text"]]
    for r in ok:
        assert r["method"] == "le-label" and r["bias"] is not None and 1 <= len(r["terms"]) <= 10
        assert -1 <= r["detail"]["select_r"] <= 1 and r["detail"]["pooling"] == "avg"
        sizes = r["detail"]["images"]
        total = sum(sizes.values())  # the datamodule's train split (the rest of the world's train is val)
        assert total > 80 and sizes["fit"] == round(0.7 * total) and sizes["select"] == round(0.1 * total)
        assert r["cost"]["seconds"] > 0 and r["candidates"] and r["settings_hash"]
        weights = [t["weight"] for t in r["terms"]]
        assert weights == sorted(weights, reverse=True)
        assert r["text"].startswith(f"{weights[0]:.2f}*{r['terms'][0]['concept']}")
    assert label["select_r"]["mean"] == pytest.approx(sum(r["detail"]["select_r"] for r in ok) / len(ok), abs=1e-4)

    again = run_le(LeSettings(run=str(run_dir), variants="label", **FAST))
    assert lines(path) == first  # nothing appended
    assert again["label"] == label

    run_le(LeSettings(run=str(run_dir), variants="label", latents="1-2", overwrite=True, **FAST))
    redone = lines(path)[len(first) :]
    same = [{**r, "cost": None} for r in first if r["latent"] in (1, 2)]
    assert [{**r, "cost": None} for r in redone] == same  # the same fit again (only the time differs)
    first = lines(path)

    other = run_le(LeSettings(run=str(run_dir), variants="label", latents="1-3", max_concepts=1, **FAST))
    assert other["latents"] == 3 and len(lines(path)) == len(first) + 3
    assert all(len(r.terms) <= 1 for r in ExplanationStore(run_dir, "le-label").latest().values() if r.latent <= 3)


def test_a_latent_that_never_fires_gets_a_reason(run_dir):
    run_le(LeSettings(run=str(run_dir), variants="label", latents=str(DEAD), **FAST))
    rec = ExplanationStore(run_dir, "le-label").latest()[DEAD]
    assert rec.text is None and rec.terms == [] and rec.reason == NEVER_FIRES


def test_vlm_variant_with_the_offline_perception(run_dir, tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("wheel with rays\nzebra\n")
    block = run_le(LeSettings(run=str(run_dir), variants="vlm", latents="1-6", concept_file=str(words), **FAST))
    assert block["vlm_images"] > 80 and block["vlm"]["explained"] > 0
    recs = ExplanationStore(run_dir, "le-vlm").latest()
    assert sorted(recs) == list(range(1, 7))
    assert all(r.backends["perception"] == "offline" for r in recs.values())
    assert all(r.cost.vlm_images == round(block["vlm_images"] / 6) for r in recs.values())


def test_settings_are_checked_by_field(tmp_path):
    for field, value in [
        ("pooling", "mean"),
        ("variants", "vlm,clip"),
        ("alpha", 0.0),
        ("max_concepts", 0),
        ("min_gain", -0.1),
        ("n_images", 5),
        ("concept_file", str(tmp_path / "none.txt")),
    ]:
        with pytest.raises(ValueError, match=field):
            LeSettings(**{field: value}).check()
    assert LeSettings(variants="vlm, label").variant_list() == ["label", "vlm"]
    words = tmp_path / "w.txt"
    words.write_text("zebra\n")
    a, b = LeSettings(concept_file=str(words)), LeSettings(concept_file=str(words), perception="hf:x")
    assert a.variant_hash("label") == b.variant_hash("label") and a.variant_hash("vlm") != b.variant_hash("vlm")
    before = a.variant_hash("vlm")
    words.write_text("zebra\nhorse\n")
    assert a.variant_hash("vlm") != before  # the file's content counts, not its name


def test_concept_files_empty_or_repeated_are_refused(tmp_path):
    empty, twice = tmp_path / "empty.txt", tmp_path / "twice.txt"
    empty.write_text("\n# only a comment\n\n")
    twice.write_text("zebra\nhorse\nZebra\n")
    with pytest.raises(ValueError, match="holds no concepts"):
        read_concept_file(empty)
    with pytest.raises(ValueError, match="repeats 'zebra'"):
        read_concept_file(twice)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_concept_file(tmp_path / "missing.txt")


def test_label_concepts_and_filter():
    names, x = label_concepts(torch.tensor([0, 1, 2, 0] * 3), ["sun", "house", "unknown class"])
    assert names[:3] == ["sun", "house", "unknown class"]
    assert names[3:] == ["circle", "square", "triangle", "spokes"]  # primitives of sun and house, world order
    assert x[:4, names.index("circle")].tolist() == [1, 0, 0, 1]
    kept = filter_concepts(names, x, min_top5=0.5)
    assert kept.names == ["sun", "house", "unknown class"]
    assert kept.dropped == {"circle": "same as sun", "spokes": "same as sun", "square": "same as house",
                            "triangle": "same as house"}  # fmt: skip
    low = filter_concepts(["a", "b"], torch.tensor([[0.1, 1.0], [0.2, 1.0], [0.0, 1.0]]))
    assert low.names == [] and low.dropped == {"a": "rarely present", "b": "constant"}
    texts = vlm_concept_set(["sun", "Circle"], True, ["zebra", "SUN"])
    assert texts[:2] == ["sun", "Circle"] and "circle" not in texts and texts[-1] == "zebra" and "rings" in texts


def test_registry_entry():
    explainer = get_explainer("le")
    assert explainer.methods == ("le-label", "le-vlm") and explainer.settings is LeSettings
