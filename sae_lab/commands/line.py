"""`python -m sae_lab explain line --run reports/<run> --latents 0-63`: LINE for a batch of SAE latents (argparse;
replaced by LINE's settings when `sae_lab.explainers.line` exposes `EXPLAINER`)."""

from __future__ import annotations

import argparse

HELP = "LINE: LLM ⇄ text-to-image loop naming SAE latents, batched and resumable → reports/<run>/line/"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sae_lab.explainers.line.loop import SKETCH_TEMPLATE

    p.add_argument("--run", required=True, help="report folder, e.g. reports/quickstart; outputs go to <run>/line/")
    p.add_argument("--latents", required=True,
                   help="latent ids: '0-63', '3,9,12-15', or 'auto:N' (N chosen by ground truth / activity)")  # fmt: skip
    p.add_argument("--sae", default=None,
                   help="SAE export folder (default: the report's, else checkpoints/<run name>/sae)")  # fmt: skip
    p.add_argument("--classifier", default=None, help="classifier checkpoint (default: the one in the SAE's cfg.json)")
    p.add_argument("--data", default=None, help="control image source override (default: the classifier's own data)")
    g = p.add_argument_group("loop")
    g.add_argument("--n-iters", type=int, default=10, help="proposal iterations (then one summary iteration)")
    g.add_argument("--n-images", type=int, default=None, help="images per concept (default: 8 renderer, 10 diffusion)")
    g.add_argument("--metric", choices=("auc", "mad", "mean"), default="auc", help="concept score")
    g.add_argument("--template", default=SKETCH_TEMPLATE, help="prompt template with {concept}")
    g.add_argument("--seed", type=int, default=0, help="seed of image generation, random pool members and sampling")
    g.add_argument("--pool-size", type=int, default=10, help="concepts kept in each latent's pool")
    g.add_argument("--n-control", type=int, default=1000, help="real control images (the negatives)")
    g.add_argument("--control-split", choices=("train", "val", "test"), default="val", help="split of the controls")
    g.add_argument("--domain", default="hand-drawn sketches", help="what the classifier sees (for the LLM prompt)")
    g.add_argument("--save-images", action="store_true", help="copy each concept's images into <run>/line/<latent>/")
    g.add_argument("--overwrite", action="store_true",
                   help="start over when <run>/line holds a run with other settings (cached images are kept)")  # fmt: skip
    g = p.add_argument_group("image generation")
    g.add_argument("--images", default="renderer",
                   help="renderer | diffusers[:<hub id or path>] (default model stabilityai/sd-turbo) | "
                        "replicate[:<owner>/<name>]")  # fmt: skip
    g.add_argument("--steps", type=int, default=None, help="inference steps (default: 1 for turbo models, else 30)")
    g.add_argument("--guidance", type=float, default=None, help="guidance scale (default: 0 turbo, else 7.5)")
    g.add_argument("--height", type=int, default=None, help="image height (default: the model's)")
    g.add_argument("--width", type=int, default=None, help="image width (default: the model's)")
    g.add_argument("--dtype", default="auto", help="diffusers dtype: auto (fp16 on CUDA), float16, bfloat16, float32")
    g.add_argument("--image-batch-size", type=int, default=8, help="prompts per diffusion pipeline call")
    g.add_argument("--negative-prompt", default=None, help="negative prompt (with guidance > 1)")
    g.add_argument("--variant", default=None, help="diffusers weight variant to load, e.g. fp16")
    g.add_argument("--no-safety-checker", action="store_true", help="drop the diffusers pipeline's safety checker")
    g = p.add_argument_group("proposals")
    g.add_argument("--llm", default="offline",
                   help="offline | hf:<hub id or path> | replicate[:<owner>/<name>] | openai:<model>@<url>")  # fmt: skip
    g.add_argument("--max-retries", type=int, default=2, help="re-asks per unusable answer before the fallback")
    g.add_argument("--temperature", type=float, default=0.7, help="LLM sampling temperature")
    g.add_argument("--max-new-tokens", type=int, default=256, help="LLM answer budget (thinking included)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … for classifier, SAE and local models")
    p.add_argument("--batch-size", type=int, default=64, help="images per classifier forward pass")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")


def image_options(args: argparse.Namespace) -> dict:
    kind = args.images.strip().partition(":")[0].lower()
    if kind == "diffusers":
        opts = {"steps": args.steps, "guidance": args.guidance, "height": args.height, "width": args.width,
                "dtype": args.dtype, "batch_size": args.image_batch_size, "negative_prompt": args.negative_prompt,
                "device": args.device or "auto", "variant": args.variant,
                "safety_checker": not args.no_safety_checker}  # fmt: skip
        return opts
    if kind == "replicate":
        return {"steps": args.steps, "guidance": args.guidance}
    return {}


def run(args: argparse.Namespace) -> int:
    from sae_lab.explainers.line.loop import LineConfig, LineSession, choose_latents, gt_named_rate, parse_latents

    config = LineConfig(n_iters=args.n_iters, n_images=args.n_images, metric=args.metric, template=args.template,
                        seed=args.seed, pool_size=args.pool_size, n_control=args.n_control,
                        control_split=args.control_split, domain=args.domain, save_images=args.save_images,
                        batch_size=args.batch_size)  # fmt: skip
    llm_opts = {"device": args.device or "auto"} if args.llm.partition(":")[0] in ("hf", "transformers") else {}
    session = LineSession(
        args.run,
        args.sae,
        config,
        image_backend=args.images,
        llm=args.llm,
        classifier=args.classifier,
        data=args.data,
        device=args.device,
        image_opts=image_options(args),
        llm_opts=llm_opts,
        proposer_opts={
            "max_retries": args.max_retries,
            "temperature": args.temperature,
            "max_new_tokens": args.max_new_tokens,
        },  # fmt: skip
        progress=not args.no_progress,
    )
    spec = args.latents.strip()
    if spec.startswith("auto:"):
        latents = choose_latents(session, int(spec[5:]))
    else:
        latents = parse_latents(spec)
    lines = session.run(latents, overwrite=args.overwrite)
    for r in lines[:20]:
        print(f"latent {r['latent']:>5}: {r['best_concept']!r} ({args.metric} {r['best_score']:.3f})")
    rate, n = gt_named_rate(lines)
    extra = f"; ground truth named for {rate:.0%} of {n} matched latents" if rate is not None else ""
    print(f"explained {len(lines)} latents → {session.out}/summary.jsonl{extra}")
    return 0
