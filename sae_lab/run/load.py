"""Finding and loading a run: its report folder, its SAE export and the classifier that SAE was trained on.

Every stage that needs the models calls :func:`load_run`; it finds the three parts the same way everywhere and
refuses an SAE and a classifier that do not belong together.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sae_lab.run.files import PATHS_KEY, RELATIVE_TO_RUN, SAE_CFG, SAE_WEIGHTS, RunFiles, from_run, is_sae_dir
from sae_lab.run.identity import IDENTITY_KEY, Identity, check_identity, identity_of

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_RUN = "quickstart"
"""The run used when none is named."""


@dataclass
class RunPaths:
    """Where a run's parts are."""

    run_dir: Path | None
    """The report folder (labels, LINE results, neurons.jsonl); None without a run."""
    sae_dir: Path
    """The SAE export folder (``cfg.json`` + ``sae.safetensors``)."""
    classifier: Path
    """The classifier checkpoint."""
    looked_for: list[str] = field(default_factory=list)
    """The SAE folders tried, in order."""


def _find(rel: str | os.PathLike, anchors: Sequence[Path], want_dir: bool) -> Path | None:
    """``rel`` as given (absolute, or from the working folder), else from each anchor's ancestors."""
    rel = Path(rel)
    ok = (lambda p: p.is_dir()) if want_dir else (lambda p: p.is_file())
    if rel.is_absolute() or ok(rel):
        return rel if ok(rel) else None
    for anchor in anchors:
        for root in [anchor, *anchor.resolve().parents]:
            if ok(root / rel):
                return root / rel
    return None


def _run_dir(run: str | os.PathLike | None) -> Path | None:
    if run is None:
        return None
    path = Path(run)
    if not path.is_dir() and len(path.parts) == 1:  # a bare run name
        return Path("reports") / path
    return path


def _report_facts(run_dir: Path | None) -> dict:
    if run_dir is None or not (RunFiles(run_dir).report).is_file():
        return {}
    try:
        report = json.loads((RunFiles(run_dir).report).read_text())
    except (OSError, json.JSONDecodeError) as e:
        logger.warning("cannot read %s: %s", RunFiles(run_dir).report, e)
        return {}
    sae, clf = report.get("sae"), report.get("classifier")
    facts = {
        "sae": report.get("sae_dir") or (sae.get("dir") if isinstance(sae, dict) else sae),
        "classifier": clf.get("checkpoint") if isinstance(clf, dict) else clf,
        "identity": report.get(IDENTITY_KEY),
    }
    if report.get(PATHS_KEY) == RELATIVE_TO_RUN:  # else an older report: absolute, or from its working folder
        for key, block, field in (("sae", sae, "dir"), ("classifier", clf, "checkpoint")):
            if isinstance(facts[key], str) and facts[key]:
                here = from_run(facts[key], run_dir)  # moved or copied with its checkpoints
                there = block.get(f"{field}_absolute") if isinstance(block, dict) else None  # copied alone
                use_there = not here.exists() and isinstance(there, str) and Path(there).exists()
                facts[key] = there if use_there else str(here)
    return facts


def resolve_run(
    run: str | os.PathLike | None = None,
    sae: str | os.PathLike | None = None,
    classifier: str | os.PathLike | None = None,
) -> RunPaths:
    """Finds a run's SAE and classifier.

    The run is a report folder (``reports/quickstart``) or a run name (``quickstart`` → ``reports/quickstart``);
    with neither a run nor an SAE, the quickstart run; with only an SAE, no run (so no labels).
    SAE: ``sae`` if given, else ``report.json``'s SAE folder, else ``checkpoints/<name>/sae`` beside ``reports/``
    (``<root>/reports/<name>`` → ``<root>/checkpoints/<name>/sae``; a folder outside any ``reports/`` → the
    working folder's ``checkpoints/<folder name>/sae``). Classifier: ``classifier`` if given, else the SAE's
    recorded ``classifier_checkpoint``, else ``report.json``'s. Relative recorded paths are tried from the working
    folder, then from the folders above the SAE folder and the run folder.

    Raises:
        FileNotFoundError: no SAE (naming every folder tried) or no classifier checkpoint.
    """
    if run is None and sae is None:
        run = DEFAULT_RUN
    if sae is not None:  # a Hub id (owner/name, hf://owner/name/sub) → its local snapshot; a path stays as is
        from sae_lab.models.hub import resolve_sae_folder  # here: models.hub imports the run package

        sae = resolve_sae_folder(sae)
    run_dir = _run_dir(run)
    facts = _report_facts(run_dir)
    anchors = [p for p in (run_dir,) if p is not None]
    candidates: list[Path] = []
    if sae is not None:
        candidates.append(Path(sae))
        recorded = _find(facts["sae"], anchors, want_dir=True) if facts.get("sae") else None
        # With an identity recorded, load_run checks the SAE itself (a copy elsewhere is fine, a swap is not).
        if recorded is not None and recorded.resolve() != Path(sae).resolve() and not facts.get("identity"):
            logger.warning(
                "the report in %s is of the SAE at %s, not %s: its labels may not fit", run_dir, recorded, sae
            )
    else:
        if facts.get("sae"):
            candidates.append(_find(facts["sae"], anchors, want_dir=True) or Path(facts["sae"]))
        if run_dir is not None:
            parts = run_dir.resolve().parts
            if "reports" in parts:
                cut = len(parts) - 1 - parts[::-1].index("reports")
                candidates.append(Path(*parts[:cut], "checkpoints", *parts[cut + 1 :], "sae"))
            else:
                candidates.append(Path("checkpoints") / run_dir.name / "sae")
    if not candidates:
        raise ValueError("give a run (e.g. reports/quickstart) or an SAE folder")
    looked = [str(c) for c in candidates]
    sae_dir = next((c for c in candidates if is_sae_dir(c)), None)
    if sae_dir is None and sae is not None:
        _check_sae_dir(Path(sae))
    if sae_dir is None:
        what = f"run {run_dir}" if run_dir is not None else "the given SAE"
        raise FileNotFoundError(
            f"no SAE for {what}: looked for cfg.json + sae.safetensors in {', '.join(looked)}; "
            "train one (quickstart) or pass --sae DIR"
        )
    if classifier is not None:
        clf_path = Path(classifier)
        if not clf_path.is_file():
            what = "is a folder, expected a file such as best.ckpt" if clf_path.is_dir() else "does not exist"
            raise FileNotFoundError(f"classifier checkpoint {clf_path} {what}")
    else:
        from sae_lab.models.hub import read_sae_cfg

        recorded = (read_sae_cfg(sae_dir).get("metadata") or {}).get("classifier_checkpoint")
        tried = [r for r in (recorded, facts.get("classifier")) if r]
        found = [_find(r, [sae_dir, *anchors], want_dir=False) for r in tried]
        clf_path = next((p for p in found if p is not None), None)
        if clf_path is None:
            raise FileNotFoundError(
                f"no classifier checkpoint for the SAE at {sae_dir}: tried {tried or 'none recorded'}; "
                "pass --classifier CKPT"
            )
    return RunPaths(run_dir, sae_dir, clf_path, looked)


def load_sae(sae_dir: str | Path, device: torch.device | str = "cpu"):
    """The exported SAE in ``sae_dir`` (``cfg.json`` + ``sae.safetensors``), in eval mode without gradients.

    Raises:
        FileNotFoundError: no such folder, or it lacks one of the two files.
    """
    from sae_lab.models.sae import TopKSAE

    sae_dir = Path(sae_dir)
    _check_sae_dir(sae_dir)
    return TopKSAE.load_from_disk(sae_dir, device).eval().requires_grad_(False)


def _check_sae_dir(sae_dir: Path) -> None:
    """Raises FileNotFoundError naming what is missing when ``sae_dir`` is not an exported SAE."""
    if not sae_dir.is_dir():
        raise FileNotFoundError(
            f"SAE folder {sae_dir} does not exist (train one with `fit --config configs/quickstart/sae.yaml`)"
        )
    missing = [f for f in (SAE_CFG, SAE_WEIGHTS) if not (sae_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{sae_dir} is not an exported SAE: it lacks {', '.join(missing)}")


def check_pair(sae, clf, sae_dir: str | Path | None = None) -> None:
    """Raises ValueError when the SAE was not trained on this classifier's explained layer."""
    where = f"the SAE at {sae_dir}" if sae_dir else "the SAE"
    if sae.classifier and sae.classifier != clf.fingerprint:
        raise ValueError(
            f"{where} was trained on classifier {sae.classifier}, but {clf.path} is classifier {clf.fingerprint}: "
            "they do not belong together (give the SAE's own classifier with --classifier)"
        )
    if sae.cfg.d_in != clf.net.channels:
        raise ValueError(
            f"{where} takes {sae.cfg.d_in}-dim tokens, but {clf.path}'s layer {clf.net.layer} gives "
            f"{clf.net.channels}: they do not belong together"
        )
    if sae.layer and sae.layer != clf.net.layer:
        raise ValueError(f"{where} explains layer {sae.layer}, but {clf.path} explains {clf.net.layer}")
    if not sae.classifier:
        logger.warning("the SAE does not record its classifier; cannot check that they belong together")


def file_digest(path: str | Path, n: int = 16) -> str:
    """sha1 of a file's bytes (first ``n`` hex digits)."""
    import hashlib

    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


@dataclass
class LoadedRun:
    """A run's models, loaded and checked to belong together."""

    paths: RunPaths
    sae: object
    """The :class:`~sae_lab.models.sae.TopKSAE`, eval mode, no gradients."""
    classifier: object
    """The :class:`~sae_lab.models.classifier_io.LoadedClassifier`."""
    roots: list[Path]
    """Folders to resolve relative paths recorded in the SAE or classifier from (data caches)."""
    _identity: Identity | None = field(default=None, repr=False)

    @property
    def files(self) -> RunFiles | None:
        return RunFiles(self.paths.run_dir) if self.paths.run_dir is not None else None

    @property
    def identity(self) -> Identity:
        """Identity of this SAE + classifier pair (the SAE weights' digest and the classifier fingerprint)."""
        if self._identity is None:
            self._identity = identity_of(self.sae, self.classifier)
        return self._identity

    @property
    def sae_id(self) -> str:
        """:attr:`identity` as one string (``<classifier>-<sae>``): caches of activations and explanation files
        carry it, so nothing from another SAE is ever mixed in."""
        return self.identity.id


def load_run(
    run: str | os.PathLike | None = None,
    sae: str | os.PathLike | None = None,
    classifier: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    check: bool = True,
) -> LoadedRun:
    """Finds (:func:`resolve_run`), loads and checks a run's SAE and classifier.

    With a run folder, the models must be the ones its report was made from (:func:`check_identity`): the
    report's statistics and explanations describe that SAE's latents and no other's.

    Args:
        check: refuse models whose identity is not the report's (False: load them anyway).

    Raises:
        FileNotFoundError: no SAE or classifier found (the message names the places tried).
        ValueError: they do not belong together.
        IdentityError: (a ValueError) the run's report was made with another SAE or classifier.
    """
    from sae_lab.models.classifier_io import load_classifier

    paths = resolve_run(run, sae, classifier)
    sae_model = load_sae(paths.sae_dir, device)
    clf = load_classifier(paths.classifier).to(device)
    check_pair(sae_model, clf, paths.sae_dir)
    roots = [Path.cwd(), *paths.sae_dir.resolve().parents, *Path(paths.classifier).resolve().parents]
    loaded = LoadedRun(paths, sae_model, clf, list(dict.fromkeys(roots)))
    if check and paths.run_dir is not None:
        check_identity(paths.run_dir, loaded.identity, paths.sae_dir, paths.classifier)
    return loaded
