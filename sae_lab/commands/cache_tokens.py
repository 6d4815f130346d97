"""`python -m sae_lab cache-tokens`: write a classifier's feature tokens as memory-mapped shards."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write token shards (+ manifest) for a classifier checkpoint's explained layer"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classifier", required=True, help="classifier checkpoint (e.g. checkpoints/<name>/best.ckpt)")
    p.add_argument("--out", default=None, help="shard folder (default: <checkpoint folder>/tokens)")
    p.add_argument("--splits", default="train,val", help="comma-separated splits to cache (train, val, test)")
    p.add_argument("--data", default=None, help="image source override (default: the classifier's own)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--shard-images", type=int, default=4096, help="images per shard file")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"), help="token storage type")
    p.add_argument("--device", default="cpu", help="device for the classifier (cpu, cuda, cuda:1, …)")
    p.add_argument("--overwrite", action="store_true", help="rebuild a cache written by another classifier")


def run(args: argparse.Namespace) -> int:
    from sae_lab.data.tokens import read_manifest, write_token_cache

    out = Path(args.out) if args.out else Path(args.classifier).parent / "tokens"
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    write_token_cache(args.classifier, out, splits, args.data, args.batch_size, args.shard_images, args.dtype,
                      args.device, args.overwrite)  # fmt: skip
    manifest = read_manifest(out)
    sizes = ", ".join(f"{k}: {v['n_tokens']} tokens" for k, v in manifest["splits"].items())
    print(f"token cache at {out} ({sizes}; d_in={manifest['d_in']}, {args.dtype})")
    return 0
