"""`python -m sae_lab label --run DIR --llm SPEC`: a short concept per latent from its statistics, with an LLM."""

from __future__ import annotations

import argparse

SHOWN_ERRORS = 5
HELP = "name each live latent with an LLM from its statistics (+ exemplar sprite) → reports/<run>/labels.jsonl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sae_lab.backends.text.spec import GRAMMAR

    p.add_argument("--run", required=True, help="report folder written by `report` (holds neurons.jsonl)")
    p.add_argument("--llm", default="offline", help=f"text backend: {GRAMMAR} (default: offline)")
    p.add_argument("--latents", default=None, help="latents to label, e.g. 0-63,70 (default: all)")
    p.add_argument("--include-dead", action="store_true", help="label dead latents too")
    p.add_argument("--images", action=argparse.BooleanOptionalAction, default=True,
                   help="attach the annotated exemplar sprite when the backend takes images")  # fmt: skip
    p.add_argument("--vision", action="store_true",
                   help="the replicate/openai model takes images: send them (sets accepts_images)")  # fmt: skip
    p.add_argument("--api-key-env", default=None,
                   help="openai backend: name of the environment variable holding the API key (never the key)")  # fmt: skip
    p.add_argument("--concurrency", type=int, default=8,
                   help="requests in flight (remote backends) or batch size (transformers)")  # fmt: skip
    p.add_argument("--max-retries", type=int, default=2,
                   help="retries after a malformed answer, and of HTTP 429/5xx/timeouts (remote backends)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per remote request attempt")
    p.add_argument("--max-new-tokens", type=int, default=128, help="generation length per request")
    p.add_argument(
        "--overwrite", action="store_true", help="relabel chosen latents even when their label is up to date"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Exit code 0 when every chosen latent has a label, 1 when some failed (a re-run retries them)."""
    from sae_lab.explainers.labels import LABELS, label_run

    opts = {}
    if args.vision:
        opts["accepts_images"] = True
    if args.api_key_env:
        opts["api_key_env"] = args.api_key_env
    outcome = label_run(
        args.run,
        args.llm,
        latents=args.latents,
        include_dead=args.include_dead,
        images=args.images,
        concurrency=args.concurrency,
        max_retries=args.max_retries,
        timeout=args.timeout,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        max_new_tokens=args.max_new_tokens,
        backend_opts=opts,
    )
    print(
        f"labelled {outcome.labelled} latents ({outcome.reused} already up to date), {outcome.failed} failed "
        f"→ {args.run}/{LABELS}; {outcome.seconds:.1f}s"
    )
    for latent, error in list(outcome.errors.items())[:SHOWN_ERRORS]:
        print(f"  latent {latent}: {error}")
    if len(outcome.errors) > SHOWN_ERRORS:
        print(f'  … and {len(outcome.errors) - SHOWN_ERRORS} more (status "failed" in {LABELS}); a re-run retries them')
    return 1 if outcome.failed else 0
