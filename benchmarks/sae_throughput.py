"""Tokens/s of one Top-K SAE training step on this machine, against the encoder roofline.

A training step is forward, backward, decoder-gradient projection, AdamW step and decoder renormalisation.
The roofline is 6·C·M FLOP per token (encoder forward GEMM + its two backward GEMMs) at the measured fp32
GEMM rate; the sparse path skips the input-gradient GEMM and computes the weight gradient sparsely, so it
can exceed 1. Rows: our sparse path, our dense reference and, when importable, EleutherAI sparsify's
``SparseCoder`` on the same data and optimizer (``pip install eai-sparsify``; its package ``__init__`` also
imports its trainer, so einops, natsort, simple-parsing, schedulefree and accelerate must be importable).

    python benchmarks/sae_throughput.py            # C=512, M=8192, K=32, 4096 tokens per batch
    python benchmarks/sae_throughput.py --quick    # small shapes, smoke run

Rows alternate step by step; each reports its best step (headline, like the best-of GEMM rate) and its
median. Ends with one line ``sparse_vs_dense=<x> sparse_vs_sparsify=<x|na> roofline=<fraction>``.
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_lab.models.sae import SaeConfig, TopKSAE  # noqa: E402


@dataclass
class Row:
    """One printed result."""

    name: str
    tokens_per_s: float | None
    """None when the row could not run (printed as ``na``)."""
    note: str = ""


def gemm_flops_per_s(n: int, c: int, m: int, repeats: int) -> float:
    """Best-of-``repeats`` fp32 rate of torch.mm((n, c), (c, m)) in FLOP/s (into a reused output buffer)."""
    a, b, out = torch.randn(n, c), torch.randn(c, m), torch.empty(n, m)
    torch.mm(a, b, out=out)
    best = min(_seconds(lambda: torch.mm(a, b, out=out)) for _ in range(repeats))
    return 2 * n * c * m / best


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_interleaved(steps: dict[str, Callable[[], object]], iters: int) -> dict[str, tuple[float, float]]:
    """(best, median) seconds per call of each step, timed round-robin so that changing load hits every row
    alike. The best is what the headline uses, like the best-of GEMM rate: load from other jobs on a shared
    machine only ever adds time."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(iters):
        for name, step in steps.items():
            times[name].append(_seconds(step))
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def make_optimizer(params) -> torch.optim.Optimizer:
    """AdamW as the trainer uses it; the fused CPU kernel when this torch has one."""
    try:
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=1e-4)


def ours_step(sae: TopKSAE, x: torch.Tensor, dead_mask: torch.Tensor | None) -> Callable[[], None]:
    """One training step of our TopKSAE (the Lightning module does the same through its hooks)."""
    opt = make_optimizer(sae.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        out = sae(x, dead_mask)
        (out.fvu + sae.cfg.auxk_coef * out.auxk_loss).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()

    return step


def sparsify_step(x: torch.Tensor, num_latents: int, k: int, dead_mask: torch.Tensor | None):
    """sparsify's SparseCoder step on the same data, or a reason string when it is unavailable."""
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # its Triton decoder is CUDA-only
    try:
        from sparsify import SparseCoder, SparseCoderConfig
    except Exception as err:  # not installed, or a missing dependency of its package __init__
        return f"sparsify not importable ({type(err).__name__}: {err})"
    coder = SparseCoder(x.shape[1], SparseCoderConfig(num_latents=num_latents, k=k))
    opt = make_optimizer(coder.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        out = coder(x, dead_mask=dead_mask)
        (out.fvu + out.auxk_loss / 32).backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        coder.set_decoder_norm_to_unit_norm()

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes and few iterations (smoke run)")
    parser.add_argument("--d-in", type=int, default=512, help="token width C")
    parser.add_argument("--num-latents", type=int, default=8192, help="dictionary size M")
    parser.add_argument("--k", type=int, default=32, help="active latents per token K")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per batch N")
    parser.add_argument("--dead-frac", type=float, default=0.0, help="fraction of latents marked dead (AuxK on)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per row")
    parser.add_argument("--iters", type=int, default=10, help="timed steps per row (rows alternate step by step)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--no-sparsify", action="store_true", help="skip the sparsify row")
    args = parser.parse_args(argv)
    if args.quick:
        args.d_in, args.num_latents, args.k, args.tokens, args.warmup, args.iters = 64, 1024, 8, 512, 1, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    n, c, m, k = args.tokens, args.d_in, args.num_latents, args.k
    torch.manual_seed(0)

    print(f"shapes N={n} C={c} M={m} K={k} threads={torch.get_num_threads()} torch={torch.__version__}")
    rate_before = gemm_flops_per_s(n, c, m, repeats=8)

    x = torch.randn(n, c)
    dead_mask = None
    if args.dead_frac > 0:
        dead_mask = torch.rand(m, generator=torch.Generator().manual_seed(1)) < args.dead_frac

    def ours(sparse: bool) -> Callable[[], None]:
        torch.manual_seed(0)
        sae = TopKSAE(SaeConfig(d_in=c, num_latents=m, k=k, sparse_decode=sparse))
        sae.init_b_dec(x)
        return ours_step(sae, x, dead_mask)

    steps: dict[str, Callable[[], object] | str] = {
        "sae_lab TopKSAE sparse": ours(sparse=True),
        "sae_lab TopKSAE dense": ours(sparse=False),
        "sparsify SparseCoder": "skipped" if args.no_sparsify else sparsify_step(x, m, k, dead_mask),
    }
    # Further rows (e.g. token-source throughput) add a name -> step callable (N tokens per call) here.
    for name, step in steps.items():
        try:  # warm-up; sparsify's encoder is torch.compile'd, so its first call compiles
            for _ in range(args.warmup if callable(step) else 0):
                step()
        except Exception as err:
            steps[name] = f"failed ({type(err).__name__}: {err})"[:200]
    a, b, out = torch.randn(n, c), torch.randn(c, m), torch.empty(n, m)
    runnable = {name: step for name, step in steps.items() if not isinstance(step, str)}
    seconds = time_interleaved({**runnable, "gemm": lambda: torch.mm(a, b, out=out)}, args.iters)
    rows = [Row(name, n / seconds[name][0], f"(median {n / seconds[name][1]:,.0f} tokens/s)") if name in runnable
            else Row(name, None, step) for name, step in steps.items()]  # fmt: skip

    # The roofline uses the best GEMM rate seen (before, between and after the rows): other load on a shared
    # machine only ever lowers it, and a lower rate would flatter the roofline fractions.
    rate = max(rate_before, 2 * n * c * m / seconds["gemm"][0], gemm_flops_per_s(n, c, m, repeats=8))
    roofline_tokens_per_s = rate / (6 * c * m)
    print(f"fp32 GEMM ({n}x{c})@({c}x{m}): {rate / 1e9:.1f} GFLOP/s -> roofline {roofline_tokens_per_s:,.0f} tokens/s")

    for row in rows:
        if row.tokens_per_s is None:
            print(f"{row.name:<28} na  {row.note}")
        else:
            frac = row.tokens_per_s / roofline_tokens_per_s
            print(f"{row.name:<28} {row.tokens_per_s:>10,.0f} tokens/s  roofline={frac:.2f} {row.note}")

    sparse, dense, other = (row.tokens_per_s for row in rows[:3])
    vs_sparsify = f"{sparse / other:.2f}" if other else "na"
    print(
        f"sparse_vs_dense={sparse / dense:.2f} sparse_vs_sparsify={vs_sparsify} roofline={sparse / roofline_tokens_per_s:.2f}"
    )


if __name__ == "__main__":
    main()
