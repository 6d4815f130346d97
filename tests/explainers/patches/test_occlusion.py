"""Occlusion: positions, the shared pass, the patch rule, and a planted latent whose map peaks on its primitive."""

from __future__ import annotations

import pytest
import torch

from sae_lab.data.world import PRIMITIVES, SketchWorld
from sae_lab.explainers.patches.occlusion import (
    SaeScorer,
    occlude,
    occlude_pairs,
    occluded_variants,
    patch_box,
    pixel_map,
    positions,
)
from sae_lab.explainers.patches.outputs import box_iou, inside, mask_box
from sae_lab.models.sae import SaeConfig, TopKSAE
from tests.helpers.threads import one_thread  # noqa: F401

SIZE = 64
OCCLUDER = 16
STRIDE = 4
CELL = 8  # the planted network's token: an 8 x 8 pixel cell


def test_positions_cover_the_image_and_bad_sizes_name_the_setting():
    assert positions(64, 16, 8) == [0, 8, 16, 24, 32, 40, 48]
    assert positions(32, 16, 12) == [0, 12, 16]  # the last one flush with the far edge
    assert positions(16, 16, 4) == [0]
    with pytest.raises(ValueError, match="occluder"):
        positions(32, 40, 4)
    with pytest.raises(ValueError, match="stride"):
        positions(32, 8, 0)


def test_variants_blank_one_square_each():
    image = torch.ones(1, 8, 8)
    v = occluded_variants(image, 4, positions(8, 4, 4))
    assert v.shape == (4, 1, 8, 8)
    assert [float(x.sum()) for x in v] == [48.0] * 4
    assert float(v[1, 0, :4, 4:].sum()) == 0 and float(v[1, 0, :4, :4].sum()) == 16  # row-major: (y=0, x=4)


def test_patch_rule():
    offsets, s = [0, 8, 16], 16
    drops = torch.zeros(3, 3)
    drops[1, 2] = 1.0
    assert patch_box(drops, offsets, s) == (16, 8, 32, 24)  # one square: the occluder itself
    drops[2, 2] = 0.6  # >= 50 % of the peak joins the box
    drops[0, 0] = 0.4  # below: left out
    assert patch_box(drops, offsets, s) == (16, 8, 32, 32)
    assert patch_box(drops, offsets, s, keep=0.3) == (0, 0, 32, 32)
    assert patch_box(-torch.ones(3, 3), offsets, s) == (0, 0, 32, 32)  # nothing lowers it: the whole image
    heat = pixel_map(drops, offsets, s)
    assert heat.shape == (32, 32)
    assert float(heat[0, 0]) == pytest.approx(0.4, abs=1e-6) and float(heat[-1, -1]) == pytest.approx(0.6, abs=1e-6)


class PlantedNet:
    """Tokens of 8 x 8 cells with two channels: the ink of one primitive's strokes, and the ink of the others."""

    def __init__(self, masks: torch.Tensor, target: int) -> None:
        self.on = masks[target].float()
        self.off = (masks.any(0) & ~masks[target]).float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        ink = x[:, 0]
        return torch.nn.functional.avg_pool2d(torch.stack([ink * self.on, ink * self.off], 1), CELL)


def planted_sae() -> TopKSAE:
    """Latent 0 reads channel 0 (the planted primitive's tokens only), latent 1 channel 1."""
    sae = TopKSAE(SaeConfig(d_in=2, num_latents=2, k=1))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4, 5])
def test_a_planted_latent_peaks_on_its_primitive(index):
    sample = SketchWorld(image_size=SIZE, seed=0, distractors=(0, 0)).sample(index)
    masks = torch.from_numpy(sample.masks)
    target, other = [p for p in range(len(PRIMITIVES)) if sample.primitives[p]][:2]
    ink = torch.from_numpy(255 - sample.image)
    occ = occlude(SaeScorer(PlantedNet(masks, target), planted_sae(), [0, 1]), ink[None], OCCLUDER, STRIDE,
                  batch_size=7)  # fmt: skip
    n = len(positions(SIZE, OCCLUDER, STRIDE)) ** 2
    assert occ.forward_images == n + 1 - blank(ink, STRIDE) and occ.drops.shape == (1, 2, 13, 13)
    drops = occ.drops[0, 0]
    heat = pixel_map(drops, occ.offsets, OCCLUDER)
    assert float(heat[masks[target]].mean()) > 2 * float(heat[masks[other]].mean())
    i, j = divmod(int(drops.argmax()), drops.shape[1])
    y, x = occ.offsets[i], occ.offsets[j]
    assert masks[target, y : y + OCCLUDER, x : x + OCCLUDER].any()  # the largest drop covers the primitive's strokes
    box = patch_box(drops, occ.offsets, OCCLUDER)
    assert box_iou(box, mask_box(masks[target])) > 0.3
    assert box_iou(box, mask_box(masks[target])) > box_iou(box, mask_box(masks[other])) + 0.2
    assert PRIMITIVES[other] not in inside(masks, box, PRIMITIVES)
    # The same pass gave the other latent its own map, peaking on the other primitive.
    other_box = patch_box(occ.drops[0, 1], occ.offsets, OCCLUDER)
    assert box_iou(other_box, mask_box(masks[other])) > box_iou(other_box, mask_box(masks[target]))


def test_shared_pass_equals_one_latent_at_a_time():
    sample = SketchWorld(image_size=SIZE, seed=0, distractors=(0, 0)).sample(0)
    masks = torch.from_numpy(sample.masks)
    target = int(sample.primitives.argmax())
    net, sae = PlantedNet(masks, target), planted_sae()
    ink = torch.from_numpy(255 - sample.image)[None].repeat(2, 1, 1)
    both = occlude(SaeScorer(net, sae, [0, 1]), ink, OCCLUDER, 8, batch_size=5)
    alone = occlude(SaeScorer(net, sae, [1]), ink, OCCLUDER, 8, batch_size=64)
    assert both.forward_images == alone.forward_images == 2 * (7 * 7 + 1 - blank(ink[0], 8))
    torch.testing.assert_close(both.drops[:, 1:], alone.drops, atol=1e-6, rtol=0)


def blank(ink: torch.Tensor, stride: int) -> int:
    """Occluder positions of one (S, S) ink image that cover no ink, counted by hand."""
    offsets = positions(SIZE, OCCLUDER, stride)
    return sum(int(ink[y : y + OCCLUDER, x : x + OCCLUDER].max()) == 0 for y in offsets for x in offsets)


def test_occluding_bare_paper_is_skipped_and_changes_nothing():
    sample = SketchWorld(image_size=SIZE, seed=0, distractors=(0, 0)).sample(2)
    masks = torch.from_numpy(sample.masks)
    net, sae = PlantedNet(masks, int(sample.primitives.argmax())), planted_sae()
    ink = torch.from_numpy(255 - sample.image)[None]
    dense = occlude(SaeScorer(net, sae, [0, 1]), ink, OCCLUDER, 8, skip_blank=False)
    sparse = occlude(SaeScorer(net, sae, [0, 1]), ink, OCCLUDER, 8, batch_size=3)
    skipped = blank(ink[0], 8)
    assert skipped > 0 and dense.forward_images == 7 * 7 + 1
    assert sparse.forward_images == dense.forward_images - skipped
    torch.testing.assert_close(sparse.drops, dense.drops, atol=1e-6, rtol=0)  # a skipped variant's drop is exactly 0
    torch.testing.assert_close(sparse.base, dense.base, atol=1e-6, rtol=0)


def test_pairs_occlude_each_distinct_image_once_in_blocks():
    sample = SketchWorld(image_size=SIZE, seed=0, distractors=(0, 0)).sample(1)
    masks = torch.from_numpy(sample.masks)
    net, sae = PlantedNet(masks, int(sample.primitives.argmax())), planted_sae()
    ink = torch.from_numpy(255 - sample.image)
    images = torch.stack([ink, ink.flip(0), ink.flip(1)])
    tops = {0: [0, 2], 1: [2, 1]}  # image 2 is in both latents' tops: occluded once
    whole = occlude(SaeScorer(net, sae, [0, 1]), images, OCCLUDER, 8)
    for max_floats in (1, 1 << 24):  # one image per block, or all in one
        pairs = occlude_pairs(SaeScorer(net, sae, [0, 1]), images, tops, [0, 1], OCCLUDER, 8, max_floats=max_floats)
        assert pairs.images == 3 and pairs.forward_images == whole.forward_images
        assert sorted(pairs.drops) == [(0, 0), (0, 2), (1, 1), (1, 2)]
        for (latent, j), d in pairs.drops.items():
            torch.testing.assert_close(d, whole.drops[j, latent], atol=1e-6, rtol=0)
