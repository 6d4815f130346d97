"""Hand-drawn strokes: every primitive has a shape, and the rasteriser's masks follow each stroke's owner."""

import numpy as np
import pytest

from sae_lab.data.strokes import Stroke, draw_strokes, hand_drawn, unit_shape
from sae_lab.data.world import PRIMITIVES

SIZE = 32
SUPERSAMPLE = 3


@pytest.mark.parametrize("name", PRIMITIVES)
def test_every_primitive_has_a_shape_near_the_unit_disc(name):
    lines = unit_shape(name, np.random.default_rng(0))
    assert lines and all(line.ndim == 2 and line.shape[1] == 2 for line in lines)
    # The placement scales unit shapes by the primitive's radius; hatching's ends stick out to 1.15.
    assert max(np.abs(line).max() for line in lines) <= 1.2


def test_unknown_primitive_is_refused():
    with pytest.raises(ValueError, match="unknown primitive"):
        unit_shape("hexagon", np.random.default_rng(0))


def test_hand_drawn_bends_a_straight_line_deterministically():
    line = np.array([[-0.9, 0.0], [0.9, 0.0]])
    a, b = hand_drawn(line, np.random.default_rng(1), 0.035), hand_drawn(line, np.random.default_rng(1), 0.035)
    assert np.array_equal(a, b) and len(a) > 2 and np.abs(a[:, 1]).max() > 0.0


def test_masks_follow_the_owner_and_distractors_have_none():
    big = SIZE * SUPERSAMPLE
    owned = Stroke(np.array([[0.1, 0.2], [0.9, 0.2]]) * big, width=4, owner=2)
    distractor = Stroke(np.array([[0.1, 0.8], [0.9, 0.8]]) * big, width=4, owner=-1)
    image, masks = draw_strokes([owned, distractor], SIZE, SUPERSAMPLE, len(PRIMITIVES))
    assert image.shape == (SIZE, SIZE) and image.dtype == np.uint8 and masks.shape == (len(PRIMITIVES), SIZE, SIZE)
    assert masks[2].any() and not np.delete(masks, 2, axis=0).any()
    rows = np.nonzero(masks[2].any(axis=1))[0]
    assert rows.max() < SIZE // 2  # the owned stroke is the upper one
    assert image[masks[2]].max() < 200 and image[SIZE * 4 // 5].min() < 200  # both strokes inked (dark on white)
    assert image[0].min() == 255  # background untouched
