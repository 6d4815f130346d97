"""The text-to-image backend interface: prompts and seeds in, one image per pair out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from PIL import Image


class ImageBackend(ABC):
    """A text-to-image generator: one image per (prompt, seed), in order; None where an image failed.

    Subclasses set ``name`` (a valid spec) and may extend :attr:`identity` with the settings that change the
    pictures, so that the image cache never mixes images from different settings.
    """

    name: str = "abstract"

    @property
    def identity(self) -> str:
        """Everything that determines the pictures besides prompt and seed (part of every cache key)."""
        return self.name

    @abstractmethod
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image | None]:
        """Images for ``prompts[i]`` drawn with ``seeds[i]``; the same prompt and seed give the same image."""

    def close(self) -> None:
        """Release models or connections."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identity={self.identity!r})"


def check_lengths(prompts: Sequence[str], seeds: Sequence[int]) -> None:
    """Raises ValueError unless there is one seed per prompt."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
