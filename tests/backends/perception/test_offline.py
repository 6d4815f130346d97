"""The offline perception backend and captioner on annotated sketch-world images (probe set and renderer)."""

import json

import numpy as np
import pytest
from PIL import Image

from sae_lab.backends.image import ImageCache, RendererBackend
from sae_lab.backends.perception import make_captioner, make_perception, parse_concept
from sae_lab.backends.perception.offline import annotation, describe
from sae_lab.data.world import CLASSES, PRIMITIVES, SYNONYMS, primitives_in_text
from tests.backends.perception.annotated import SIZE, probe_images


def annotated(primitives=None, cls=None) -> Image.Image:
    image = Image.new("L", (8, 8), 255)
    if primitives is not None:
        image.info["primitives"] = list(primitives)
    if cls is not None:
        image.info["class"] = cls
    return image


def test_parse_concept_by_name_synonym_and_class():
    assert parse_concept("circle") == ((), ("circle",))
    assert parse_concept("rays around a ring") == ((), ("circle", "spokes"))
    assert parse_concept("Night Sky") == (("night sky",), ())  # no primitive read out of a class name
    assert parse_concept("a sun with dots") == (("sun",), ("dots",))
    assert parse_concept("sunburst") == ((), ("spokes",))  # a synonym, not the class "sun"
    assert not parse_concept("a banana").known
    assert parse_concept("circle, square, star and spiral").primitives == ("circle", "square", "star", "spiral")


def test_primitive_words_agree_with_the_world():
    for text in [w for words in SYNONYMS.values() for w in words] + ["a box with waves", "rays, dots and a star"]:
        assert list(parse_concept(text).primitives) == primitives_in_text(text), text


def test_presence_rules():
    images = [
        annotated(["circle", "spokes"], "sun"),
        annotated(["circle", "spokes", "cross"], "wheel"),
        annotated(["circle", "spokes"]),  # a rendered prompt: no class
        annotated(cls="house"),  # class only: its primitives are implied
        annotated([]),  # scribbles only
    ]
    concepts = ["circle", "sun", "spokes and cross", "house", "triangle", "banana"]
    backend = make_perception("offline")
    got = backend.presence(images, concepts)
    want = [
        [1, 1, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 0],  # a wheel has a circle and spokes but is not a sun
        [1, 1, 0, 0, 0, 0],  # no class: "sun" iff all of the sun's primitives
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0],
    ]
    np.testing.assert_array_equal(got, np.array(want, np.float32))
    assert got.dtype == np.float32 and backend.known("sun") and not backend.known("banana")
    assert backend.images_embedded == len(images)


def test_presence_on_probe_images_matches_the_ground_truth():
    images = probe_images(20)
    got = make_perception("offline").presence(images, list(PRIMITIVES) + list(CLASSES))
    for i, image in enumerate(images):
        prims = set(image.info["primitives"])
        assert prims == set(CLASSES[image.info["class"]])
        np.testing.assert_array_equal(got[i, : len(PRIMITIVES)], [p in prims for p in PRIMITIVES])
        np.testing.assert_array_equal(got[i, len(PRIMITIVES) :], [c == image.info["class"] for c in CLASSES])


def test_similarity_is_jaccard_and_embeddings_are_unit():
    a = [annotated(["circle", "spokes"]), annotated([])]
    b = [annotated(["circle", "cross", "spokes"]), annotated(["square"]), annotated([])]
    backend = make_perception("offline")
    np.testing.assert_allclose(backend.similarity(a, b), [[2 / 3, 0, 0], [0, 0, 1]], atol=1e-6)
    emb = backend.embed(a + b)
    assert emb.shape == (5, len(PRIMITIVES))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), [1, 0, 1, 1, 0], atol=1e-6)


def test_captions_from_annotations():
    images = [
        annotated(["spokes", "circle"]),
        annotated(["arc", "dots", "wave"]),
        annotated([]),
        annotated(cls="house"),
    ]
    captioner = make_captioner("offline", cache_dir="ignored")
    assert captioner.caption(images) == [
        "a sketch of a circle and spokes",
        "a sketch of a wave, dots and an arc",
        "a sketch of scribbles",
        "a sketch of a square and a triangle",
    ]
    assert captioner.captions == 4 and captioner.failures == 0


def test_renderer_images_round_trip_through_the_image_cache(tmp_path):
    renderer = RendererBackend(image_size=SIZE)
    drawn = renderer.generate(["a ring with rays", "a banana"], [1, 2])
    assert [im.info["primitives"] for im in drawn] == [["circle", "spokes"], []]
    cache = ImageCache(tmp_path, renderer, "a sketch of {concept}", seed=0)
    cache.ensure(["sun", "banana"], 2)
    suns, bananas = cache.load("sun", 2), cache.load("banana", 2)
    assert [im.info["primitives"] for im in suns + bananas] == [["circle", "spokes"]] * 2 + [[]] * 2
    with Image.open(cache.paths("sun", 1)[0]) as raw:  # stored as a PNG text chunk
        assert json.loads(raw.text["primitives"]) == ["circle", "spokes"]
    backend = make_perception("offline")
    np.testing.assert_array_equal(backend.presence(suns + bananas, ["sun", "circle", "square"]),
                                  [[1, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])  # fmt: skip
    assert make_captioner("offline").caption(suns[:1]) == ["a sketch of a circle and spokes"]


def test_annotations_as_json_text_and_bad_annotations():
    image = annotated()
    image.info["primitives"] = '["star", "dots"]'
    assert annotation(image).primitives == {"star", "dots"}
    assert describe(annotation(image)) == "a sketch of a star and dots"
    with pytest.raises(ValueError, match="unknown primitives"):
        annotation(annotated(["blob"]))


def test_bad_input():
    backend = make_perception("offline")
    plain = Image.new("RGB", (4, 4))
    with pytest.raises(ValueError, match="image 1 has no sketch-world annotations"):
        backend.presence([annotated(["circle"]), plain], ["circle"])
    with pytest.raises(ValueError, match="no sketch-world annotations"):
        make_captioner("offline").caption([plain])
    with pytest.raises(ValueError, match="empty"):
        backend.presence([annotated(["circle"])], [])
    with pytest.raises(ValueError, match="duplicated concepts: 'circle', 'star'"):
        backend.presence([annotated(["circle"])], ["circle", "star", "circle ", "dots", "star"])
    with pytest.raises(TypeError, match="takes no options"):
        make_perception("offline", a=3.0)
    assert backend.presence([], ["circle"]).shape == (0, 1)
