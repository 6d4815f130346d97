"""The SAE in other libraries' formats: EleutherAI sparsify and SAELens, with the standardisation folded in.

``export_sae(sae, out, "sparsify")`` writes a folder that ``sparsify.SparseCoder.load_from_disk(out)`` loads;
``"saelens"`` one that ``sae_lens.SAE.load_from_disk(out)`` loads. Both read raw (un-standardised) feature-map tokens
of the explained layer (:mod:`sae_lab.export.fold` derives the weights). One module per format.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

FORMATS = ("sparsify", "saelens")
"""The formats ``export`` writes."""


def check_format(fmt: str) -> str:
    """``fmt`` if it is a known format; raises ValueError naming the known ones otherwise."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def export_metadata(sae, fmt: str, source: str) -> dict:
    """What our export records about the SAE, kept in the exported folder (in the config or a side file)."""
    return {
        "exported_by": "sae_lab",
        "format": fmt,
        "source": source,
        "layer": sae.layer,
        "classifier": sae.classifier,
        "inputs": f"raw tokens of the classifier's {sae.layer or 'explained'} feature map, (B·H·W, C) rows; "
        "the standardisation (x − μ)/σ is folded into the weights",
        "num_latents": sae.cfg.num_latents,
        "k": sae.cfg.k,
        "metadata": dict(sae.metadata),  # image_size, class_names, grid, classifier_checkpoint, val figures
    }


def _prepare_out(out: Path, overwrite: bool, source_dir: Path | None) -> None:
    if source_dir is not None:
        src, dst = source_dir.resolve(), out.resolve()
        if dst == src or dst in src.parents:
            raise ValueError(f"the output folder {out} holds the SAE being exported ({source_dir}): choose another")
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{out} already exists: pass --overwrite to replace it")
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder: not replacing it")
    from sae_lab.run.files import SAE_CFG

    if any(out.iterdir()) and not (out / SAE_CFG).is_file():
        raise FileExistsError(f"not replacing {out}: it holds files but is not an SAE export (no cfg.json)")


def export_sae(sae, out: str | os.PathLike, fmt: str, *, overwrite: bool = False) -> Path:
    """Writes ``sae`` in format ``fmt`` to the folder ``out``, atomically (a temporary folder renamed into place).

    Args:
        sae: a :class:`~sae_lab.models.sae.TopKSAE`, or where to find one: an export folder, a Hub id
            (``owner/name``, ``hf://owner/name/subfolder``); a folder is checked before anything is written.
        out: the folder to write; it must not exist unless ``overwrite``.
        fmt: one of :data:`FORMATS`.
        overwrite: replace ``out`` if it is an earlier export (or empty).

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: an unknown format, a tampered or malformed SAE folder (the message names the file and tensor),
            or ``out`` inside the SAE folder.
        FileNotFoundError: no such SAE folder (or an uncached Hub id with no network).
        FileExistsError: ``out`` exists and ``overwrite`` is false, or it is not an earlier export.
    """
    from sae_lab.export.fold import fold_standardization
    from sae_lab.export.saelens import write_saelens
    from sae_lab.export.sparsify import write_sparsify
    from sae_lab.models.sae import TopKSAE

    check_format(fmt)
    out, source_dir = Path(out), None
    if isinstance(sae, TopKSAE):
        source = "a TopKSAE in memory"
    else:
        source = os.fspath(sae)
        from sae_lab.models.hub import hub_reference

        source_dir = None if hub_reference(source) else Path(source)
        _prepare_out(out, overwrite, source_dir)  # refuse before a download
        sae = TopKSAE.from_pretrained(source)
    _prepare_out(out, overwrite, source_dir)
    folded = fold_standardization(sae)
    writer = {"sparsify": write_sparsify, "saelens": write_saelens}[fmt]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        writer(folded, sae.cfg.k, json.loads(json.dumps(export_metadata(sae, fmt, source), default=str)), tmp)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
