"""The diffusers backend on a tiny random Stable Diffusion pipeline loaded with from_pretrained, alone and inside
the LINE loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sae_lab.backends.image import DiffusersBackend, make_image_backend
from sae_lab.explainers.line import LineConfig, LineSession
from tests.explainers.line.line_fixtures import *  # noqa: F403 -- the LINE fixtures (autouse ones included)

SIZE = 32
PROMPTS = ["a simple line drawing of a spiral", "a simple line drawing of a star", "a simple line drawing of a cat"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table (the base alphabet of CLIP's byte-level BPE)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)
    return dict(zip(bs, map(chr, cs)))


@pytest.fixture(scope="module")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A random Stable Diffusion pipeline from configs, with an offline CLIP tokenizer, saved like a hub repo."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny-sd")
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (root / "tok").mkdir()
    (root / "tok/vocab.json").write_text(json.dumps(vocab))
    (root / "tok/merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(root / "tok"), model_max_length=16)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=SIZE // 2, block_out_channels=(8, 16), layers_per_block=1,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=4, attention_head_dim=2)  # fmt: skip
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=SIZE)  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                                        pad_token_id=vocab["<|endoftext|>"]))  # fmt: skip
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       timestep_spacing="trailing", steps_offset=1)  # fmt: skip
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


@pytest.fixture(scope="module")
def tiny_sd(tiny_sd_dir) -> DiffusersBackend:
    return make_image_backend(f"diffusers:{tiny_sd_dir}", device="cpu", dtype="float32", batch_size=4,
                              local_files_only=True, safety_checker=False)  # fmt: skip


def test_diffusers_steps_and_guidance_reach_the_pipeline(tiny_sd):
    assert type(tiny_sd.pipe).__name__ == "StableDiffusionPipeline"
    assert (tiny_sd.steps, tiny_sd.guidance) == (30, 7.5)  # defaults for a model whose name lacks "turbo"
    batches: list[int] = []
    hook = tiny_sd.pipe.unet.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    try:
        tiny_sd.steps, tiny_sd.guidance = 3, 0.0
        images = tiny_sd.generate(PROMPTS[:2], [1, 2])
        assert batches == [2, 2, 2]  # one UNet call per step, no classifier-free guidance
        batches.clear()
        tiny_sd.steps, tiny_sd.guidance = 2, 4.0
        tiny_sd.generate(PROMPTS[:2], [1, 2])
        assert batches == [4, 4]  # guidance > 1: conditional and unconditional halves
    finally:
        hook.remove()
        tiny_sd.steps, tiny_sd.guidance = 1, 0.0
    assert all(im.size == (SIZE, SIZE) and im.mode == "RGB" for im in images)
    assert "steps=1,guidance=0" in tiny_sd.identity


def test_diffusers_images_depend_on_prompt_and_seed_not_on_the_batch(tiny_sd):
    both = tiny_sd.generate(PROMPTS[:2], [5, 6])
    alone = tiny_sd.generate(PROMPTS[1:2], [6])[0]
    again = tiny_sd.generate(PROMPTS[:1], [7])[0]
    assert np.abs(np.asarray(both[1], np.int16) - np.asarray(alone, np.int16)).max() <= 1
    assert not np.array_equal(np.asarray(both[0]), np.asarray(again))


def test_turbo_defaults_and_dtype_keyword(monkeypatch, tiny_sd_dir, tmp_path):
    turbo = tmp_path / "my-sd-turbo"
    turbo.symlink_to(tiny_sd_dir, target_is_directory=True)
    backend = DiffusersBackend(str(turbo), device="cpu", local_files_only=True)
    assert (backend.steps, backend.guidance, backend.dtype) == (1, 0.0, "float32")
    with pytest.raises(ValueError, match="dtype"):
        DiffusersBackend(str(turbo), device="cpu", dtype="int8", local_files_only=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_half_precision_on_gpu(tiny_sd_dir):
    backend = DiffusersBackend(str(tiny_sd_dir), device="cuda", steps=1, guidance=0.0, local_files_only=True)
    assert backend.dtype == "float16" and backend.pipe.unet.dtype == torch.float16
    assert backend.generate(PROMPTS[:2], [1, 2])[0].size == (SIZE, SIZE)


def test_tiny_stable_diffusion_inside_the_loop(tiny_sd, sae_dir, tmp_path):
    tiny_sd.batch_size = 8
    config = LineConfig(n_iters=1, n_images=2, n_top_classes=2, n_random=1, pool_size=3, n_control=24)
    session = LineSession(tmp_path / "run", sae_dir, config, image_backend=tiny_sd, llm="offline", progress=False)
    lines = session.run([0, 1])
    assert [r["latent"] for r in lines] == [0, 1] and all(r["best_concept"] for r in lines)
    pngs = list((tmp_path / "run/line/cache").glob("*.png"))
    assert pngs and session.cache.generated == len(pngs)
    with Image.open(pngs[0]) as im:
        assert im.size == (SIZE, SIZE) and im.mode == "RGB"
    state = json.loads((tmp_path / "run/line/state.json").read_text())
    assert state["done"] and state["images_generated"] == len(pngs)
    assert "diffusers:" in json.loads((tmp_path / "run/line/params.json").read_text())["image_backend"]
