"""The held-out generator: its own seed range and template, checked against what explainers recorded; images
cached per (concept, template, generator); a concept the renderer cannot draw is flagged, not drawn."""

from __future__ import annotations

import json
import logging

import pytest

from sae_lab.backends.image import RendererBackend, image_seed
from sae_lab.data.world import primitives_in_text
from sae_lab.evaluate import HELDOUT_TEMPLATE, SEED_SPACE, HeldoutGenerator, check_heldout, recorded_generation
from sae_lab.evaluate.heldout import UsedGeneration
from sae_lab.run import ExplanationRecord, RunFiles

SKETCH_TEMPLATE = "a simple black-and-white line drawing of {concept}"
"""LINE's (and DnD's) prompt template on sketches."""


class RecordingRenderer(RendererBackend):
    """The renderer, remembering every (prompt, seed) it was asked for."""

    def __init__(self) -> None:
        super().__init__(image_size=32, world_seed=1)
        self.calls: list[tuple[str, int]] = []

    def generate(self, prompts, seeds):
        self.calls += list(zip(prompts, seeds))
        return super().generate(prompts, seeds)


class ZMax:
    """A stand-in scorer: every image's mean ink as the one latent's z_max."""

    def z_max_images(self, images):
        import numpy as np
        import torch

        return torch.tensor([[float(255 - np.asarray(im).mean())] for im in images])


def test_the_default_template_names_nothing_the_renderer_would_draw():
    assert primitives_in_text(HELDOUT_TEMPLATE.format(concept="")) == []
    assert HELDOUT_TEMPLATE != SKETCH_TEMPLATE


def test_images_come_from_the_seed_range_and_are_cached_across_requests(tmp_path):
    backend = RecordingRenderer()
    gen = HeldoutGenerator("renderer", HELDOUT_TEMPLATE, SEED_SPACE + 10, 4, tmp_path, 32, backend=backend)
    acts = gen.activations(["circle", "sun", "zebra", "ring"], ZMax(), "sae-1")
    assert acts["zebra"] is None and not gen.drawable("zebra")  # the renderer names nothing in it: not drawn
    assert acts["circle"].shape == (4, 1) and acts["sun"].shape == (4, 1)
    assert acts["ring"] is acts["circle"]  # the renderer draws the same primitive for both: one set of images
    assert sorted({s for _, s in backend.calls}) == [SEED_SPACE + 10 + i for i in range(4)]
    assert {p for p, _ in backend.calls} == {
        HELDOUT_TEMPLATE.format(concept=c) for c in ("circle", "circle and spokes")
    }
    assert gen.generated == 8 and gen.drawn == {"circle", "circle and spokes"}
    again = HeldoutGenerator("renderer", HELDOUT_TEMPLATE, SEED_SPACE + 10, 4, tmp_path, 32, backend=backend)
    second = again.activations(["circle", "sun"], ZMax(), "sae-1")
    assert again.generated == 0 and again.concepts_cached == 2 and len(backend.calls) == 8
    assert second["circle"].equal(acts["circle"])


def line_like(run_dir, template=SKETCH_TEMPLATE, **detail) -> dict[str, dict[int, ExplanationRecord]]:
    """LINE's records (images drawn with hashed seeds from seed 0) and its params.json."""
    files = RunFiles(run_dir)
    files.line_dir.mkdir(parents=True)
    (files.line_dir / "params.json").write_text(json.dumps({"template": template, "seed": 0, "n_images": 8}))
    recs = {k: ExplanationRecord.single(k, "line", c, backends={"images": "renderer"},
                                        detail={"template": template, "seed": 0, "n_images": 8, **detail},
                                        candidates=[{"concept": c, "score": 0.9}, {"concept": "star", "score": 0.5}])
            for k, c in enumerate(["circle", "sun", "ring"])}  # fmt: skip
    return {"line": recs, "le-vlm": {0: ExplanationRecord.single(0, "le-vlm", "circle", detail={"seed": 0})}}


def test_the_default_held_out_range_and_template_meet_nothing_an_explainer_recorded(tmp_path):
    explanations = line_like(tmp_path)
    used = recorded_generation(RunFiles(tmp_path), explanations)
    assert {u.source for u in used} == {"explanations/line.jsonl", "line/params.json"}  # LE drew no images
    check_heldout(HELDOUT_TEMPLATE, SEED_SPACE, 50, used)  # passes
    # every seed LINE drew its concepts' images with (recorded seed, concepts, n_images) lies outside the range
    theirs = {image_seed(u.seed, c["concept"], i) for u in used for r in explanations["line"].values()
              for c in r.candidates for i in range(8)}  # fmt: skip
    assert theirs and not theirs & set(range(SEED_SPACE, SEED_SPACE + 50))
    assert all(u.template != HELDOUT_TEMPLATE for u in used)


def test_a_held_out_template_or_seed_an_explainer_used_is_refused(tmp_path, caplog):
    used = recorded_generation(RunFiles(tmp_path), line_like(tmp_path))
    with pytest.raises(ValueError, match="line"):
        check_heldout(SKETCH_TEMPLATE, SEED_SPACE, 50, used)
    with pytest.raises(ValueError, match=r"\[0, 2147483648\)"):
        check_heldout(HELDOUT_TEMPLATE, 1000, 50, used)  # inside the hashed-seed space
    ranged = [
        UsedGeneration("explanations/dnd.jsonl", "a drawing of {concept}", None, (SEED_SPACE + 40, SEED_SPACE + 90))
    ]
    with pytest.raises(ValueError, match="overlap"):
        check_heldout(HELDOUT_TEMPLATE, SEED_SPACE, 50, ranged)
    check_heldout(HELDOUT_TEMPLATE, SEED_SPACE + 90, 50, ranged)  # adjacent is fine
    silent = recorded_generation(RunFiles(tmp_path / "x"), {"dnd": {0: ExplanationRecord.single(
        0, "dnd", "circle", backends={"images": "diffusers:sd-turbo"})}})  # fmt: skip
    with caplog.at_level(logging.WARNING):
        check_heldout(HELDOUT_TEMPLATE, SEED_SPACE, 50, silent)
    assert "does not record its prompt template" in caplog.text
    with pytest.raises(ValueError, match="2147483648"):
        check_heldout(HELDOUT_TEMPLATE, 0, 50, silent)  # it drew images: its seeds are assumed hashed


def test_a_method_folder_params_cover_records_that_do_not_repeat_the_template(tmp_path):
    files = RunFiles(tmp_path)
    files.line_dir.mkdir(parents=True)
    (files.line_dir / "params.json").write_text(json.dumps({"template": SKETCH_TEMPLATE, "seed": 0}))
    recs = {"line": {0: ExplanationRecord.single(0, "line", "circle", backends={"images": "renderer"})}}
    used = recorded_generation(files, recs)
    assert used == [UsedGeneration("line/params.json", SKETCH_TEMPLATE, 0)]
