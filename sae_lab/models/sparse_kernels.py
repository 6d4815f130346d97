"""Autograd kernels of the sparse Top-K SAE path (plain torch).

The loss only depends on the K (+ ``k_aux``) selected pre-activations per token, so both weight gradients are
"gather K rows per token" sums, done with ``embedding_bag`` over tokens grouped by latent; no (N, M) gradient
is ever built, and the input-gradient GEMM runs only when the tokens require grad.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

_CHUNK_ELEMENTS = 1 << 23  # pre-activations per encoder chunk on CPU (32 MiB in float32: stays in L3)


def _group_rows(indices: Tensor, weights: Tensor, rows: Tensor, num_groups: int) -> Tensor:
    """out[m] = Σ_{n,j: indices[n,j]=m} weights[n,j]·rows[n]: a (M, N)-sparse times (N, C) product.

    Tokens are grouped by latent (one sort of N·J ints) and summed with ``embedding_bag`` forward, which is
    far faster on CPU than ``index_add_`` over a materialised (N·J, C) tensor.
    """
    flat = indices.reshape(-1)
    # Sorting narrow keys is several times faster on CPU than sorting int64.
    key_dtype = torch.int16 if num_groups <= 2**15 else torch.int32 if num_groups <= 2**31 else torch.int64
    order = torch.sort(flat.to(key_dtype), stable=True).indices
    counts = torch.bincount(flat, minlength=num_groups)
    offsets = counts.cumsum(0) - counts
    per_sample = weights.reshape(-1)[order].to(rows.dtype)
    return F.embedding_bag(order // indices.shape[1], rows, offsets, mode="sum", per_sample_weights=per_sample)


# The aten kernel behind embedding_bag's per_sample_weights gradient (private: fall back if it ever goes away).
_PSW_BACKWARD = getattr(torch.ops.aten, "_embedding_bag_per_sample_weights_backward", None)


def _gather_dot(grad_out: Tensor, table: Tensor, indices: Tensor) -> Tensor:
    """(N, J) with out[n, j] = grad_out[n] · table[indices[n, j]]."""
    n, j = indices.shape
    if _PSW_BACKWARD is None:
        return (table[indices] * grad_out[:, None]).sum(-1)
    offsets = torch.arange(0, n * j, j, device=indices.device)
    bags = torch.arange(n, device=indices.device).repeat_interleave(j)
    return _PSW_BACKWARD(grad_out, table, indices.reshape(-1), offsets, bags, 0, -1).view(n, j)


class SparseDecode(torch.autograd.Function):
    """y = Σ_j acts[:, j]·W_dec[indices[:, j]] (N, C) without materialising (N, M) codes."""

    @staticmethod
    def forward(ctx, acts: Tensor, indices: Tensor, W_dec: Tensor) -> Tensor:
        ctx.save_for_backward(acts, indices, W_dec)
        return F.embedding_bag(indices, W_dec, mode="sum", per_sample_weights=acts.to(W_dec.dtype))

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        acts, indices, W_dec = ctx.saved_tensors
        grad_out = grad_out.to(W_dec.dtype).contiguous()
        grad_acts = _gather_dot(grad_out, W_dec, indices).to(acts.dtype) if ctx.needs_input_grad[0] else None
        grad_W = _group_rows(indices, acts, grad_out, len(W_dec)) if ctx.needs_input_grad[2] else None
        return grad_acts, None, grad_W


class TopKEncode(torch.autograd.Function):
    """Encoder GEMM + Top-K (+ AuxK top-k over dead latents); backward touches only the selected entries."""

    @staticmethod
    def forward(ctx, x_tilde, W_enc, b_enc, b_dec, k: int, dead_idx: Tensor | None, k_aux: int):
        ctx.set_materialize_grads(False)
        n, m = len(x_tilde), len(W_enc)
        x_c = x_tilde - b_dec
        acts, indices = x_c.new_empty(n, k), torch.empty(n, k, dtype=torch.long, device=x_c.device)
        k_aux = 0 if dead_idx is None else min(k_aux, len(dead_idx))
        aux_acts, aux_j = x_c.new_empty(n, k_aux), torch.empty(n, k_aux, dtype=torch.long, device=x_c.device)
        # Row chunks keep the (rows, M) pre-activations cache-resident and reuse one buffer instead of
        # allocating (and page-faulting) an (N, M) tensor every step.
        rows = n if x_c.is_cuda else max(1, min(n, _CHUNK_ELEMENTS // m))
        pre_buf = x_c.new_empty(rows, m)
        for start in range(0, n, rows):
            end = min(start + rows, n)
            pre = torch.addmm(b_enc, x_c[start:end], W_enc.t(), out=pre_buf[: end - start])
            # TopK(ReLU(pre)) = ReLU(TopK(pre)): ReLU is monotone, so skip a full (rows, M) pass.
            torch.topk(pre, k, dim=1, sorted=False, out=(acts[start:end], indices[start:end]))
            if k_aux:  # AuxK: top-k_aux among dead latents only (Gao et al. 2024, App. B.1)
                dead_pre = pre.index_select(1, dead_idx)
                torch.topk(dead_pre, k_aux, dim=1, sorted=False, out=(aux_acts[start:end], aux_j[start:end]))
        acts, aux_acts = acts.relu_(), aux_acts.relu_()
        aux_indices = dead_idx[aux_j] if k_aux else aux_j
        ctx.save_for_backward(x_c, W_enc, torch.cat([indices, aux_indices], 1), torch.cat([acts, aux_acts], 1))
        ctx.mark_non_differentiable(indices, aux_indices)
        ctx.k = k
        return acts, indices, aux_acts, aux_indices

    @staticmethod
    def backward(ctx, grad_acts, _gi, grad_aux_acts, _gai):
        x_c, W_enc, indices, acts = ctx.saved_tensors
        k = ctx.k
        if grad_aux_acts is None:
            grad_aux_acts = acts.new_zeros(len(acts), indices.shape[1] - k)
        if grad_acts is None:
            grad_acts = acts.new_zeros(len(acts), k)
        # d act / d pre is 1 where ReLU passed, 0 elsewhere; every other pre-activation has zero gradient.
        grad_pre = torch.cat([grad_acts, grad_aux_acts], 1).to(acts.dtype) * (acts > 0)
        grad_x = grad_W = grad_b_enc = grad_b_dec = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(indices, W_enc, mode="sum", per_sample_weights=grad_pre.to(W_enc.dtype))
        if ctx.needs_input_grad[1]:
            grad_W = _group_rows(indices, grad_pre, x_c, len(W_enc))
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            grad_b_enc = torch.zeros(len(W_enc), dtype=W_enc.dtype, device=W_enc.device)
            grad_b_enc.index_add_(0, indices.reshape(-1), grad_pre.reshape(-1).to(W_enc.dtype))
            grad_b_dec = -(grad_b_enc @ W_enc) if ctx.needs_input_grad[3] else None  # pre depends on −W_enc·b_dec
        return grad_x, grad_W, grad_b_enc, grad_b_dec, None, None, None
