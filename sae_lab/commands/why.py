"""`python -m sae_lab why IMAGE [IMAGE…]`: why the classifier picked its class, per image (table, or JSON lines)."""

from __future__ import annotations

import glob
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

HELP = "explain single predictions: class, top-5, the top SAE latents with their labels and exact logit shares"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""Files taken from a folder (a file named explicitly is always tried)."""
METHOD_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
"""A valid explanation method name (the stem of explanations/<method>.jsonl)."""


@dataclass(frozen=True)
class WhySettings:
    """Images to explain, the run whose SAE and explanations explain them, and how the answers are shown."""

    images: list[str]
    """Image files (PNG/JPEG/…), folders (their image files) or glob patterns ('sketches/**/*.png'); on the
    command line usually the bare arguments: why a.png pics/ 'more/*.png'."""
    run: str | None = None
    """Report folder or run name whose SAE and explanations to use (None: quickstart, or none with --sae)."""
    sae: str | None = None
    """SAE export folder (None: the run's, checkpoints/<run>/sae)."""
    classifier: str | None = None
    """Classifier checkpoint (None: the one the SAE records)."""
    explanations: str | None = None
    """Explanation methods whose text labels a latent, comma-separated in order of preference, e.g. line,labels
    (None: sae_lab.run.DEFAULT_PREFERENCE, then any other method of the run)."""
    json: bool = False
    """One JSON object per image and line (schema in the README) instead of a table."""
    top: int = 5
    """Latents listed per image."""
    rank_by: Literal["contribution", "abs"] = "contribution"
    """Order of the latents: largest push towards the class, or largest |contribution|."""
    batch_size: int = 32
    """Images per forward pass."""
    max_pixels: int | None = None
    """Largest image accepted, width × height (None: the image loader's limit, 64 000 000)."""
    # The limit is stated, not imported (sae_lab.data.images imports torch; --help must not); a test keeps it true.
    llm: str | None = None
    """Text backend that rewords the sentence, e.g. openai:<model>@<url> or hf:<id> (None: the template)."""
    device: str = "cpu"
    """Where the models run: cpu, cuda, cuda:1 …"""

    def __post_init__(self):
        if isinstance(self.images, str):  # the Python API given one path
            object.__setattr__(self, "images", [self.images])
        if not self.images:
            raise ValueError("images must name at least one image file, folder or glob pattern")
        if self.top < 0:
            raise ValueError(f"top must be >= 0, got {self.top}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1 (or None), got {self.max_pixels}")
        bad = [m for m in self.methods or () if not METHOD_NAME.fullmatch(m)]
        if bad or self.methods == ():
            raise ValueError(f"explanations must be comma-separated method names (e.g. line,labels), "
                             f"got {self.explanations!r}")  # fmt: skip

    @property
    def methods(self) -> tuple[str, ...] | None:
        """The explanation methods named, in order (None: the default preference)."""
        if self.explanations is None:
            return None
        return tuple(m.strip() for m in self.explanations.split(",") if m.strip())


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


def run_why(s: WhySettings) -> int:
    """Explains every image ``s.images`` names and prints the answers; 1 when some input failed, 2 when none
    could be read."""
    from sae_lab.data.images import ImageDecodeError
    from sae_lab.inference import SaeLab

    files, problems = expand_inputs(s.images)
    failed = bool(problems)

    def report(name: str, problem: str) -> None:
        print(f"error: {name}: {problem}", file=sys.stderr)
        if s.json:
            print(json.dumps({"image": name, "error": problem}), flush=True)

    for spec, problem in problems:
        report(spec, problem)
    if not files:
        return 2
    limits = {} if s.max_pixels is None else {"max_pixels": s.max_pixels}
    lab = SaeLab.load(s.run, sae=s.sae, classifier=s.classifier, device=s.device, text_backend=s.llm,
                      explanations=s.methods, **limits)  # fmt: skip
    for a in range(0, len(files), s.batch_size):
        chunk = files[a : a + s.batch_size]
        tensors, errors = {}, {}
        for f in chunk:
            try:
                tensors[f] = lab.to_tensor(f)
            except (ImageDecodeError, OSError) as e:
                errors[f] = str(e)
        names = [f for f in chunk if f in tensors]
        whys = (
            iter(lab.why([tensors[f] for f in names], names=names, top=s.top, rank_by=s.rank_by)) if names else iter(())
        )
        for f in chunk:
            if f in errors:
                failed = True
                report(f, errors[f])
                continue
            why = next(whys)
            print(json.dumps(why.to_json()) if s.json else why.to_text() + "\n", flush=True)
    return 1 if failed else 0
