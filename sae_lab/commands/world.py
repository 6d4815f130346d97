"""`python -m sae_lab world --out DIR`: the sketch world as TU-Berlin-format parquet."""

from __future__ import annotations

from dataclasses import dataclass

HELP = "export the built-in sketch world as parquet in the TU-Berlin schema (+ primitive masks)"


@dataclass(frozen=True)
class WorldSettings:
    """The images of the built-in sketch world, rendered and written as parquet."""

    out: str
    """Output folder (data/train-*.parquet, data/test-*.parquet, world.json)."""
    n_train: int = 8000
    """Training images."""
    n_test: int = 1000
    """Held-out test images."""
    image_size: int = 64
    """Side of the square images in pixels."""
    seed: int = 0
    """World seed (same seed, same images)."""
    workers: int | None = None
    """Rendering processes (None: up to 4)."""
    overwrite: bool = False
    """Replace an existing output folder."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        if self.n_train < 1 or self.n_test < 0:
            raise ValueError(f"n_train must be >= 1 and n_test >= 0, got {self.n_train} and {self.n_test}")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [16, 1024], got {self.image_size}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1 (or None), got {self.workers}")


def run_world(s: WorldSettings) -> int:
    from sae_lab.data.export import export_world

    out = export_world(s.out, s.n_train, s.n_test, s.image_size, s.seed, workers=s.workers, overwrite=s.overwrite,
                       progress=s.progress)  # fmt: skip
    print(f"wrote the sketch world ({s.n_train} train, {s.n_test} test) to {out}")
    return 0
