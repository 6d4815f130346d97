"""Exemplar pictures: heatmap tiles against torch's bilinear upsampling, sprites, and the image-only loader."""

import numpy as np
import torch
import torch.nn.functional as F

from sae_lab.report import images

TILE = 32
N = 5
GRID = (4, 3)


def test_heatmap_tiles_are_bilinear_upsampled_levels_over_the_ink():
    rng = np.random.default_rng(0)
    ink = rng.random((N, TILE, TILE)).astype(np.float32)
    maps = rng.random((N, *GRID)) * 3.0
    tiles = images.heatmap_tiles(ink, maps, vmax=3.0)
    assert tiles.shape == (N, TILE, TILE) and tiles.dtype == np.uint8
    heat = F.interpolate(torch.from_numpy(maps / 3.0)[:, None], size=(TILE, TILE), mode="bilinear",
                         align_corners=False)[:, 0].numpy()  # fmt: skip
    want_heat = np.clip(np.ceil(heat * (images.HEAT_LEVELS - 1) - 0.5), 0, images.HEAT_LEVELS - 1)
    got_heat, got_ink = np.divmod(tiles.astype(np.int64), images.INK_LEVELS)
    assert np.abs(got_heat - want_heat).max() <= 1 and (got_heat != want_heat).mean() < 1e-3  # float rounding only
    assert np.array_equal(got_ink, np.rint(ink * (images.INK_LEVELS - 1)))


def test_the_hottest_token_is_where_the_heat_is_drawn():
    maps = np.zeros((1, *GRID))
    maps[0, 3, 0] = 2.0  # bottom-left token
    tiles = images.heatmap_tiles(np.zeros((1, TILE, TILE), np.float32), maps, vmax=2.0)
    heat = tiles[0] // images.INK_LEVELS
    r, c = np.unravel_index(heat.argmax(), heat.shape)
    assert r >= TILE * 3 // 4 and c < TILE // 3 and heat.max() == images.HEAT_LEVELS - 1


def test_sprite_places_tiles_row_major_with_gaps():
    tiles = np.stack([np.full((TILE, TILE), j, np.uint8) for j in range(N)])
    out = images.sprite(tiles, columns=3, gap=2)
    assert out.shape == (2 * TILE + 2, 3 * TILE + 2 * 2)
    assert out[0, 0] == 0 and out[0, TILE + 2] == 1 and out[TILE + 2, TILE + 2] == 4
    assert out[TILE, 0] == out[0, TILE] == out[-1, -1] == images._WHITE  # gaps and the empty sixth cell are paper


def test_the_image_only_loader_gives_the_items_image(world_dir):
    from sae_lab.data.sketch import SketchDataModule
    from tests.helpers.common import IMAGE_SIZE

    dm = SketchDataModule(str(world_dir), image_size=IMAGE_SIZE, num_workers=0, test_split="test", annotations=True)
    dm.setup("fit")
    ds = dm.datasets["test"]
    for i in (0, 5, len(ds) - 1):
        assert torch.equal(ds.image(i), ds[i]["image"])
