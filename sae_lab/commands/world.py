"""`python -m sae_lab world --out DIR`: the sketch world as TU-Berlin-format parquet."""

from __future__ import annotations

import argparse

HELP = "export the built-in sketch world as parquet in the TU-Berlin schema (+ primitive masks)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (data/train-*.parquet, data/test-*.parquet, world.json)")
    p.add_argument("--n-train", type=int, default=8000, help="training images")
    p.add_argument("--n-test", type=int, default=1000, help="held-out test images")
    p.add_argument("--image-size", type=int, default=64, help="side of the square images in pixels")
    p.add_argument("--seed", type=int, default=0, help="world seed (same seed, same images)")
    p.add_argument("--workers", type=int, default=None, help="rendering processes (default: up to 4)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    from sae_lab.data.export import export_world

    if args.n_train < 1 or args.n_test < 0:
        raise ValueError("--n-train must be >= 1 and --n-test >= 0")
    out = export_world(
        args.out, args.n_train, args.n_test, args.image_size, args.seed, workers=args.workers, overwrite=args.overwrite
    )
    print(f"wrote the sketch world ({args.n_train} train, {args.n_test} test) to {out}")
    return 0
