"""A small random TopKSAE with a non-trivial standardisation and biases, saved as an sae_lab export folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

D_IN, NUM_LATENTS, K = 32, 64, 4
N_TOKENS = 256
LAYER, CLASSIFIER = "layer4", "resnet-test-0123abcd"
META = {"class_names": ["apple", "house", "sun"], "image_size": 32, "grid": [2, 2]}


def make_sae():
    from sae_lab.models.sae import SaeConfig, TopKSAE

    g = torch.Generator().manual_seed(0)
    sae = TopKSAE(SaeConfig(d_in=D_IN, num_latents=NUM_LATENTS, k=K), layer=LAYER, classifier=CLASSIFIER,
                  metadata=META)  # fmt: skip
    with torch.no_grad():
        sae.mu.copy_(torch.randn(D_IN, generator=g) * 2)
        sae.sigma.copy_(torch.rand(D_IN, generator=g) * 3 + 0.2)  # σ in [0.2, 3.2]: far from the identity
        sae.b_dec.copy_(torch.randn(D_IN, generator=g) * 0.5)
        sae.b_enc.copy_(torch.randn(NUM_LATENTS, generator=g) * 0.3)
        sae.W_enc.add_(torch.randn(NUM_LATENTS, D_IN, generator=g) * 0.2)  # not the decoder's transpose any more
    return sae.eval().requires_grad_(False)


def raw_tokens(sae, n: int = N_TOKENS) -> torch.Tensor:
    """(N, C) raw tokens distributed like the ones the SAE was standardised for."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, D_IN, generator=g) * sae.sigma + sae.mu


@pytest.fixture(scope="module")
def sae():
    return make_sae()


@pytest.fixture
def sae_dir(sae, tmp_path) -> Path:
    return sae.save_pretrained(tmp_path / "sae")
