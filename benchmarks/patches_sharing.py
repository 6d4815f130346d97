"""Occlusion shared across latents vs one latent at a time, and the patch explanations' quality, on the quickstart
run.

Sharing: 64 live latents (a fixed random sample, seed 0, never chosen by how well anything explains them), each
with its top 10 probe images (``explain patches``' defaults: occluder 16 px, stride 8). *Shared*: every image in
some latent's top 10 is occluded once and one classifier + SAE pass scores all 64 latents on each variant
(:func:`sae_lab.explainers.patches.occlusion.occlude`). *Per latent*: each latent occludes its own 10 images and
scores only itself, as a per-neuron implementation of Zhao et al. (arXiv 2310.10708) does. The per-latent forward
count is exact for all 64 latents (10 images × variants each); its wall time is measured on a subset of latents
and extrapolated per latent (the output says how many); the subset's drops are checked against the shared ones.

Quality: ``explain patches`` with the default (offline) settings on every live latent whose best primitive has
image AUC ≥ 0.9, written to a scratch copy of the report folder (the run itself is not modified): how often the
best phrase names the ground-truth primitive (strict: it and no other primitive; lenient: among others), and the
mean IoU of the patch boxes with the bounding box of that primitive's mask.

    python benchmarks/patches_sharing.py
    python benchmarks/patches_sharing.py --run /tmp/pq/reports/quickstart --per-latent 8

Ends with one line: ``forward_ratio=<x> wall_ratio=<x> dense_forward_ratio=<x>`` (per latent / shared; the last
against a per-latent occlusion at every position, bare paper included, as a plain per-neuron implementation does —
both sides skip an occluder that covers no ink in the first two).
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_lab.explainers.patches import PatchSettings, run_patches  # noqa: E402
from sae_lab.explainers.patches.occlusion import SaeScorer, inked_positions, occlude, positions  # noqa: E402
from sae_lab.explainers.probe import probe_set  # noqa: E402
from sae_lab.run import GT_AUC, ExplanationStore, RunFiles, load_run, read_neurons  # noqa: E402


def sharing(args, loaded, files, neurons) -> tuple[float, float, float]:
    """Prints the shared vs per-latent occlusion figures; returns the forward ratio (per latent with the same
    occlusions / shared), the wall ratio, and the forward ratio against every position per latent."""
    s = PatchSettings(run=args.run)
    probe = probe_set(loaded, files, split=s.split, n=s.n_images, seed=s.seed, batch_size=s.batch_size)
    parts = probe.partition(s.seed)
    pool = torch.cat([parts["fit"], parts["select"]]).sort().values
    live = [n.latent for n in neurons if not n.dead]
    order = torch.randperm(len(live), generator=torch.Generator().manual_seed(0)).tolist()
    every = {i: probe.top_images(i, s.top_images, pooling="max", among=pool).tolist() for i in live}
    tops = {}
    for k in order:  # the first 64 of a seeded shuffle that fire on some probe image
        if every[live[k]]:
            tops[live[k]] = every[live[k]]
        if len(tops) == args.latents:
            break
    latents = sorted(tops)
    used = sorted({j for t in tops.values() for j in t})
    where = {j: n for n, j in enumerate(used)}
    net, sae = loaded.classifier.net, loaded.sae
    size = int(probe.images.shape[-1])
    per_image = len(positions(size, s.occluder, s.stride)) ** 2 + 1

    occlude(SaeScorer(net, sae, latents), probe.images[used[:2]], s.occluder, s.stride, s.batch_size)  # warm-up
    t0 = time.perf_counter()
    shared = occlude(SaeScorer(net, sae, latents), probe.images[used], s.occluder, s.stride, s.batch_size)
    shared_s = time.perf_counter() - t0

    subset = latents[:: max(1, len(latents) // args.per_latent)][: args.per_latent]
    t1 = time.perf_counter()
    worst = 0.0
    for i in subset:
        own = occlude(SaeScorer(net, sae, [i]), probe.images[tops[i]], s.occluder, s.stride, s.batch_size)
        col = latents.index(i)
        ref = shared.drops[[where[j] for j in tops[i]], col]
        worst = max(worst, float((own.drops[:, 0] - ref).abs().max()))
    per_s = (time.perf_counter() - t1) / len(subset) * len(latents)
    offsets = positions(size, s.occluder, s.stride)
    cost = dict(zip(used, (1 + inked_positions(probe.images[used], s.occluder, offsets).sum(1)).tolist()))
    per_forward = sum(cost[j] for t in tops.values() for j in t)  # each latent occludes its own images
    dense_forward = sum(len(t) for t in tops.values()) * per_image  # … at every position, bare paper included

    print(f"run {files.root}: {len(probe)} probe images of {size} px, occluder {s.occluder} px, stride {s.stride} px "
          f"({per_image - 1} occlusions + the original per image), {torch.get_num_threads()} threads")  # fmt: skip
    print(f"{len(latents)} latents, top {s.top_images} images each: {sum(len(t) for t in tops.values())} "
          f"(latent, image) pairs, {len(used)} distinct images")  # fmt: skip
    print(f"  shared:     {shared.forward_images:8d} forward images  {shared_s:8.1f} s")
    print(f"  per latent: {per_forward:8d} forward images  {per_s:8.1f} s  (time measured on {len(subset)} latents, "
          f"extrapolated to {len(latents)})")  # fmt: skip
    print(f"  per latent, every position (bare paper included, as a per-neuron occlusion does): {dense_forward} "
          f"forward images; shared skips the {sum(per_image - c for c in cost.values())} variants whose occluder "
          "covers no ink (drop exactly 0)")  # fmt: skip
    print(f"  per-latent drops vs shared drops on those {len(subset)} latents: max |diff| = {worst:.2e}")
    pairs = sum(len(t) for t in every.values())
    distinct = len({j for t in every.values() for j in t})
    print(f"all {sum(bool(t) for t in every.values())} firing live latents at once (counted, not run): {pairs} pairs, "
          f"{distinct} distinct images: forward ratio {pairs / max(distinct, 1):.2f}")  # fmt: skip
    return per_forward / shared.forward_images, per_s / shared_s, dense_forward / shared.forward_images


def localisation(loaded, records, neurons) -> tuple[list[float], list[float], list[float]]:
    """Per ground-truth latent: the mean share of its primitive's mask pixels inside the patch boxes, and the mean
    IoU of the whole image (a patch that localises nothing) and of the patch with the primitive's mask box."""
    from sae_lab.data.world import PRIMITIVES
    from sae_lab.explainers.patches.outputs import box_iou, load_masks, mask_box

    wanted = [(r, neurons[r.latent].gt_primitive) for r in records if r.ok and r.detail.get("gt_iou") is not None]
    if not wanted:
        return [], [], []
    rows = sorted({row for r, _ in wanted for row in r.detail["rows"]})
    masks = load_masks(loaded, wanted[0][0].detail["split"], rows)
    coverage, whole, patch = [], [], []
    for r, prim in wanted:
        c, w, q = [], [], []
        for row, box in zip(r.detail["rows"], r.detail["boxes"]):
            m = masks[row][PRIMITIVES.index(prim)]
            if m.any():
                x0, y0, x1, y1 = box
                c.append(float(m[y0:y1, x0:x1].sum() / m.sum()))
                w.append(box_iou((0, 0, m.shape[1], m.shape[0]), mask_box(m)))
                q.append(box_iou(tuple(box), mask_box(m)))
        coverage.append(sum(c) / len(c))
        whole.append(sum(w) / len(w))
        patch.append(sum(q) / len(q))
    return coverage, whole, patch


def quality(args, files, neurons, loaded) -> None:
    """Runs ``explain patches`` on the ground-truth latents in a scratch copy of the report and prints the block."""
    matched = [n.latent for n in neurons if not n.dead and n.gt_primitive and (n.gt_auc or 0) >= GT_AUC]
    if args.quality_latents:
        matched = matched[: args.quality_latents]
    if not matched:
        print("quality: no live latent matched at AUC >= 0.9")
        return
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / files.root.name
        scratch.mkdir()
        for name in ("neurons.jsonl", "report.json"):
            if (files.root / name).is_file():
                shutil.copy(files.root / name, scratch / name)
        if (files.root / "probe").is_dir():
            shutil.copytree(files.root / "probe", scratch / "probe")
        t0 = time.perf_counter()
        settings = PatchSettings(run=str(scratch), latents=",".join(map(str, matched)),
                                 sae=str(loaded.paths.sae_dir.resolve()),
                                 classifier=str(Path(loaded.paths.classifier).resolve()))  # fmt: skip
        block = run_patches(settings)
        seconds = time.perf_counter() - t0
        records = list(ExplanationStore(scratch, "patches").latest().values())
        coverage, whole, patch = localisation(loaded, records, {n.latent: n for n in neurons})

    def fmt(x):
        return f"{x['mean']:.3f} ± {x['se'] or 0:.3f} (n={x['n']})" if x["mean"] is not None else f"- (n={x['n']})"

    print(f"quality ({len(matched)} latents matched at AUC >= {GT_AUC}, offline vocabulary and perception, "
          f"{seconds:.0f} s, {block['forward_images']} forward images, {block['vlm_images']} patches scored):")  # fmt: skip
    print(f"  best phrase names the ground-truth primitive: strict {fmt(block['named_strict'])}, "
          f"lenient {fmt(block['named_lenient'])}")  # fmt: skip
    print(f"  patch box IoU with the primitive's mask box: {fmt(block['gt_iou'])}")
    if patch:
        n = len(patch)
        print(f"  over the {n} latents whose top images show their primitive: patch IoU {sum(patch) / n:.3f}, "
              f"whole-image IoU {sum(whole) / n:.3f} (no localisation), share of the primitive's strokes inside the "
              f"patch {sum(coverage) / n:.3f}")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="reports/quickstart", help="report folder (default: the quickstart run's)")
    p.add_argument("--latents", type=int, default=64, help="latents occluded together")
    p.add_argument("--per-latent", type=int, default=8, help="latents the per-latent side is timed on")
    p.add_argument("--quality-latents", type=int, default=0, help="cap on the ground-truth latents (0: all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    files = RunFiles(args.run)
    if not files.neurons.is_file():
        print(f"{files.neurons} not found: run `python -m sae_lab quickstart` first (or pass --run)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    neurons = read_neurons(files)
    loaded = load_run(args.run, device="cpu")
    forward_ratio, wall_ratio, dense_ratio = sharing(args, loaded, files, neurons)
    quality(args, files, neurons, loaded)
    print(f"forward_ratio={forward_ratio:.2f} wall_ratio={wall_ratio:.2f} dense_forward_ratio={dense_ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
