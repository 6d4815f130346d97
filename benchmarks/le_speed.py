"""LE on every live latent of the quickstart run against LE's own per-latent Adam procedure, side by side.

Presences are computed once per variant (LE(Label): class one-hots + superclasses; LE(VLM): the offline
perception backend over the class names, primitives and synonyms), outside the timings. Then:

- ours: :func:`sae_lab.explainers.le.explain.explain_latents`, all live latents at once (elastic-net ranking by
  proximal gradient, greedy search with batched closed-form least squares, held-out r);
- LE's procedure: :func:`sae_lab.explainers.le.reference.reference_greedy`, LE's ``greedy_search`` as published
  (a fresh ``nn.Linear`` per candidate, 100 full-batch Adam epochs at lr 0.3, Pearson r on the select split),
  after the same elastic-net ranking, one latent at a time on a random subset of latents, extrapolated per latent
  to all (the output says so); on 1 thread, its fastest;
- same concepts: the share of all latents where ours chooses the same concept set as LE's procedure, run for all
  latents with the same Adam arithmetic batched (:func:`~sae_lab.explainers.le.reference.reference_greedy_batched`,
  checked against the one-at-a-time runs on the subset).

    python benchmarks/le_speed.py
    python benchmarks/le_speed.py --run /tmp/le_qs/reports/quickstart --reference-latents 40 --variants vlm

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
from sae_lab.explainers.le.reference import reference_greedy, reference_greedy_batched  # noqa: E402
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


def compare(variant, names, presence, targets, latents, parts, neurons, n_ref, seed, threads):
    """One variant: ours on all latents; LE's procedure batched on all latents (the concept sets) and one latent
    at a time on a random subset (the time); returns a table row."""
    t0 = time.perf_counter()
    ours = explain_latents(presence, names, targets, parts)  # picks its own thread count (1 for this size)
    ours_s = time.perf_counter() - t0
    fit_i, sel_i = parts["fit"], parts["select"]
    y = targets
    ranking = rank_concepts(elastic_net(presence[fit_i], y[fit_i]))
    args = (presence[fit_i], y[fit_i], presence[sel_i], y[sel_i], ranking)
    torch.set_num_threads(1)  # LE's tensors are tiny: more threads only slow it down
    t1 = time.perf_counter()
    batched = reference_greedy_batched(*args)
    batched_s = time.perf_counter() - t1
    subset = sorted(torch.randperm(len(latents), generator=torch.Generator().manual_seed(seed))[:n_ref].tolist())
    t1 = time.perf_counter()
    one = reference_greedy(*args, latents=subset)
    ref_s = time.perf_counter() - t1
    torch.set_num_threads(threads)
    same = [{names[c] for c in batched.concepts[j].tolist() if c >= 0} == {t.concept for t in e.terms}
            for j, e in enumerate(ours)]  # fmt: skip
    ref_r = batched.select_r[~torch.isnan(batched.select_r)]
    records = [ExplanationRecord(latents[j], f"le-{variant}", e.text, terms=e.terms, bias=e.bias, cost=Cost(),
                                 reason=e.reason, detail={"select_r": e.select_r, "heldout_r": e.heldout_r})
               for j, e in enumerate(ours)]  # fmt: skip
    per_latent = ref_s / max(len(subset), 1)
    return {"variant": variant, "concepts": len(names), "latents": len(latents), "ours_s": ours_s,
            "ref_n": len(subset), "ref_per_latent": per_latent, "ref_all_s": per_latent * len(latents),
            "batched_s": batched_s, "same": sum(same), "ref_mean_r": float(ref_r.mean()) if len(ref_r) else None,
            "one_equals_batched": torch.equal(one.concepts, batched.concepts[subset]),
            "quality": variant_block(records, {n.latent: n for n in neurons})}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="reports/quickstart", help="report folder (default: the quickstart run's)")
    p.add_argument(
        "--reference-latents",
        type=int,
        default=20,
        help="latents LE's procedure is timed on, one at a time (extrapolated to all)",
    )
    p.add_argument("--n-images", type=int, default=2000, help="probe images (70/10/20 fit/select/held out)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for both timings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default="label,vlm", help="label, vlm or both")
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
    for variant in [v for v in ("label", "vlm") if v in args.variants]:
        names, presence, secs = presences(variant, probe, settings)
        print(f"{variant}: {len(names)} concepts after the filter, presences in {secs:.1f}s (not timed below)")
        rows.append(compare(variant, names, presence, targets, latents, parts, neurons, args.reference_latents,
                            args.seed, args.threads))  # fmt: skip

    print(f"\n{'variant':8} {'concepts':>8} {'latents':>7} {'ours s':>7} {'LE s/latent':>11} {'LE s (all)':>10} "
          f"{'speedup':>7} {'same concepts':>17} {'select r ours/LE':>17}")  # fmt: skip
    for r in rows:
        print(f"{r['variant']:8} {r['concepts']:8d} {r['latents']:7d} {r['ours_s']:7.2f} {r['ref_per_latent']:11.3f} "
              f"{r['ref_all_s']:10.1f} {r['ref_all_s'] / r['ours_s']:7.1f} "
              f"{r['same']:>5d}/{r['latents']:<4d} ({r['same'] / r['latents']:.3f}) "
              f"{r['quality']['select_r']['mean']:>8.4f}/{r['ref_mean_r']:.4f}")  # fmt: skip
    batched_s = ", ".join(f"{r['batched_s']:.0f}s" for r in rows)
    print(f"LE s/latent: LE's greedy search as published (a fresh nn.Linear per candidate, 100 full-batch Adam epochs "
          f"at lr 0.3), timed one latent at a time on {rows[0]['ref_n']} random latents and extrapolated per latent "
          f"to all {len(latents)} (LE s (all)); it runs on 1 thread, its fastest. Same concepts: LE's procedure with "
          f"the same Adam arithmetic batched over all latents ({batched_s}), "
          f"which matches the one-at-a-time runs: {all(r['one_equals_batched'] for r in rows)}. Both rank by the "
          f"same elastic net. Ours: all latents at once, {args.threads} threads allowed.")  # fmt: skip
    for r in rows:
        q = r["quality"]
        print(
            f"le-{r['variant']}: explained {q['explained']}/{r['latents']}, select r {q['select_r']['mean']}, "
            f"held-out r {q['heldout_r']['mean']} ± {q['heldout_r']['se']}, mean terms {q['mean_terms']}, "
            f"largest term names the ground-truth primitive {q['gt_named']['rate']} (n={q['gt_named']['n']})"
        )
    ours = sum(r["ours_s"] for r in rows)
    ref = sum(r["ref_all_s"] for r in rows)
    same = sum(r["same"] for r in rows) / max(sum(r["latents"] for r in rows), 1)
    print(f"speedup_vs_reference={ref / ours:.1f} seconds={ours:.2f} same_concepts={same:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
