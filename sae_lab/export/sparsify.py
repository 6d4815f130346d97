"""EleutherAI sparsify's on-disk format (``SparseCoder.save_to_disk`` / ``load_from_disk``, eai-sparsify 1.3).

``cfg.json``: the ``SparseCoderConfig`` fields (``activation``, ``expansion_factor``, ``normalize_decoder``,
``num_latents``, ``k``, ``multi_topk``, ``skip_connection``, ``transcode``) plus ``d_in``; ``sae.safetensors``: exactly
``encoder.weight`` (M, C), ``encoder.bias`` (M,), ``W_dec`` (M, C), ``b_dec`` (C,) — sparsify loads them with
``strict=True``, so nothing else may be in that file. The config has no place for our facts (sparsify drops unknown
fields), so they go to a side file, ``sae_lab.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from sae_lab.export.fold import FoldedWeights
from sae_lab.run.files import SAE_CFG, SAE_WEIGHTS

CFG_FILE, WEIGHTS_FILE = SAE_CFG, SAE_WEIGHTS
"""sparsify's file names, the same as our own export's (which is why its loader used to choke on ours)."""
SIDE_FILE = "sae_lab.json"
"""Our metadata (layer, classifier, image size, class names), beside the files sparsify reads."""


def sparsify_config(d_in: int, num_latents: int, k: int) -> dict:
    """The ``cfg.json`` sparsify's ``load_from_disk`` reads: a Top-K SAE, no skip connection, not a transcoder."""
    return {
        "activation": "topk",
        "expansion_factor": max(1, num_latents // d_in),  # unused: num_latents is set
        "normalize_decoder": False,  # the folded rows d_i ⊙ σ are not unit-norm; renormalising would change x̂
        "num_latents": num_latents,
        "k": k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d_in,
    }


def write_sparsify(folded: FoldedWeights, k: int, metadata: dict, out: Path) -> None:
    """Writes the folded SAE into the (empty) folder ``out`` in sparsify's format."""
    num_latents, d_in = folded.W_enc.shape
    tensors = {"encoder.weight": folded.W_enc, "encoder.bias": folded.b_enc, "W_dec": folded.W_dec,
               "b_dec": folded.b_dec}  # fmt: skip
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / SIDE_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    (out / CFG_FILE).write_text(json.dumps(sparsify_config(d_in, num_latents, k), indent=2))
