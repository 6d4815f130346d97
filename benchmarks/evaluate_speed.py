"""``evaluate`` on the quickstart run: 64 sampled latents × every explanation method + the baselines, offline
(the sketch-world renderer as held-out generator, the annotations as simulator), from a cold cache.

Run from the repository root after ``python -m sae_lab quickstart``, no arguments. Generated images, activations and
scored rows go to a temporary folder and the table to a temporary file, so the run's own files (evaluation.json,
summary.json, index.html) are not touched; only the probe set (shared with the explainers) may be cached in the run.
Goal: ≤ 60 s on 2 cores. The last line is ``seconds=<x> images=<n> cache_hits=<n>``: wall time, images drawn, and
CoSy requests (method × latent) served by images already drawn for another row.
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from sae_lab.evaluate import EvaluateSettings, evaluate, format_table  # noqa: E402
from sae_lab.run import RunFiles, explanation_methods  # noqa: E402

RUN = Path("reports/quickstart")
GOAL_SECONDS = 60.0


def main() -> int:
    files = RunFiles(RUN)
    if not files.has_report():
        print(f"{RUN.resolve()} has no report (neurons.jsonl): run `python -m sae_lab quickstart` from the repository "
              "root first", file=sys.stderr)  # fmt: skip
        return 2
    if not explanation_methods(files):
        print(f"{files.explanations_dir} holds no explanations: run the quickstart's explain stages first "
              "(`python -m sae_lab quickstart`, or `python -m sae_lab explain labels --run reports/quickstart`)",
              file=sys.stderr)  # fmt: skip
        return 2
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        settings = EvaluateSettings(run=str(RUN), n_latents=64, generator="renderer", simulator="offline",
                                    out=str(Path(tmp) / "evaluation.json"), cache_dir=tmp, device="cpu",
                                    progress=False)  # fmt: skip
        t0 = time.perf_counter()
        ev = evaluate(settings)
        seconds = time.perf_counter() - t0
    w = ev["work"]
    print(format_table(ev))
    print(f"methods={len(ev['methods'])} latents={len(ev['latents'])} rows={len(ev['rows'])} "
          f"concepts={w.get('concepts')} probe_s={w.get('probe_seconds')} cosy_s={w.get('cosy_seconds')} "
          f"simulation_s={w.get('simulation_seconds')} threads={torch.get_num_threads()} "
          f"goal_met={'yes' if seconds <= GOAL_SECONDS else 'no'} (goal <= {GOAL_SECONDS:g} s)")  # fmt: skip
    print(f"seconds={seconds:.1f} images={w['images_generated']} cache_hits={w['cache_hits']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
