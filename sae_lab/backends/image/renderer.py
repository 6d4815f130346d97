"""The offline image backend: the sketch-world renderer drawing what a prompt names."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from sae_lab.backends.image.base import ImageBackend, check_lengths


class RendererBackend(ImageBackend):
    """The sketch-world renderer as a text-to-image model: draws the primitives (or classes) a prompt names.

    Args:
        image_size: Side of the square images in pixels (the classifier's own size is best).
        world_seed: Seed of the sketch world (stroke style); the prompt seed picks placement and jitter.
    """

    name = "renderer"

    def __init__(self, image_size: int = 64, world_seed: int = 0) -> None:
        from sae_lab.data.world import SketchWorld

        self.world = SketchWorld(image_size=image_size, seed=world_seed)

    @property
    def identity(self) -> str:
        return f"renderer(size={self.world.image_size},world_seed={self.world.seed})"

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image | None]:
        check_lengths(prompts, seeds)
        images = []
        for prompt, seed in zip(prompts, seeds):
            pixels, drawn = self.world.render_prompt(prompt, int(seed))
            image = Image.fromarray(pixels, mode="L")
            image.info["primitives"] = list(drawn)  # annotations the offline perception backend reads
            images.append(image)
        return images
