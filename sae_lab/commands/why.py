"""`python -m sae_lab why IMG [IMG…]`: why the classifier picked its class, per image (table, or JSON lines)."""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

HELP = "explain single predictions: class, top-5, the top SAE latents with their labels and exact logit shares"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""Files taken from a folder (a file named explicitly is always tried)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sae_lab.data.images import MAX_PIXELS

    p.add_argument("images", nargs="+", metavar="IMG",
                   help="image files (PNG/JPEG/…), folders (their image files) or glob patterns ('sketches/**/*.png')")  # fmt: skip
    p.add_argument("--run", default=None,
                   help="report folder or run name whose SAE and labels to use (default: quickstart, or none with --sae)")  # fmt: skip
    p.add_argument("--sae", default=None, help="SAE export folder (default: the run's, checkpoints/<run>/sae)")
    p.add_argument("--classifier", default=None, help="classifier checkpoint (default: the one the SAE records)")
    p.add_argument("--json", action="store_true", help="one JSON object per image and line (schema in the README)")
    p.add_argument("--top", type=int, default=5, help="latents listed per image")
    p.add_argument("--rank-by", choices=("contribution", "abs"), default="contribution",
                   help="order of the latents: largest push towards the class, or largest |contribution|")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="largest image accepted (width × height)")
    p.add_argument("--llm", default=None,
                   help="text backend that rewords the sentence (e.g. openai:<model>@<url>, hf:<id>); default: template")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")


def expand_inputs(specs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files to explain, in order (folders → their image files, sorted; globs expanded, sorted), and the
    ``(spec, problem)`` of every argument that named nothing."""
    files, problems = [], []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(str(f) for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            if not found:
                problems.append((spec, "folder holds no image files"))
        elif path.exists():
            files.append(spec)
        elif glob.has_magic(spec):
            found = sorted(f for f in glob.glob(spec, recursive=True) if Path(f).is_file())
            files += found
            if not found:
                problems.append((spec, "pattern matches no file"))
        else:
            problems.append((spec, "no such file"))
    return list(dict.fromkeys(files)), problems


def run(args: argparse.Namespace) -> int:
    from sae_lab.data.images import ImageDecodeError
    from sae_lab.inference import SaeLab

    if args.top < 0 or args.batch_size < 1:
        raise ValueError("--top must be >= 0 and --batch-size >= 1")
    files, problems = expand_inputs(args.images)
    failed = bool(problems)

    def report(name: str, problem: str) -> None:
        print(f"error: {name}: {problem}", file=sys.stderr)
        if args.json:
            print(json.dumps({"image": name, "error": problem}), flush=True)

    for spec, problem in problems:
        report(spec, problem)
    if not files:
        return 2
    lab = SaeLab.load(args.run, sae=args.sae, classifier=args.classifier, device=args.device,
                      text_backend=args.llm, max_pixels=args.max_pixels)  # fmt: skip
    for a in range(0, len(files), args.batch_size):
        chunk = files[a : a + args.batch_size]
        tensors, errors = {}, {}
        for f in chunk:
            try:
                tensors[f] = lab.to_tensor(f)
            except (ImageDecodeError, OSError) as e:
                errors[f] = str(e)
        names = [f for f in chunk if f in tensors]
        whys = (
            iter(lab.why([tensors[f] for f in names], names=names, top=args.top, rank_by=args.rank_by))
            if names
            else iter(())
        )
        for f in chunk:
            if f in errors:
                failed = True
                report(f, errors[f])
                continue
            why = next(whys)
            print(json.dumps(why.to_json()) if args.json else why.to_text() + "\n", flush=True)
    return 1 if failed else 0
