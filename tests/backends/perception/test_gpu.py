"""The tiny CLIP, SigLIP and BLIP in half precision on a CUDA device, against float32 on the CPU."""

import numpy as np
import pytest
import torch

from sae_lab.backends.perception import make_captioner, make_perception
from tests.backends.perception.annotated import probe_images

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CONCEPTS = ["circle", "sun", "a sketch of spokes", "house"]
HALF = ["float16", "bfloat16"]


@pytest.mark.parametrize("dtype", ["auto", *HALF])
@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_presence_in_half_precision_matches_float32(family, dtype, tiny_clip, tiny_siglip, tmp_path):
    path = {"clip": tiny_clip, "siglip": tiny_siglip}[family]
    images = probe_images(16)
    cpu = make_perception(f"hf:{path}", cache_dir=tmp_path, device="cpu")
    gpu = make_perception(f"hf:{path}", cache_dir=tmp_path, device="cuda", dtype=dtype)
    assert gpu.hf.dtype_name in HALF and next(gpu.net.parameters()).dtype == gpu.hf.dtype
    assert gpu.embed_identity != cpu.embed_identity  # half-precision embeddings get their own cache namespace
    p = gpu.presence(images, CONCEPTS)
    assert p.shape == (16, 4) and np.all((p >= 0) & (p <= 1)) and gpu.images_embedded == 16
    # bf16 keeps 8 bits of mantissa: cosines of unit vectors agree to about 1e-2
    np.testing.assert_allclose(gpu.cosine(images, CONCEPTS), cpu.cosine(images, CONCEPTS), atol=0.03)
    np.testing.assert_allclose(np.linalg.norm(gpu.embed(images), axis=1), 1.0, atol=1e-5)
    assert gpu.cache_hits == 32


@pytest.mark.parametrize("dtype", HALF)
def test_blip_captions_in_half_precision(dtype, tiny_blip, tmp_path):
    captioner = make_captioner(f"hf:{tiny_blip}", cache_dir=tmp_path, device="cuda", dtype=dtype)
    captions = captioner.caption(probe_images(4))
    assert all(isinstance(c, str) for c in captions) and captioner.failures == 0
