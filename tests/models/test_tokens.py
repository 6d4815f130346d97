import torch

from sae_lab.models.tokens import fmap_to_tokens, tokens_to_fmap

B, C, H, W = 3, 5, 2, 4


def test_tokens_are_row_major_per_image_and_round_trip():
    fmap = torch.randn(B, C, H, W)
    tokens = fmap_to_tokens(fmap)
    assert tokens.shape == (B * H * W, C)
    assert torch.equal(tokens[H * W + W + 2], fmap[1, :, 1, 2])  # image 1, position (1, 2)
    assert torch.equal(tokens.view(B, H * W, C)[2, 5], fmap[2, :, 1, 1])
    assert torch.equal(tokens_to_fmap(tokens, fmap.shape), fmap)


def test_tokens_of_another_width_map_back_on_the_same_grid():
    fmap = torch.randn(B, C, H, W)
    codes = torch.randn(B * H * W, 7)  # e.g. one value per latent
    back = tokens_to_fmap(codes, fmap.shape)
    assert back.shape == (B, 7, H, W) and torch.equal(fmap_to_tokens(back), codes)
