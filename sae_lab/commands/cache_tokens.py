"""`python -m sae_lab cache-tokens`: write a classifier's feature tokens as memory-mapped shards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

HELP = "write token shards (+ manifest) for a classifier checkpoint's explained layer"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CacheTokensSettings:
    """Which classifier's tokens to cache, on which images, and how they are stored."""

    classifier: str
    """Classifier checkpoint (e.g. checkpoints/<name>/best.ckpt)."""
    out: str | None = None
    """Shard folder (None: <checkpoint folder>/tokens)."""
    splits: str = "train,val"
    """Comma-separated splits to cache (train, val, test)."""
    data: str | None = None
    """Image source override (None: the classifier's own)."""
    batch_size: int = 256
    """Images per forward pass."""
    shard_images: int = 4096
    """Images per shard file."""
    dtype: Literal["float16", "float32"] = "float16"
    """Token storage type."""
    device: str = "cpu"
    """Device for the classifier (cpu, cuda, cuda:1, …)."""
    overwrite: bool = False
    """Rebuild a cache written by another classifier."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        bad = [s for s in self.split_names if s not in SPLITS]
        if bad or not self.split_names:
            raise ValueError(f"splits must be a comma-separated list of {', '.join(SPLITS)}, got {self.splits!r}")
        if self.batch_size < 1 or self.shard_images < 1:
            raise ValueError(f"batch_size and shard_images must be >= 1, got {self.batch_size}, {self.shard_images}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, got {self.dtype!r}")

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.splits.split(",") if s.strip())

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.classifier).parent / "tokens"


def run_cache_tokens(s: CacheTokensSettings) -> int:
    from sae_lab.data.token_cache import read_manifest, write_token_cache

    write_token_cache(s.classifier, s.out_dir, s.split_names, s.data, s.batch_size, s.shard_images, s.dtype,
                      s.device, s.overwrite, progress=s.progress)  # fmt: skip
    manifest = read_manifest(s.out_dir)
    sizes = ", ".join(f"{k}: {v['n_tokens']} tokens" for k, v in manifest["splits"].items())
    print(f"token cache at {s.out_dir} ({sizes}; d_in={manifest['d_in']}, {s.dtype})")
    return 0
