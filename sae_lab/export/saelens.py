"""SAELens's on-disk format for a Top-K SAE (``SAE.save_model`` / ``SAE.load_from_disk``, sae-lens 6.x).

``cfg.json``: ``architecture`` "topk", ``d_in``, ``d_sae``, ``k``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
``normalize_activations`` "none", ``reshape_activations`` "none", ``rescale_acts_by_decoder_norm`` and a free-form
``metadata`` object (``sae_lens_version``, ``model_name``, ``hook_name``, …) where our facts fit, under
``metadata.sae_lab``. A ``metadata.sae_lens_version`` of at least 6.0 tells the loader it is the 6.x layout; the
pre-6.0 spellings (``activation_fn`` "topk" with ``activation_fn_kwargs {"k": K}``, top-level ``hook_name``) are written
too for readers of the old layout, and 6.x ignores them. ``sae_weights.safetensors``: exactly ``W_enc`` (C, M) —
transposed from ours —, ``b_enc`` (M,), ``W_dec`` (M, C), ``b_dec`` (C,), loaded with ``strict=True``.

SAELens's TopK takes the top K pre-activations and then applies ReLU (sparsify and we apply ReLU first): the
non-zero activations are the same; only which zero-valued latents fill a row with fewer than K positive ones differs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from sae_lab.export.fold import FoldedWeights
from sae_lab.run.files import SAE_CFG

CFG_FILE = SAE_CFG
"""SAELens's config file name (``SAE_CFG_FILENAME``), the same as ours."""
WEIGHTS_FILE = "sae_weights.safetensors"
"""SAELens's ``SAE_WEIGHTS_FILENAME``."""
FORMAT_VERSION = "6.0.0"
"""The SAELens layout written (checked against sae-lens 6.54's loader); ``metadata.sae_lens_version``."""
DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def saelens_config(d_in: int, num_latents: int, k: int, dtype: torch.dtype, metadata: dict) -> dict:
    """The ``cfg.json`` of a SAELens ``TopKSAE`` that reads raw tokens; ``metadata`` goes under ``metadata.sae_lab``."""
    layer, classifier = metadata.get("layer") or None, metadata.get("classifier") or None
    return {
        "architecture": "topk",
        "d_in": d_in,
        "d_sae": num_latents,
        "k": k,
        "dtype": DTYPES[dtype],
        "device": "cpu",
        "apply_b_dec_to_input": True,  # pre = W_enc (x − b_dec) + b_enc, as in the folded weights
        "normalize_activations": "none",  # the standardisation is folded into the weights
        "reshape_activations": "none",
        "rescale_acts_by_decoder_norm": False,
        "metadata": {
            "sae_lens_version": FORMAT_VERSION,
            "sae_lens_training_version": None,  # trained by sae_lab, not SAELens
            "model_name": classifier,
            "hook_name": layer,
            "hook_head_index": None,
            "sae_lab": metadata,
        },
        # The pre-6.0 layout's spellings, for readers that still parse it.
        "activation_fn": "topk",
        "activation_fn_kwargs": {"k": k},
        "hook_name": layer,
        "model_name": classifier,
    }


def write_saelens(folded: FoldedWeights, k: int, metadata: dict, out: Path) -> None:
    """Writes the folded SAE into the (empty) folder ``out`` in SAELens's format."""
    num_latents, d_in = folded.W_enc.shape
    tensors = {"W_enc": folded.W_enc.t().contiguous(), "b_enc": folded.b_enc, "W_dec": folded.W_dec,
               "b_dec": folded.b_dec}  # fmt: skip
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    cfg = saelens_config(d_in, num_latents, k, folded.W_enc.dtype, metadata)
    (out / CFG_FILE).write_text(json.dumps(cfg, indent=2, default=str))
