"""DnD for many latents at once: every step's work is shared across the latents explained together.

1. **Describe** (:meth:`DndEngine.describe`): each latent's top probe images; one classifier + SAE pass over all
   of them gives every latent's token maps, from which the attention crops are cut (:mod:`.crops`); one more pass
   scores all crops for all latents; each latent keeps its ``n_top`` most activating originals and crops.
2. **Caption** (:meth:`DndEngine.caption`): every distinct kept image captioned once, in one captioner call.
3. **Propose** (:meth:`DndEngine.propose`): all latents' summaries in one batched LLM call per round
   (:mod:`.summarize`), cleaned into candidates.
4. **Select** (:meth:`DndEngine.select`): every distinct candidate's images generated once (the LINE image cache),
   scored in one pass for all latents; one perception call gives every similarity weight (:mod:`.select`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sae_lab.backends.perception.base import image_key
from sae_lab.data.images import image_to_tensor
from sae_lab.explainers.dnd.crops import Box, crop_boxes, crop_image, latent_maps, probe_masks, upsample
from sae_lab.explainers.dnd.select import NO_HITS_WEIGHT, choose, rank_candidates
from sae_lab.explainers.dnd.settings import DndSettings
from sae_lab.explainers.dnd.summarize import OFFLINE, candidates_from, summarize
from sae_lab.explainers.dnd.work import LatentWork, Shown

logger = logging.getLogger(__name__)


class DndEngine:
    """The loaded models, probe set and backends of one DnD run; :meth:`explain` explains a batch of latents.

    Args:
        settings: The run's settings (checked here).
        loaded: The run's models (default: :func:`~sae_lab.run.load_run` from the settings).
        probe: The probe set (default: the run's cached one).
        llm: A text backend or None for the offline rule (default: from ``settings.llm``).
        captioner: A captioner (default: from ``settings.captioner``).
        perception: A perception backend (default: from ``settings.perception``).
        images: An image backend (default: from ``settings.images``).
        image_cache: Folder of generated images (default: ``settings.image_cache``, else LINE's cache folder).
        dataset: The probe's split, already open (read for the crops' primitive masks; default: opened when needed).
    """

    def __init__(self, settings: DndSettings, loaded=None, probe=None, llm=..., captioner=None, perception=None,
                 images=None, image_cache: str | Path | None = None, dataset=...) -> None:  # fmt: skip
        from sae_lab.backends.image import ImageCache, make_image_backend
        from sae_lab.backends.perception import make_captioner, make_perception
        from sae_lab.explainers.probe import probe_set
        from sae_lab.run import RunFiles, load_run, resolve_run

        settings.check()
        self.s = s = settings
        device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.loaded = loaded or load_run(s.run, s.sae, s.classifier, device=device)
        self.files = RunFiles(self.loaded.paths.run_dir or resolve_run(s.run, s.sae, s.classifier).run_dir)
        self.net, self.sae = self.loaded.classifier.net, self.loaded.sae
        self.size = int(self.loaded.classifier.image_size)
        self.probe = probe or probe_set(self.loaded, self.files, split=s.split, n=s.probe_images, seed=s.seed,
                                        batch_size=s.batch_size)  # fmt: skip
        if llm is ...:
            llm = None if s.llm.strip() == OFFLINE else _make_llm(s)
        self.llm = llm
        self.captioner = captioner or make_captioner(s.captioner, **s.model_options(s.captioner))
        self.perception = perception or make_perception(s.perception, **s.model_options(s.perception))
        self.images = images or make_image_backend(s.images, **s.image_options(self.size))
        root = image_cache or s.image_cache or self.files.line_dir / "cache"
        self.cache = ImageCache(root, self.images, s.template, s.seed)
        self.totals: Counter = Counter()
        """Work done by this engine: forward_images, captions, caption_failures, llm_calls, images_generated."""
        self.dataset = dataset
        self._mask_names: list[str] = []

    @property
    def backends(self) -> dict[str, str]:
        """The backends by role, as specs or identities (never a secret)."""
        return {"llm": self.llm.name if self.llm is not None else OFFLINE, "captioner": self.captioner.identity,
                "perception": self.perception.identity, "images": self.images.identity,
                "sae": self.loaded.sae_id}  # fmt: skip

    def explain(self, latents: Sequence[int]) -> list[LatentWork]:
        """Runs the four steps for ``latents`` together."""
        bad = [i for i in latents if not 0 <= int(i) < self.probe.num_latents]
        if bad:
            raise ValueError(f"latents {bad[:10]} out of range: the SAE has {self.probe.num_latents}")
        works = self.describe([int(i) for i in latents])
        live = [w for w in works if w.ok]
        for step in (self.caption, self.propose, self.select):
            step(live)
            live = [w for w in live if w.ok]
        return works

    # ----------------------------------------------------------------------------------------------- 1. describe
    def describe(self, latents: list[int]) -> list[LatentWork]:
        """Top images, crops and re-scoring for every latent at once."""
        s, probe = self.s, self.probe
        works = [LatentWork(lat, probe.top_images(lat, s.n_top, s.pooling).tolist()) for lat in latents]
        for w in works:
            if not w.top:
                w.reason = "the latent never fires on the probe images"
            elif len(w.top) < s.n_top:
                w.notes.append(f"only {len(w.top)} images with non-zero activation (of {len(probe)} probe images)")
        live = [w for w in works if w.ok]
        union = sorted({i for w in live for i in w.top})
        if not live:
            return works
        col = {lat: j for j, lat in enumerate(w.latent for w in live)}
        maps, z_max, z_avg = latent_maps(self.net, self.sae, probe.ink(union), [w.latent for w in live], s.batch_size)
        z = z_avg if s.pooling == "avg" else z_max
        self.totals["forward_images"] += len(union)
        users = Counter(i for w in live for i in w.top)
        masks = self._masks(union)
        row = {i: j for j, i in enumerate(union)}
        parents = {i: probe.pil(i) for i in union}
        cut: dict[tuple[int, Box], Image.Image] = {}  # (parent, box) → crop: latents share a crop
        uses: list[tuple[LatentWork, int, Box]] = []
        for w in live:
            w.work["forward_images"] += sum(1 / users[i] for i in w.top)
            for i in w.top:
                w.kept.append(Shown(parents[i], "original", i, None, float(z[row[i], w.latent])))
                for box in crop_boxes(upsample(maps[row[i], col[w.latent]], self.size), s.crops_per_image):
                    if (i, box) not in cut:
                        cut[(i, box)] = crop_image(parents[i], box, masks.get(i), self._mask_names)
                    uses.append((w, i, box))
        if cut:
            at = {k: n for n, k in enumerate(cut)}
            x = torch.stack([image_to_tensor(im, self.size) for im in cut.values()])
            _, c_max, c_avg = latent_maps(self.net, self.sae, x, [], s.batch_size)
            cz = c_avg if s.pooling == "avg" else c_max
            self.totals["forward_images"] += len(cut)
            sharing = Counter((i, box) for _, i, box in uses)
            for w, i, box in uses:
                w.kept.append(Shown(cut[(i, box)], "crop", i, box, float(cz[at[(i, box)], w.latent])))
                w.work["forward_images"] += 1 / sharing[(i, box)]
        keys: dict[int, str] = {}  # by object: a shared image is hashed once
        for w in live:
            ranked = sorted(w.kept, key=lambda sh: -sh.activation)  # stable: originals first on ties
            w.kept = [sh for sh in ranked if sh.activation > 0][: s.n_top]
            for sh in w.kept:
                if id(sh.image) not in keys:
                    keys[id(sh.image)] = image_key(sh.image)
                sh.key = keys[id(sh.image)]
        return works

    def _masks(self, idx: list[int]) -> dict[int, np.ndarray]:
        """Primitive masks of probe images (sketch world) from the probe's split, opened once."""
        from sae_lab.data.world import PRIMITIVES

        self._mask_names = list(self.probe.primitive_names or PRIMITIVES)
        if self.probe.primitive_names is None:
            return {}
        if self.dataset is ...:
            from sae_lab.report.inputs import open_split

            try:
                self.dataset = open_split(self.loaded.classifier, None, self.probe.split, self.s.batch_size,
                                           self.loaded.roots)[1]  # fmt: skip
            except (OSError, ValueError) as e:
                logger.warning("no primitive masks for the crops (%s); crops keep their parent's primitives", e)
                self.dataset = None
        return probe_masks(self.dataset, self.probe, idx, len(self._mask_names)) if self.dataset else {}

    # ----------------------------------------------------------------------------------------------- 2. caption
    def caption(self, works: list[LatentWork]) -> None:
        """Captions every distinct kept image once; an image the captioner fails on is skipped and counted."""
        distinct: dict[str, Image.Image] = {}
        for w in works:
            for sh in w.kept:
                distinct.setdefault(sh.key, sh.image)
        if not distinct:
            return
        made, failed = self.captioner.captions, self.captioner.failures
        texts = dict(zip(distinct, self.captioner.caption(list(distinct.values()))))
        new = self.captioner.captions - made
        self.totals["captions"] += new
        self.totals["caption_failures"] += self.captioner.failures - failed
        users = Counter(k for w in works for k in {sh.key for sh in w.kept})
        for w in works:
            for sh in w.kept:
                sh.caption = texts.get(sh.key) or None
            w.work["captions"] += sum(new / len(distinct) / users[k] for k in {sh.key for sh in w.kept})
            lost = sum(sh.caption is None for sh in w.kept)
            if lost:
                w.notes.append(f"{lost} of {len(w.kept)} images could not be captioned and were skipped")
            if lost == len(w.kept):
                w.reason, w.failed = "no image could be captioned", True

    # ----------------------------------------------------------------------------------------------- 3. propose
    def propose(self, works: list[LatentWork]) -> None:
        """All latents' summaries (one batched LLM call per round), cleaned into candidates."""
        s = self.s
        captions = {w.latent: [sh.caption for sh in w.kept if sh.caption] for w in works}
        plans = summarize(captions, s.n_summaries, s.seed, self.llm, s.max_retries, s.temperature, s.max_new_tokens)
        for w in works:
            w.summaries = plans[w.latent]
            w.work["llm_calls"] += sum(x.attempts for x in w.summaries)
            self.totals["llm_calls"] += sum(x.attempts for x in w.summaries)
            for k, x in enumerate(w.summaries):
                if x.source == "fallback":
                    why = "; ".join(x.errors[-2:]) or "no answer"
                    w.notes.append(f"summary {k}: no usable LLM answer after {len(x.errors)} tries ({why}); the "
                                   "offline rule's noun phrase was used")  # fmt: skip
            if self.llm is not None and w.summaries and all(x.call_failed for x in w.summaries):
                why = w.summaries[-1].errors[-1] if w.summaries[-1].errors else "no answer"
                w.reason, w.failed = f"every LLM request failed ({why})", True  # the offline rule is not an answer
                continue
            w.candidates = candidates_from([x.label for x in w.summaries], s.n_summaries)
            if not w.candidates:
                w.reason = "no candidate concept in the summaries"

    # ----------------------------------------------------------------------------------------------- 4. select
    def select(self, works: list[LatentWork]) -> None:
        """Generates every distinct candidate's images once, scores them for all latents, weights and chooses."""
        s = self.s
        concepts = list(dict.fromkeys(c for w in works for c in w.candidates))
        if not concepts:
            return
        missing = Counter(c for c, _ in self.cache.missing(concepts, s.n_images))
        self.totals["images_generated"] += self.cache.ensure(concepts, s.n_images)
        made = {c: missing[c] - len(self.cache.missing([c], s.n_images)) for c in concepts}
        images = {c: self.cache.load(c, s.n_images) for c in concepts}
        paths = {c: self.cache.paths(c, s.n_images) for c in concepts}
        flat = [im for c in concepts for im in images[c]]
        z = torch.zeros(0, self.probe.num_latents)
        if flat:
            x = torch.stack([image_to_tensor(im, self.size) for im in flat])
            _, g_max, g_avg = latent_maps(self.net, self.sae, x, [], s.batch_size)
            z = g_avg if s.pooling == "avg" else g_max
        self.totals["forward_images"] += len(flat)
        per = dict(zip(concepts, z.split([len(images[c]) for c in concepts])))
        users = Counter(c for w in works for c in w.candidates)
        for w in works:
            w.acts = [per[c][:, w.latent].tolist() for c in w.candidates]
            w.image_paths = [paths[c] for c in w.candidates]
            w.ranking = rank_candidates(w.acts, s.beta, s.top_k)
            w.work["images_generated"] += sum(made[c] / users[c] for c in w.candidates)
            w.work["forward_images"] += sum(len(images[c]) / users[c] for c in w.candidates)
            if not any(w.acts):
                w.reason, w.failed = "no image could be generated for any candidate", True
        weights = self._weights([w for w in works if w.ok], images)
        for w in works:
            if w.ok:
                w.weights = weights[w.latent]
                w.chosen = choose(w.candidates, w.ranking, w.weights, s.keep)

    def _weights(self, works: list[LatentWork], images: dict[str, list[Image.Image]]) -> dict[int, list[float]]:
        """Similarity weights of every latent's candidates from one perception call: the latent's kept images
        against every generated image that lands in some latent's joint top."""
        a_index: dict[str, int] = {}
        a_images: list[Image.Image] = []
        b_index: dict[tuple[str, int], int] = {}
        b_images: list[Image.Image] = []
        for w in works:
            for sh in w.kept:
                if sh.key not in a_index:
                    a_index[sh.key] = len(a_images)
                    a_images.append(sh.image)
            for c, hits in zip(w.candidates, w.ranking.hits):
                for j in hits:
                    if (c, j) not in b_index:
                        b_index[(c, j)] = len(b_images)
                        b_images.append(images[c][j])
        sim = np.asarray(self.perception.similarity(a_images, b_images)) if a_images and b_images else None
        out = {}
        for w in works:
            rows = sorted({a_index[sh.key] for sh in w.kept})
            out[w.latent] = [float(sim[np.ix_(rows, [b_index[(c, j)] for j in hits])].mean()) if hits
                             else NO_HITS_WEIGHT for c, hits in zip(w.candidates, w.ranking.hits)]  # fmt: skip
        return out

    def close(self) -> None:
        """Releases the backends' models and connections."""
        for backend in (self.llm, self.captioner, self.perception, self.images):
            if backend is not None:
                backend.close()


def _make_llm(s: DndSettings):
    from sae_lab.backends.text import make_backend

    kind = s.llm.strip().partition(":")[0].lower()
    return make_backend(s.llm, **({"device": s.device or "auto"} if kind in ("hf", "transformers") else {}))


__all__ = ["DndEngine", "LatentWork", "Shown"]
