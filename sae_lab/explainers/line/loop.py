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
when asked, ``images/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_lab.backends.image.imagegen import ImageBackend, ImageCache, make_image_backend
from sae_lab.data.world import primitives_in_text
from sae_lab.explainers.line.page import render_latent_page
from sae_lab.explainers.line.pool import Pool, ScoredConcept
from sae_lab.explainers.line.proposer import LLMProposer, OfflineProposer, Proposal, ProposalContext, normalize_concept
from sae_lab.explainers.line.scoring import (
    ControlSet,
    LatentScorer,
    compute_control,
    concept_scores,
    load_control,
    save_control,
)
from sae_lab.jsonable import to_jsonable
from sae_lab.run.io import atomic_write_text

logger = logging.getLogger(__name__)

LINE_DIR = "line"
STATE = "state.json"
SUMMARY = "summary.jsonl"
SKETCH_TEMPLATE = "a simple black-and-white line drawing of {concept}"
GT_AUC = 0.9


@dataclass
class LineConfig:
    """Settings of one LINE run (everything but the latents, the backends' own options and the paths)."""

    n_iters: int = 10
    """Proposal iterations per latent (then one summary iteration)."""
    n_images: int | None = None
    """Images per concept; None: 8 with the renderer, 10 with a diffusion model."""
    metric: str = "auc"
    """Score a concept by ``auc`` (default), ``mad`` or ``mean`` activation."""
    template: str = SKETCH_TEMPLATE
    """Prompt template with ``{concept}``; fit it to the domain (sketches, not photos)."""
    seed: int = 0
    """Seeds image generation, random pool members, pool evictions and LLM sampling."""
    pool_size: int = 10
    """Concepts kept in the pool."""
    n_top_classes: int = 5
    """Initial pool: classes whose control images activate the latent most."""
    n_random: int = 5
    """Initial pool: random other classes."""
    n_control: int = 1000
    """Real control images (the negatives), a seeded subset of ``control_split``."""
    control_split: str = "val"
    """Split of the classifier's data the control images come from."""
    domain: str = "hand-drawn sketches"
    """What the classifier sees, for the LLM's system prompt."""
    save_images: bool = False
    """Copy every scored concept's images into ``<latent>/images/``."""
    batch_size: int = 64
    """Images per classifier forward pass."""

    def __post_init__(self) -> None:
        if self.metric not in ("auc", "mad", "mean"):
            raise ValueError(f"metric must be auc, mad or mean, got {self.metric!r}")
        if self.n_iters < 0 or self.pool_size < 1 or self.n_control < 2:
            raise ValueError("n_iters must be >= 0, pool_size >= 1 and n_control >= 2")
        if self.n_images is not None and self.n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_images}")
        if "{concept}" not in self.template:
            raise ValueError(f"the prompt template needs a {{concept}} placeholder, got {self.template!r}")


def parse_latents(text: str) -> list[int]:
    """``"0-63"``, ``"3,9,12-15"`` → sorted unique latent ids."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if not lo.strip().isdigit() or (dash and not hi.strip().isdigit()):
            raise ValueError(f"latents must look like '0-63' or '3,9,12-15', got {text!r}")
        a, b = int(lo), int(hi) if dash else int(lo)
        if b < a:
            raise ValueError(f"empty latent range {part!r}")
        out.update(range(a, b + 1))
    if not out:
        raise ValueError("no latents given")
    return sorted(out)


def resolve_sae_dir(run_dir: str | Path, sae: str | Path | None = None) -> Path:
    """Explicit ``sae``, else the report's recorded SAE folder, else ``checkpoints/<run name>/sae``."""
    if sae is not None:
        return Path(sae)
    report = Path(run_dir) / "report.json"
    if report.is_file():
        info = json.loads(report.read_text())
        recorded = info.get("sae_dir") or (info.get("sae") or {}).get("dir")
        if recorded:
            return Path(recorded)
    return Path("checkpoints") / Path(run_dir).name / "sae"


def _plain(value: Any) -> Any:
    """JSON-ready: NaN/inf → None, tensors and numpy scalars unwrapped."""
    return to_jsonable(value, strict=False)


def _dump(path: Path, value: Any, lines: bool = False) -> None:
    if lines:
        text = "".join(json.dumps(_plain(v), ensure_ascii=False, allow_nan=False) + "\n" for v in value)
    else:
        text = json.dumps(_plain(value), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_text(path, text)


def _file_hash(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class LineSession:
    """The loaded models, control activations, backends and caches of one LINE run folder.

    Args:
        run_dir: ``reports/<run>``; outputs go to ``run_dir/line``.
        sae_dir: The SAE export folder (None: :func:`resolve_sae_dir`).
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
        from sae_lab.models.classifier_io import load_classifier
        from sae_lab.report.inputs import check_pair, load_sae, open_split, resolve_classifier

        self.config = replace(config) if config is not None else LineConfig()  # n_images is filled in below
        self.run_dir = Path(run_dir)
        self.out = self.run_dir / LINE_DIR
        self.progress = progress
        self.sae_dir = resolve_sae_dir(run_dir, sae_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.sae = load_sae(self.sae_dir, self.device)
        ckpt, roots = resolve_classifier(self.sae, self.sae_dir, classifier)
        roots = list(dict.fromkeys([*roots, *Path(ckpt).resolve().parents]))
        self.clf = load_classifier(ckpt)
        check_pair(self.sae, self.clf, self.sae_dir)
        net = self.clf.net.to(self.device)
        self.scorer = LatentScorer(net, self.sae, self.clf.image_size, self.device, self.config.batch_size)
        self.sae_id = f"{self.clf.fingerprint}-{_file_hash(self.sae_dir / 'sae.safetensors')}"
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
        self._acts: dict[str, torch.Tensor] = {}

    def _log(self, message: str) -> None:
        if self.progress:
            print(f"[explain] {message}", flush=True)
        logger.info(message)

    # ----------------------------------------------------------------------------------------------- scoring
    def _acts_path(self, concept: str) -> Path:
        c = self.config
        blob = json.dumps([self.sae_id, self.image_backend.identity, c.template, concept, c.seed, c.n_images])
        return self.cache.root / f"acts-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.npy"

    def concept_acts(self, concepts: Sequence[str]) -> dict[str, torch.Tensor]:
        """(n, M) ``z_max`` of every latent on each concept's images: generated (once) and scored (once)."""
        n = int(self.config.n_images)
        need = []
        for concept in dict.fromkeys(concepts):
            if concept in self._acts:
                continue
            path = self._acts_path(concept)
            if path.is_file():
                self._acts[concept] = torch.from_numpy(np.load(path, allow_pickle=False))
            else:
                need.append(concept)
        per_call = max(1, 64 // n)  # concepts per backend call and per scoring chunk (bounded memory)
        for start in range(0, len(need), per_call):
            chunk = need[start : start + per_call]
            self.cache.ensure(chunk, n)
            images = [self.cache.load(c, n) for c in chunk]
            z = self.scorer.z_max_images([im for ims in images for im in ims]).split([len(ims) for ims in images])
            for concept, acts in zip(chunk, z):
                self._acts[concept] = acts
                if len(acts) == n:  # a concept with failed images is retried next time
                    path = self._acts_path(concept)
                    tmp = path.with_name(f".{path.name}.tmp")
                    with open(tmp, "wb") as f:
                        np.save(f, acts.numpy())
                    tmp.replace(path)
        return {c: self._acts[c] for c in concepts}

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
        return {**asdict(self.config), "latents": list(latents), "sae": self.sae_id, "sae_dir": str(self.sae_dir),
                "classifier": self.clf.path, "image_backend": self.image_backend.identity,
                "proposer": self.proposer.name}  # fmt: skip

    def run(self, latents: Sequence[int], overwrite: bool = False) -> list[dict[str, Any]]:
        """Explains ``latents`` (resuming a run of the same settings in this folder); returns the summary lines."""
        latents = [int(i) for i in latents]
        bad = [i for i in latents if not 0 <= i < self.scorer.num_latents]
        if bad:
            raise ValueError(f"latents {bad} out of range: the SAE has {self.scorer.num_latents}")
        params = self.params(latents)
        state = self._load_state(params, overwrite)
        start, generated_before = time.perf_counter(), self.cache.generated
        images_before, seconds_before = state["images_generated"], state["seconds"]

        def save() -> None:
            state["images_generated"] = images_before + self.cache.generated - generated_before
            state["seconds"] = seconds_before + time.perf_counter() - start
            _dump(self.out / STATE, state)

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
        return self.write_outputs(state, params)

    def _load_state(self, params: dict, overwrite: bool) -> dict:
        saved_params = self.out / "params.json"
        if saved_params.is_file() and (self.out / STATE).is_file() and not overwrite:
            old = json.loads(saved_params.read_text())
            if old != json.loads(json.dumps(_plain(params))):
                diff = sorted(k for k in set(old) | set(params) if old.get(k) != _plain(params).get(k))
                raise ValueError(
                    f"{self.out} holds a LINE run with other settings ({', '.join(diff)}); pass --overwrite to start "
                    "over (cached images are kept) or use another --run"
                )
            state = json.loads((self.out / STATE).read_text())
            self._log(f"resuming after iteration {state['iteration']}")
            return state
        _dump(saved_params, params)
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
        for lat in latents:
            ls = state["latents"][str(lat)]
            pool, rng = Pool(c.pool_size), np.random.default_rng([c.seed, lat, 0, 1])
            for concept in requests[lat]:
                pool.update(scores[lat][concept], rng)
            ls["scored"] = {k: v.to_dict() for k, v in scores[lat].items()}
            ls["pool"] = pool.to_list()
            self._record_history(ls, pool, 0)

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

    # ----------------------------------------------------------------------------------------------- outputs
    def ground_truth(self) -> dict[int, dict[str, Any]]:
        """Each latent's ground-truth best primitive: from the report's ``neurons.jsonl``, else the control set."""
        out: dict[int, dict[str, Any]] = {}
        neurons = self.run_dir / "neurons.jsonl"
        if neurons.is_file():
            for line in neurons.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                gt = row.get("ground_truth") if isinstance(row, dict) else None
                if isinstance(row.get("id"), int) and gt and gt.get("primitive"):
                    out[row["id"]] = {
                        "primitive": gt["primitive"],
                        "image_auc": gt.get("image_auc"),
                        "source": "report",
                    }
            if out:
                return out
        gt = self.control.ground_truth()
        if gt is not None and self.control.primitive_names:
            best, auc = gt
            for i in range(len(best)):
                if math.isfinite(float(auc[i])):
                    out[i] = {"primitive": self.control.primitive_names[int(best[i])], "image_auc": float(auc[i]),
                              "source": "control"}  # fmt: skip
        return out

    def write_outputs(self, state: dict, params: dict) -> list[dict[str, Any]]:
        gt = self.ground_truth()
        lines = []
        for lat in params["latents"]:
            ls = state["latents"][str(lat)]
            folder = self.out / str(lat)
            pool = Pool.from_list(ls["pool"], self.config.pool_size)
            best = pool.best()
            images = self._latent_images(ls, folder)
            result = {
                "latent": lat,
                "best_concept": best.concept,
                "best_score": best.score,
                "metric": self.config.metric,
                "auc": best.auc,
                "mad": best.mad,
                "mean": best.mean,
                "names_primitives": primitives_in_text(best.concept),
                "ground_truth": gt.get(lat),
                "iterations": len(ls["history"]) - 1,
                "proposals": len(ls["proposals"]),
                "fallbacks": sum(p["fallback"] for p in ls["proposals"]),
                "page": f"{LINE_DIR}/{lat}/index.html",
            }
            _dump(folder / "params.json", {**params, "latent": lat, "top_classes": ls["top_classes"],
                                           "random_classes": ls["random_classes"]})  # fmt: skip
            _dump(folder / "proposals.jsonl", ls["proposals"], lines=True)
            _dump(folder / "history.jsonl", ls["history"], lines=True)
            _dump(folder / "result.json", {**result, "pool": [p.to_dict() for p in pool.sorted()]})
            atomic_write_text(folder / "index.html", render_latent_page(result, ls, images, self.config))
            lines.append(result)
        _dump(self.out / SUMMARY, lines, lines=True)
        self._refresh_report()
        return lines

    def _latent_images(self, ls: dict, folder: Path) -> dict[str, list[str]]:
        """Image paths (relative to the latent's folder) of every scored concept; copied when ``save_images``."""
        out: dict[str, list[str]] = {}
        n = int(self.config.n_images)
        for concept in ls["scored"]:
            paths = self.cache.paths(concept, n)
            if self.config.save_images:
                slug = "".join(ch if ch.isalnum() else "-" for ch in concept)[:40]
                dest = []
                for i, p in enumerate(paths):
                    target = folder / "images" / f"{slug}-{i}.png"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if not target.exists():
                        shutil.copyfile(p, target)
                    dest.append(f"images/{target.name}")
                out[concept] = dest
            else:
                out[concept] = [f"../cache/{p.name}" for p in paths]
        return out

    def _refresh_report(self) -> None:
        """Re-render the main report's index.html (it shows LINE results) when a report is there."""
        if not (self.run_dir / "neurons.jsonl").is_file() or not (self.run_dir / "report.json").is_file():
            return
        try:
            from sae_lab.report.html import write_index

            write_index(self.run_dir)
        except Exception as exc:  # noqa: BLE001 -- the LINE outputs are written; the page is a convenience
            logger.warning("could not re-render %s/index.html: %s", self.run_dir, exc)


def choose_latents(session: LineSession, n: int) -> list[int]:
    """``n`` latents worth explaining: ground-truth matched ones first (one per primitive, then by AUC), else the
    latents whose control activations vary most."""
    gt = session.ground_truth()
    z = session.control.z_max
    chosen: list[int] = []
    if gt:
        ranked = sorted(gt, key=lambda i: -(gt[i]["image_auc"] or 0.0))
        seen: set[str] = set()
        for i in ranked:
            if gt[i]["primitive"] not in seen and z[:, i].std() > 0:
                chosen.append(i)
                seen.add(gt[i]["primitive"])
        chosen += [i for i in ranked if i not in chosen and z[:, i].std() > 0]
    chosen += [int(i) for i in torch.argsort(z.std(0), descending=True) if int(i) not in chosen]
    return sorted(chosen[:n])


def gt_named_rate(lines: Sequence[dict[str, Any]], min_auc: float = GT_AUC) -> tuple[float | None, int]:
    """Among latents whose ground-truth best primitive has image AUC ≥ ``min_auc``: the fraction whose best
    concept names that primitive (``primitives_in_text``), and how many such latents there were."""
    eligible = [r for r in lines if r.get("ground_truth") and (r["ground_truth"].get("image_auc") or 0) >= min_auc]
    if not eligible:
        return None, 0
    named = sum(r["ground_truth"]["primitive"] in primitives_in_text(r["best_concept"]) for r in eligible)
    return named / len(eligible), len(eligible)


def explain(
    run_dir: str | Path,
    latents: Sequence[int] | int,
    sae_dir: str | Path | None = None,
    config: LineConfig | None = None,
    overwrite: bool = False,
    **session_kwargs: Any,
) -> list[dict[str, Any]]:
    """Runs (or resumes) LINE on ``latents`` (a list, or a count chosen by :func:`choose_latents`).

    Returns:
        The summary lines (also in ``run_dir/line/summary.jsonl``).
    """
    session = LineSession(run_dir, sae_dir, config, **session_kwargs)
    ids = choose_latents(session, latents) if isinstance(latents, int) else list(latents)
    return session.run(ids, overwrite=overwrite)


def run_line_stage(
    run_dir: str | Path,
    sae_dir: str | Path | None,
    latents: Sequence[int] | int = 8,
    n_iters: int = 4,
    n_images: int = 8,
    seed: int = 0,
    classifier: str | Path | None = None,
    device: str | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The quickstart's LINE stage, offline (sketch-world renderer + offline proposer).

    Returns:
        The ``line`` block of ``summary.json``: ``latents``, ``gt_named_rate`` (None without ground truth),
        ``images_generated``, ``seconds``.
    """
    t0 = time.perf_counter()
    config = LineConfig(n_iters=n_iters, n_images=n_images, seed=seed)
    session = LineSession(run_dir, sae_dir, config, "renderer", "offline", classifier=classifier, device=device,
                          progress=progress)  # fmt: skip
    ids = choose_latents(session, latents) if isinstance(latents, int) else list(latents)
    lines = session.run(ids, overwrite=overwrite)
    rate, _ = gt_named_rate(lines)
    state = json.loads((session.out / STATE).read_text())
    return {"latents": len(lines), "gt_named_rate": None if rate is None else round(rate, 4),
            "images_generated": int(state["images_generated"]), "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
