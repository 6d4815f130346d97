"""Exact streaming top-N exemplar images per latent, with their token activation maps."""

from __future__ import annotations

import torch
from torch import Tensor


def select_top(values: Tensor, ids: Tensor, n: int) -> Tensor:
    """Column indices of the n best candidates per row: largest value first, ties to the smaller id.

    The order is total (ids are unique), so the top-n of a union equals the top-n of the parts' top-n in any
    order of merging — what makes streaming and rank-sharded exemplars exact.

    Args:
        values: (M, L) candidate values.
        ids: (M, L) int64 candidate ids.
        n: how many to keep (n <= L).

    Returns:
        (M, n) int64 indices into the L candidates.
    """
    by_id = ids.argsort(dim=1, stable=True)
    by_value = values.gather(1, by_id).argsort(dim=1, descending=True, stable=True)
    return by_id.gather(1, by_value)[:, :n]


class TopExemplars:
    """The N images with the largest ``z_max`` for every latent (exact), with labels and (T,) token maps.

    Empty slots (fewer than N images seen) hold id −1, label −1, value −inf and a zero map.

    Args:
        num_latents: M.
        n: N, exemplars kept per latent.
        device: where the (M, N, T) maps live.
    """

    def __init__(self, num_latents: int, n: int = 16, device: torch.device | str = "cpu"):
        if n <= 0:
            raise ValueError(f"n_exemplars must be positive, got {n}")
        self.num_latents, self.n, self.device = num_latents, n, torch.device(device)
        self.values = torch.full((num_latents, n), -torch.inf, device=self.device)
        self.ids = torch.full((num_latents, n), -1, dtype=torch.long, device=self.device)
        self.labels = torch.full((num_latents, n), -1, dtype=torch.long, device=self.device)
        self.maps: Tensor | None = None  # (M, N, T), allocated when T is known

    def _ensure_maps(self, num_tokens: int) -> None:
        if self.maps is None:
            self.maps = torch.zeros(self.num_latents, self.n, num_tokens, device=self.device)
        elif self.maps.shape[-1] != num_tokens:
            raise ValueError(f"images have {num_tokens} tokens, earlier ones had {self.maps.shape[-1]}")

    def _combine(self, values: Tensor, ids: Tensor, labels: Tensor, maps: Tensor) -> None:
        """Keep the best N of the current exemplars and L candidates (M, L), maps (M, L, T)."""
        self._ensure_maps(maps.shape[-1])
        cand_values = torch.cat([self.values, values], 1)
        cand_ids = torch.cat([self.ids, ids], 1)
        chosen = self._choose(cand_values, cand_ids)
        old = chosen < self.n
        new_idx = (chosen - self.n).clamp_min(0)
        expand = (-1, -1, maps.shape[-1])
        self.maps = torch.where(
            old[..., None],
            self.maps.gather(1, chosen.clamp_max(self.n - 1)[..., None].expand(expand)),
            maps.gather(1, new_idx[..., None].expand(expand)),
        )
        self.values = cand_values.gather(1, chosen)
        self.ids = cand_ids.gather(1, chosen)
        self.labels = torch.cat([self.labels, labels], 1).gather(1, chosen)

    def _choose(self, values: Tensor, ids: Tensor) -> Tensor:
        """:func:`select_top` over (M, L) candidates, first narrowed to those that can win: every value at or above
        a row's n-th largest (ties included), so the two full-width sorts run on a few columns only."""
        n = self.n
        if values.shape[1] > 2 * n:
            kth = values.topk(n, dim=1).values[:, -1:]
            width = int((values >= kth).sum(1).max())
            if width < values.shape[1]:
                keep = values.topk(width, dim=1, sorted=False).indices  # holds every value >= kth of its row
                return keep.gather(1, select_top(values.gather(1, keep), ids.gather(1, keep), n))
        return select_top(values, ids, n)

    def update(self, z_max: Tensor, image_ids: Tensor, labels: Tensor, token_acts: Tensor) -> None:
        """Offer a batch of images.

        Args:
            z_max: (B, M) per-image max activation.
            image_ids: (B,) int64 unique global image ids.
            labels: (B,) class labels.
            token_acts: (B, T, M) token activations (the maps kept for the winners).
        """
        b, m = z_max.shape
        self._combine(
            z_max.t().float(),
            image_ids.to(self.device, torch.long)[None].expand(m, b),
            labels.to(self.device, torch.long)[None].expand(m, b),
            token_acts.float().permute(2, 0, 1),  # (M, B, T) view: only the winners' maps are gathered
        )

    def merge(self, other: TopExemplars) -> None:
        """Fold in another accumulator's exemplars (the result is the exact top-N of both streams)."""
        if other.maps is None:
            return
        dev = self.device
        self._combine(other.values.to(dev), other.ids.to(dev), other.labels.to(dev), other.maps.to(dev))

    def state_dict(self) -> dict[str, Tensor | None]:
        """CPU copies of values, ids, labels and maps."""
        maps = None if self.maps is None else self.maps.cpu()
        return {"values": self.values.cpu(), "ids": self.ids.cpu(), "labels": self.labels.cpu(), "maps": maps}

    def load_state_dict(self, state: dict[str, Tensor | None]) -> None:
        self.values, self.ids, self.labels = (state[k].to(self.device) for k in ("values", "ids", "labels"))
        self.maps = None if state["maps"] is None else state["maps"].to(self.device)
