"""Text-to-image backends behind one interface (prompts and seeds in, images out), and the on-disk image cache.

Backends: a ``diffusers`` pipeline by hub id or local path (SD-Turbo by default; SDXL-Turbo and SDXL-base work
too), Replicate image models through the official ``replicate`` client, and the sketch-world renderer offline.
Pick one with :func:`make_image_backend`; the heavy ones are imported only when asked for.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    import httpx

    from sae_lab.backends.text.remote import RetryPolicy

logger = logging.getLogger(__name__)

DEFAULT_DIFFUSERS_MODEL = "stabilityai/sd-turbo"
DEFAULT_REPLICATE_MODEL = "black-forest-labs/flux-schnell"
GRAMMAR = "renderer | diffusers[:<hub id or path>] | replicate[:<owner>/<name>[:<version>]]"


class ImageBackend(ABC):
    """A text-to-image generator: one image per (prompt, seed), in order; None where an image failed.

    Subclasses set ``name`` (a valid spec) and may extend :attr:`identity` with the settings that change the
    pictures, so that the image cache never mixes images from different settings.
    """

    name: str = "abstract"

    @property
    def identity(self) -> str:
        """Everything that determines the pictures besides prompt and seed (part of every cache key)."""
        return self.name

    @abstractmethod
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image | None]:
        """Images for ``prompts[i]`` drawn with ``seeds[i]``; the same prompt and seed give the same image."""

    def close(self) -> None:
        """Release models or connections."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identity={self.identity!r})"


class RendererBackend(ImageBackend):
    """The sketch-world renderer as a text-to-image model: draws the primitives (or classes) a prompt names.

    Args:
        image_size: Side of the square images in pixels (the classifier's own size is best).
        world_seed: Seed of the sketch world (stroke style); the prompt seed picks placement and jitter.
    """

    name = "renderer"

    def __init__(self, image_size: int = 64, world_seed: int = 0) -> None:
        from sae_lab.data.world import SketchWorld

        self.world = SketchWorld(image_size=image_size, seed=world_seed)

    @property
    def identity(self) -> str:
        return f"renderer(size={self.world.image_size},world_seed={self.world.seed})"

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image | None]:
        _check_lengths(prompts, seeds)
        images = []
        for prompt, seed in zip(prompts, seeds):
            pixels, drawn = self.world.render_prompt(prompt, int(seed))
            image = Image.fromarray(pixels, mode="L")
            image.info["primitives"] = list(drawn)  # annotations the offline perception backend reads
            images.append(image)
        return images


def _annotations_chunk(image: Image.Image) -> Any:
    """PNG text chunks for an image's sketch-world annotations (``primitives`` as JSON, ``class``), if any."""
    from PIL.PngImagePlugin import PngInfo

    chunk = PngInfo()
    prims = image.info.get("primitives")
    if prims is not None:
        chunk.add_text("primitives", prims if isinstance(prims, str) else json.dumps(list(prims)))
    if "class" in image.info:
        chunk.add_text("class", str(image.info["class"]))
    return chunk


def _check_lengths(prompts: Sequence[str], seeds: Sequence[int]) -> None:
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")


class DiffusersBackend(ImageBackend):
    """A ``diffusers`` text-to-image pipeline loaded with ``AutoPipelineForText2Image.from_pretrained``.

    Every image gets its own CPU ``torch.Generator`` seeded with its seed, so an image does not depend on the
    batch it was drawn in or on the device. Prompts are drawn ``batch_size`` at a time.

    Args:
        model: Hub id or local folder of a pipeline (``stabilityai/sd-turbo``, ``stabilityai/sdxl-turbo``,
            ``stabilityai/stable-diffusion-xl-base-1.0``, …).
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device string.
        dtype: ``"auto"`` (float16 on CUDA, float32 elsewhere), ``"float16"``, ``"bfloat16"`` or ``"float32"``.
        steps: ``num_inference_steps``; None: 1 for turbo models, 30 otherwise.
        guidance: ``guidance_scale``; None: 0.0 for turbo models (they are distilled without it), 7.5 otherwise.
        height: Image height in pixels; None for the pipeline's default.
        width: Image width in pixels; None for the pipeline's default.
        negative_prompt: Sent with every prompt when guidance is on.
        batch_size: Prompts per pipeline call.
        safety_checker: Keep the pipeline's safety checker (None-ed out when False). Flagged images are dropped.
        local_files_only: Never contact the hub.
        variant: Weight variant to load (e.g. ``"fp16"``).
    """

    def __init__(
        self,
        model: str = DEFAULT_DIFFUSERS_MODEL,
        *,
        device: str = "auto",
        dtype: str = "auto",
        steps: int | None = None,
        guidance: float | None = None,
        height: int | None = None,
        width: int | None = None,
        negative_prompt: str | None = None,
        batch_size: int = 8,
        safety_checker: bool = True,
        local_files_only: bool = False,
        variant: str | None = None,
    ) -> None:
        import torch
        from diffusers import AutoPipelineForText2Image

        from sae_lab.backends.text.hf import resolve_device

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        turbo = "turbo" in model.lower()
        self.model = model
        self.name = f"diffusers:{model}"
        self.steps = int(steps if steps is not None else (1 if turbo else 30))
        self.guidance = float(guidance if guidance is not None else (0.0 if turbo else 7.5))
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        self.height, self.width, self.negative_prompt, self.batch_size = height, width, negative_prompt, batch_size
        self.device = resolve_device(device)
        dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
        if dtype == "auto":
            dtype = "float16" if self.device.type == "cuda" else "float32"
        if dtype not in dtypes:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(dtypes)}, got {dtype!r}")
        self.dtype = dtype
        load: dict[str, Any] = {_dtype_keyword(): dtypes[dtype], "local_files_only": local_files_only}
        if variant:
            load["variant"] = variant
        self.pipe = AutoPipelineForText2Image.from_pretrained(model, **load)
        if not safety_checker and getattr(self.pipe, "safety_checker", None) is not None:
            self.pipe.safety_checker = None
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    @property
    def identity(self) -> str:
        size = f"{self.height or 'default'}x{self.width or 'default'}"
        return f"{self.name}(steps={self.steps},guidance={self.guidance:g},size={size},dtype={self.dtype})"

    def call_kwargs(self, prompts: Sequence[str]) -> dict[str, Any]:
        """Keyword arguments of one pipeline call (without the generators)."""
        kwargs: dict[str, Any] = {
            "prompt": list(prompts),
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "output_type": "pil",
        }
        if self.height is not None:
            kwargs["height"] = self.height
        if self.width is not None:
            kwargs["width"] = self.width
        if self.negative_prompt and self.guidance > 1.0:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(prompts)
        return kwargs

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image | None]:
        import torch

        _check_lengths(prompts, seeds)
        images: list[Image.Image | None] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start : start + self.batch_size])
            generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[start : start + len(chunk)]]
            with torch.inference_mode():
                out = self.pipe(**self.call_kwargs(chunk), generator=generators)
            flagged = getattr(out, "nsfw_content_detected", None) or [False] * len(chunk)
            for prompt, image, bad in zip(chunk, out.images, flagged):
                if bad:
                    logger.warning("%s: the safety checker blanked the image for %r; dropping it", self.name, prompt)
                images.append(None if bad else image)
        return images

    def close(self) -> None:
        del self.pipe


def _dtype_keyword() -> str:
    """``dtype`` on diffusers versions that renamed it, ``torch_dtype`` on older ones."""
    from diffusers.pipelines import pipeline_utils

    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"


class ReplicateImageBackend(ImageBackend):
    """A Replicate text-to-image model through the official ``replicate`` client; token from ``REPLICATE_API_TOKEN``.

    Each image is one prediction (``concurrency`` in flight), created with ``Prefer: wait`` and polled until done
    or ``timeout_s``; HTTP 429/5xx, timeouts and connection errors are retried with back-off. The output (a URL,
    a data URL or a list of them) is fetched through the client's own ``httpx`` client.

    Args:
        model: ``owner/name`` or ``owner/name:version``.
        base_url: API root; None for Replicate's (or ``REPLICATE_BASE_URL``).
        steps: Sent as ``steps_key`` when given.
        guidance: Sent as ``guidance_key`` when given.
        steps_key: The model's input field for the number of steps.
        guidance_key: The model's input field for the guidance scale.
        extra_input: Extra model inputs for every prediction (e.g. ``{"aspect_ratio": "1:1"}``).
        concurrency: Predictions in flight at once.
        timeout_s: Per-attempt timeout in seconds.
        poll_interval_s: Seconds between status polls.
        retry: Back-off policy (``sae_lab.backends.text.remote.RetryPolicy``).
        transport: An ``httpx`` transport to use instead of the network (tests).
    """

    def __init__(
        self,
        model: str = DEFAULT_REPLICATE_MODEL,
        *,
        base_url: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        steps_key: str = "num_inference_steps",
        guidance_key: str = "guidance_scale",
        extra_input: dict[str, Any] | None = None,
        concurrency: int = 8,
        timeout_s: float = 300.0,
        poll_interval_s: float = 0.5,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx
        import replicate

        from sae_lab.backends.text.remote import RetryPolicy, Secret
        from sae_lab.backends.text.replicate_backend import TOKEN_ENV, _parse_ref

        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.owner, self.model_name, self.version = _parse_ref(model)
        self.model, self.name = model, f"replicate:{model}"
        self.steps, self.guidance, self.steps_key, self.guidance_key = steps, guidance, steps_key, guidance_key
        self.extra_input = dict(extra_input or {})
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.retry = retry if retry is not None else RetryPolicy()
        token = os.environ.get(TOKEN_ENV)
        if not token:
            raise ValueError(f"environment variable {TOKEN_ENV} is not set")
        self._token = Secret(token)
        self._client = replicate.Client(
            api_token=token, base_url=base_url, timeout=httpx.Timeout(timeout_s), transport=transport
        )
        self._client.poll_interval = poll_interval_s

    @property
    def identity(self) -> str:
        extra = json.dumps(self.extra_input, sort_keys=True)
        return f"{self.name}(steps={self.steps},guidance={self.guidance},input={extra})"

    def model_input(self, prompt: str, seed: int) -> dict[str, Any]:
        data: dict[str, Any] = {"prompt": prompt, "seed": int(seed), "num_outputs": 1, "output_format": "png"}
        if self.steps is not None:
            data[self.steps_key] = self.steps
        if self.guidance is not None:
            data[self.guidance_key] = self.guidance
        data.update(self.extra_input)
        return data

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image | None]:
        _check_lengths(prompts, seeds)
        if len(prompts) <= 1 or self.concurrency == 1:
            return [self._one(p, s) for p, s in zip(prompts, seeds)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)), thread_name_prefix="t2i") as pool:
            return list(pool.map(self._one, prompts, seeds))

    def _one(self, prompt: str, seed: int) -> Image.Image | None:
        from sae_lab.backends.text.remote import TransientError, scrub

        attempts = 0
        while True:
            attempts += 1
            try:
                return self._predict(prompt, seed)
            except TransientError as exc:
                if attempts > self.retry.max_retries:
                    logger.warning("%s: %r failed after %d attempts: %s", self.name, prompt, attempts, exc)
                    return None
                time.sleep(self.retry.delay(attempts, exc.retry_after))
            except Exception as exc:  # noqa: BLE001 -- one failed image must not fail the batch
                logger.warning("%s: %r failed: %s", self.name, prompt, scrub(f"{exc}", [self._token.get()]))
                return None

    def _predict(self, prompt: str, seed: int) -> Image.Image:
        import threading

        from replicate.exceptions import ModelError
        from replicate.helpers import FileOutput

        from sae_lab.backends.text.remote import TransientError
        from sae_lab.backends.text.replicate_backend import _cancel, _translated

        local = threading.local()
        deadline = time.monotonic() + self.timeout_s
        wait = min(max(int(self.timeout_s), 1), 60)
        data = self.model_input(prompt, seed)
        with _translated(local):
            if self.version:
                prediction = self._client.predictions.create(version=self.version, input=data, wait=wait)
            else:
                prediction = self._client.models.predictions.create(
                    model=(self.owner, self.model_name), input=data, wait=wait
                )
        while prediction.status not in ("succeeded", "failed", "canceled"):
            if time.monotonic() >= deadline:
                _cancel(prediction)
                raise TransientError(f"timeout: prediction {prediction.id} not done after {self.timeout_s:g}s")
            time.sleep(self._client.poll_interval)
            try:
                with _translated(local):
                    prediction.reload()
            except TransientError:
                continue
        if prediction.status == "failed":
            raise ModelError(prediction)
        if prediction.status == "canceled":
            raise RuntimeError(f"prediction {prediction.id} was canceled")
        output = prediction.output
        if isinstance(output, (list, tuple)):
            if not output:
                raise ValueError("prediction succeeded without output")
            output = output[0]
        if not isinstance(output, str):
            raise ValueError(f"expected an image URL, got {type(output).__name__}")
        with _translated(local):
            data_bytes = FileOutput(output, self._client).read()
        image = Image.open(io.BytesIO(data_bytes))
        image.load()
        return image

    def close(self) -> None:
        self._client._client.close()


def make_image_backend(spec: str, **opts: Any) -> ImageBackend:
    """The image backend described by ``spec`` (``renderer``, ``diffusers[:MODEL]``, ``replicate[:OWNER/NAME]``).

    Keyword options go to the backend's constructor (``make_image_backend("renderer", image_size=64)``).

    Raises:
        ValueError: for an unknown kind or a malformed argument.
    """
    spec = spec.strip()
    kind, sep, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "renderer" and not arg:
        return RendererBackend(**opts)
    if kind == "diffusers":
        if sep and not arg:
            raise ValueError(f"{spec!r}: 'diffusers:' needs a hub id or a local path (or use plain 'diffusers')")
        return DiffusersBackend(arg or DEFAULT_DIFFUSERS_MODEL, **opts)
    if kind == "replicate":
        if sep and not arg:
            raise ValueError(f"{spec!r}: 'replicate:' needs owner/name (or use plain 'replicate')")
        return ReplicateImageBackend(arg or DEFAULT_REPLICATE_MODEL, **opts)
    raise ValueError(f"unknown image backend spec {spec!r}; expected {GRAMMAR}")


def image_seed(seed: int, concept: str, index: int) -> int:
    """The generator seed of image ``index`` of ``concept`` under run seed ``seed`` (31 bits, portable)."""
    digest = hashlib.sha256(json.dumps([seed, concept, index]).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class ImageCache:
    """Generated images on disk, one PNG per (backend identity, prompt template, concept, seed, index).

    A concept's images are generated once and reused by every latent that asks for it, and a resumed run
    regenerates nothing that is here. Files are written under a temporary name and renamed.

    Args:
        root: The cache folder (``reports/<run>/line/cache``).
        backend: The image backend.
        template: Prompt template with ``{concept}``.
        seed: Run seed; image ``i`` of a concept is drawn with :func:`image_seed`.
    """

    def __init__(self, root: str | os.PathLike, backend: ImageBackend, template: str, seed: int) -> None:
        if "{concept}" not in template:
            raise ValueError(f"the prompt template needs a {{concept}} placeholder, got {template!r}")
        self.root, self.backend, self.template, self.seed = Path(root), backend, template, seed
        self.root.mkdir(parents=True, exist_ok=True)
        self.generated = 0
        """Images this object generated (cache misses)."""

    def key(self, concept: str, index: int) -> str:
        blob = json.dumps([self.backend.identity, self.template, concept, self.seed, index])
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def path(self, concept: str, index: int) -> Path:
        return self.root / f"{self.key(concept, index)}.png"

    def prompt(self, concept: str) -> str:
        return self.template.format(concept=concept)

    def image_seed(self, concept: str, index: int) -> int:
        """The generator seed of image ``index`` of ``concept`` (a subclass may draw from its own seed range)."""
        return image_seed(self.seed, concept, index)

    def missing(self, concepts: Sequence[str], n: int) -> list[tuple[str, int]]:
        return [(c, i) for c in concepts for i in range(n) if not self.path(c, i).is_file()]

    def ensure(self, concepts: Sequence[str], n: int) -> int:
        """Generates (in one backend call) every image of ``concepts`` not cached yet; returns how many it drew."""
        todo = self.missing(concepts, n)
        if not todo:
            return 0
        prompts = [self.prompt(c) for c, _ in todo]
        seeds = [self.image_seed(c, i) for c, i in todo]
        images = self.backend.generate(prompts, seeds)
        made = 0
        for (concept, index), image in zip(todo, images):
            if image is None:
                continue
            path = self.path(concept, index)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            image.save(tmp, format="PNG", pnginfo=_annotations_chunk(image))
            os.replace(tmp, path)
            made += 1
        self.generated += made
        return made

    def load(self, concept: str, n: int) -> list[Image.Image]:
        """The cached images of ``concept`` (those that exist, in index order)."""
        out = []
        for i in range(n):
            path = self.path(concept, i)
            if path.is_file():
                with Image.open(path) as im:
                    im.load()
                    copy = im.copy()
                if isinstance(copy.info.get("primitives"), str):
                    copy.info["primitives"] = json.loads(copy.info["primitives"])
                out.append(copy)
        return out

    def paths(self, concept: str, n: int) -> list[Path]:
        return [p for p in (self.path(concept, i) for i in range(n)) if p.is_file()]
