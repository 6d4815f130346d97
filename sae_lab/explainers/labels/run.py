"""The labels stage: every chosen latent's statistics → LLM → ``labels.jsonl`` and ``explanations/labels.jsonl``.

Records are appended one line at a time (flush + fsync), so an interrupted run loses at most the latents in
flight. A re-run skips latents whose last ``ok`` line carries the same prompt hash (prompt text + image bytes +
backend name), and ends by compacting ``labels.jsonl`` atomically (one line per latent, the last ``ok`` wins) and
rewriting ``explanations/labels.jsonl`` from it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sae_lab.backends.text import TextBackend, make_backend
from sae_lab.backends.text.remote import RetryPolicy
from sae_lab.explainers.base import ExplainSettings, choose_latents, parse_latents
from sae_lab.explainers.labels.labeller import MAX_NEW_TOKENS, Labeller
from sae_lab.explainers.labels.prompt import make_task
from sae_lab.run import ExplanationStore, LabelRecord, LabelStore, RunFiles, read_neurons
from sae_lab.run.identity import recorded_identity
from sae_lab.run.records import NeuronRecord

logger = logging.getLogger(__name__)

METHOD = "labels"
SAE_KEY = "sae"
"""The key of a ``labels.jsonl`` line (and of an explanation's ``backends``) holding the SAE identity."""
TOKEN_ENVS = ("REPLICATE_API_TOKEN",)
"""Environment variables whose values are masked in everything written (plus the backend's own secrets)."""


@dataclass
class LabelSettings(ExplainSettings):
    """Options of the stats → LLM labeller (``explain labels``)."""

    llm: str = "offline"
    """Text backend: offline | hf:<hub id or path> | replicate[:<owner>/<name>] | openai:<model>@<base url>."""
    include_dead: bool = False
    """Label dead latents too."""
    images: bool = True
    """Attach the annotated exemplar sprite when the backend takes images."""
    vision: bool = False
    """The replicate/openai model takes images: send them (sets accepts_images)."""
    api_key_env: str | None = None
    """openai backend: name of the environment variable holding the API key (never the key itself)."""
    concurrency: int = 8
    """Requests in flight (remote backends) or batch size (transformers)."""
    max_retries: int = 2
    """Retries after a malformed answer, and of HTTP 429/5xx/timeouts (remote backends)."""
    timeout: float = 120.0
    """Seconds per remote request attempt."""
    max_new_tokens: int = MAX_NEW_TOKENS
    """Generation length per request."""
    progress: bool = True
    """Show a progress bar."""

    def check(self) -> None:
        super().check()
        for name, ok in (("concurrency", self.concurrency >= 1), ("max_retries", self.max_retries >= 0),
                         ("timeout", self.timeout > 0), ("max_new_tokens", self.max_new_tokens >= 1)):  # fmt: skip
            if not ok:
                raise ValueError(f"{name} is out of range: {getattr(self, name)!r}")


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


def select_neurons(neurons: Sequence[NeuronRecord], latents: Iterable[int] | None, include_dead: bool
                   ) -> list[NeuronRecord]:  # fmt: skip
    """The neurons to label, in id order: ``latents`` (all when None), dead ones only with ``include_dead``.

    Raises:
        ValueError: ``latents`` names ids the report does not have.
    """
    by_id = {n.latent: n for n in neurons}
    wanted = sorted(by_id) if latents is None else sorted(set(latents))
    missing = [i for i in wanted if i not in by_id]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" …" if len(missing) > 5 else "")
        raise ValueError(f"latents not in neurons.jsonl: {shown} (the report has {len(by_id)} latents)")
    chosen = [by_id[i] for i in wanted if include_dead or not by_id[i].dead]
    if len(chosen) < len(wanted):
        logger.info("skipping %d dead latents (--include_dead labels them)", len(wanted) - len(chosen))
    return chosen


def backend_options(spec: str, concurrency: int, max_retries: int, timeout: float,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
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
    """Re-render ``index.html`` with the new explanations, when the report's files are there."""
    from sae_lab.report.html import write_index

    try:
        return write_index(run_dir)
    except FileNotFoundError as exc:
        logger.warning("index.html not refreshed: %s", exc)
        return None


def write_explanations(files: RunFiles, latest: Mapping[int, Mapping[str, Any]]) -> int:
    """``explanations/labels.jsonl`` rewritten from the compacted ``labels.jsonl`` (each record with the identity
    of the SAE its report describes, ``backends.sae``)."""
    store = ExplanationStore(files, METHOD)
    records = []
    for k in sorted(latest):
        record = LabelRecord.from_json(dict(latest[k])).to_explanation()
        if latest[k].get(SAE_KEY):
            record.backends[SAE_KEY] = latest[k][SAE_KEY]
        records.append(record)
    from sae_lab.run.io import write_jsonl

    return write_jsonl(store.path, (r.to_json() for r in records))


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
    """Labels the latents of a neuron report (see the module docstring).

    Args:
        run_dir: Report folder holding ``neurons.jsonl``.
        llm: Backend spec (:func:`sae_lab.backends.text.make_backend`) or a backend instance (left open).
        latents: Ids as a list or a range string (``"0-63,70"``); None or ``"all"`` for all.
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
    files = RunFiles(run_dir)
    neurons = read_neurons(files)
    # A label reads the report's statistics: it describes the SAE the report was made from, and says so.
    identity = recorded_identity(files)
    sae_id = identity.id if identity is not None else None
    if isinstance(latents, str):
        spec = latents.strip()
        latents = None if spec == "all" else choose_latents(spec, neurons) if spec.startswith("sample:") else (
            parse_latents(spec))  # fmt: skip
    chosen = select_neurons(neurons, latents, include_dead)
    if not chosen:  # refused before the labels file is opened: nothing to do must not look like success
        raise ValueError(
            f"latents {'all' if latents is None else latents!r} choose no latent to label in {files.root} "
            f"({sum(n.dead for n in neurons)} of {len(neurons)} are dead; --include-dead labels them)"
        )
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
        store = LabelStore(files.labels)
        send_images = images and backend.accepts_images
        tasks = [make_task(files.root, n, backend.name, send_images) for n in chosen]
        latest = {} if overwrite else store.latest()
        todo = [t for t in tasks if not _up_to_date(latest.get(t.latent), t.prompt_hash, sae_id)]
        logger.info("labelling %d latents with %s (%d up to date)", len(todo), backend.name, len(tasks) - len(todo))
        labeller = Labeller(backend, max_retries=max_retries, chunk_size=2 * concurrency,
                            max_new_tokens=max_new_tokens, secrets=secrets_of(backend, env_names))  # fmt: skip
        ok, errors = 0, {}
        with tqdm(total=len(todo), desc="label", unit="latent", disable=not progress, dynamic_ncols=True) as bar:
            for record in labeller.label(todo):
                store.append({**asdict(record), **({SAE_KEY: sae_id} if sae_id else {})})
                if record.status == "ok":
                    ok += 1
                else:
                    errors[record.latent] = record.error or ""
                    logger.info("latent %d failed: %s", record.latent, record.error)
                bar.update(1)
                bar.set_postfix(ok=ok, failed=len(errors), refresh=False)
        store.compact()
        write_explanations(files, store.latest())
    finally:
        if store is not None:
            store.close()
        if owned:
            backend.close()
    refresh_index(files.root)
    reused = len(tasks) - len(todo)
    return LabelOutcome(reused + ok, len(errors), reused, len(todo), time.monotonic() - start, errors)


def run_labels(run_dir: str | Path, llm: str | TextBackend = "offline", **kwargs: Any) -> dict[str, Any]:
    """:func:`label_run` (same arguments), returning the quickstart block ``{"labelled", "failed", "seconds"}``."""
    return label_run(run_dir, llm, **kwargs).block()


def run(settings: LabelSettings) -> dict[str, Any]:
    """``explain labels``: :func:`label_run` from its settings; returns the summary block.

    Raises:
        IdentityError: (a ValueError) ``--sae`` / ``--classifier`` name models the run's report was not made with.
    """
    settings.check()
    if settings.sae is not None or settings.classifier is not None:  # labels describe the report's SAE only
        from sae_lab.run import load_run

        load_run(settings.run, settings.sae, settings.classifier)
    opts: dict[str, Any] = {}
    if settings.vision:
        opts["accepts_images"] = True
    if settings.api_key_env:
        opts["api_key_env"] = settings.api_key_env
    outcome = label_run(settings.run, settings.llm, latents=settings.latents, include_dead=settings.include_dead,
                        images=settings.images, concurrency=settings.concurrency, max_retries=settings.max_retries,
                        timeout=settings.timeout, progress=settings.progress, overwrite=settings.overwrite,
                        max_new_tokens=settings.max_new_tokens, backend_opts=opts)  # fmt: skip
    return {**outcome.block(), "errors": {str(k): v for k, v in list(outcome.errors.items())[:5]}}


def _up_to_date(record: Mapping[str, Any] | None, digest: str, sae_id: str | None = None) -> bool:
    """An ``ok`` label of the same prompt, for the same SAE (when the run records one)."""
    return (record is not None and record.get("status") == "ok" and record.get("prompt_hash") == digest
            and (sae_id is None or record.get(SAE_KEY) == sae_id))  # fmt: skip
