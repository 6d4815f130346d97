"""CLIP and SigLIP presence and embeddings on tiny random checkpoints loaded with ``from_pretrained``."""

import numpy as np
import pytest
from PIL import Image

from sae_lab.backends.perception import make_perception
from sae_lab.backends.perception.hf import HFPerception
from sae_lab.backends.perception.hub import ModelNotAvailable
from tests.backends.perception.annotated import probe_images
from tests.helpers.threads import one_thread  # noqa: F401

CONCEPTS = ["circle", "sun", "a sketch of spokes"]


@pytest.fixture(params=["clip", "siglip"])
def model_dir(request, tiny_clip, tiny_siglip):
    return {"clip": tiny_clip, "siglip": tiny_siglip}[request.param]


def backend(path, cache_dir, **opts) -> HFPerception:
    return make_perception(f"hf:{path}", cache_dir=cache_dir, device="cpu", **{"batch_size": 4, **opts})


def test_presence_shapes_range_and_family_defaults(model_dir, tmp_path):
    vlm = backend(model_dir, tmp_path)
    images = probe_images(6)
    p = vlm.presence(images, CONCEPTS)
    assert p.shape == (6, 3) and p.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1)) and np.isfinite(p).all()
    emb = vlm.embed(images)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = vlm.cosine(images, CONCEPTS)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-vlm.a * (cos + vlm.b))), atol=1e-6)
    assert (vlm.a, vlm.b) == ((60.0, -0.09) if vlm.family == "siglip" else (50.0, -0.25))
    assert vlm.family == model_dir.name.split("-")[1] and "dtype=float32" in vlm.identity and "a=" in vlm.identity
    sim = vlm.similarity(images[:2], images)
    assert sim.shape == (2, 6)
    np.testing.assert_allclose(np.diag(sim[:, :2]), 1.0, atol=1e-5)


def test_second_call_and_a_new_backend_hit_the_disk_cache(model_dir, tmp_path):
    images = probe_images(5)
    first = backend(model_dir, tmp_path)
    p1 = first.presence(images + images[:2], CONCEPTS)  # duplicates are embedded once
    assert (first.images_embedded, first.texts_embedded, first.cache_hits) == (5, 3, 0)
    p2 = first.presence(images, CONCEPTS[:2])
    assert (first.images_embedded, first.cache_hits) == (5, 5)
    again = backend(model_dir, tmp_path)  # another run: everything comes from disk
    p3 = again.presence(images, CONCEPTS)
    assert (again.images_embedded, again.texts_embedded, again.cache_hits) == (0, 0, 5)
    np.testing.assert_allclose(p1[:5], p3, atol=1e-6)
    np.testing.assert_allclose(p2, p3[:, :2], atol=1e-6)
    other = backend(model_dir, tmp_path, template="a drawing of {concept}")  # other text: other namespace
    other.presence(images[:1], CONCEPTS)
    assert other.texts_embedded == 3 and other.images_embedded == 1


def test_a_killed_run_keeps_the_shards_it_wrote(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setattr("sae_lab.backends.perception.hf.SHARD_IMAGES", 2)
    images = probe_images(5)
    vlm = backend(tiny_clip, tmp_path, batch_size=1)
    embed_images = vlm._embed_images

    def dies_on_the_fifth(chunk):
        if chunk[0] is images[4]:
            raise KeyboardInterrupt
        return embed_images(chunk)

    monkeypatch.setattr(vlm, "_embed_images", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        vlm.embed(images)
    assert len(list((vlm.image_store.folder).glob("*.npz"))) == 2
    resumed = backend(tiny_clip, tmp_path)
    resumed.embed(images)
    assert (resumed.cache_hits, resumed.images_embedded) == (4, 1)


def test_calibrated_values_change_presence_not_embeddings(tiny_siglip, tmp_path):
    images = probe_images(3)
    vlm = backend(tiny_siglip, tmp_path, a=10.0, b=0.0)
    p = vlm.presence(images, CONCEPTS)
    vlm.a, vlm.b = 20.0, -0.1
    assert "a=20,b=-0.1" in vlm.identity
    q = vlm.presence(images, CONCEPTS)
    assert vlm.images_embedded == 3 and not np.allclose(p, q)


def test_images_of_any_mode_and_size_are_converted(tiny_clip, tmp_path):
    vlm = backend(tiny_clip, tmp_path)
    grey = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 45), dtype=np.uint8), mode="L")
    wide = Image.fromarray(np.asarray(grey, np.uint16) * 257)  # 16-bit: the same picture
    assert wide.mode.startswith("I")
    rgba = grey.convert("RGBA")
    images = [grey, wide, rgba, grey.convert("RGB").resize((7, 300)), grey.convert("1"), grey.convert("P")]
    p = vlm.presence(images, CONCEPTS)
    assert p.shape == (6, 3) and np.all((p >= 0) & (p <= 1))
    emb = vlm.embed(images[:3])
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-5)  # 16-bit rescaled, not clipped to white
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-5)  # opaque RGBA is the same picture


def test_bad_input(tiny_clip, tmp_path):
    vlm = backend(tiny_clip, tmp_path)
    image = probe_images(1)
    with pytest.raises(ValueError, match="concept list is empty"):
        vlm.presence(image, [])
    with pytest.raises(ValueError, match="duplicated concepts: 'sun'"):
        vlm.presence(image, ["sun", "circle", "sun"])
    with pytest.raises(TypeError, match="not a PIL image"):
        vlm.presence([np.zeros((4, 4))], ["sun"])
    assert vlm.presence([], ["sun"]).shape == (0, 1) and vlm.embed([]).shape == (0, 8)


def test_unknown_specs_and_models(tmp_path, tiny_blip):
    for spec in ("clip", "hf:", "siglip:google/x", "offline:x", ""):
        with pytest.raises(ValueError, match=r"expected offline \| hf:"):
            make_perception(spec)
    with pytest.raises(ModelNotAvailable, match="'acme/not-downloaded-siglip'.*needs a download"):
        make_perception("hf:acme/not-downloaded-siglip", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no model folder"):
        make_perception(f"hf:{tmp_path}/missing", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="neither CLIP nor SigLIP"):
        make_perception(f"hf:{tiny_blip}", cache_dir=tmp_path)
