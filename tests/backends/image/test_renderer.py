"""The sketch-world renderer as an image backend, and the spec grammar that picks a backend."""

from __future__ import annotations

import numpy as np
import pytest

from sae_lab.backends.image import RendererBackend, make_image_backend

SIZE = 32
PROMPTS = ["a simple line drawing of a spiral", "a simple line drawing of a star", "a simple line drawing of a cat"]


def test_renderer_draws_what_the_prompt_names_deterministically():
    r = RendererBackend(image_size=SIZE)
    a, b, c = r.generate(PROMPTS, [1, 1, 1])
    assert a.size == (SIZE, SIZE) and a.mode == "L"
    assert np.array_equal(np.asarray(a), np.asarray(r.generate(PROMPTS[:1], [1])[0]))
    assert not np.array_equal(np.asarray(a), np.asarray(r.generate(PROMPTS[:1], [2])[0]))
    assert r.identity == f"renderer(size={SIZE},world_seed=0)"
    with pytest.raises(ValueError, match="seeds"):
        r.generate(PROMPTS, [1])


def test_spec_grammar():
    assert isinstance(make_image_backend("renderer", image_size=SIZE), RendererBackend)
    for bad in ("dalle", "renderer:big", "diffusers:", "replicate:"):
        with pytest.raises(ValueError):
            make_image_backend(bad)
