import numpy as np
import pytest

from sae_lab.data.world import (
    CLASSES,
    PRIMITIVES,
    SketchWorld,
    check_world_definition,
    primitives_in_text,
    text_to_sketch,
)


@pytest.fixture(scope="module")
def world():
    return SketchWorld(image_size=48, seed=3)


def test_class_table_meets_the_constraints():
    check_world_definition()
    assert len(PRIMITIVES) >= 12 and len(CLASSES) >= 16
    sets = [frozenset(p) for p in CLASSES.values()]
    assert len(set(sets)) == len(sets)
    assert all(len(s) >= 2 for s in sets)
    for p in PRIMITIVES:
        assert sum(p in s for s in sets) >= 2, p


def test_the_weakly_drawn_primitives_are_decisive_for_some_pair_of_classes():
    # wave, square and cross are the primitives a classifier could otherwise skip (a field is "hatching without a
    # square or triangle"): each is the one difference between two classes.
    sets = [set(p) for p in CLASSES.values()]
    decisive = {p for a in sets for b in sets if b < a and len(a - b) == 1 for p in a - b}
    assert {"wave", "square", "cross", "triangle", "hatching", "arc"} <= decisive


@pytest.mark.parametrize(
    "bad",
    [
        {**CLASSES, "lonely": ("circle",)},
        {**CLASSES, "copy": CLASSES["sun"]},
        {**CLASSES, "alien": ("circle", "hexagon")},
        {k: v for k, v in CLASSES.items() if "spokes" not in v or k == "sun"},
    ],
)
def test_broken_class_tables_are_refused(bad):
    with pytest.raises(ValueError):
        check_world_definition(bad)


def test_samples_are_deterministic_per_seed_split_and_index(world):
    a, b = world.sample(5), world.sample(5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.image, world.sample(5, "test").image)
    other = SketchWorld(image_size=48, seed=4).sample(5)
    assert not np.array_equal(a.image, other.image)
    assert a.image.shape == (48, 48) and a.image.dtype == np.uint8


def test_every_sample_carries_its_class_primitives_and_masks(world):
    for i in range(2 * world.num_classes):
        s = world.sample(i)
        expected = set(CLASSES[world.classes[s.label]])
        assert {PRIMITIVES[p] for p in np.flatnonzero(s.primitives)} == expected
        for p, name in enumerate(PRIMITIVES):
            assert s.masks[p].any() == (name in expected), (i, name)


def test_masks_line_up_with_strokes():
    world = SketchWorld(image_size=64, seed=1, distractors=(0, 0))
    for i in range(24):
        s = world.sample(i)
        ink = s.image <= 191  # >= 25% of the pixel covered by strokes, the masks' own threshold
        union = s.masks.any(0)
        # Mask pixels are drawn pixels, and with no distractors every drawn pixel is some primitive's.
        assert (union & ink).sum() == union.sum()
        assert (union & ink).sum() >= 0.97 * ink.sum()


def test_distractors_add_ink_outside_every_mask():
    world = SketchWorld(image_size=64, seed=1, distractors=(2, 2))
    outside = [((world.sample(i).image < 160) & ~world.sample(i).masks.any(0)).sum() for i in range(8)]
    assert min(outside) > 0


def test_images_are_sketches_not_noise(world):
    s = world.sample(0)
    ink_fraction = (s.image < 128).mean()
    assert 0.01 < ink_fraction < 0.35
    assert s.image.max() == 255  # white paper


def test_prompt_parsing_finds_primitives_synonyms_and_classes():
    assert primitives_in_text("a simple black-and-white line drawing of a spiral") == ["spiral"]
    assert primitives_in_text("A SWIRL next to some rays") == ["spiral", "spokes"]
    assert primitives_in_text("a sun") == ["circle", "spokes"]
    assert primitives_in_text("a banana") == []


def test_text_to_sketch_draws_what_the_prompt_names():
    world = SketchWorld(image_size=64, seed=0)
    img, names = world.render_prompt("a drawing of a star", seed=1)
    assert names == ["star"] and (img < 128).any()
    again, _ = world.render_prompt("a drawing of a star", seed=1)
    other, _ = world.render_prompt("a drawing of a star", seed=2)
    assert np.array_equal(img, again) and not np.array_equal(img, other)
    blank, names = world.render_prompt("a banana", seed=1)
    assert names == [] and (blank < 128).any()  # scribbles only
    assert text_to_sketch("a circle", seed=0).shape == (64, 64)


def test_too_small_images_are_refused():
    with pytest.raises(ValueError, match="image_size"):
        SketchWorld(image_size=8)
