"""The labeller's prompt for one latent: its statistics (and an annotated exemplar sprite) and the answer format."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from sae_lab.backends.text import format_stats_block
from sae_lab.run.records import NeuronRecord

MAX_LABEL_WORDS = 12
STAT_KEYS = ("latent", "frequency", "image_frequency", "monosemanticity", "top_classes", "anti_classes", "ground_truth")
CLASS_KEYS = ("class", "S", "pmi", "delta", "w")
TILE_CAPTION = 12
"""Height in pixels of the caption strip under each exemplar tile."""
MAX_TILES = 16

SYSTEM_PROMPT = (
    "You name the visual concept that one latent of a sparse autoencoder inside a sketch classifier detects. "
    "Answer in exactly two lines:\nSHORT ANSWER: <the concept, at most 12 words>\n"
    "EVIDENCE: <one line citing the statistics that support it>"
)
RETRY_REMINDER = (
    "That answer did not follow the format. Reply with exactly two lines and nothing else:\n"
    "SHORT ANSWER: <the concept, at most 12 words>\nEVIDENCE: <one line>"
)


@dataclass(frozen=True)
class LabelTask:
    """One latent to label."""

    latent: int
    """Latent id."""
    prompt: str
    """The user turn (the system prompt is :data:`SYSTEM_PROMPT`)."""
    prompt_hash: str
    """sha256 of system + user prompt, the attached image's PNG bytes and the backend name."""
    render_image: Callable[[], Image.Image] | None = None
    """Re-renders the attached image (None: text only); kept lazy so a large run holds no images in memory."""


def prompt_stats(neuron: NeuronRecord) -> dict[str, Any]:
    """The statistics the prompt shows: the report's ``stats_block`` (or the record's own fields), trimmed.

    Classes keep ``class``, ``S``, ``pmi``, ``delta`` (Δ⁻) and ``w``; ``ground_truth`` is ``{"primitive", "auc",
    "token_auc"}`` and left out when the run has none.
    """
    record = neuron.to_json()
    block = dict(neuron.stats_block or {k: record[k] for k in STAT_KEYS if k in record})
    block["latent"] = neuron.latent
    gt = neuron.ground_truth
    if block.get("ground_truth") is None and isinstance(gt, Mapping) and gt.get("primitive"):
        auc = gt.get("auc", gt.get("image_auc"))
        block["ground_truth"] = {"primitive": gt["primitive"], "auc": auc, "token_auc": gt.get("token_auc")}
    stats = {k: block[k] for k in STAT_KEYS if block.get(k) is not None}
    for key in ("top_classes", "anti_classes"):
        if key in stats:
            stats[key] = [{k: c[k] for k in CLASS_KEYS if k in c} for c in stats[key] if isinstance(c, Mapping)]
    return stats


def build_prompt(stats: Mapping[str, Any], with_image: bool) -> str:
    """The user turn for one latent: what the figures mean, the stats block, the answer format."""
    lines = [
        f"Latent {stats['latent']} of a sparse autoencoder trained on the feature map of a sketch classifier.",
        "Its statistics, as compact JSON between BEGIN STATS and END STATS:",
        "- frequency: share of feature-map tokens on which it fires; image_frequency: share of images;",
        "- monosemanticity: how concentrated its activation is on few classes (0 to 1);",
        "- top_classes: classes it supports, ranked by S = z(PMI) + 2*z(-delta) + z(w); pmi: pointwise mutual "
        "information of the class with the latent being on; delta: change of the class logit when the latent is "
        "knocked out (negative = it supports the class); w: its logit-lens weight on the class;",
        "- anti_classes: classes it works against.",
    ]
    if "ground_truth" in stats:
        lines.append(
            "- ground_truth: the drawing primitive whose presence its activation predicts best, with ROC-AUC "
            "(0.5 = chance, 1 = perfect)."
        )
    if with_image:
        lines.append(
            "The attached image shows its top exemplar sketches, activation heatmap overlaid (brighter = stronger), "
            "each captioned with its class and peak activation."
        )
    lines += [
        format_stats_block(stats),
        "Name the visual concept (a shape, stroke pattern or part) this latent detects. Answer exactly:",
        "SHORT ANSWER: <≤ 12 words>",
        "EVIDENCE: <one line>",
    ]
    return "\n".join(lines)


def annotated_sprite(run_dir: Path, neuron: NeuronRecord, max_tiles: int = MAX_TILES) -> Image.Image | None:
    """The exemplar heatmaps in a grid, each captioned ``class z_max``; else the report's sprite; else None."""
    tiles = []
    for ex in (neuron.exemplars or [])[:max_tiles]:
        path = run_dir / str(ex.get("image", ""))
        if ex.get("image") and path.is_file():
            with Image.open(path) as im:
                tile = im.convert("RGB")
            name = ex.get("class") if ex.get("class") is not None else ex.get("label", "")
            z = ex.get("z_max")
            tiles.append((tile, f"{name} {z:.2g}" if isinstance(z, (int, float)) else str(name)))
    if not tiles:
        sprite = neuron.sprite
        if sprite and (run_dir / sprite).is_file():
            with Image.open(run_dir / sprite) as im:
                return im.convert("RGB")
        return None
    side, gap = max(max(t.size) for t, _ in tiles), 2
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    canvas = Image.new("RGB", (columns * (side + gap) - gap, rows * (side + TILE_CAPTION + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    for j, (tile, caption) in enumerate(tiles):
        x, y = (j % columns) * (side + gap), (j // columns) * (side + TILE_CAPTION + gap)
        canvas.paste(tile, (x, y))
        draw.text((x + 1, y + side), caption[: max(side // 6, 1)], fill="black")
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def prompt_hash(prompt: str, image: bytes | None, backend_name: str) -> str:
    """sha256 over the exact prompt text, the image bytes and the backend name (NUL-separated)."""
    digest = hashlib.sha256()
    for part in (prompt.encode("utf-8"), image or b"", backend_name.encode("utf-8")):
        digest.update(part + b"\0")
    return digest.hexdigest()


def make_task(run_dir: Path, neuron: NeuronRecord, backend_name: str, images: bool) -> LabelTask:
    """Prompt, image and hash for one latent (``images``: attach the annotated sprite when there is one)."""
    image = annotated_sprite(run_dir, neuron) if images else None
    prompt = build_prompt(prompt_stats(neuron), with_image=image is not None)
    digest = prompt_hash(f"{SYSTEM_PROMPT}\n{prompt}", png_bytes(image) if image else None, backend_name)
    render = (lambda: annotated_sprite(run_dir, neuron)) if image is not None else None
    return LabelTask(neuron.latent, prompt, digest, render)
