"""A tiny random Stable Diffusion pipeline from configs, saved like a hub repo (no hub access), for DnD's tests.

Its tokenizer is the perception tests' word-level one over the sketch world's words, so no BPE files are needed;
the pipeline loads it by the class recorded in ``model_index.json``.
"""

from __future__ import annotations

from pathlib import Path

from tests.backends.perception.tiny_models import tokenizer

SIZE = 32
"""Side of the generated images (the test classifier's input size)."""
WIDTH = 16


def save_tiny_sd(path: Path, seed: int = 0) -> Path:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tokenizer()
    tok.model_max_length = 16
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=SIZE // 2, block_out_channels=(8, WIDTH), layers_per_block=1,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=WIDTH,
                                norm_num_groups=4, attention_head_dim=2)  # fmt: skip
    vae = AutoencoderKL(block_out_channels=(8, WIDTH), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=SIZE)  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=WIDTH, intermediate_size=2 * WIDTH,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id))  # fmt: skip
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       timestep_spacing="trailing", steps_offset=1)  # fmt: skip
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    pipe.save_pretrained(path)
    return path
