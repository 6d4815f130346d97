"""Cost of the neuron report's statistics against a plain forward pass of classifier + SAE on the same images.

(a) plain: ``classifier.features`` → tokens → ``sae.encode`` (Top-K) → ``sae.decode`` → ``classifier.head``
    (the spliced forward a user of the explained model runs);
(b) report: the report's streaming pass (dense codes, Top-K firing counts, LatentStats with primitive masks,
    exemplar feature maps kept) plus ``analyse`` (exact τ/PMI/AUC, logit lens, measured knockout, ranking).

Both read the same images through the same DataLoader code. ``compute`` mode decodes every image (and its
primitive masks) once up front, so only the model and statistics work is timed; ``e2e`` mode reads the parquet
in the timed loop (PNG decoding, and for (b) the masks too). Writing the report's files (exemplar PNGs,
``neurons.jsonl``, ``index.html``) is timed apart. Rounds alternate (a) and (b) so that load from other
processes hits both alike; medians are reported.

    python benchmarks/report_cost.py --sae checkpoints/quickstart/sae
    python benchmarks/report_cost.py --sae /tmp/run/checkpoints/quickstart/sae --rounds 3 --threads 1

Ends with one line ``ratio_compute_wall=<x> ratio_compute_cpu=<x> ratio_e2e_wall=<x> ratio_e2e_cpu=<x> goal=1.5``.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_lab.data.sketch import collate_skip_corrupt  # noqa: E402
from sae_lab.data.tokens import image_datamodule  # noqa: E402
from sae_lab.models.tokens import fmap_to_tokens, tokens_to_fmap  # noqa: E402
from sae_lab.report import analysis as report_analysis  # noqa: E402
from sae_lab.report import inputs, pipeline, settings, stream, writer  # noqa: E402
from sae_lab.run import load_run  # noqa: E402


@torch.no_grad()
def plain_forward(net, sae, dataset, batch_size: int) -> int:
    """(a): features → Top-K encode → decode → head over every image; returns the number of correct top-1."""
    correct = 0
    for batch in DataLoader(dataset, batch_size, collate_fn=collate_skip_corrupt):
        fmap = net.features(batch["image"].to(sae.device))
        acts, indices = sae.encode(sae.standardize(fmap_to_tokens(fmap)))
        logits = net.head(tokens_to_fmap(sae.unstandardize(sae.decode(acts, indices)), fmap.shape))
        correct += int((logits.argmax(-1).cpu() == batch["label"]).sum())
    return correct


def report_statistics(net, sae, dataset, args, num_classes: int, num_primitives: int | None):
    """(b): the report's pass and analysis (no files); returns them and their (wall, CPU) seconds."""
    ko = report_analysis.knockout_subset(
        sae.cfg.num_latents, None if args.knockout_latents < 0 else args.knockout_latents
    )
    with Clock() as t_pass:
        sp = stream.stream_statistics(net, sae, dataset, num_classes, num_primitives, args.exemplars,
                                        args.quantile, args.batch_size, ko, progress=False)  # fmt: skip
    with Clock() as t_analysis:
        analysis = report_analysis.analyse(sp, sae, net, ko, args.batch_size)
    return sp, analysis, t_pass, t_analysis


class Clock:
    """Wall and process-CPU seconds of a ``with`` block (CPU time is what other load on the machine disturbs
    least; with several torch threads it also counts their spin-waiting)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


class InMemory(torch.utils.data.Dataset):
    """Items decoded once (``compute`` mode); ``drop`` removes keys, e.g. masks for the plain pass."""

    def __init__(self, items: list[dict], drop: tuple[str, ...] = ()):
        self.items = [{k: v for k, v in it.items() if k not in drop} for it in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sae", default="checkpoints/quickstart/sae", help="exported SAE folder")
    p.add_argument("--classifier", default=None, help="classifier checkpoint (default: from the SAE's cfg.json)")
    p.add_argument("--data", default=None, help="image source override")
    p.add_argument("--split", default=None, help="train, val or test (default as in `report`)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of the split")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--exemplars", type=int, default=16)
    p.add_argument("--quantile", type=float, default=0.99)
    p.add_argument("--knockout-latents", type=int, default=settings.KNOCKOUT_LATENTS, help="-1: all")
    p.add_argument("--rounds", type=int, default=3, help="alternating (a)/(b) rounds per mode")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--modes", default="compute,e2e", help="comma-separated: compute, e2e")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    loaded = load_run(None, args.sae, args.classifier, device)
    sae, clf, roots = loaded.sae, loaded.classifier, loaded.roots
    dm, dataset, split, primitive_names = inputs.open_split(clf, args.data, args.split, args.batch_size, roots)
    if args.limit:
        dataset = torch.utils.data.Subset(dataset, range(min(args.limit, len(dataset))))
    net = clf.net.to(device).eval()
    num_primitives = len(primitive_names) if primitive_names else None
    print(f"images: {len(dataset)} ({split} of {dm.source}); SAE M={sae.cfg.num_latents} K={sae.cfg.k} "
          f"layer {sae.layer}; device {device}, torch threads {torch.get_num_threads()}; "
          f"ground truth: {'yes' if num_primitives else 'no'}")  # fmt: skip

    ratios = {}
    for mode in args.modes.split(","):
        if mode == "compute":
            t = time.perf_counter()
            items = [dataset[i] for i in range(len(dataset))]
            items = [it for it in items if it is not None]
            print(f"[compute] decoded {len(items)} images (+ masks) once in {time.perf_counter() - t:.1f}s")
            plain_ds, report_ds = InMemory(items, drop=("masks", "primitives")), InMemory(items)
        elif mode == "e2e":
            report_ds = dataset
            dm_plain = image_datamodule(dict(dm.hparams), None, args.batch_size, 0, annotations=False)
            dm_plain.setup("fit")
            plain_ds = dm_plain.datasets[split]
            if args.limit:
                plain_ds = torch.utils.data.Subset(plain_ds, range(min(args.limit, len(plain_ds))))
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        plain, passes, analyses = [], [], []
        sp = analysis = None
        for _ in range(args.rounds):
            with Clock() as t_plain:
                plain_forward(net, sae, plain_ds, args.batch_size)
            sp, analysis, t_pass, t_analysis = report_statistics(net, sae, report_ds, args, len(clf.class_names),
                                                                 num_primitives)  # fmt: skip
            plain.append(t_plain)
            passes.append(t_pass)
            analyses.append(t_analysis)
            sp.stats.close()
        for clock in ("wall", "cpu"):
            a, p_, n = (statistics.median(getattr(t, clock) for t in ts) for ts in (plain, passes, analyses))
            ratios[f"{mode}_{clock}"] = (p_ + n) / a
            rounds = [round(getattr(t, clock), 2) for t in plain], [round(getattr(t, clock), 2) for t in passes]
            print(f"[{mode}, {clock} time] (a) plain forward {a:.2f}s | (b) report pass {p_:.2f}s + analysis "
                  f"{n:.2f}s = {p_ + n:.2f}s | ratio (b)/(a) = {(p_ + n) / a:.2f} (pass alone {p_ / a:.2f}); "
                  f"rounds a={rounds[0]} pass={rounds[1]}")  # fmt: skip
    if analysis is not None:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            files = pipeline._write_images(Path(tmp), analysis, sp, dataset, progress=False)
            t_images = time.perf_counter() - t
            t = time.perf_counter()
            records = writer.neuron_records(analysis, list(clf.class_names), primitive_names, files, sp.rows)
            writer.write_jsonl(Path(tmp) / writer.NEURONS, records)
            t_records = time.perf_counter() - t
            print(f"[files] exemplar PNGs + sprites for {len(files)} latents {t_images:.2f}s; "
                  f"neurons.jsonl {t_records:.2f}s (not in the ratio)")  # fmt: skip
        report = writer.report_summary(analysis, primitive_names=primitive_names, match_auc=settings.MATCH_AUC)
        print(f"primitives recovered {report['primitives_recovered']}/{report['primitives_total']}, "
              f"live latents matched {report['latents_matched']}, live {report['live_latents']}/"
              f"{report['num_latents']}, knockout r={report['knockout']['corr']} over {report['knockout']['pairs']} "
              f"pairs")  # fmt: skip
    print(" ".join(f"ratio_{m}={r:.2f}" for m, r in ratios.items()) + " goal=1.5")


if __name__ == "__main__":
    main()
