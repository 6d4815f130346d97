"""Append-only per-image arrays that grow by chunks, in RAM or as memory-mapped ``.npy`` files.

:class:`~sae_lab.stats.latent_stats.LatentStats` keeps every image's ``z_max`` and ``z_avg`` (one row of M
values per image) so that quantiles, PMI and ROC-AUC are exact after a single pass. With ``store_dir`` the rows
live in fixed-size ``.npy`` chunk files that are written once and re-opened read-only on demand, so resident
memory stays at one chunk per array however many images are seen.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

_NUMPY_DTYPES = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.uint8: np.uint8,
    torch.bool: np.bool_,
}


class ChunkedRows:
    """An (N, *row_shape) array that only grows, stored as a list of (chunk_rows, *row_shape) chunks.

    Args:
        row_shape: shape of one row, e.g. ``(num_latents,)``; ``()`` for a column of scalars.
        dtype: torch dtype of the values.
        chunk_rows: rows per chunk (the growth step).
        store_dir: None keeps chunks as torch tensors in RAM; a folder stores them as ``.npy`` memmaps in a fresh
            sub-folder of it (removed by :meth:`close`).
        name: prefix of the sub-folder and chunk files.
    """

    def __init__(
        self,
        row_shape: tuple[int, ...],
        dtype: torch.dtype,
        chunk_rows: int = 1024,
        store_dir: str | Path | None = None,
        name: str = "rows",
    ):
        if chunk_rows <= 0:
            raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
        if store_dir is not None and dtype not in _NUMPY_DTYPES:
            raise ValueError(f"dtype {dtype} cannot be memory-mapped")
        self.row_shape, self.dtype, self.chunk_rows, self.name = tuple(row_shape), dtype, chunk_rows, name
        self.folder: Path | None = None
        if store_dir is not None:
            Path(store_dir).mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=store_dir))
        self._chunks: list[Tensor | Path] = []  # RAM tensors, or paths of full memmap chunks
        self._open: np.memmap | None = None  # the memmap chunk being filled (store_dir mode)
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def on_disk(self) -> bool:
        return self.folder is not None

    def _new_chunk(self) -> None:
        shape = (self.chunk_rows, *self.row_shape)
        if self.folder is None:
            self._chunks.append(torch.empty(shape, dtype=self.dtype))
            return
        if self._open is not None:
            self._open.flush()
        path = self.folder / f"{self.name}-{len(self._chunks):06d}.npy"
        self._open = np.lib.format.open_memmap(path, mode="w+", dtype=_NUMPY_DTYPES[self.dtype], shape=shape)
        self._chunks.append(path)

    def append(self, rows: Tensor) -> None:
        """Append rows (n, *row_shape); they are copied to the CPU."""
        rows = rows.detach().to("cpu", self.dtype)
        if tuple(rows.shape[1:]) != self.row_shape:
            raise ValueError(f"{self.name}: rows of shape {tuple(rows.shape[1:])}, expected {self.row_shape}")
        done = 0
        while done < len(rows):
            offset = self._len % self.chunk_rows
            if offset == 0 and self._len // self.chunk_rows == len(self._chunks):
                self._new_chunk()
            take = min(self.chunk_rows - offset, len(rows) - done)
            part = rows[done : done + take]
            if self.folder is None:
                self._chunks[-1][offset : offset + take] = part
            else:
                self._open[offset : offset + take] = part.numpy()
            done += take
            self._len += take

    def _chunk(self, i: int) -> Tensor | np.ndarray:
        chunk = self._chunks[i]
        if isinstance(chunk, Tensor):
            return chunk
        if i == len(self._chunks) - 1 and self._open is not None:
            return self._open
        return np.load(chunk, mmap_mode="r")

    def iter_chunks(self, columns: slice | None = None) -> Iterator[Tensor]:
        """Yields the filled part of each chunk as a fresh CPU tensor (n_i, …), optionally ``[:, columns]``."""
        for i in range(len(self._chunks)):
            n = min(self.chunk_rows, self._len - i * self.chunk_rows)
            chunk = self._chunk(i)[:n] if columns is None else self._chunk(i)[:n, columns]
            yield chunk.clone() if isinstance(chunk, Tensor) else torch.from_numpy(np.array(chunk))

    def read(self, columns: slice | None = None) -> Tensor:
        """All rows as one (N, …) tensor; ``columns`` slices the first row dimension (e.g. a chunk of latents)."""
        parts = list(self.iter_chunks(columns))
        if parts:
            return torch.cat(parts)
        shape = list(self.row_shape)
        if columns is not None:
            shape[0] = len(range(*columns.indices(shape[0])))
        return torch.empty((0, *shape), dtype=self.dtype)

    def extend(self, other: ChunkedRows) -> None:
        """Append all rows of ``other`` (chunk by chunk, so memory stays bounded)."""
        for chunk in other.iter_chunks():
            self.append(chunk)

    def close(self) -> None:
        """Forget the rows and delete the chunk files (store_dir mode)."""
        self._open = None
        self._chunks, self._len = [], 0
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
