"""A local ``transformers`` causal language model, generating for a padded batch of chats at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sae_lab.backends.text.base import ChatRequest, GenerationResult, TextBackend
from sae_lab.errors import check_model_source

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA, then MPS, then CPU; anything else is passed to ``torch.device``."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype | str:
    """``"auto"`` → the checkpoint's dtype on accelerators, float32 on CPU (half precision is slow there)."""
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else "auto"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


class HFBackend(TextBackend):
    """A causal LM loaded with ``AutoModelForCausalLM.from_pretrained`` from a hub id or a local folder.

    Prompts use the tokenizer's chat template when it has one, else a plain ``role: content`` transcript ending
    in ``assistant:``. Requests sharing ``max_new_tokens``, ``temperature`` and ``seed`` are generated together
    in left-padded batches of ``batch_size``; only the new tokens are decoded. ``temperature == 0`` is greedy;
    otherwise sampling is seeded with the request's seed (when given) without touching the global RNG, so the
    same requests in the same batch give the same texts (rows of one batch draw different samples).

    Args:
        model: Hub id or local path.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``…
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        batch_size: Requests per ``generate`` call.
        max_input_tokens: Keep at most this many prompt tokens (the most recent); None keeps all.
        local_files_only: Never contact the hub.
        revision: Hub revision (branch, tag or commit).
        trust_remote_code: Allow model code from the hub.
    """

    accepts_images = False

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_input_tokens: int | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_id = model
        self.name = f"transformers:{model}"
        self.batch_size = batch_size
        self.max_input_tokens = max_input_tokens
        self.device = resolve_device(device)
        load = {"local_files_only": local_files_only, "revision": revision, "trust_remote_code": trust_remote_code}
        check_model_source(model, "text model")  # a missing path, not a malformed Hub id
        self.tokenizer = AutoTokenizer.from_pretrained(model, **load)
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the right end
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(f"tokenizer of {model!r} has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=resolve_dtype(dtype, self.device), **load)
        self.model.to(self.device).eval()

    def __repr__(self) -> str:
        return f"HFBackend(model={self.model_id!r}, device={str(self.device)!r}, batch_size={self.batch_size})"

    def prompt(self, request: ChatRequest) -> str:
        """The prompt text for one request, generation prompt included."""
        self._images_for(request)  # warns once when images were attached
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
        return "\n".join(f"{m['role']}: {m['content']}" for m in request.messages) + "\nassistant:"

    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}  # requests that can share one generate call, in first-seen order
        for i, r in enumerate(requests):
            groups.setdefault((r.max_new_tokens, r.temperature, r.seed if r.temperature > 0 else None), []).append(i)
        for group in groups.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                for i, result in zip(chunk, self._generate_chunk([requests[i] for i in chunk])):
                    results[i] = result
        return results  # type: ignore[return-value]

    def _generate_chunk(self, chunk: list[ChatRequest]) -> list[GenerationResult]:
        """One padded batch; if it fails, each request on its own so one bad request does not sink the rest."""
        start = time.monotonic()
        try:
            texts = self._generate_texts(chunk)
            seconds = (time.monotonic() - start) / len(chunk)
            return [GenerationResult(text=t, seconds=seconds) for t in texts]
        except Exception as exc:  # noqa: BLE001
            if len(chunk) > 1:
                logger.warning("%s: batch of %d failed (%s); retrying one by one", self.name, len(chunk), exc)
                return [r for request in chunk for r in self._generate_chunk([request])]
            return [GenerationResult(None, f"{type(exc).__name__}: {exc}", 1, time.monotonic() - start)]

    @torch.inference_mode()
    def _generate_texts(self, chunk: list[ChatRequest]) -> list[str]:
        first = chunk[0]  # the chunk shares max_new_tokens, temperature and seed
        prompts = [self.prompt(r) for r in chunk]
        encoded = self.tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=self.max_input_tokens is not None,
            max_length=self.max_input_tokens,
            add_special_tokens=not self.tokenizer.chat_template,  # chat templates write their own BOS
        ).to(self.device)
        sampling = first.temperature > 0
        kwargs = {"do_sample": True, "temperature": first.temperature} if sampling else {"do_sample": False}
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if sampling and first.seed is not None:
                torch.manual_seed(first.seed)
            output = self.model.generate(
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                max_new_tokens=first.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
