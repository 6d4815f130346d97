"""Occlusion maps cached on disk, keyed by content: a re-run with another vocabulary, perception backend, patch
rule or latent set runs no forward pass for a (latent, image) pair it has already occluded.

A map depends on the SAE + classifier pair, the image (its split and row), the occluder and the stride; those
name the cache folder. Each explained chunk adds one shard (``safetensors``: the pairs and their (Y, X) drops),
written atomically, so a killed run keeps the shards of the chunks it finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

Pair = tuple[int, int]
"""(latent, dataset row of the image)."""


class DropCache:
    """The cached maps of one (SAE, split, image size, occluder, stride).

    Args:
        root: the folder holding every key's folder (``reports/<run>/patches/occlusion``).
        key: what the maps depend on.
    """

    def __init__(self, root: Path, key: dict) -> None:
        self.key = json.dumps(key, sort_keys=True)
        self.dir = Path(root) / hashlib.sha1(self.key.encode()).hexdigest()[:16]
        self._maps: dict[Pair, Tensor] | None = None

    def maps(self) -> dict[Pair, Tensor]:
        """Every cached map (read once; unreadable or foreign shards are skipped with a warning)."""
        if self._maps is None:
            from safetensors import safe_open

            self._maps = {}
            for path in sorted(self.dir.glob("*.safetensors")):
                try:
                    with safe_open(str(path), framework="pt") as f:
                        if (f.metadata() or {}).get("key") != self.key:
                            continue
                        pairs, drops = f.get_tensor("pairs"), f.get_tensor("drops")
                except (OSError, ValueError, RuntimeError) as e:  # a torn shard of a killed writer
                    logger.warning("occlusion cache %s unreadable (%s); skipped", path, e)
                    continue
                for (latent, row), d in zip(pairs.tolist(), drops):
                    self._maps[(latent, row)] = d
        return self._maps

    def put(self, maps: dict[Pair, Tensor]) -> None:
        """Adds a shard with ``maps``."""
        if not maps:
            return
        from safetensors.torch import save_file

        pairs = sorted(maps)
        tensors = {"pairs": torch.tensor(pairs, dtype=torch.long),
                   "drops": torch.stack([maps[p] for p in pairs]).float().contiguous()}  # fmt: skip
        name = hashlib.sha1(tensors["pairs"].numpy().tobytes()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.{os.getpid()}.tmp"
        save_file(tensors, str(tmp), metadata={"key": self.key})
        tmp.replace(self.dir / f"{name}.safetensors")
        self.maps().update(maps)


__all__ = ["DropCache", "Pair"]
