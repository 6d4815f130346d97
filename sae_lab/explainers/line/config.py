"""LINE's settings: the loop's own (:class:`LineConfig`) and the command's (:class:`LineSettings`)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_lab.explainers.base import ExplainSettings

SKETCH_TEMPLATE = "a simple black-and-white line drawing of {concept}"


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


@dataclass
class LineSettings(ExplainSettings):
    """Options of ``explain line`` (the loop's settings, the backends and where the run is)."""

    latents: str = "all"
    """Latents to explain: ``all`` (every live latent), ids such as ``0-63,70``, or ``auto:N`` (N chosen by
    ground truth, then activity)."""
    llm: str = "offline"
    """Proposer: offline | hf:<hub id or path> | replicate[:<owner>/<name>] | openai:<model>@<url>."""
    images: str = "renderer"
    """Image generator: renderer | diffusers[:<hub id or path>] (default stabilityai/sd-turbo) |
    replicate[:<owner>/<name>]."""
    n_iters: int = 10
    """Proposal iterations per latent (then one summary iteration)."""
    n_images: int | None = None
    """Images per concept (default: 8 with the renderer, 10 with a diffusion model)."""
    metric: str = "auc"
    """Concept score: auc, mad or mean activation."""
    template: str = SKETCH_TEMPLATE
    """Prompt template with {concept}; fit it to the domain (sketches, not photos)."""
    pool_size: int = 10
    """Concepts kept in each latent's pool."""
    n_control: int = 1000
    """Real control images (the negatives)."""
    control_split: str = "val"
    """Split of the classifier's data the control images come from (train, val or test)."""
    domain: str = "hand-drawn sketches"
    """What the classifier sees, for the LLM's system prompt."""
    save_images: bool = False
    """Copy each scored concept's images into <run>/line/<latent>/images/."""
    data: str | None = None
    """Control image source override (default: the classifier's own data)."""
    batch_size: int = 64
    """Images per classifier forward pass."""
    steps: int | None = None
    """Diffusion inference steps (default: 1 for turbo models, else 30)."""
    guidance: float | None = None
    """Diffusion guidance scale (default: 0 for turbo models, else 7.5)."""
    height: int | None = None
    """Generated image height (default: the model's)."""
    width: int | None = None
    """Generated image width (default: the model's)."""
    dtype: str = "auto"
    """diffusers dtype: auto (fp16 on CUDA), float16, bfloat16, float32."""
    image_batch_size: int = 8
    """Prompts per diffusion pipeline call."""
    negative_prompt: str | None = None
    """Negative prompt (with guidance > 1)."""
    variant: str | None = None
    """diffusers weight variant to load, e.g. fp16."""
    safety_checker: bool = True
    """Keep the diffusers pipeline's safety checker."""
    max_retries: int = 2
    """Re-asks per unusable LLM answer before the offline fallback."""
    temperature: float = 0.7
    """LLM sampling temperature."""
    max_new_tokens: int = 256
    """LLM answer budget (thinking included)."""
    progress: bool = True
    """Print a line per iteration."""

    def config(self) -> LineConfig:
        """The loop's settings (checked)."""
        return LineConfig(n_iters=self.n_iters, n_images=self.n_images, metric=self.metric, template=self.template,
                          seed=self.seed, pool_size=self.pool_size, n_control=self.n_control,
                          control_split=self.control_split, domain=self.domain, save_images=self.save_images,
                          batch_size=self.batch_size)  # fmt: skip

    def image_options(self) -> dict:
        """Constructor options of the image backend ``images`` names."""
        kind = self.images.strip().partition(":")[0].lower()
        if kind == "diffusers":
            return {"steps": self.steps, "guidance": self.guidance, "height": self.height, "width": self.width,
                    "dtype": self.dtype, "batch_size": self.image_batch_size, "negative_prompt": self.negative_prompt,
                    "device": self.device or "auto", "variant": self.variant,
                    "safety_checker": self.safety_checker}  # fmt: skip
        if kind == "replicate":
            return {"steps": self.steps, "guidance": self.guidance}
        return {}

    def check(self) -> None:
        if self.latents.strip().startswith("auto:"):
            n = self.latents.strip()[5:]
            if not n.isdigit() or int(n) < 1:
                raise ValueError(f"latents: auto:N needs a positive N, got {self.latents!r}")
        else:
            super().check()
        if self.control_split not in ("train", "val", "test"):
            raise ValueError(f"control_split must be train, val or test, got {self.control_split!r}")
        self.config()
