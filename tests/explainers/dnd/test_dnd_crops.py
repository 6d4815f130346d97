"""Attention crops on hand-made activation maps: Otsu regions → boxes, largest first, the IoU rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sae_lab.explainers.dnd import Box, box_iou, crop_boxes, crop_image, upsample

S = 32


def blobs(*boxes: tuple[int, int, int, int], value: float = 1.0) -> np.ndarray:
    heat = np.zeros((S, S))
    for x1, y1, x2, y2 in boxes:
        heat[y1:y2, x1:x2] = value
    return heat


def test_two_blobs_give_two_boxes_largest_first():
    heat = blobs((2, 3, 8, 9), (12, 14, 28, 30))  # 6x6 and 16x16
    heat[5, 5] = 0.9  # not flat inside: Otsu still splits blobs from paper
    assert crop_boxes(heat) == [Box(12, 14, 28, 30), Box(2, 3, 8, 9)]
    assert crop_boxes(heat, max_crops=1) == [Box(12, 14, 28, 30)]


def test_a_box_overlapping_a_kept_one_by_more_than_half_is_dropped():
    heat = blobs((4, 4, 28, 28))
    heat[6:26, 6:26] = 0  # a ring: its box is the square (4, 4, 28, 28), area 576
    heat[8:24, 8:24] = 1  # inside it a 16x16 blob: IoU with the ring's box = 256 / 576 = 0.44 → kept
    assert crop_boxes(heat) == [Box(4, 4, 28, 28), Box(8, 8, 24, 24)]
    heat[6:26, 6:26] = 0
    heat[7:25, 7:25] = 1  # 18x18: IoU = 324 / 576 = 0.5625 > 0.5 → dropped
    assert crop_boxes(heat) == [Box(4, 4, 28, 28)]
    assert box_iou(Box(4, 4, 28, 28), Box(7, 7, 25, 25)) == pytest.approx(324 / 576)


def test_a_box_of_nearly_the_whole_image_is_dropped():
    heat = blobs((0, 0, 30, 30), (31, 31, 32, 32))  # IoU with the image 900/1024 = 0.88 ≥ 0.8
    assert crop_boxes(heat) == [Box(31, 31, 32, 32)]
    heat = blobs((0, 0, 28, 29))  # 812/1024 = 0.79 < 0.8: kept
    assert crop_boxes(heat) == [Box(0, 0, 28, 29)]


def test_at_most_four_boxes_and_none_for_a_flat_map():
    heat = blobs(*[(x, y, x + 3, y + 3) for x in (1, 9, 17, 25) for y in (1, 17)])
    assert len(crop_boxes(heat)) == 4 and len(crop_boxes(heat, max_crops=8)) == 8
    assert crop_boxes(np.zeros((S, S))) == [] and crop_boxes(np.full((S, S), 2.0)) == []
    with pytest.raises(ValueError, match="2-d"):
        crop_boxes(np.zeros((2, S, S)))


def test_an_upsampled_token_map_puts_the_box_where_the_token_fires():
    tokens = torch.zeros(4, 4)
    tokens[0, 3] = 1.0  # top-right token of a 4x4 grid over a 32x32 image
    (box,) = crop_boxes(upsample(tokens, S))
    assert box.x1 >= 20 and box.x2 == S and box.y1 == 0 and box.y2 <= 12


def test_a_crop_is_resized_and_keeps_only_the_primitives_it_shows():
    image = Image.new("L", (S, S), 255)
    image.info.update(primitives=["circle", "star"], **{"class": "badge"})
    masks = np.zeros((2, S, S), bool)
    masks[0, 2:6, 2:6] = True  # circle top-left
    masks[1, 20:30, 20:30] = True  # star bottom-right
    crop = crop_image(image, Box(0, 0, 10, 10), masks, ["circle", "star"])
    assert crop.size == (S, S) and crop.info == {"primitives": ["circle"]}
    assert crop_image(image, Box(0, 0, 10, 10)).info == {"primitives": ["circle", "star"]}  # no masks: the parent's
    plain = Image.new("L", (S, S), 255)
    plain.info["class"] = "badge"
    assert crop_image(plain, Box(0, 0, 10, 10)).info == {"class": "badge"}
