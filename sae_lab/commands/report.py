"""`python -m sae_lab report --sae DIR --run DIR`: the neuron report of a trained SAE."""

from __future__ import annotations

import argparse

HELP = "one pass of latent statistics over a dataset → reports/<run>/ (neurons.jsonl, exemplars, index.html)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sae", required=True, help="the SAE's export folder (cfg.json + sae.safetensors)")
    p.add_argument("--run", required=True, help="report folder, e.g. reports/quickstart (other stages' files stay)")
    p.add_argument("--classifier", default=None, help="classifier checkpoint (default: the one in the SAE's cfg.json)")
    p.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="images to measure on (default: test when the data has a held-out test split, else val)")  # fmt: skip
    p.add_argument("--data", default=None, help="image source override (default: the classifier's own data)")
    p.add_argument("--exemplars", type=int, default=16, help="exemplar images per latent")
    p.add_argument("--quantile", type=float, default=0.99, help="q of the on-threshold τ (z_max ≥ τ is 'on')")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    p.add_argument("--knockout-latents", type=_count_or_all, default=256,
                   help="latents whose knockout is measured: a number (evenly spaced ids; 0: none) or 'all'")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _count_or_all(value: str) -> int | None:
    if value == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got {value!r}") from None


def run(args: argparse.Namespace) -> int:
    from sae_lab.report import run_report

    block = run_report(
        args.sae,
        args.run,
        classifier=args.classifier,
        split=args.split,
        data=args.data,
        n_exemplars=args.exemplars,
        quantile=args.quantile,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        device=args.device,
        num_workers=args.num_workers,
        knockout_latents=args.knockout_latents,
    )
    recovered = (
        f"{block['primitives_recovered']}/{block['primitives_total']} primitives recovered, "
        f"{block['latents_matched']} live latents matched; "
        if block["primitives_total"]
        else ""
    )
    corr = block["knockout_corr"]
    print(
        f"wrote the neuron report to {args.run}/index.html: {recovered}"
        f"knockout r = {'n/a' if corr is None else f'{corr:.3f}'}; {block['seconds']:.0f}s"
    )
    return 0
