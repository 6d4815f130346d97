"""Writes the sketch world as parquet in the TU-Berlin schema (plus its ground truth).

Layout (what ``datasets.load_dataset(folder)`` reads as splits ``train`` and ``test``)::

    out/
      data/train-00000-of-00001.parquet   columns: image {bytes: PNG}, label (ClassLabel),
      data/test-00000-of-00001.parquet             primitives (list of primitive ids),
      world.json                                   primitive_masks {bytes: 16-bit PNG bitmask}

``primitive_masks`` holds one bit per primitive (bit p set where primitive p's strokes are).
The folder is written under a temporary name (``out.tmp-<pid>``) and renamed, so a half-written export is never
read; an old world being replaced is first moved aside as ``out.tmp-<pid>-old``. The next export cleans what a killed
one left: only names of that pattern whose process is gone (a concurrent export's are its own), and a ``-old`` world
goes back in place when the kill came between the two renames.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from sae_lab.data.world import CLASSES, PRIMITIVES, SketchWorld
from sae_lab.run.leftovers import OWNER, mark_owner, owned_elsewhere, pid_alive

logger = logging.getLogger(__name__)

WORLD_META = "world.json"

_LEFTOVER = re.compile(r"^(?P<base>.+)\.tmp-(?P<pid>\d+)(?P<old>-old)?$")


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def encode_masks(masks: np.ndarray) -> bytes:
    """(P, S, S) bool → 16-bit PNG with bit p set where mask p is (P <= 16)."""
    bits = np.zeros(masks.shape[1:], np.uint16)
    for p in range(masks.shape[0]):
        bits |= masks[p].astype(np.uint16) << p
    return png_bytes(bits)


def decode_mask_bits(data: bytes) -> np.ndarray:
    """The (S, S) uint16 bitmask of :func:`encode_masks` (bit p set where mask p is)."""
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.uint16)


def decode_masks(data: bytes, num_primitives: int) -> np.ndarray:
    """Inverse of :func:`encode_masks`: (P, S, S) bool."""
    return unpack_bits(decode_mask_bits(data), num_primitives)


def unpack_bits(bits: np.ndarray, num_primitives: int) -> np.ndarray:
    """(...) uint16 bitmask → (P, ...) bool, one plane per primitive."""
    return ((bits[None] >> np.arange(num_primitives, dtype=np.uint16).reshape(-1, *[1] * bits.ndim)) & 1).astype(bool)


def pool_mask_bits(bits: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(S1, S2) bitmask → (h, w) bitmask of the adaptive-pooling cells: a cell's bit p is set when any of its pixels
    has it (cells [⌊i·S/h⌋, ⌈(i+1)·S/h⌉) as in ``adaptive_max_pool2d``). One OR-reduction serves every primitive."""
    s1, s2 = bits.shape
    h, w = grid
    if s1 % h == 0 and s2 % w == 0:  # equal blocks: two reshaped reductions
        return np.bitwise_or.reduce(np.bitwise_or.reduce(bits.reshape(h, s1 // h, s2), axis=1).reshape(h, w, -1), 2)
    rows = np.stack([np.bitwise_or.reduce(bits[(i * s1) // h : -(-(i + 1) * s1 // h)], 0) for i in range(h)])
    return np.stack([np.bitwise_or.reduce(rows[:, (j * s2) // w : -(-(j + 1) * s2 // w)], 1) for j in range(w)], 1)


def _rows(args: tuple[int, int, int, str, int, int]) -> list[dict]:
    image_size, seed, supersample, split, start, stop = args
    world = SketchWorld(image_size=image_size, seed=seed, supersample=supersample)
    rows = []
    for i in range(start, stop):
        s = world.sample(i, split)
        rows.append(
            {
                "image": {"bytes": png_bytes(s.image), "path": None},
                "label": s.label,
                "primitives": np.flatnonzero(s.primitives).tolist(),
                "primitive_masks": {"bytes": encode_masks(s.masks), "path": None},
            }
        )
    return rows


def world_features():
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=list(CLASSES)),
            "primitives": datasets.List(datasets.ClassLabel(names=list(PRIMITIVES))),
            "primitive_masks": datasets.Image(),
        }
    )


def export_world(
    out: str | os.PathLike,
    n_train: int = 8000,
    n_test: int = 1000,
    image_size: int = 64,
    seed: int = 0,
    supersample: int = 3,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Renders the world and writes it as parquet; returns the folder.

    Every argument is checked before anything is touched; the new world is written beside ``out`` and swapped in at
    the end, so a failed or killed run leaves the old one; ``overwrite`` replaces only a folder this function wrote
    (it holds ``world.json``), never any other folder.

    Raises:
        FileExistsError: `out` exists and `overwrite` is False, or it is not a world export.
        ValueError: an argument out of range (naming it).
    """
    for name, value, lo, hi in (("n_train", n_train, 1, 10_000_000), ("n_test", n_test, 0, 10_000_000),
                                ("image_size", image_size, 16, 1024), ("supersample", supersample, 1, 8)):  # fmt: skip
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    out = Path(out)
    clean_leftovers(out)  # first: it may put back the old world a killed export had moved aside
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
        if not (out / WORLD_META).is_file():
            raise FileExistsError(f"{out} is not a sketch-world export (no {WORLD_META}); refusing to replace it")
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    (tmp / "data").mkdir(parents=True)
    mark_owner(tmp)  # pid and host: an export running on another machine of a shared folder is left alone
    try:
        _write_world(tmp, n_train, n_test, image_size, seed, supersample, workers, progress)
    except BaseException:  # a failure (not a kill) cleans up at once; a kill's leftovers go with the next run
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / OWNER).unlink()
    if out.exists():  # swap: the old world goes only once the new one is complete
        old = out.with_name(out.name + f".tmp-{os.getpid()}-old")
        mark_owner(out)  # travels with it to `old`; removed again if a later run restores it
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def _write_world(tmp: Path, n_train: int, n_test: int, image_size: int, seed: int, supersample: int,
                 workers: int | None, progress: bool) -> None:  # fmt: skip
    """Renders both splits into ``tmp/data`` and writes ``tmp/world.json`` last (what marks a complete export)."""
    import datasets

    workers = workers or min(4, os.cpu_count() or 1)
    features = world_features()
    for split, n in (("train", n_train), ("test", n_test)):
        chunk = max(64, n // (workers * 4) + 1)
        jobs = [(image_size, seed, supersample, split, a, min(n, a + chunk)) for a in range(0, n, chunk)]
        rows: list[dict] = []
        bar = _progress(progress, n, f"world {split}")
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers) as pool:
                for part in pool.map(_rows, jobs):
                    rows += part
                    bar.update(len(part))
        else:
            for job in jobs:
                part = _rows(job)
                rows += part
                bar.update(len(part))
        bar.close()
        table = datasets.Dataset.from_list(rows, features=features)
        table.to_parquet(str(tmp / "data" / f"{split}-00000-of-00001.parquet"))
    meta = {
        "primitives": list(PRIMITIVES),
        "classes": {name: list(prims) for name, prims in CLASSES.items()},
        "image_size": image_size,
        "seed": seed,
        "supersample": supersample,
        "n_train": n_train,
        "n_test": n_test,
    }
    (tmp / WORLD_META).write_text(json.dumps(meta, indent=1))


def clean_leftovers(out: str | os.PathLike) -> list[Path]:
    """Cleans what killed exports of ``out`` left beside it; returns the removed paths.

    Only ``out.tmp-<pid>`` and ``out.tmp-<pid>-old`` folders whose process is gone are touched (a concurrent export's
    are left alone, as are those marked by another host). When ``out`` is missing, an export was killed between moving
    the old world aside and moving the new one in: the old world (the newest complete ``-old``) is put back.
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    new, old = [], []
    for path in out.parent.iterdir():
        m = _LEFTOVER.match(path.name)
        if m is None or m["base"] != out.name or not path.is_dir() or path.is_symlink():
            continue
        pid = int(m["pid"])  # this process's own are an earlier call's, which failed (its name would be reused)
        if (pid != os.getpid() and pid_alive(pid)) or owned_elsewhere(path):
            continue
        (old if m["old"] else new).append(path)
    if not out.exists() and not out.is_symlink():
        complete = [p for p in old if (p / WORLD_META).is_file()]
        if complete:
            keep = max(complete, key=lambda p: p.stat().st_mtime)
            os.replace(keep, out)
            (out / OWNER).unlink(missing_ok=True)
            old.remove(keep)
            logger.warning("restored %s from %s, left by an export killed while replacing it", out, keep.name)
    removed = []
    for path in sorted(new + old):
        try:
            shutil.rmtree(path)
        except OSError as exc:
            logger.warning("could not remove %s, left by a killed export: %s", path, exc)
            continue
        removed.append(path)
    return removed


def _progress(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit="img", leave=False)


def pool_masks_any(masks, grid: tuple[int, int]) -> np.ndarray:
    """One image's pixel masks (P, S, S) → (H·W, P) bool token masks, a token on when any pixel of its
    adaptive-pooling cell is: :func:`sae_lab.stats.pool_masks` for one image, in numpy (no thread-pool round trips
    per image)."""
    m = np.asarray(masks, dtype=bool)
    p, s1, s2 = m.shape
    h, w = grid
    if s1 % h == 0 and s2 % w == 0:  # rows of cells first: any over contiguous blocks is the fast path
        out = m.reshape(p, h, s1 // h, s2).any(axis=2).reshape(p, h, w, s2 // w).any(axis=3)
    else:  # adaptive cells: [⌊i·S/h⌋, ⌈(i+1)·S/h⌉)
        rows = np.stack([m[:, (i * s1) // h : -(-(i + 1) * s1 // h)].any(1) for i in range(h)], 1)
        out = np.stack([rows[:, :, (j * s2) // w : -(-(j + 1) * s2 // w)].any(2) for j in range(w)], 2)
    return np.ascontiguousarray(out.reshape(p, h * w).T)
