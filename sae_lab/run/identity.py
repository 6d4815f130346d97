"""Which SAE and classifier a run's files describe, and the check every reader makes.

A report's statistics, ground truth and explanations are facts about one SAE's latents on one classifier: the
same files read with another SAE (a retrained one, or the same latents permuted) name the wrong latents. So
``report.json`` records the identity of the pair it was made from (:class:`Identity`: a hash of the SAE's
weights and the classifier's weights fingerprint), every explanation record carries the same identity
(``backends.sae``), and every reader checks it:

- :func:`check_identity` refuses loaded models that are not the report's (``why``, the explainers, ``evaluate``
  through :func:`~sae_lab.run.load.load_run`);
- :func:`keep_matching` drops explanation records made for another SAE, with one warning per method.

Runs written before identities were recorded are accepted with a one-time warning.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sae_lab.run.files import RunFiles
from sae_lab.run.io import read_json

logger = logging.getLogger(__name__)

IDENTITY_KEY = "identity"
"""The block of ``report.json`` holding the identity of the SAE + classifier the report was made from."""

_warned: set[tuple[str, ...]] = set()
"""Warnings already given in this process (each is given once)."""
_recorded: dict[tuple[str, int, int], Identity | None] = {}
"""The last report.json read, by (path, mtime, size)."""


class IdentityError(ValueError):
    """A run's files belong to another SAE or classifier than the one loaded."""


@dataclass(frozen=True)
class Identity:
    """The identity of an SAE + classifier pair (weights hashes)."""

    sae: str
    """sha1 (16 hex digits) of the SAE's weights as ``sae.safetensors`` holds them."""
    classifier: str
    """The classifier's weights fingerprint (the one the SAE records in ``cfg.json``)."""

    @property
    def id(self) -> str:
        """``<classifier>-<sae>``: what explanation records carry (``backends.sae``) and caches are keyed by."""
        return f"{self.classifier}-{self.sae}"

    def describe(self) -> str:
        return f"SAE {self.sae} on classifier {self.classifier}"

    def to_json(self) -> dict[str, str]:
        return {"sae": self.sae, "classifier": self.classifier, "id": self.id}

    @classmethod
    def from_json(cls, obj: Any) -> Identity | None:
        """The identity a ``report.json`` block holds; None when it holds none (or something unreadable)."""
        if not isinstance(obj, Mapping) or not isinstance(obj.get("sae"), str) or not obj.get("sae"):
            return None
        classifier = obj.get("classifier")
        return cls(obj["sae"], classifier if isinstance(classifier, str) else "")

    @classmethod
    def parse(cls, value: str) -> Identity:
        """An :attr:`id` string back (``<classifier>-<sae>``)."""
        classifier, _, sae = value.rpartition("-")
        return cls(sae, classifier)


def sae_digest(sae) -> str:
    """sha1 (16 hex digits) of an SAE's weights serialised as :meth:`~sae_lab.models.sae.TopKSAE.save_to_disk`
    writes them, so the SAE in memory and its export have the same digest (the digest of the file's bytes)."""
    from safetensors.torch import save

    tensors = {name: t.detach().cpu().contiguous() for name, t in sae.state_dict().items()}
    return hashlib.sha1(save(tensors)).hexdigest()[:16]


def identity_of(sae, classifier) -> Identity:
    """The identity of ``sae`` (a TopKSAE) on ``classifier`` (a LoadedClassifier, or its fingerprint)."""
    fingerprint = classifier if isinstance(classifier, str) else classifier.fingerprint
    return Identity(sae_digest(sae), fingerprint)


def recorded_identity(run: str | Path | RunFiles) -> Identity | None:
    """The identity ``report.json`` records; None for a run without one (written before identities were recorded,
    or without a ``report.json``)."""
    files = run if isinstance(run, RunFiles) else RunFiles(run)
    try:
        stat = files.report.stat()
    except OSError:
        return None
    key = (str(files.report.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _recorded:  # every explanation read asks: read report.json once per version of it
        try:
            report = read_json(files.report, default=None)
        except (OSError, ValueError) as e:
            logger.warning("cannot read %s: %s", files.report, e)
            return None
        _recorded.clear()
        _recorded[key] = Identity.from_json(report.get(IDENTITY_KEY)) if isinstance(report, Mapping) else None
    return _recorded[key]


def record_identity(record) -> str | None:
    """The identity an explanation record says it explains: ``backends.sae`` (when it is an identity, not a
    folder), ``backends.sae_id`` or ``detail.sae_id``; None when it says nothing."""
    sae = record.backends.get("sae")
    found = [sae if isinstance(sae, str) and "/" not in sae and "\\" not in sae else None,
             record.backends.get("sae_id"), record.detail.get("sae_id")]  # fmt: skip
    return next((str(s) for s in found if s), None)


def _warn_once(key: tuple[str, ...], message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def check_identity(run: str | Path | RunFiles, current: Identity, sae_dir: str | Path | None = None,
                   classifier: str | Path | None = None) -> Identity | None:  # fmt: skip
    """Refuses models that are not the ones the run's report was made from.

    Args:
        run: the report folder.
        current: the identity of the loaded SAE + classifier.
        sae_dir: where the loaded SAE is (for the message).
        classifier: where the loaded classifier is (for the message).

    Returns:
        The report's identity (None for a run that records none: accepted, with a one-time warning).

    Raises:
        IdentityError: the report records another identity; the message names both and what to run.
    """
    files = run if isinstance(run, RunFiles) else RunFiles(run)
    recorded = recorded_identity(files)
    if recorded is None:
        if files.has_report():
            _warn_once(("no-identity", str(files.root)),
                       "%s records no SAE/classifier identity (a report from before identities were recorded): "
                       "cannot check that its statistics and explanations belong to the SAE loaded; re-run "
                       "`report --overwrite` to record it", files.report)  # fmt: skip
        return None
    if recorded.id == current.id:
        return recorded
    parts = [p for p, a, b in (("SAE", recorded.sae, current.sae), ("classifier", recorded.classifier,
                                                                     current.classifier)) if a != b]  # fmt: skip
    where = f" ({sae_dir})" if sae_dir is not None else ""
    clf = f" ({classifier})" if classifier is not None else ""
    sae_arg = f" --sae {sae_dir}" if sae_dir is not None else ""
    raise IdentityError(
        f"{files.report} was made with SAE {recorded.sae} on classifier {recorded.classifier}, but the SAE loaded is "
        f"{current.sae}{where} on classifier {current.classifier}{clf}: another {' and '.join(parts)}, so the "
        f"report's statistics, ground truth and explanations describe other latents. Re-run the report for these "
        f"models (`python -m sae_lab report{sae_arg} --run {files.root} --overwrite`, then the explainers), or give "
        "the SAE and classifier the report was made with"
    )


def keep_matching(records: dict[int, Any], files: RunFiles, method: str, expected: str | None = None
                  ) -> dict[int, Any]:  # fmt: skip
    """The explanation records of ``method`` that explain the run's SAE.

    Records of another identity are dropped (one warning per method names how many); records that carry no
    identity (written before identities were recorded) are kept, with a one-time warning when the run has one.

    Args:
        records: ``{latent: ExplanationRecord}``.
        files: the run folder they come from.
        method: their method (for the warning).
        expected: the identity id to keep (default: the one ``report.json`` records; None there: keep all).
    """
    if expected is None and records:
        recorded = recorded_identity(files)
        expected = recorded.id if recorded is not None else None
    if expected is None or not records:
        return records
    kept, other, unknown = {}, {}, 0
    for latent, record in records.items():
        found = record_identity(record)
        if found is not None and found != expected:
            other[found] = other.get(found, 0) + 1
            continue
        unknown += found is None
        kept[latent] = record
    if other:
        theirs = ", ".join(sorted(other))
        _warn_once(("other", str(files.root), method, expected, theirs),
                   "%s: %d of %d explanations were made for another SAE (%s, not %s): not used; re-run `explain %s` "
                   "on this run", files.explanations(method), sum(other.values()), len(records), theirs, expected,
                   method.split("-")[0])  # fmt: skip
    if unknown:
        _warn_once(("unknown", str(files.root), method),
                   "%s: %d explanations record no SAE identity (written before identities were recorded): used as "
                   "they are", files.explanations(method), unknown)  # fmt: skip
    return kept


__all__ = ["IDENTITY_KEY", "Identity", "IdentityError", "check_identity", "identity_of", "keep_matching",
           "record_identity", "recorded_identity", "sae_digest"]  # fmt: skip
