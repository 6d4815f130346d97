"""Dead-latent tracking during training (plain torch; overcomplete's ``DeadCodeTracker`` is the model)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over all ranks (``t`` itself when not distributed); the input is left unchanged."""
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
    return t


class DeadLatentTracker:
    """Counts, per latent, the tokens seen since it last fired, over all ranks together.

    A latent silent for the last ``window_tokens`` tokens is dead (DESIGN: "dead %" during training); the
    AuxK loss trains exactly those. An EMA of each latent's hit rate per token is kept beside, for resampling.
    Every rank holds the same counts: :meth:`update` all-reduces the batch's hits and token count.

    Args:
        num_latents: dictionary size M.
        window_tokens: a latent that fired on none of the last this-many tokens is dead.
        ema_decay: decay of the hit-rate EMA per step.
    """

    def __init__(self, num_latents: int, window_tokens: int, ema_decay: float = 0.99):
        if num_latents <= 0 or window_tokens <= 0:
            raise ValueError(f"num_latents and window_tokens must be positive, got {num_latents}, {window_tokens}")
        self.num_latents, self.window_tokens, self.ema_decay = num_latents, window_tokens, ema_decay
        self.tokens_since_fired = torch.zeros(num_latents, dtype=torch.long)
        """(M,) tokens (all ranks) seen since each latent last fired."""
        self.usage_ema = torch.full((num_latents,), 1.0 / num_latents)
        """(M,) EMA of each latent's hit rate per token."""

    @torch.no_grad()
    def update(self, latent_acts: Tensor, latent_indices: Tensor) -> None:
        """Add one step's Top-K codes (N, K) from this rank; every rank must call it (it all-reduces)."""
        self.to(latent_acts.device)
        on = latent_acts > 0
        hits = torch.zeros(self.num_latents + 1, device=latent_acts.device)
        hits.index_add_(0, latent_indices[on], torch.ones(int(on.sum()), device=hits.device))
        hits[-1] = len(latent_acts)
        hits = all_reduce_sum(hits)
        hits, total = hits[:-1], hits[-1]
        self.tokens_since_fired += int(total)
        self.tokens_since_fired[hits > 0] = 0
        self.usage_ema.mul_(self.ema_decay).add_((1 - self.ema_decay) * hits / total)

    def compute(self) -> Tensor:
        """(M,) bool: the dead latents."""
        return self.tokens_since_fired >= self.window_tokens

    def reset(self, latents: Tensor) -> None:
        """Count the given latents (D,) as fresh, e.g. after resampling them."""
        self.tokens_since_fired[latents] = 0
        self.usage_ema[latents] = 1.0 / self.num_latents

    def to(self, device: torch.device | str) -> DeadLatentTracker:
        self.tokens_since_fired = self.tokens_since_fired.to(device)
        self.usage_ema = self.usage_ema.to(device)
        return self

    def state_dict(self) -> dict[str, Tensor]:
        return {"tokens_since_fired": self.tokens_since_fired.clone(), "usage_ema": self.usage_ema.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore counters saved by :meth:`state_dict` (kept on this tracker's device)."""
        for name in ("tokens_since_fired", "usage_ema"):
            value = state[name]
            if value.shape != (self.num_latents,):
                raise ValueError(f"{name} has shape {tuple(value.shape)}, this tracker has {self.num_latents} latents")
            getattr(self, name).copy_(value)
