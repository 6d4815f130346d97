"""Content-keyed stores on disk for embeddings and captions, shared by every latent, method and run.

A store is a folder of shards; each ``put`` writes one new shard atomically (temporary name, fsync, rename, via
:mod:`sae_lab.run.io`), so concurrent writers never clash and a kill leaves no half-written file. Shards are read
lazily and kept in memory; a lookup that misses re-scans the folder once for shards other processes wrote.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sae_lab.run.io import atomic_write_bytes

logger = logging.getLogger(__name__)

CACHE_ENV = "SAE_LAB_PERCEPTION_CACHE"
DEFAULT_CACHE = Path("~/.cache/sae_lab/perception")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$SAE_LAB_PERCEPTION_CACHE``, else ``~/.cache/sae_lab/perception``."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(cache_dir).expanduser()


def namespace(root: str | os.PathLike, identity: str) -> Path:
    """The folder of one backend identity: a readable slug plus a hash of the full identity."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", identity.split("(")[0])[-48:].strip("_") or "backend"
    return Path(root) / f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


class ShardedStore:
    """A key → value map on disk: float32 vectors (``kind="vectors"``, ``.npz`` shards) or texts (``"texts"``).

    Args:
        folder: Where the shards live (created on the first ``put``).
        kind: ``"vectors"`` or ``"texts"``.
    """

    def __init__(self, folder: str | os.PathLike, kind: str) -> None:
        if kind not in ("vectors", "texts"):
            raise ValueError(f"kind must be 'vectors' or 'texts', got {kind!r}")
        self.folder, self.kind = Path(folder), kind
        self.suffix = ".npz" if kind == "vectors" else ".json"
        self._values: dict[str, Any] = {}
        self._read: set[str] = set()

    def __len__(self) -> int:
        self._scan()
        return len(self._values)

    def _scan(self) -> None:
        """Reads shards not read yet; an unreadable shard is skipped with a warning (its keys are recomputed)."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob(f"*{self.suffix}")):
            if path.name in self._read:
                continue
            self._read.add(path.name)
            try:
                self._values.update(self._load(path))
            except (OSError, ValueError, KeyError) as e:
                logger.warning("skipping unreadable cache shard %s: %s", path, e)

    def _load(self, path: Path) -> dict[str, Any]:
        if self.kind == "texts":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return {str(k): str(v) for k, v in data.items()}
        with np.load(path, allow_pickle=False) as z:
            keys, vectors = z["keys"], z["vectors"]
            return {str(k): vectors[i] for i, k in enumerate(keys)}

    def get(self, keys: Sequence[str]) -> dict[str, Any]:
        """The stored values of those ``keys`` that are stored."""
        if not self._read or any(k not in self._values for k in keys):
            self._scan()
        return {k: self._values[k] for k in keys if k in self._values}

    def put(self, keys: Sequence[str], values: Sequence[Any] | np.ndarray) -> None:
        """Stores ``values[i]`` under ``keys[i]`` in one new shard."""
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys but {len(values)} values")
        if not len(keys):
            return
        name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24] + self.suffix
        if self.kind == "texts":
            payload = json.dumps(dict(zip(keys, map(str, values))), ensure_ascii=False).encode("utf-8")
            self._values.update(zip(keys, map(str, values)))
        else:
            vectors = np.asarray(values, dtype=np.float32)
            buffer = io.BytesIO()
            np.savez(buffer, keys=np.asarray(keys, dtype=str), vectors=vectors)
            payload = buffer.getvalue()
            self._values.update(zip(keys, vectors))
        atomic_write_bytes(self.folder / name, payload)
        self._read.add(name)
