"""The quickstart classifier's training step, side by side: fp32, channels_last, bf16 autocast and both.

Runs from the repository root with no arguments (no quickstart run needed: it times the training step on random
64 px sketches of the quickstart's batch size, which is what the classifier stage spends its time on), and the
data loading of the quickstart's world with 0 and 1 workers. Reports images/s per variant, the FLOP count of one
training image and the fraction of the machine's FLOP rate each variant reaches (the rate is measured here with a
large float32 matmul). Last line: ``fp32=<img/s> channels_last=<img/s> bf16=<img/s> bf16_channels_last=<img/s>
best=<name> best_speedup=<x> flop_fraction=<x>``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_lab.models.resnet import SketchResNet  # noqa: E402

BATCH, SIZE, CLASSES, STEPS, WARMUP = 128, 64, 20, 6, 2


def machine_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9


def train_flops() -> float:
    """FLOPs of one training image (forward + backward ≈ 3 × forward), counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    net = SketchResNet(CLASSES)
    x = torch.randn(8, 1, SIZE, SIZE)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), torch.zeros(8, dtype=torch.long)).backward()
    return counter.get_total_flops() / 8


def images_per_second(channels_last: bool, bf16: bool) -> float:
    torch.manual_seed(0)
    net = SketchResNet(CLASSES)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = (torch.rand(BATCH, 1, SIZE, SIZE) > 0.9).float()
    y = torch.randint(0, CLASSES, (BATCH,))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for step in range(STEPS + WARMUP):
        if step == WARMUP:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return STEPS * BATCH / (time.perf_counter() - t0)


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    gflops = machine_gflops()
    flops = train_flops()
    print(f"machine: {gflops:.0f} GFLOP/s (float32 matmul); one training image: {flops / 1e9:.3f} GFLOP")
    results = {}
    for name, cl, bf in (("fp32", False, False), ("channels_last", True, False), ("bf16", False, True),
                         ("bf16_channels_last", True, True)):  # fmt: skip
        results[name] = images_per_second(cl, bf)
        frac = results[name] * flops / 1e9 / gflops
        print(f"  {name:<20} {results[name]:8.1f} images/s   {frac:.2f} of the machine's FLOP rate")
    best = max(results, key=results.get)
    frac = results["fp32"] * flops / 1e9 / gflops
    line = " ".join(f"{k}={v:.1f}" for k, v in results.items())
    print(f"{line} best={best} best_speedup={results[best] / results['fp32']:.2f} flop_fraction={frac:.2f}")


if __name__ == "__main__":
    main()
