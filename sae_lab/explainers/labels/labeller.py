"""Concept labels for SAE latents: statistics (+ an annotated exemplar sprite) → LLM → ``labels.jsonl``.

Each latent gets one prompt carrying its stats block (:func:`sae_lab.backends.text.format_stats_block`) and asking for
``SHORT ANSWER: <≤ 12 words>`` / ``EVIDENCE: <one line>``; a malformed answer is asked again (with a format
reminder, sampled), then recorded as failed with the reason. Records are appended to ``labels.jsonl`` one line at
a time (flush + fsync), so an interrupted run loses at most the latents in flight. A re-run skips latents whose
last ``ok`` line carries the same prompt hash (prompt text + image bytes + backend name), truncates a partial last
line left by a kill, and ends by compacting the file atomically: one line per latent, the last ``ok`` line wins.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from sae_lab.backends.text import ChatRequest, TextBackend, format_stats_block, make_backend, parse_short_answer
from sae_lab.backends.text.remote import RetryPolicy, scrub

logger = logging.getLogger(__name__)

NEURONS = "neurons.jsonl"
LABELS = "labels.jsonl"
MAX_LABEL_WORDS = 12
MAX_NEW_TOKENS = 128
RETRY_TEMPERATURE = 0.7
"""Retries sample (seeded by the attempt number): a greedy model would repeat the same malformed answer."""
STAT_KEYS = ("latent", "frequency", "image_frequency", "monosemanticity", "top_classes", "anti_classes", "ground_truth")
CLASS_KEYS = ("class", "S", "pmi", "delta", "w")
TOKEN_ENVS = ("REPLICATE_API_TOKEN",)
"""Environment variables whose values are masked in everything written (plus the backend's own secrets)."""
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


@dataclass
class LabelRecord:
    """One line of ``labels.jsonl``."""

    latent: int
    label: str | None
    """The concept (≤ 12 words), None when the latent failed."""
    evidence: str | None
    """The model's one-line justification ("" when it gave none), None when failed."""
    source: str
    """The backend's name, model included (a valid ``--llm`` spec)."""
    prompt_hash: str
    status: str
    """``"ok"`` or ``"failed"``."""
    error: str | None
    """Why it failed (secrets masked), None when ok."""
    attempts: int
    """Requests sent for this latent, the backend's own transport retries included."""
    seconds: float
    """Time its requests took (summed over attempts)."""


@dataclass
class LabelOutcome:
    """What a labelling run did."""

    labelled: int
    """Chosen latents that now hold an up-to-date ``ok`` label (reused ones included)."""
    failed: int
    """Chosen latents whose labelling failed in this run."""
    reused: int
    """Chosen latents skipped because their ``ok`` label had the same prompt hash."""
    requested: int
    """Latents sent to the backend in this run."""
    seconds: float
    """Wall time of the run."""
    errors: dict[int, str] = field(default_factory=dict)
    """Why each failed latent failed (secrets masked)."""

    def block(self) -> dict[str, Any]:
        """The ``labels`` block of ``summary.json``."""
        return {"labelled": self.labelled, "failed": self.failed, "seconds": round(self.seconds, 3)}


# ---------------------------------------------------------------- inputs


def parse_latents(spec: str) -> list[int]:
    """``"0-63,70"`` → sorted unique ids.

    Raises:
        ValueError: for anything but comma-separated ``N`` or ``A-B`` (A ≤ B, non-negative).
    """
    ids: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi if dash else lo)
        except ValueError:
            a = b = -1
        if not part or a < 0 or b < a:
            raise ValueError(f"bad latent range {part!r} in {spec!r}: expected N or A-B with 0 <= A <= B, e.g. 0-63,70")
        ids.update(range(a, b + 1))
    return sorted(ids)


def load_neurons(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/neurons.jsonl``.

    Raises:
        FileNotFoundError: the report has not been written yet.
        ValueError: a line is not a JSON object with an integer ``id``.
    """
    path = Path(run_dir) / NEURONS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python -m sae_lab report --run {run_dir} …` first")
    neurons = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not JSON ({exc})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("id"), int):
            raise ValueError(f"{path}, line {number}: expected an object with an integer 'id'")
        neurons.append(record)
    return neurons


def select_neurons(
    neurons: Sequence[dict[str, Any]], latents: Iterable[int] | None, include_dead: bool
) -> list[dict[str, Any]]:
    """The neurons to label, in id order: ``latents`` (all when None), dead ones only with ``include_dead``.

    Raises:
        ValueError: ``latents`` names ids the report does not have.
    """
    by_id = {n["id"]: n for n in neurons}
    wanted = sorted(by_id) if latents is None else sorted(set(latents))
    missing = [i for i in wanted if i not in by_id]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" …" if len(missing) > 5 else "")
        raise ValueError(f"latents not in {NEURONS}: {shown} (the report has {len(by_id)} latents)")
    chosen = [by_id[i] for i in wanted if include_dead or not by_id[i].get("dead")]
    if len(chosen) < len(wanted):
        logger.info("skipping %d dead latents (--include-dead labels them)", len(wanted) - len(chosen))
    return chosen


def prompt_stats(neuron: Mapping[str, Any]) -> dict[str, Any]:
    """The statistics the prompt shows: the report's ``stats_block`` (or the record's own fields), trimmed.

    Classes keep ``class``, ``S``, ``pmi``, ``delta`` (Δ⁻) and ``w``; ``ground_truth`` is ``{"primitive", "auc",
    "token_auc"}`` and left out when the run has none.
    """
    block = dict(neuron.get("stats_block") or {k: neuron[k] for k in STAT_KEYS if k in neuron})
    block["latent"] = neuron["id"]
    gt = neuron.get("ground_truth")
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


def annotated_sprite(run_dir: Path, neuron: Mapping[str, Any], max_tiles: int = MAX_TILES) -> Image.Image | None:
    """The exemplar heatmaps in a grid, each captioned ``class z_max``; else the report's sprite; else None."""
    tiles = []
    for ex in (neuron.get("exemplars") or [])[:max_tiles]:
        path = run_dir / str(ex.get("image", ""))
        if ex.get("image") and path.is_file():
            with Image.open(path) as im:
                tile = im.convert("RGB")
            name = ex.get("class") if ex.get("class") is not None else ex.get("label", "")
            z = ex.get("z_max")
            tiles.append((tile, f"{name} {z:.2g}" if isinstance(z, (int, float)) else str(name)))
    if not tiles:
        sprite = neuron.get("sprite")
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


def make_task(run_dir: Path, neuron: Mapping[str, Any], backend_name: str, images: bool) -> LabelTask:
    """Prompt, image and hash for one latent (``images``: attach the annotated sprite when there is one)."""
    image = annotated_sprite(run_dir, neuron) if images else None
    prompt = build_prompt(prompt_stats(neuron), with_image=image is not None)
    digest = prompt_hash(f"{SYSTEM_PROMPT}\n{prompt}", png_bytes(image) if image else None, backend_name)
    render = (lambda: annotated_sprite(run_dir, neuron)) if image is not None else None
    return LabelTask(int(neuron["id"]), prompt, digest, render)


# ---------------------------------------------------------------- asking


class Labeller:
    """Labels tasks through ``backend.generate`` in chunks, asking again after malformed answers.

    Args:
        backend: Any text backend; remote ones run a chunk's requests concurrently.
        max_retries: Extra requests after a malformed answer (transport failures are the backend's to retry).
        chunk_size: Latents per ``generate`` call; records are yielded as each call returns.
        max_new_tokens: Generation length per request.
        secrets: Strings masked in every field of a record.
    """

    def __init__(
        self,
        backend: TextBackend,
        *,
        max_retries: int = 2,
        chunk_size: int = 16,
        max_new_tokens: int = MAX_NEW_TOKENS,
        secrets: Sequence[str] = (),
    ) -> None:
        if max_retries < 0 or chunk_size < 1:
            raise ValueError(f"need max_retries >= 0 and chunk_size >= 1, got {max_retries}, {chunk_size}")
        self.backend = backend
        self.max_retries = max_retries
        self.chunk_size = chunk_size
        self.max_new_tokens = max_new_tokens
        self.secrets = [s for s in secrets if s]

    def request(self, task: LabelTask, attempt: int, previous: str | None = None) -> ChatRequest:
        """Attempt 0 is greedy; a retry shows the malformed answer, reminds of the format and samples."""
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task.prompt}]
        if attempt > 0:
            messages.append({"role": "assistant", "content": (previous or "").strip()[:600] or "(no answer)"})
            messages.append({"role": "user", "content": RETRY_REMINDER})
        images = [task.render_image()] if task.render_image is not None else []
        return ChatRequest(
            messages=messages,
            images=[im for im in images if im is not None],
            max_new_tokens=self.max_new_tokens,
            temperature=RETRY_TEMPERATURE if attempt else 0.0,
            seed=attempt if attempt else None,
        )

    def label(self, tasks: Sequence[LabelTask]) -> Iterator[LabelRecord]:
        """One record per task, yielded as soon as it is final (not in task order)."""
        for start in range(0, len(tasks), self.chunk_size):
            yield from self._chunk(tasks[start : start + self.chunk_size])

    def _chunk(self, chunk: Sequence[LabelTask]) -> Iterator[LabelRecord]:
        attempts = {t.latent: 0 for t in chunk}
        seconds = {t.latent: 0.0 for t in chunk}
        previous: dict[int, str | None] = {}
        pending, attempt = list(chunk), 0
        while pending:
            requests = [self.request(t, attempt, previous.get(t.latent)) for t in pending]
            try:
                results = self.backend.generate(requests)
            except Exception as exc:  # noqa: BLE001 -- a broken backend call fails its chunk, not the run
                error = f"{type(exc).__name__}: {exc}"
                for t in pending:
                    yield self._record(t, None, error, attempts[t.latent] + 1, seconds[t.latent])
                return
            retry = []
            for task, result in zip(pending, results):
                attempts[task.latent] += result.attempts
                seconds[task.latent] += result.seconds
                n, s = attempts[task.latent], seconds[task.latent]
                if not result.ok:
                    yield self._record(task, None, result.error or "no text", n, s)
                    continue
                parsed = parse_short_answer(result.text, MAX_LABEL_WORDS)
                if parsed is not None:
                    yield self._record(task, parsed, None, n, s)
                elif attempt < self.max_retries:
                    previous[task.latent] = result.text
                    retry.append(task)
                else:
                    yield self._record(task, None, f"{malformed_reason(result.text)} (after {n} attempts)", n, s)
            pending, attempt = retry, attempt + 1

    def _record(
        self, task: LabelTask, parsed: tuple[str, str] | None, error: str | None, attempts: int, seconds: float
    ) -> LabelRecord:
        label, evidence = parsed if parsed is not None else (None, None)
        return LabelRecord(
            latent=task.latent,
            label=self._mask(label),
            evidence=self._mask(evidence),
            source=self._mask(self.backend.name) or "",
            prompt_hash=task.prompt_hash,
            status="ok" if parsed is not None else "failed",
            error=scrub(error, self.secrets) if error is not None else None,
            attempts=attempts,
            seconds=round(seconds, 4),
        )

    def _mask(self, text: str | None) -> str | None:
        """Known secrets only: the pattern-based scrub would also eat labels like "flag bearer figure"."""
        if text is None:
            return None
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def malformed_reason(text: str | None) -> str:
    """Why an answer is unusable: no ``SHORT ANSWER`` at all, or a label over the word limit."""
    loose = parse_short_answer(text, max_words=10**6)
    excerpt = " ".join((text or "").split())[:120]
    if loose is None:
        return f"no SHORT ANSWER in the answer {excerpt!r}"
    return f"SHORT ANSWER too long ({len(loose[0].split())} words > {MAX_LABEL_WORDS}): {loose[0][:120]!r}"


# ---------------------------------------------------------------- the file


class LabelStore:
    """``labels.jsonl``: durable appends, the latest record per latent, atomic compaction.

    Opening repairs the tail: a partial last line (a kill mid-write) is cut off, or completed with its newline
    when it happens to be a whole JSON object.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: io.TextIOWrapper | None = None
        self.repaired_bytes = self._repair()

    def _repair(self) -> int:
        if not self.path.is_file():
            return 0
        with open(self.path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            keep, pos = 0, size
            while pos > 0:  # find the last newline, reading backwards
                step = min(1 << 16, pos)
                pos -= step
                f.seek(pos)
                cut = f.read(step).rfind(b"\n")
                if cut >= 0:
                    keep = pos + cut + 1
                    break
            f.seek(keep)
            tail = f.read()
            if _json_object(tail) is not None:
                f.seek(size)
                f.write(b"\n")
                dropped = 0
            else:
                f.truncate(keep)
                dropped = size - keep
                logger.warning("%s: cut a partial last line (%d bytes) left by an interrupted run", self.path, dropped)
            f.flush()
            os.fsync(f.fileno())
        return dropped

    def records(self) -> list[dict[str, Any]]:
        """Every readable record, in file order (unreadable lines are skipped with a warning)."""
        if not self.path.is_file():
            return []
        out = []
        for number, line in enumerate(self.path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            record = _json_object(line)
            if record is None or not isinstance(record.get("latent"), int):
                logger.warning("%s, line %d: not a label record; ignored", self.path, number)
                continue
            out.append(record)
        return out

    def latest(self) -> dict[int, dict[str, Any]]:
        """Per latent the last ``ok`` record, or the last record when none is ok."""
        out: dict[int, dict[str, Any]] = {}
        for record in self.records():
            old = out.get(record["latent"])
            if record.get("status") == "ok" or old is None or old.get("status") != "ok":
                out[record["latent"]] = record
        return out

    def append(self, record: Mapping[str, Any]) -> None:
        """One line, flushed and fsynced before returning."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 -- kept open across appends
        self._file.write(_dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def compact(self) -> int:
        """Rewrite the file atomically with :meth:`latest`, by latent id; returns the number of lines."""
        self.close()
        latest = self.latest()
        if not latest and not self.path.exists():
            return 0
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(_dumps(latest[i]) + "\n" for i in sorted(latest))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        return len(latest)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _dumps(record: Mapping[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the run


def backend_options(
    spec: str, concurrency: int, max_retries: int, timeout: float, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Constructor options for the backend ``spec`` names: concurrency, timeout and retries where they apply."""
    kind = spec.strip().partition(":")[0].lower()
    if kind in ("replicate", "openai"):
        opts: dict[str, Any] = {"concurrency": concurrency, "timeout_s": timeout}
        opts["retry"] = RetryPolicy(max_retries=max_retries)
    elif kind in ("hf", "transformers"):
        opts = {"batch_size": concurrency}
    else:
        opts = {}
    return {**opts, **(extra or {})}


def secrets_of(backend: TextBackend, env_names: Iterable[str] = ()) -> list[str]:
    """Credentials to mask: the backend's own, and the values of the token variables in the environment."""
    found = list(getattr(backend, "_secrets", lambda: [])())
    found += [os.environ.get(name, "") for name in (*TOKEN_ENVS, *env_names)]
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def refresh_index(run_dir: Path) -> Path | None:
    """Re-render ``index.html`` with the labels, when the report stage provides the renderer and the files."""
    try:
        from sae_lab.report.html import write_index
    except ImportError:
        return None
    try:
        return write_index(run_dir)
    except FileNotFoundError as exc:
        logger.warning("index.html not refreshed: %s", exc)
        return None


def label_run(
    run_dir: str | Path,
    llm: str | TextBackend = "offline",
    latents: str | Iterable[int] | None = None,
    include_dead: bool = False,
    images: bool = True,
    concurrency: int = 8,
    max_retries: int = 2,
    timeout: float = 120.0,
    progress: bool = True,
    *,
    overwrite: bool = False,
    max_new_tokens: int = MAX_NEW_TOKENS,
    backend_opts: Mapping[str, Any] | None = None,
) -> LabelOutcome:
    """Label the latents of a neuron report into ``run_dir/labels.jsonl`` (see the module docstring).

    Args:
        run_dir: Report folder holding ``neurons.jsonl``.
        llm: Backend spec (:func:`sae_lab.backends.text.make_backend`) or a backend instance (left open).
        latents: Ids as a list or a range string (``"0-63,70"``); None for all.
        include_dead: Label dead latents too.
        images: Attach the annotated exemplar sprite when the backend accepts images.
        concurrency: Requests in flight (remote backends) or batch size (transformers); chunks are twice this.
        max_retries: Retries after a malformed answer, and of transient HTTP failures (remote backends).
        timeout: Seconds per remote request attempt.
        progress: Show a progress bar.
        overwrite: Relabel chosen latents even when their label is up to date.
        max_new_tokens: Generation length per request.
        backend_opts: Extra constructor options for a spec (e.g. ``accepts_images``, ``api_key_env``, ``retry``).

    Raises:
        FileNotFoundError: no ``neurons.jsonl`` (run ``report`` first).
        ValueError: a bad spec, latent range, unknown latent or option.
    """
    start = time.monotonic()
    if concurrency < 1 or max_retries < 0 or timeout <= 0 or max_new_tokens < 1:
        raise ValueError("need concurrency >= 1, max_retries >= 0, timeout > 0 and max_new_tokens >= 1")
    run_dir = Path(run_dir)
    ids = parse_latents(latents) if isinstance(latents, str) else latents
    chosen = select_neurons(load_neurons(run_dir), ids, include_dead)
    owned = not isinstance(llm, TextBackend)
    if owned:
        try:
            backend = make_backend(llm, **backend_options(llm, concurrency, max_retries, timeout, backend_opts))
        except TypeError as exc:  # an option the chosen backend does not take
            raise ValueError(f"backend {llm!r} does not take the options given: {exc}") from exc
    else:
        backend = llm
    env_names = [backend_opts["api_key_env"]] if backend_opts and backend_opts.get("api_key_env") else []
    store: LabelStore | None = None
    try:
        store = LabelStore(run_dir / LABELS)
        send_images = images and backend.accepts_images
        tasks = [make_task(run_dir, n, backend.name, send_images) for n in chosen]
        latest = {} if overwrite else store.latest()
        todo = [t for t in tasks if not _up_to_date(latest.get(t.latent), t.prompt_hash)]
        logger.info("labelling %d latents with %s (%d up to date)", len(todo), backend.name, len(tasks) - len(todo))
        labeller = Labeller(
            backend,
            max_retries=max_retries,
            chunk_size=2 * concurrency,
            max_new_tokens=max_new_tokens,
            secrets=secrets_of(backend, env_names),
        )
        ok, errors = 0, {}
        with tqdm(total=len(todo), desc="label", unit="latent", disable=not progress, dynamic_ncols=True) as bar:
            for record in labeller.label(todo):
                store.append(asdict(record))
                if record.status == "ok":
                    ok += 1
                else:
                    errors[record.latent] = record.error or ""
                    logger.info("latent %d failed: %s", record.latent, record.error)
                bar.update(1)
                bar.set_postfix(ok=ok, failed=len(errors), refresh=False)
        store.compact()
    finally:
        if store is not None:
            store.close()
        if owned:
            backend.close()
    refresh_index(run_dir)
    reused = len(tasks) - len(todo)
    return LabelOutcome(reused + ok, len(errors), reused, len(todo), time.monotonic() - start, errors)


def run_labels(run_dir: str | Path, llm: str | TextBackend = "offline", **kwargs: Any) -> dict[str, Any]:
    """:func:`label_run` (same arguments), returning the quickstart block ``{"labelled", "failed", "seconds"}``."""
    return label_run(run_dir, llm, **kwargs).block()


def _up_to_date(record: Mapping[str, Any] | None, digest: str) -> bool:
    return record is not None and record.get("status") == "ok" and record.get("prompt_hash") == digest
