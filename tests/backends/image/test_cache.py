"""The on-disk image cache: each (backend, template, concept, seed, index) image generated once."""

from __future__ import annotations

import pytest

from sae_lab.backends.image import ImageCache, RendererBackend, image_seed

SIZE = 32


def test_cache_generates_each_image_once(tmp_path):
    class Counting(RendererBackend):
        calls: list[int] = []

        def generate(self, prompts, seeds):
            self.calls.append(len(prompts))
            return super().generate(prompts, seeds)

    backend = Counting(image_size=SIZE)
    cache = ImageCache(tmp_path, backend, "a drawing of {concept}", seed=3)
    assert cache.ensure(["star", "wave"], 4) == 8 and backend.calls == [8]  # one call for both concepts
    assert cache.ensure(["star", "wave", "dots"], 4) == 4 and backend.calls == [8, 4]
    assert cache.ensure(["dots"], 4) == 0 and cache.generated == 12
    assert len(list(tmp_path.glob("*.png"))) == 12 and len(cache.load("star", 4)) == 4
    other = ImageCache(tmp_path, backend, "a photo of {concept}", seed=3)  # another template: other images
    assert other.missing(["star"], 4) == [("star", i) for i in range(4)]
    assert image_seed(3, "star", 0) != image_seed(4, "star", 0) < 2**31
    with pytest.raises(ValueError, match="placeholder"):
        ImageCache(tmp_path, backend, "no placeholder", 0)
