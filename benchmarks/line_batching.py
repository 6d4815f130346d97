"""LINE on many latents at once against one latent per run (the reference's way), same backends and seeds.

Both modes run the offline backends (sketch-world renderer + offline proposer) on the same SAE and classifier,
with the same control images (computed once, copied into every one-at-a-time run folder so that only the loop
itself is compared). Batched: one run over all latents, concepts generated once and scored for every latent.
One at a time: a fresh run folder (and image cache) per latent. Reported per mode: images generated, classifier
images scored and wall time of the loop; and whether every latent got the same best concept and score.

It also measures the quickstart figure: among latents whose ground-truth best primitive has image AUC ≥ 0.9,
how often LINE's best concept names that primitive (``primitives_in_text``), and how often it names only it.

    python benchmarks/line_batching.py --sae /tmp/qs2/checkpoints/sweep/m512_r0 --out /tmp/line_bench
    python benchmarks/line_batching.py --sae SAE --latents 32 --n-iters 10 --gt-iters 4

Ends with ``images_ratio=<one-at-a-time / batched>``, ``speedup=<x>`` and ``gt_named_rate=<r>`` lines.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_lab.data.world import primitives_in_text  # noqa: E402
from sae_lab.explainers.line import LineConfig, LineSession, choose_latents, gt_named_rate  # noqa: E402
from sae_lab.explainers.line.outputs import ground_truth  # noqa: E402
from sae_lab.run import GT_AUC  # noqa: E402


def session(run_dir: Path, args, n_iters: int, control_from: Path | None = None) -> LineSession:
    if control_from is not None:
        (run_dir / "line").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(control_from, run_dir / "line/control.safetensors")
    config = LineConfig(n_iters=n_iters, n_images=args.n_images, n_control=args.n_control, seed=args.seed)
    return LineSession(run_dir, args.sae, config, "renderer", "offline", classifier=args.classifier, progress=False)


def timed_run(s: LineSession, latents: list[int]) -> tuple[list[dict], dict]:
    images0, scored0 = s.cache.generated, s.scorer.images_scored
    t0 = time.perf_counter()
    lines = s.run(latents, overwrite=True)
    return lines, {"images_generated": s.cache.generated - images0, "images_scored": s.scorer.images_scored - scored0,
                   "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip


def gt_figures(lines: list[dict]) -> dict:
    rate, n = gt_named_rate(lines)
    eligible = [r for r in lines if (r.get("ground_truth") or {}).get("image_auc", 0) >= GT_AUC]
    only = sum(primitives_in_text(r["best_concept"]) == [r["ground_truth"]["primitive"]] for r in eligible)
    return {"gt_latents": n, "gt_named_rate": rate, "gt_named_only_rate": only / n if n else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sae", required=True, help="SAE export folder")
    p.add_argument("--classifier", default=None, help="classifier checkpoint (default: the SAE's)")
    p.add_argument("--out", default="/tmp/line_bench", help="scratch folder for the runs")
    p.add_argument("--latents", type=int, default=32, help="latents explained together / one at a time")
    p.add_argument("--n-iters", type=int, default=10, help="iterations in the batching comparison")
    p.add_argument("--gt-iters", type=int, default=4, help="iterations in the ground-truth measurement (quickstart)")
    p.add_argument("--n-images", type=int, default=8, help="images per concept")
    p.add_argument("--n-control", type=int, default=1000, help="control images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)

    batched = session(out / "batched", args, args.n_iters)
    control = batched.out / "control.safetensors"
    latents = choose_latents(batched, args.latents)
    print(f"latents ({len(latents)}): {latents}", flush=True)
    b_lines, b = timed_run(batched, latents)
    print(f"batched: {b}", flush=True)

    one = {"images_generated": 0, "images_scored": 0, "seconds": 0.0, "setup_seconds": 0.0}
    same = 0
    for lat, expected in zip(latents, b_lines):
        t0 = time.perf_counter()
        s = session(out / f"single/{lat}", args, args.n_iters, control_from=control)
        one["setup_seconds"] += time.perf_counter() - t0
        [line], fig = timed_run(s, [lat])
        for k in ("images_generated", "images_scored", "seconds"):
            one[k] += fig[k]
        same += (line["best_concept"], line["best_score"]) == (expected["best_concept"], expected["best_score"])
    one = {k: round(v, 2) for k, v in one.items()}
    print(f"one at a time: {one}", flush=True)

    gt_session = session(out / "gt", args, args.gt_iters, control_from=control)
    gt = ground_truth(gt_session)
    gt_latents = sorted(i for i, g in gt.items() if (g["image_auc"] or 0) >= GT_AUC)
    gt_lines, gt_fig = timed_run(gt_session, gt_latents)
    result = {
        "latents": len(latents),
        "n_iters": args.n_iters,
        "n_images": args.n_images,
        "batched": b,
        "one_at_a_time": one,
        "same_result": f"{same}/{len(latents)}",
        "images_ratio": round(one["images_generated"] / max(b["images_generated"], 1), 2),
        "speedup": round(one["seconds"] / max(b["seconds"], 1e-9), 2),
        "batched_gt": gt_figures(b_lines),
        "quickstart_gt": {"n_iters": args.gt_iters, **gt_fig, **gt_figures(gt_lines)},
        "best_concepts": {
            r["latent"]: [r["best_concept"], (r["ground_truth"] or {}).get("primitive")] for r in gt_lines
        },  # fmt: skip
    }
    (out / "benchmark.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "best_concepts"}, indent=1))
    print(f"images_ratio={result['images_ratio']}")
    print(f"speedup={result['speedup']}")
    print(f"gt_named_rate={result['quickstart_gt']['gt_named_rate']}")


if __name__ == "__main__":
    main()
