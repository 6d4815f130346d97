"""LE on every live latent of the quickstart run against LE's own per-latent Adam procedure, side by side.

Presences are computed once per variant (LE(Label): class one-hots + superclasses; LE(VLM): the offline
perception backend over the class names, primitives and synonyms), outside the timings. Then, on 2 threads:

- ours: :func:`sae_lab.explainers.le.explain.explain_latents`, all live latents at once (elastic-net ranking by
  coordinate descent, greedy search with batched closed-form least squares, held-out r);
- reference: :func:`sae_lab.explainers.le.reference.reference_greedy`, LE's ``greedy_search`` as published (one
  ``nn.Linear`` per candidate, 100 full-batch Adam epochs at lr 0.3, Pearson r on the select split), one latent
  at a time, after the same elastic-net ranking. It runs on a random subset of latents and is extrapolated per
  latent (the output says so); ``same_concepts`` is the share of that subset where both choose the same set.

    python benchmarks/le_speed.py
    python benchmarks/le_speed.py --run /tmp/le_qs/reports/quickstart --reference-latents 40

Ends with one line: ``speedup_vs_reference=<x> seconds=<ours> same_concepts=<fraction>`` (both variants together).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_lab.explainers.le.concepts import filter_concepts, label_concepts  # noqa: E402
from sae_lab.explainers.le.explain import explain_latents  # noqa: E402
from sae_lab.explainers.le.fit import STD_EPS, elastic_net, rank_concepts  # noqa: E402
from sae_lab.explainers.le.reference import reference_greedy  # noqa: E402
from sae_lab.explainers.le.runner import variant_block  # noqa: E402
from sae_lab.explainers.le.settings import LeSettings  # noqa: E402
from sae_lab.explainers.probe import probe_set  # noqa: E402
from sae_lab.run import Cost, ExplanationRecord, load_run, read_neurons, resolve_run  # noqa: E402
from sae_lab.run.files import RunFiles  # noqa: E402


def presences(variant: str, probe, settings: LeSettings):
    """(names, (N, C) presences) after LE's filter, and the seconds it took."""
    from sae_lab.explainers.le.runner import vlm_presence

    t0 = time.perf_counter()
    if variant == "label":
        names, x = label_concepts(probe.labels, probe.class_names)
        matrix = filter_concepts(names, x)
    else:
        names, x, _ = vlm_presence(probe, settings)
        matrix = filter_concepts(names, x, settings.min_top5, settings.min_std)
    return matrix.names, matrix.presence, time.perf_counter() - t0


def compare(variant, names, presence, targets, latents, parts, neurons, n_ref, seed):
    """One variant: ours on all latents, the reference on a subset; returns a table row."""
    t0 = time.perf_counter()
    ours = explain_latents(presence, names, targets, parts)
    ours_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(seed)
    subset = sorted(torch.randperm(len(latents), generator=g)[:n_ref].tolist())
    fit_i, sel_i = parts["fit"], parts["select"]
    t1 = time.perf_counter()
    y = targets[:, subset]
    ranking = rank_concepts(elastic_net(presence[fit_i], y[fit_i]))
    ref = reference_greedy(presence[fit_i], y[fit_i], presence[sel_i], y[sel_i], ranking)
    ref_s = time.perf_counter() - t1
    same = [{names[c] for c in ref.concepts[row].tolist() if c >= 0} == {t.concept for t in ours[j].terms}
            for row, j in enumerate(subset)]  # fmt: skip
    records = [ExplanationRecord(latents[j], f"le-{variant}", e.text, terms=e.terms, bias=e.bias, cost=Cost(),
                                 reason=e.reason, detail={"select_r": e.select_r, "heldout_r": e.heldout_r})
               for j, e in enumerate(ours)]  # fmt: skip
    quality = variant_block(records, {n.latent: n for n in neurons})
    per_latent = ref_s / max(len(subset), 1)
    return {"variant": variant, "concepts": len(names), "latents": len(latents), "ours_s": ours_s,
            "ref_n": len(subset), "ref_per_latent": per_latent, "ref_all_s": per_latent * len(latents),
            "same": sum(same), "quality": quality}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="reports/quickstart", help="report folder (default: the quickstart run's)")
    p.add_argument("--reference-latents", type=int, default=40, help="latents the reference runs on (extrapolated)")
    p.add_argument("--n-images", type=int, default=2000, help="probe images (70/10/20 fit/select/held out)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for both timings")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    files = RunFiles(args.run)
    try:
        paths = resolve_run(args.run)
        neurons = read_neurons(files)
    except (FileNotFoundError, ValueError) as e:
        print(f"no run at {args.run} ({e}).\nRun `python -m sae_lab quickstart` first (it writes "
              "checkpoints/quickstart and reports/quickstart), or pass --run REPORT_DIR.", file=sys.stderr)  # fmt: skip
        return 2
    torch.set_num_threads(args.threads)
    settings = LeSettings(run=args.run, n_images=args.n_images, seed=args.seed, device="cpu")
    t0 = time.perf_counter()
    loaded = load_run(args.run, device="cpu")
    probe = probe_set(loaded, files, n=args.n_images, seed=args.seed)
    parts = probe.partition(args.seed)
    live = [n.latent for n in neurons if not n.dead]
    z = probe.activations("avg")[:, live].double()
    keep = [j for j in range(len(live)) if min(z[parts["fit"], j].std(), z[parts["select"], j].std()) > STD_EPS]
    latents, targets = [live[j] for j in keep], z[:, keep]
    print(f"run {args.run}: SAE {paths.sae_dir}, {len(live)} live latents, {len(latents)} not constant on the "
          f"fit/select images; {len(probe)} probe images ({time.perf_counter() - t0:.1f}s to load)")  # fmt: skip

    rows = []
    for variant in ("label", "vlm"):
        names, presence, secs = presences(variant, probe, settings)
        print(f"{variant}: {len(names)} concepts after the filter, presences in {secs:.1f}s (not timed below)")
        rows.append(compare(variant, names, presence, targets, latents, parts, neurons, args.reference_latents,
                            args.seed))  # fmt: skip

    print(f"\n{'variant':8} {'concepts':>8} {'latents':>7} {'ours s':>8} {'ref s/latent':>12} "
          f"{'ref s (all, extrap.)':>20} {'speedup':>8} {'same concepts':>14}")  # fmt: skip
    for r in rows:
        print(f"{r['variant']:8} {r['concepts']:8d} {r['latents']:7d} {r['ours_s']:8.2f} {r['ref_per_latent']:12.3f} "
              f"{r['ref_all_s']:20.1f} {r['ref_all_s'] / r['ours_s']:8.1f} "
              f"{r['same']:>5d}/{r['ref_n']:<3d} ({r['same'] / max(r['ref_n'], 1):.2f})")  # fmt: skip
    print(f"(reference: LE's per-latent nn.Linear + Adam greedy search, run on {rows[0]['ref_n']} random latents "
          f" per variant and extrapolated per latent to all {len(latents)}; both sides rank by the same "
          f"elastic net; {args.threads} threads)")  # fmt: skip
    for r in rows:
        q = r["quality"]
        print(
            f"le-{r['variant']}: explained {q['explained']}/{r['latents']}, select r {q['select_r']['mean']}, "
            f"held-out r {q['heldout_r']['mean']} ± {q['heldout_r']['se']}, mean terms {q['mean_terms']}, "
            f"largest term names the ground-truth primitive {q['gt_named']['rate']} (n={q['gt_named']['n']})"
        )
    ours = sum(r["ours_s"] for r in rows)
    ref = sum(r["ref_all_s"] for r in rows)
    same = sum(r["same"] for r in rows) / max(sum(r["ref_n"] for r in rows), 1)
    print(f"speedup_vs_reference={ref / ours:.1f} seconds={ours:.2f} same_concepts={same:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
