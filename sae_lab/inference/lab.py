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

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sae_lab.data.images import MAX_PIXELS, ImageDecodeError, image_to_tensor, open_image
from sae_lab.inference.why import ClassScore, LatentContribution, Why
from sae_lab.models.tokens import fmap_to_tokens
from sae_lab.run import RunPaths, preferred_texts, resolve_run
from sae_lab.run.identity import Identity, check_identity, identity_of

logger = logging.getLogger(__name__)

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray | Tensor
"""What :meth:`SaeLab.why` takes: a path, PNG/JPEG bytes, a PIL image, an (S, S) uint8 sketch or an ink tensor."""


# ------------------------------------------------------------------------------------------------ the lab
def read_labels(run_dir: str | os.PathLike | None, methods: Sequence[str] | str | None = None,
                identity: str | None = None) -> dict[int, tuple[str, str]]:  # fmt: skip
    """Each latent's label from the run's explanations: ``{latent: (text, method)}``, the first method in
    ``methods`` (default: :data:`sae_lab.run.DEFAULT_PREFERENCE`) that explains it, among the explanations of
    the SAE ``identity`` (default: the one the run's ``report.json`` records); others are skipped with a warning."""
    return preferred_texts(run_dir, methods, identity)


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
        if not net.head_is_linear:
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
        self.explanations: Sequence[str] | str | None = None
        """The explanation methods the labels come from (None: the default preference)."""
        self.identity: Identity | None = None
        """The SAE + classifier identity (set by :meth:`load`; the labels are of this SAE only)."""
        with torch.no_grad():  # per-latent logit-lens vectors and the constant term, in float64
            w_out, b_out = (t.double() for t in net.logit_weights())
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
        explanations: Sequence[str] | str | None = None,
    ) -> SaeLab:
        """Loads a run: classifier checkpoint (``weights_only``), SAE (safetensors), class names, latest labels.

        Args:
            run: report folder (``reports/quickstart``) or run name (``quickstart``); None: the quickstart run,
                or no run when ``sae`` is given (see :func:`resolve_run`).
            sae: SAE export folder, overriding the run's.
            classifier: classifier checkpoint, overriding the SAE's recorded one.
            device: where the models run.
            text_backend: a text backend (or a :func:`~sae_lab.backends.text.make_backend` spec) for the sentence.
            explanations: the explanation method(s) whose text labels a latent, in order of preference
                (default: :data:`sae_lab.run.DEFAULT_PREFERENCE`, then any other method of the run).

        Raises:
            FileNotFoundError: no SAE / classifier found (the message names the places tried).
            ValueError: the SAE and the classifier do not belong together.
            IdentityError: (a ValueError) the run's report and explanations were made with another SAE or
                classifier (the message names both identities and the ``report`` to re-run).
        """
        from sae_lab.models.classifier_io import load_classifier
        from sae_lab.models.sae import TopKSAE

        paths = resolve_run(run, sae, classifier)
        clf = load_classifier(paths.classifier)
        sae_model = TopKSAE.load_from_disk(paths.sae_dir)
        identity = identity_of(sae_model, clf)
        if paths.run_dir is not None:  # the run's labels name this SAE's latents, or it is refused
            check_identity(paths.run_dir, identity, paths.sae_dir, paths.classifier)
        if isinstance(text_backend, str):
            from sae_lab.backends.text import make_backend

            text_backend = make_backend(text_backend)
        labels = read_labels(paths.run_dir, explanations, identity.id)
        lab = cls(clf, sae_model, labels, paths, text_backend, max_pixels, device)
        lab.explanations, lab.identity = explanations, identity
        return lab

    def reload_labels(self) -> int:
        """Re-reads the run's explanations (after an ``explain`` run); returns how many latents have a label.

        Raises:
            IdentityError: the run's report has been re-made with another SAE or classifier since :meth:`load`.
        """
        run_dir = self.paths.run_dir if self.paths else None
        if run_dir is not None and self.identity is not None:
            check_identity(run_dir, self.identity, self.paths.sae_dir, self.paths.classifier)
        self.labels = read_labels(run_dir, self.explanations, self.identity.id if self.identity else None)
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
