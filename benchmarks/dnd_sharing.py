"""DnD on many latents together vs one latent at a time, and how often its best concept names the ground truth,
on the quickstart run.

Sharing: 32 live latents (a fixed random sample, seed 0, of those firing on some probe image), the offline backends
(annotation captioner and perception, noun-phrase summariser, sketch-world renderer) and the same seeds on both
sides. *Together*: one :class:`~sae_lab.explainers.dnd.DndEngine` explains all 32 at once — crops scored in one
pass for all latents, every distinct kept image captioned once, a concept's images generated once (one image
cache) and scored for every latent that proposed it. *One at a time*: each latent gets its own engine with its own
empty image cache and captioner, as the reference implementation explains one neuron per run. Models and the
probe set are loaded once for both sides, outside the timings; nothing is written to the run (generated images go
to a scratch folder). Counted: captions computed, images generated, images through classifier + SAE, wall and
process CPU time. Both sides run ``--repeats`` times, interleaved, with empty caches each time; the seconds shown
are the best (the machine may be shared). With the offline backends a generated image or a caption costs little
next to a classifier pass, and each latent's own top images and crops must go through the classifier either way,
so the time saved is smaller than the images saved; with model backends generation and captions dominate.

Quality: the together engine on every live latent whose best primitive has image AUC ≥ 0.9: how often the best
concept names that primitive (strict: it and no other primitive; lenient: among others).

    python benchmarks/dnd_sharing.py
    python benchmarks/dnd_sharing.py --run /tmp/dnd_qs/reports/quickstart

Ends with one line: ``images_ratio=<x> captions_ratio=<x> wall_ratio=<x>`` (one at a time / together).
"""

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_lab.evaluate.naming import naming  # noqa: E402
from sae_lab.explainers.dnd import DndEngine, DndSettings  # noqa: E402
from sae_lab.explainers.probe import probe_set  # noqa: E402
from sae_lab.run import GT_AUC, ExplanationRecord, RunFiles, load_run, read_neurons  # noqa: E402

KEYS = ("captions", "images_generated", "forward_images")


def timed(engine: DndEngine, latents: list[int]) -> tuple[list, float, float]:
    """The engine's works on ``latents``, the wall seconds and the process CPU seconds they took."""
    t0, c0 = time.perf_counter(), time.process_time()
    works = engine.explain(latents)
    return works, time.perf_counter() - t0, time.process_time() - c0


def one_round(s, loaded, probe, dataset, latents, folder: Path) -> dict:
    """Both sides once, each with empty image caches: the work counted and the seconds taken."""
    together = DndEngine(s, loaded=loaded, probe=probe, image_cache=folder / "together", dataset=dataset)
    works, wall, cpu = timed(together, latents)
    out = {"together": {**together.totals, "wall": wall, "cpu": cpu}, "best": best(works), "engine": together}
    alone: Counter = Counter()
    same = 0
    for i in latents:
        engine = DndEngine(s, loaded=loaded, probe=probe, image_cache=folder / f"alone-{i}", dataset=dataset)
        one, wall, cpu = timed(engine, [i])
        alone.update({**engine.totals, "wall": wall, "cpu": cpu})
        same += best(one)[i] == out["best"][i]
    out.update(alone=dict(alone), same=same)
    return out


def best(works) -> dict[int, str | None]:
    return {w.latent: w.chosen[0].concept if w.ok and w.chosen else None for w in works}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="reports/quickstart", help="report folder (default: the quickstart run's)")
    p.add_argument("--latents", type=int, default=32, help="latents explained together")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="classifier + SAE: auto (cuda when there is one) | cpu | cuda")
    p.add_argument("--repeats", type=int, default=2, help="rounds of both sides (fresh caches); seconds: the best")
    args = p.parse_args()
    files = RunFiles(args.run)
    if not files.neurons.is_file():
        print(f"{files.neurons} not found: run `python -m sae_lab quickstart` first (or pass --run)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    neurons = read_neurons(files)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    s = DndSettings(run=args.run, device=device)
    loaded = load_run(args.run, device=device)
    probe = probe_set(loaded, files, split=s.split, n=s.probe_images, seed=s.seed, batch_size=s.batch_size)
    live = [n.latent for n in neurons if not n.dead and len(probe.top_images(n.latent, 1, s.pooling))]
    order = torch.randperm(len(live), generator=torch.Generator().manual_seed(0)).tolist()
    latents = sorted(live[k] for k in order[: args.latents])

    with tempfile.TemporaryDirectory() as tmp:
        warm = DndEngine(s, loaded=loaded, probe=probe, image_cache=Path(tmp) / "warm")
        warm.describe(latents[:1])  # opens the probe's split for the crop masks once, outside the timings
        rounds = [
            one_round(s, loaded, probe, warm.dataset, latents, Path(tmp) / f"round-{r}") for r in range(args.repeats)
        ]
        shared = {**rounds[0]["together"], **{k: min(r["together"][k] for r in rounds) for k in ("wall", "cpu")}}
        alone = {**rounds[0]["alone"], **{k: min(r["alone"][k] for r in rounds) for k in ("wall", "cpu")}}
        together = rounds[0]["engine"]

        print(f"run {files.root}: {len(probe)} probe images, {len(live)} live latents firing on them, "
              f"classifier + SAE on {device}, {torch.get_num_threads()} threads, "
              f"backends {together.backends['captioner']} / "
              f"{together.backends['images']} / llm {together.backends['llm']}")  # fmt: skip
        print(f"{len(latents)} latents, top {s.n_top} images + up to {s.crops_per_image} crops each, "
              f"{s.n_summaries} summaries, {s.n_images} images per candidate; seconds: best of {args.repeats}")  # fmt: skip
        for name, x in (("together", shared), ("one at a time", alone)):
            print(f"  {name:14s}{x.get('captions', 0):6d} captions {x.get('images_generated', 0):6d} images generated "
                  f"{x.get('forward_images', 0):6d} forward images {x['wall']:8.2f} s wall {x['cpu']:8.2f} s CPU")  # fmt: skip
        print(f"  same best concept both ways: {rounds[0]['same']}/{len(latents)} latents; "
              f"cpu_ratio={alone['cpu'] / max(shared['cpu'], 1e-9):.2f}")  # fmt: skip

        matched = {n.latent: n for n in neurons if not n.dead and n.gt_primitive and (n.gt_auc or 0) >= GT_AUC}
        if matched:
            t0 = time.perf_counter()
            gt_works = together.explain(sorted(matched))
            judged = [naming(ExplanationRecord.single(w.latent, "dnd", b), matched[w.latent])
                      for w, b in zip(gt_works, best(gt_works).values())]  # fmt: skip
            strict = sum(a or 0.0 for a, _ in judged) / len(judged)
            lenient = sum(b or 0.0 for _, b in judged) / len(judged)
            print(f"quality: {len(judged)} latents matched at AUC >= {GT_AUC} ({time.perf_counter() - t0:.1f} s): best "
                  f"concept names the ground-truth primitive strict {strict:.3f}, lenient {lenient:.3f}")  # fmt: skip
        else:
            print(f"quality: no live latent matched at AUC >= {GT_AUC}")

    ratio = {k: alone.get(k, 0) / max(shared.get(k, 0), 1) for k in KEYS}
    print(f"images_ratio={ratio['images_generated']:.2f} captions_ratio={ratio['captions']:.2f} "
          f"wall_ratio={alone['wall'] / max(shared['wall'], 1e-9):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
