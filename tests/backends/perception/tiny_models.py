"""Tiny random CLIP, SigLIP and BLIP checkpoints with a word-level tokenizer, built and saved without the hub."""

from __future__ import annotations

from pathlib import Path

from sae_lab.data.world import CLASSES, PRIMITIVES

IMAGE = 32  # the models' input side in pixels
HIDDEN = 16
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]", "[CLS]"]
WORDS = ["a", "sketch", "of", "and", *PRIMITIVES, *sorted({w for c in CLASSES for w in c.split()})]


def tokenizer():
    """A whitespace word-level tokenizer over the sketch world's words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]", sep_token="[SEP]", cls_token="[CLS]")  # fmt: skip


def _text_config(**extra) -> dict:
    return dict(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16, **extra)  # fmt: skip


def _vision_config() -> dict:
    return dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                image_size=IMAGE, patch_size=8)  # fmt: skip


def save_clip(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    config = CLIPConfig(text_config=_text_config(bos_token_id=2, eos_token_id=3, pad_token_id=0),
                        vision_config=_vision_config(), projection_dim=8)  # fmt: skip
    CLIPModel(config).save_pretrained(path)
    images = CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer()).save_pretrained(path)
    return path


def save_siglip(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    torch.manual_seed(seed)
    SiglipModel(SiglipConfig(text_config=_text_config(), vision_config=_vision_config())).save_pretrained(path)
    images = SiglipImageProcessor(size={"height": IMAGE, "width": IMAGE})
    SiglipProcessor(image_processor=images, tokenizer=tokenizer()).save_pretrained(path)
    return path


def save_blip(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    torch.manual_seed(seed)
    text = _text_config(bos_token_id=2, sep_token_id=4, eos_token_id=4, pad_token_id=0)
    text["max_position_embeddings"] = 48
    config = BlipConfig(text_config=text, vision_config=_vision_config(), projection_dim=8)
    BlipForConditionalGeneration(config).save_pretrained(path)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": IMAGE, "width": IMAGE}),
                  tokenizer=tokenizer()).save_pretrained(path)  # fmt: skip
    return path
