"""Tokens/s delivered by the cached and the live token sources at a given batch size.

    python benchmarks/token_sources.py [--classifier CKPT] [--batch 4096]

Without --classifier it uses checkpoints/quickstart/classifier/best.ckpt when present, else a
randomly initialised classifier on a small sketch world written to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def random_classifier(folder: Path, n_images: int = 2048) -> Path:
    """A classifier checkpoint with random weights on a fresh sketch world (the layout load_classifier reads)."""
    from sae_lab.data.export import export_world
    from sae_lab.data.world import CLASSES
    from sae_lab.lit.classifier import ClassifierModule

    world = export_world(folder / "world", n_images, 64, image_size=64, progress=False)
    module = ClassifierModule(class_names=list(CLASSES))
    hparams = dict(module.hparams)
    data = {"data": str(world), "image_size": 64, "val_fraction": 0.1, "split_seed": 0, "test_split": "test",
            "cache_dir": str(folder)}  # fmt: skip
    path = folder / "classifier.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams, "datamodule_hyper_parameters": data},
               path)  # fmt: skip
    return path


def rate(dataset, max_batches: int) -> tuple[float, int]:
    """(tokens/s, batches) over up to `max_batches` batches, after one warm-up batch."""
    it = iter(dataset)
    next(it)
    n, t0 = 0, time.perf_counter()
    for n, batch in enumerate(it, start=1):
        assert batch.ndim == 2
        if n == max_batches:
            break
    seconds = time.perf_counter() - t0
    return n * len(batch) / seconds, n


def measure_token_sources(
    classifier: str | None = None, batch: int = 4096, max_batches: int = 20, cache_dir: str | None = None
) -> list[dict]:
    from sae_lab.data.token_datamodule import FeatureTokenDataModule

    tmp = Path(tempfile.mkdtemp(prefix="token_bench_"))
    default = Path("checkpoints/quickstart/classifier/best.ckpt")
    ckpt = Path(classifier) if classifier else (default if default.exists() else random_classifier(tmp))
    rows = []
    for source in ("cached", "live"):
        dm = FeatureTokenDataModule(str(ckpt), source=source, cache_dir=cache_dir or str(tmp / "tokens"), batch_size=batch,
                                    image_batch_size=256, shuffle_buffer=4 * batch)  # fmt: skip
        t0 = time.perf_counter()
        dm.prepare_data()
        dm.setup("fit")
        setup_s = time.perf_counter() - t0
        tokens_per_s, n = rate(dm._train_dataset(shuffle=True), max_batches)
        rows.append({"source": source, "tokens_per_s": tokens_per_s, "batches": n, "setup_s": setup_s})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classifier", default=None)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--cache-dir", default=None, help="an existing token cache of this classifier (else a fresh one)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    for row in measure_token_sources(args.classifier, args.batch, args.batches, args.cache_dir):
        print(f"token source {row['source']:<7} {row['tokens_per_s']:>12,.0f} tokens/s at batch {args.batch} "
              f"({row['batches']} batches; setup {row['setup_s']:.1f}s)")  # fmt: skip


if __name__ == "__main__":
    main()
