"""``SaeLab``: a trained classifier + its SAE + the run's latent labels, answering "why this class?" per image.

The exact contribution of a latent (DESIGN, "why contribution"). For one image, the explained layer gives tokens
x_t (T, C), t over the H·W grid. The SAE reconstructs each token in raw feature space as
``x̂_t = σ ⊙ (W_decᵀ z_t + b_dec) + μ`` (z_t its Top-K code, (M,)), and leaves the error ``e_t = x_t − x̂_t``.
The head is linear on the pooled map: ``logit_c = W_out[c] · mean_t(x_t) + b_c``. Substituting
``x_t = x̂_t + e_t`` and moving the mean inside the linear decoder::

    logit_c = Σ_i z̄_i · w_i[c]                        (latents:  z̄_i = mean_t z_{t,i},  w_i = W_out (σ ⊙ d_i))
            + W_out[c] · mean_t(e_t)                   (the SAE error term)
            + W_out[c] · (σ ⊙ b_dec + μ) + b_c         (the bias term: the same for every image)

``w_i`` is latent i's logit-lens vector (d_i = decoder row i), so a latent's contribution to class c is its mean
Top-K activation over the image's tokens times its logit-lens weight for c. The identity is exact algebra, and
:class:`SaeLab` evaluates it in float64 against the classifier's own float32 logit, so the three parts add up to
the logit to float32 rounding (~1e-6). It needs the head to be exactly pool + linear, i.e. the SAE explains the
last layer (``layer4``); other layers are refused.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sae_lab.data.images import MAX_PIXELS, ImageDecodeError, image_to_tensor, open_image
from sae_lab.data.tokens import fmap_to_tokens

logger = logging.getLogger(__name__)

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray | Tensor
"""What :meth:`SaeLab.why` takes: a path, PNG/JPEG bytes, a PIL image, an (S, S) uint8 sketch or an ink tensor."""

LABELS = "labels.jsonl"
LINE_SUMMARY = Path("line") / "summary.jsonl"
REPORT = "report.json"
DEFAULT_RUN = "quickstart"


# ------------------------------------------------------------------------------------------------ results
@dataclass
class ClassScore:
    """One class with its probability."""

    index: int
    """Class index (the classifier's output unit)."""
    name: str
    """Class name (``"class"`` in JSON)."""
    prob: float
    """Softmax probability of the classifier's own logits."""

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "class": self.name, "prob": round(self.prob, 6)}


@dataclass
class LatentContribution:
    """One SAE latent's share in the predicted class logit."""

    id: int
    """Latent index in the SAE dictionary."""
    activation: float
    """Max over the image's tokens of its Top-K code (``z_max``, as the report's exemplars)."""
    mean_activation: float
    """Mean over the image's tokens of its Top-K code (``z̄``; zero on tokens where it is not in the Top-K)."""
    contribution: float
    """Exact share of the predicted class logit: ``mean_activation · w[predicted]`` (w: its logit-lens vector)."""
    label: str | None
    """The run's name for it: LINE's best concept, else the stats label, else None."""
    label_source: str | None = None
    """Where the label came from: ``"line"``, ``"labels"`` or None."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "activation": round(self.activation, 6), "contribution": round(self.contribution, 6),
                "label": self.label}  # fmt: skip


@dataclass
class Why:
    """The explanation of one prediction.

    ``latent_sum + error_term + bias_term == logit`` (to ~1e-6); ``latents`` lists only the top ones, so their
    contributions alone do not add up to ``latent_sum``.
    """

    image: str
    """The image's name (its path when it came from a file)."""
    predicted: ClassScore
    """The classifier's top class (its own forward pass, not the SAE-spliced one)."""
    top5: list[ClassScore]
    """The five most probable classes, best first (fewer when the classifier has fewer classes)."""
    latents: list[LatentContribution]
    """The top latents, by contribution to the predicted class (largest first; see ``SaeLab.why``'s ``rank_by``)."""
    logit: float
    """The classifier's logit of the predicted class."""
    latent_sum: float
    """Sum of the contributions of all M latents (not only the listed ones)."""
    error_term: float
    """``W_out[c] · mean_t(x_t − x̂_t)``: the part of the logit the SAE reconstruction misses."""
    bias_term: float
    """``W_out[c] · (σ ⊙ b_dec + μ) + b_c``: the image-independent part (decoder bias, mean and head bias)."""
    active_latents: int
    """Latents with a non-zero Top-K code on at least one token of the image."""
    sentence: str = ""
    """One sentence saying why, from the template (or rewritten by a text backend)."""

    def to_json(self) -> dict[str, Any]:
        """The DESIGN ``why --json`` object, plus ``logit``, ``latent_sum``, ``error_term`` and ``bias_term``."""
        return {
            "image": self.image,
            "predicted": self.predicted.to_json(),
            "top5": [c.to_json() for c in self.top5],
            "latents": [lat.to_json() for lat in self.latents],
            "sentence": self.sentence,
            "logit": round(self.logit, 6),
            "latent_sum": round(self.latent_sum, 6),
            "error_term": round(self.error_term, 6),
            "bias_term": round(self.bias_term, 6),
            "active_latents": self.active_latents,
        }

    def to_text(self) -> str:
        """A readable block: prediction, top-5, the latent table, the logit split and the sentence."""
        lines = [f"{self.image}: {self.predicted.name} (p={self.predicted.prob:.3f})"]
        lines.append("  top-5   " + " · ".join(f"{c.name} {c.prob:.3f}" for c in self.top5))
        lines.append(f"  {'latent':>8}  {'activation':>10}  {'contribution':>12}  label")
        for lat in self.latents:
            label = lat.label if lat.label is not None else "–"
            lines.append(f"  {lat.id:>8}  {lat.activation:>10.3f}  {lat.contribution:>+12.3f}  {label}")
        lines.append(
            f"  logit {self.logit:.3f} = {self.active_latents} active latents {self.latent_sum:+.3f}"
            f" + SAE error {self.error_term:+.3f} + bias {self.bias_term:+.3f}"
        )
        lines.append(f"  {self.sentence}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ labels
def _jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d is not JSON; skipped", path, n)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _latent_id(row: dict) -> int | None:
    value = row.get("latent", row.get("id"))
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_labels(run_dir: str | os.PathLike | None) -> dict[int, tuple[str, str]]:
    """The latest label of every latent of a run: ``{latent: (label, source)}``, source ``"line"`` | ``"labels"``.

    ``labels.jsonl`` (the ``label`` stage): the last line with ``status: "ok"`` and a non-empty ``label`` wins.
    ``line/summary.jsonl`` (LINE): a non-empty ``best_concept`` (last line per latent) takes precedence. Missing
    files give no labels; unreadable lines are skipped with a warning.
    """
    labels: dict[int, tuple[str, str]] = {}
    if run_dir is None:
        return labels
    run_dir = Path(run_dir)
    for name, key, source in ((LABELS, "label", "labels"), (LINE_SUMMARY, "best_concept", "line")):
        path = run_dir / name
        if not path.is_file():
            continue
        for row in _jsonl(path):
            latent, text = _latent_id(row), row.get(key)
            if latent is None or not isinstance(text, str) or not text.strip():
                continue
            if source == "labels" and row.get("status", "ok") != "ok":
                continue
            labels[latent] = (text.strip(), source)
    return labels


# ------------------------------------------------------------------------------------------------ run layout
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


def _is_sae_dir(path: Path) -> bool:
    return (path / "cfg.json").is_file() and (path / "sae.safetensors").is_file()


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
    if run_dir is None or not (run_dir / REPORT).is_file():
        return {}
    try:
        report = json.loads((run_dir / REPORT).read_text())
    except (OSError, json.JSONDecodeError) as e:
        logger.warning("cannot read %s: %s", run_dir / REPORT, e)
        return {}
    sae, clf = report.get("sae"), report.get("classifier")
    return {
        "sae": report.get("sae_dir") or (sae.get("dir") if isinstance(sae, dict) else sae),
        "classifier": clf.get("checkpoint") if isinstance(clf, dict) else clf,
    }


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
    run_dir = _run_dir(run)
    facts = _report_facts(run_dir)
    anchors = [p for p in (run_dir,) if p is not None]
    candidates: list[Path] = []
    if sae is not None:
        candidates.append(Path(sae))
        recorded = _find(facts["sae"], anchors, want_dir=True) if facts.get("sae") else None
        if recorded is not None and recorded.resolve() != Path(sae).resolve():
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
    sae_dir = next((c for c in candidates if _is_sae_dir(c)), None)
    if sae_dir is None:
        what = f"run {run_dir}" if run_dir is not None else "the given SAE"
        raise FileNotFoundError(
            f"no SAE for {what}: looked for cfg.json + sae.safetensors in {', '.join(looked)}; "
            "train one (quickstart) or pass --sae DIR"
        )
    if classifier is not None:
        clf_path = Path(classifier)
        if not clf_path.is_file():
            raise FileNotFoundError(f"classifier checkpoint {clf_path} does not exist")
    else:
        recorded = json.loads((sae_dir / "cfg.json").read_text()).get("metadata", {}).get("classifier_checkpoint")
        tried = [r for r in (recorded, facts.get("classifier")) if r]
        found = [_find(r, [sae_dir, *anchors], want_dir=False) for r in tried]
        clf_path = next((p for p in found if p is not None), None)
        if clf_path is None:
            raise FileNotFoundError(
                f"no classifier checkpoint for the SAE at {sae_dir}: tried {tried or 'none recorded'}; "
                "pass --classifier CKPT"
            )
    return RunPaths(run_dir, sae_dir, clf_path, looked)


# ------------------------------------------------------------------------------------------------ the lab
class SaeLab:
    """A classifier, its SAE and the run's labels, ready to explain single images.

    Build it with :meth:`load`. ``why`` is batched and runs under ``torch.no_grad``.

    Args:
        classifier: a :class:`~sae_lab.lit.classifier.LoadedClassifier`.
        sae: a :class:`~sae_lab.models.sae.TopKSAE` trained on that classifier's explained layer.
        labels: ``{latent: (label, source)}`` (see :func:`read_labels`).
        paths: where the parts came from (for the record).
        text_backend: optional :class:`~sae_lab.backends.text.TextBackend` that rewrites the template sentence.
        max_pixels: largest decoded image accepted (decompression-bomb guard).
    """

    def __init__(
        self,
        classifier,
        sae,
        labels: dict[int, tuple[str, str]] | None = None,
        paths: RunPaths | None = None,
        text_backend=None,
        max_pixels: int = MAX_PIXELS,
        device: str | torch.device = "cpu",
    ):
        net = classifier.net
        if sae.classifier and sae.classifier != classifier.fingerprint:
            raise ValueError(
                f"the SAE{f' at {paths.sae_dir}' if paths else ''} was trained on classifier {sae.classifier}, but "
                f"{classifier.path} is classifier {classifier.fingerprint}: they do not belong together "
                "(pass the SAE's own classifier with --classifier)"
            )
        if sae.cfg.d_in != net.channels or (sae.layer and sae.layer != net.layer):
            raise ValueError(
                f"the SAE explains {sae.layer or '?'} ({sae.cfg.d_in} channels) but the classifier's layer is "
                f"{net.layer} ({net.channels} channels)"
            )
        if len(net.rest) > 0:
            raise ValueError(f"exact contributions need the head to be pool + linear: explain layer4, not {net.layer}")
        if not sae.classifier:
            logger.warning("the SAE does not record its classifier; cannot check that they belong together")
        self.classifier, self.paths, self.text_backend, self.max_pixels = classifier, paths, text_backend, max_pixels
        self.device = torch.device(device)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.sae = sae.to(self.device).eval().requires_grad_(False)
        self.class_names = classifier.class_names
        self.image_size = classifier.image_size
        self.labels = dict(labels or {})
        with torch.no_grad():  # per-latent logit-lens vectors and the constant term, in float64
            w_out, b_out = net.fc.weight.double(), net.fc.bias.double()
            sigma, mu = self.sae.sigma.double(), self.sae.mu.double()
            self._w_dec_raw = self.sae.W_dec.double() * sigma  # (M, C): σ ⊙ d_i
            self._lens = self._w_dec_raw @ w_out.T  # (M, classes): w_i
            self._w_out = w_out
            self._offset = sigma * self.sae.b_dec.double() + mu  # (C,): σ ⊙ b_dec + μ
            self._bias = w_out @ self._offset + b_out  # (classes,)

    @classmethod
    def load(
        cls,
        run: str | os.PathLike | None = None,
        *,
        sae: str | os.PathLike | None = None,
        classifier: str | os.PathLike | None = None,
        device: str = "cpu",
        text_backend=None,
        max_pixels: int = MAX_PIXELS,
    ) -> SaeLab:
        """Loads a run: classifier checkpoint (``weights_only``), SAE (safetensors), class names, latest labels.

        Args:
            run: report folder (``reports/quickstart``) or run name (``quickstart``); None: the quickstart run,
                or no run when ``sae`` is given (see :func:`resolve_run`).
            sae: SAE export folder, overriding the run's.
            classifier: classifier checkpoint, overriding the SAE's recorded one.
            device: where the models run.
            text_backend: a text backend (or a :func:`~sae_lab.backends.text.make_backend` spec) for the sentence.

        Raises:
            FileNotFoundError: no SAE / classifier found (the message names the places tried).
            ValueError: the SAE and the classifier do not belong together.
        """
        from sae_lab.models.classifier_io import load_classifier
        from sae_lab.models.sae import TopKSAE

        paths = resolve_run(run, sae, classifier)
        clf = load_classifier(paths.classifier)
        sae_model = TopKSAE.load_from_disk(paths.sae_dir)
        if isinstance(text_backend, str):
            from sae_lab.backends.text import make_backend

            text_backend = make_backend(text_backend)
        labels = read_labels(paths.run_dir)
        return cls(clf, sae_model, labels, paths, text_backend, max_pixels, device)

    def reload_labels(self) -> int:
        """Re-reads the run's labels (after a ``label`` or LINE run); returns how many latents have one."""
        self.labels = read_labels(self.paths.run_dir if self.paths else None)
        return len(self.labels)

    @property
    def num_latents(self) -> int:
        return self.sae.cfg.num_latents

    # -------------------------------------------------------------------------------------------- inputs
    def to_tensor(self, image: ImageInput) -> Tensor:
        """Any accepted input → the (1, S, S) ink tensor the classifier takes.

        Raises:
            ImageDecodeError: unreadable, truncated or too large picture.
            ValueError: a tensor of the wrong shape.
        """
        if isinstance(image, Tensor):
            t = image.detach().float().cpu()
            t = t[None] if t.ndim == 2 else t
            if t.shape != (1, self.image_size, self.image_size):
                raise ValueError(
                    f"an ink tensor must be (1, {self.image_size}, {self.image_size}), got {tuple(t.shape)}"
                )
            return t
        if isinstance(image, np.ndarray):
            return image_to_tensor(image, self.image_size)
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        if isinstance(image, str) and os.path.isfile(image) and os.path.getsize(image) == 0:
            raise ImageDecodeError(f"{image} is an empty file")
        return image_to_tensor(open_image(image, self.max_pixels), self.image_size)

    @staticmethod
    def name_of(image: ImageInput) -> str:
        if isinstance(image, (str, os.PathLike)):
            return os.fspath(image)
        if isinstance(image, Image.Image):
            return getattr(image, "filename", "") or "<image>"
        return {bytes: "<bytes>", bytearray: "<bytes>", np.ndarray: "<array>"}.get(type(image), "<tensor>")

    # -------------------------------------------------------------------------------------------- why
    def why(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        top: int | None = 5,
        names: Sequence[str] | None = None,
        rank_by: str = "contribution",
        batch_size: int = 64,
        sentences: bool = True,
    ) -> Why | list[Why]:
        """Explains the classifier's prediction for one image, or for a list of images run together.

        Args:
            images: one input or a list (see :data:`ImageInput`); a list gives a list back, in order.
            top: latents listed per image (None: every active latent).
            names: the images' names in the results (default: their paths, or ``<bytes>``, ``<tensor>`` …).
            rank_by: ``"contribution"`` lists the latents that push the predicted class up most (the "because"
                of the answer); ``"abs"`` ranks by |contribution|, so strong counter-evidence shows too.
            batch_size: images per forward pass.
            sentences: build the one-sentence explanation (and rewrite it with the text backend, if any).

        Raises:
            ImageDecodeError: an input could not be read (nothing is explained then; decode first with
                :meth:`to_tensor` to handle bad inputs one by one).
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if names is not None and len(names) != len(items):
            raise ValueError(f"{len(names)} names for {len(items)} images")
        if rank_by not in ("contribution", "abs"):
            raise ValueError(f"rank_by must be 'contribution' or 'abs', got {rank_by!r}")
        tensors = [self.to_tensor(x) for x in items]
        names = list(names) if names is not None else [self.name_of(x) for x in items]
        results: list[Why] = []
        for a in range(0, len(tensors), batch_size):
            batch = torch.stack(tensors[a : a + batch_size]).to(self.device)
            results.extend(self._explain(batch, names[a : a + batch_size], top, rank_by))
        if sentences and results:
            from sae_lab.inference.sentence import rewrite_sentences, template_sentence

            for r in results:
                r.sentence = template_sentence(r)
            if self.text_backend is not None:
                for r, s in zip(results, rewrite_sentences(results, self.text_backend)):
                    r.sentence = s
        return results[0] if single else results

    @torch.no_grad()
    def _explain(self, images: Tensor, names: Sequence[str], top: int | None, rank_by: str) -> list[Why]:
        fmap = self.net.features(images)  # (B, C, H, W)
        logits = self.net.head(fmap)  # the classifier's own logits
        probs = logits.double().softmax(-1)
        b, _, h, w = fmap.shape
        n_tok, m = h * w, self.num_latents
        tokens = fmap_to_tokens(fmap)  # (B·T, C), an image's tokens contiguous
        acts, idx = self.sae.encode(self.sae.standardize(tokens))  # (B·T, K)
        flat = (torch.arange(b, device=idx.device).repeat_interleave(n_tok)[:, None] * m + idx).reshape(-1)
        z_sum = torch.zeros(b * m, dtype=torch.float64, device=idx.device)
        z_sum.index_add_(0, flat, acts.reshape(-1).double())
        z_mean = (z_sum / n_tok).view(b, m)  # z̄ (B, M)
        z_max = torch.zeros(b * m, dtype=acts.dtype, device=idx.device)
        z_max = z_max.scatter_reduce_(0, flat, acts.reshape(-1), "amax").view(b, m)  # Top-K codes are >= 0
        pred = logits.argmax(-1)
        contrib = z_mean * self._lens[:, pred].T  # (B, M): z̄_i · w_i[c]
        x_mean = tokens.double().view(b, n_tok, -1).mean(1)  # (B, C)
        err_mean = x_mean - (z_mean @ self._w_dec_raw + self._offset)  # mean_t(x_t − x̂_t)
        error_term = (err_mean * self._w_out[pred]).sum(-1)
        bias_term = self._bias[pred]
        k5 = min(5, logits.shape[1])
        top_p, top_i = probs.topk(k5, dim=-1)
        out = []
        for j in range(b):
            active = (z_mean[j] > 0).nonzero().squeeze(1)
            score = contrib[j, active] if rank_by == "contribution" else contrib[j, active].abs()
            order = active[score.argsort(descending=True)[:top]]
            latents = []
            for i in order.tolist():
                label, source = self.labels.get(i, (None, None))
                latents.append(LatentContribution(i, float(z_max[j, i]), float(z_mean[j, i]), float(contrib[j, i]),
                                                  label, source))  # fmt: skip
            c = int(pred[j])
            out.append(
                Why(
                    image=names[j],
                    predicted=ClassScore(c, self.class_names[c], float(probs[j, c])),
                    top5=[ClassScore(int(i), self.class_names[int(i)], float(p)) for p, i in zip(top_p[j], top_i[j])],
                    latents=latents,
                    logit=float(logits[j, c]),
                    latent_sum=float(contrib[j].sum()),
                    error_term=float(error_term[j]),
                    bias_term=float(bias_term[j]),
                    active_latents=len(active),
                )
            )
        return out
