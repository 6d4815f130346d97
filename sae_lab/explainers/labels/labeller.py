"""Labels latents through any text backend, re-asking after malformed answers (:func:`ask_until_parsed`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sae_lab.backends.text import ChatRequest, TextBackend, parse_short_answer
from sae_lab.backends.text.ask import Asked, ask_until_parsed
from sae_lab.backends.text.remote import scrub
from sae_lab.explainers.labels.prompt import MAX_LABEL_WORDS, RETRY_REMINDER, SYSTEM_PROMPT, LabelTask
from sae_lab.run.records import LabelRecord

MAX_NEW_TOKENS = 128
RETRY_TEMPERATURE = 0.7
"""Retries sample (seeded by the attempt number): a greedy model would repeat the same malformed answer."""


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

    def request(self, task: LabelTask, messages: list[dict], attempt: int) -> ChatRequest:
        """Attempt 0 is greedy; a retry (the malformed answer and a format reminder appended) samples."""
        images = [task.render_image()] if task.render_image is not None else []
        return ChatRequest(
            messages=messages,
            images=[im for im in images if im is not None],
            max_new_tokens=self.max_new_tokens,
            temperature=RETRY_TEMPERATURE if attempt else 0.0,
            seed=attempt if attempt else None,
        )

    def label(self, tasks: Sequence[LabelTask]) -> Iterator[LabelRecord]:
        """One record per task, yielded chunk by chunk."""
        for start in range(0, len(tasks), self.chunk_size):
            yield from self._chunk(tasks[start : start + self.chunk_size])

    def _chunk(self, chunk: Sequence[LabelTask]) -> Iterator[LabelRecord]:
        chats = [[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": t.prompt}] for t in chunk]

        def parse(text: str | None, i: int):
            parsed = parse_short_answer(text, MAX_LABEL_WORDS)
            return (parsed, None) if parsed is not None else (None, malformed_reason(text))

        try:
            answers = ask_until_parsed(
                self.backend, chats, parse, lambda i, m, a: self.request(chunk[i], m, a),
                lambda problem: RETRY_REMINDER, self.max_retries, retry_failed_requests=False,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 -- a broken backend call fails its chunk, not the run
            error = f"{type(exc).__name__}: {exc}"
            for t in chunk:
                yield self._record(t, Asked(errors=[error], attempts=1, transport_failed=True))
            return
        for task, asked in zip(chunk, answers):
            yield self._record(task, asked)

    def _record(self, task: LabelTask, asked: Asked) -> LabelRecord:
        label, evidence = asked.value if asked.ok else (None, None)
        if asked.ok:
            error = None
        elif asked.transport_failed:
            error = asked.errors[-1] if asked.errors else "no text"
        else:
            error = f"{asked.errors[-1]} (after {asked.attempts} attempts)"
        return LabelRecord(
            latent=task.latent,
            label=self._mask(label),
            evidence=self._mask(evidence),
            source=scrub(self.backend.name, self.secrets) or "",  # a spec: scrubbed by pattern too (http://u:KEY@)
            prompt_hash=task.prompt_hash,
            status="ok" if asked.ok else "failed",
            error=scrub(error, self.secrets) if error is not None else None,
            attempts=asked.attempts,
            seconds=round(asked.seconds, 4),
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
