"""The LINE loop for many SAE latents at once: batched, shared, resumable.

Per latent (DESIGN.md, "LINE for SAE latents"): an initial pool of the 5 classes whose control images activate
it most and 5 random classes, each scored; ``n_iters`` iterations of propose → generate → score → pool update;
one summary iteration over the pool's top 3; best = argmax of the pool.

Across latents the work is shared: all latents propose in one batched LLM call, a concept's images are
generated once (and cached on disk) for every latent that asks for it, and each batch of generated images goes
through classifier + SAE once to score every latent being explained. The state is saved after every iteration;
a killed run started again continues after the last finished iteration and regenerates nothing cached.

Layout under ``reports/<run>/line/``: ``params.json``, ``state.json``, ``control.safetensors`` (control
activations), ``cache/`` (generated images and their activations), ``summary.jsonl`` (one line per latent) and
``<latent>/`` with ``params.json``, ``proposals.jsonl``, ``history.jsonl``, ``result.json``, ``index.html`` and,
when asked, ``images/`` (:mod:`.outputs`); the explanations go to ``explanations/line.jsonl``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_lab.backends.image import ImageBackend, ImageCache, make_image_backend
from sae_lab.explainers.line.acts import ConceptActivations
from sae_lab.explainers.line.config import SKETCH_TEMPLATE, LineConfig  # noqa: F401 -- re-exported
from sae_lab.explainers.line.offline_proposer import OfflineProposer
from sae_lab.explainers.line.pool import Pool, ScoredConcept
from sae_lab.explainers.line.proposal import Proposal, ProposalContext, normalize_concept
from sae_lab.explainers.line.proposer import LLMProposer
from sae_lab.explainers.line.scoring import (
    ControlSet,
    LatentScorer,
    compute_control,
    concept_scores,
    load_control,
    save_control,
)
from sae_lab.run import RunFiles, load_run
from sae_lab.run.leftovers import remove_stale
from sae_lab.run.secrets import scrub_value
from sae_lab.run.state import StageState

logger = logging.getLogger(__name__)

STATE = "state.json"


class ImagesFailed(ValueError):
    """The image backend made no image at all: every call failed."""


def _relative(path: str | Path, root: Path) -> str:
    try:
        return os.path.relpath(Path(path).resolve(), root.resolve())
    except ValueError:  # another drive
        return str(path)


class LineSession:
    """The loaded models, control activations, backends and caches of one LINE run folder.

    Args:
        run_dir: ``reports/<run>``; outputs go to ``run_dir/line``.
        sae_dir: The SAE export folder (None: the run's, see :func:`~sae_lab.run.resolve_run`).
        config: Loop settings.
        image_backend: An image backend or a spec (``renderer``, ``diffusers:<id or path>``, ``replicate:<model>``).
        llm: A text backend, a spec (``offline``, ``hf:<path>``, ``replicate[:model]``, ``openai:<model>@<url>``).
        classifier: Classifier checkpoint (None: the one recorded by the SAE).
        data: Image source override for the control images.
        device: ``cpu``, ``cuda``… (None: CUDA when available).
        image_opts: Options for the image backend's constructor (when given by spec).
        llm_opts: Options for the text backend's constructor (when given by spec).
        proposer_opts: Options for :class:`LLMProposer` (``max_retries``, ``temperature``, ``max_new_tokens``).
        num_workers: DataLoader workers for the control images.
        progress: Log progress per iteration.
    """

    def __init__(
        self,
        run_dir: str | Path,
        sae_dir: str | Path | None = None,
        config: LineConfig | None = None,
        image_backend: ImageBackend | str = "renderer",
        llm: Any = "offline",
        classifier: str | Path | None = None,
        data: str | None = None,
        device: str | None = None,
        image_opts: dict | None = None,
        llm_opts: dict | None = None,
        proposer_opts: dict | None = None,
        num_workers: int = 0,
        progress: bool = True,
    ) -> None:
        from sae_lab.report.inputs import open_split

        self.config = replace(config) if config is not None else LineConfig()  # n_images is filled in below
        self.files = RunFiles(run_dir)
        self.run_dir = self.files.root
        self.out = self.files.line_dir
        self.progress = progress
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        loaded = load_run(run_dir, sae_dir, classifier, self.device)
        self.sae, self.clf, self.sae_dir, roots = loaded.sae, loaded.classifier, loaded.paths.sae_dir, loaded.roots
        self.scorer = LatentScorer(self.clf.net, self.sae, self.clf.image_size, self.device, self.config.batch_size)
        self.sae_id = loaded.sae_id
        self.class_names = list(self.clf.class_names)

        key = {"sae": self.sae_id, "split": self.config.control_split, "n": self.config.n_control,
               "seed": self.config.seed, "data": data}  # fmt: skip
        path = self.out / "control.safetensors"
        self.control: ControlSet | None = load_control(path, key)
        if self.control is None:
            t0 = time.perf_counter()
            _, dataset, _, prims = open_split(self.clf, data, self.config.control_split, self.config.batch_size, roots)
            self.control = compute_control(self.scorer, dataset, self.config.n_control, self.config.seed,
                                           self.class_names, prims, num_workers)  # fmt: skip
            save_control(path, self.control, key)
            self._log(f"control activations of {len(self.control.z_max)} images in {time.perf_counter() - t0:.1f}s")

        if isinstance(image_backend, str):
            opts = dict(image_opts or {})
            if image_backend.strip() == "renderer":
                opts.setdefault("image_size", self.clf.image_size)
            image_backend = make_image_backend(image_backend, **opts)
        self.image_backend = image_backend
        if self.config.n_images is None:
            self.config.n_images = 8 if image_backend.name == "renderer" else 10
        for folder in (self.out, self.out / "cache"):  # half-written files of a killed session
            remove_stale(folder)
        self.cache = ImageCache(self.out / "cache", image_backend, self.config.template, self.config.seed)

        self.offline = OfflineProposer(self.class_names)
        if isinstance(llm, str) and llm.strip() in ("offline", "offline:vocabulary"):
            self.proposer: OfflineProposer | LLMProposer = self.offline
        else:
            if isinstance(llm, str):
                from sae_lab.backends.text import make_backend

                llm = make_backend(llm, **(llm_opts or {}))
            self.proposer = LLMProposer(llm, self.offline, seed=self.config.seed, domain=self.config.domain,
                                        **(proposer_opts or {}))  # fmt: skip
        self._acts = ConceptActivations(self.cache, self.scorer, self.sae_id, int(self.config.n_images))

    def _log(self, message: str) -> None:
        if self.progress:
            print(f"[explain] {message}", flush=True)
        logger.info(message)

    # ----------------------------------------------------------------------------------------------- scoring
    def concept_acts(self, concepts: Sequence[str]) -> dict[str, torch.Tensor]:
        """(n, M) ``z_max`` of every latent on each concept's images: generated (once) and scored (once)."""
        return self._acts(concepts)

    def score(self, requests: dict[int, list[str]], iteration: int) -> dict[int, dict[str, ScoredConcept]]:
        """Scores each latent's concepts; the union of all concepts is generated and run through the models once."""
        concepts = list(dict.fromkeys(c for cs in requests.values() for c in cs))
        acts = self.concept_acts(concepts)
        out: dict[int, dict[str, ScoredConcept]] = {lat: {} for lat in requests}
        for concept in concepts:
            latents = [lat for lat, cs in requests.items() if concept in cs]
            s = concept_scores(acts[concept][:, latents], self.control.z_max[:, latents])
            metric = s.metric(self.config.metric)
            for j, lat in enumerate(latents):
                out[lat][concept] = ScoredConcept(concept, float(metric[j]), float(s.auc[j]), float(s.mad[j]),
                                                  float(s.mean[j]), iteration, len(acts[concept]))  # fmt: skip
        return out

    # ----------------------------------------------------------------------------------------------- the loop
    def params(self, latents: Sequence[int]) -> dict[str, Any]:
        """The settings a state is made with: identities (weights digests, backend identities), never paths, so a
        copied or moved run folder resumes (:meth:`paths` says where the models were, for people)."""
        return scrub_value({**asdict(self.config), "latents": list(latents), "sae": self.sae_id,
                            "classifier": self.clf.fingerprint, "image_backend": self.image_backend.identity,
                            "proposer": self.proposer.name})  # fmt: skip

    def paths(self) -> dict[str, str]:
        """Where the SAE and the classifier were read from, relative to the run folder when they can be."""
        return {"sae_dir": _relative(self.sae_dir, self.run_dir), "classifier": _relative(self.clf.path, self.run_dir)}

    def run(self, latents: Sequence[int], overwrite: bool = False) -> list[dict[str, Any]]:
        """Explains ``latents`` (resuming a run of the same settings in this folder); returns the summary lines."""
        latents = [int(i) for i in latents]
        if not latents:  # refused before anything is read or replaced: an empty run would empty summary.jsonl
            raise ValueError(f"no latents to explain in {self.run_dir}: the selection is empty")
        bad = [i for i in latents if not 0 <= i < self.scorer.num_latents]
        if bad:
            raise ValueError(f"latents {bad[:10]} out of range: the SAE has {self.scorer.num_latents}")
        params = self.params(latents)
        stored = StageState(self.out / STATE, legacy_settings=self.out / "params.json", name="LINE")
        state = self._load_state(stored, params, overwrite)
        start, generated_before = time.perf_counter(), self.cache.generated
        images_before, seconds_before = state["images_generated"], state["seconds"]

        def save() -> None:
            state["images_generated"] = images_before + self.cache.generated - generated_before
            state["seconds"] = seconds_before + time.perf_counter() - start
            stored.save(params, state)  # settings and state in one atomic write: a crash never mixes two runs

        if state["iteration"] < 0:
            self._initial_pools(state, latents)
            state["iteration"] = 0
            save()
            self._log(f"initial pools of {len(latents)} latents scored ({self.cache.generated} images generated)")
        for iteration in range(state["iteration"] + 1, self.config.n_iters + 2):
            summary = iteration == self.config.n_iters + 1
            self._iterate(state, latents, iteration, summary)
            state["iteration"] = iteration
            save()
            self._log(f"iteration {iteration}/{self.config.n_iters + 1}{' (summary)' if summary else ''} done "
                      f"({self.cache.generated} images generated this session)")  # fmt: skip
        state["done"] = True
        save()
        from sae_lab.explainers.line.outputs import write_outputs

        return write_outputs(self, state, params)

    def _load_state(self, stored: StageState, params: dict, overwrite: bool) -> dict:
        """The saved state of these settings (resumed), else a fresh one; ``overwrite`` ignores any saved state
        (it is replaced at the first save, never before: a crash before that leaves the old run whole).

        Raises:
            SettingsMismatch: (a ValueError) the folder holds a state made with other settings and no ``overwrite``.
        """
        state = None if overwrite else stored.load(params)
        if state is not None:
            self._log(f"resuming after iteration {state['iteration']}")
            return state
        return {"iteration": -1, "done": False, "images_generated": 0, "seconds": 0.0,
                "latents": {str(i): {} for i in params["latents"]}}  # fmt: skip

    def _initial_pools(self, state: dict, latents: list[int]) -> None:
        c = self.config
        requests = {}
        for lat in latents:
            top = [normalize_concept(x) for x in self.control.top_classes(lat, c.n_top_classes)]
            others = [normalize_concept(x) for x in self.class_names if normalize_concept(x) not in top]
            rng = np.random.default_rng([c.seed, lat, 0])
            pick = rng.choice(len(others), size=min(c.n_random, len(others)), replace=False) if others else []
            random_ = [others[int(i)] for i in pick]
            state["latents"][str(lat)] = {"top_classes": top, "random_classes": random_, "pool": [], "scored": {},
                                          "tried": [], "proposals": [], "history": []}  # fmt: skip
            requests[lat] = list(dict.fromkeys(top + random_))
        scores = self.score(requests, 0)
        self._check_images(scores, len(requests))
        for lat in latents:
            ls = state["latents"][str(lat)]
            pool, rng = Pool(c.pool_size), np.random.default_rng([c.seed, lat, 0, 1])
            for concept in requests[lat]:
                pool.update(scores[lat][concept], rng)
            ls["scored"] = {k: v.to_dict() for k, v in scores[lat].items()}
            ls["pool"] = pool.to_list()
            self._record_history(ls, pool, 0)

    def _check_images(self, scores: dict[int, dict[str, ScoredConcept]], n_latents: int) -> None:
        """Refuses to go on when not one image of the initial pools could be made (a backend failing every call,
        e.g. a refused token): every score would be null, and nothing is worth saving."""
        if any(sc.n_images for per in scores.values() for sc in per.values()):
            return
        concepts = len({c for per in scores.values() for c in per})
        why = getattr(self.image_backend, "last_error", None)
        raise ImagesFailed(
            f"the image backend {self.image_backend.name} made none of the {concepts * int(self.config.n_images)} "
            f"images of the initial pools of {n_latents} latents{f' ({why})' if why else ''}: nothing was explained "
            "or written; check the backend (--images) and its credentials"
        )

    def context(self, state: dict, lat: int) -> ProposalContext:
        ls = state["latents"][str(lat)]
        profile = self.control.class_profile(lat).tolist()
        return ProposalContext(
            latent=lat,
            pool=Pool.from_list(ls["pool"], self.config.pool_size).sorted(),
            tried=list(ls["tried"]),
            scored={k: ScoredConcept.from_dict(v) for k, v in ls["scored"].items()},
            class_profile={normalize_concept(n): float(v) for n, v in zip(self.class_names, profile)},
            metric=self.config.metric,
        )

    def _iterate(self, state: dict, latents: list[int], iteration: int, summary: bool) -> None:
        contexts = [self.context(state, lat) for lat in latents]
        proposals: list[Proposal] = self.proposer.propose(contexts, iteration, summary)
        fresh = {ctx.latent: [p.concept] for ctx, p in zip(contexts, proposals) if p.concept not in ctx.scored}
        scores = self.score(fresh, iteration) if fresh else {}
        for ctx, proposal in zip(contexts, proposals):
            ls = state["latents"][str(ctx.latent)]
            scored = scores.get(ctx.latent, {}).get(proposal.concept) or ctx.scored[proposal.concept]
            pool = Pool.from_list(ls["pool"], self.config.pool_size)
            evicted = pool.update(scored, np.random.default_rng([self.config.seed, ctx.latent, iteration, 1]))
            ls["scored"][proposal.concept] = scored.to_dict()
            if not summary:
                ls["tried"].append(proposal.concept)
            ls["pool"] = pool.to_list()
            ls["proposals"].append({"iteration": iteration, "summary": summary, **asdict(proposal),
                                    **{k: getattr(scored, k) for k in ("score", "auc", "mad", "mean", "n_images")},
                                    "evicted": evicted.concept if evicted else None})  # fmt: skip
            self._record_history(ls, pool, iteration)

    @staticmethod
    def _record_history(ls: dict, pool: Pool, iteration: int) -> None:
        best = pool.best()
        ls["history"].append({"iteration": iteration, "best_concept": best.concept, "best_score": best.score,
                              "pool": [[p.concept, p.score] for p in pool.sorted()]})  # fmt: skip
