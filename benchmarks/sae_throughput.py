"""Tokens/s of one Top-K SAE training step on this machine, against the encoder roofline.

A training step is forward, backward, decoder-gradient projection, AdamW step and decoder renormalisation.
The roofline is 6·C·M FLOP per token (encoder forward GEMM + its two backward GEMMs) at the measured fp32
GEMM rate; the sparse path skips the input-gradient GEMM and computes the weight gradient sparsely, so it
can exceed 1. Rows: our sparse path, our dense reference and, when importable, EleutherAI sparsify's
``SparseCoder`` on the same data and optimizer (``pip install eai-sparsify``; its package ``__init__`` also
imports its trainer, so einops, natsort, simple-parsing, schedulefree and accelerate must be importable).

    python benchmarks/sae_throughput.py            # C=512, M=8192, K=32, 4096 tokens per batch
    python benchmarks/sae_throughput.py --quick    # small shapes, smoke run

Ends with one line ``sparse_vs_dense=<x> sparse_vs_sparsify=<x|na> roofline=<fraction>``.
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


def time_step(step: Callable[[], object], warmup: int, iters: int) -> float:
    """Median seconds per call after ``warmup`` calls (the median resists other load on a shared machine)."""
    for _ in range(warmup):
        step()
    return statistics.median(_seconds(step) for _ in range(iters))


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
    parser.add_argument("--iters", type=int, default=10, help="timed steps per row")
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

    def ours(sparse: bool) -> Row:
        torch.manual_seed(0)
        sae = TopKSAE(SaeConfig(d_in=c, num_latents=m, k=k, sparse_decode=sparse))
        sae.init_b_dec(x)
        seconds = time_step(ours_step(sae, x, dead_mask), args.warmup, args.iters)
        return Row(f"sae_lab TopKSAE {'sparse' if sparse else 'dense'}", n / seconds)

    rows = [ours(sparse=True), ours(sparse=False)]
    if args.no_sparsify:
        rows.append(Row("sparsify SparseCoder", None, "skipped"))
    else:
        step = sparsify_step(x, m, k, dead_mask)
        if isinstance(step, str):
            rows.append(Row("sparsify SparseCoder", None, step))
        else:  # its encoder is torch.compile'd: give the compile its own warm-up
            try:
                rows.append(Row("sparsify SparseCoder", n / time_step(step, args.warmup + 1, args.iters)))
            except Exception as err:
                rows.append(Row("sparsify SparseCoder", None, f"failed ({type(err).__name__}: {err})"[:200]))
    # Further rows (e.g. token-source throughput) append Row(name, tokens_per_s) here.

    # The GEMM rate is measured before and after the rows and the higher one kept: other load on a shared
    # machine only ever lowers it, and a lower rate would flatter the roofline fractions.
    rate = max(rate_before, gemm_flops_per_s(n, c, m, repeats=8))
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
