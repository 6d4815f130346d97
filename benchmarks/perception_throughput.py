"""Images/s of concept-presence scoring through the CLIP / SigLIP backend, on whatever device is at hand.

The model has random weights at a real model's size, built from a config (``base``: transformers' default
SigLIP / CLIP configs, i.e. SigLIP-B/16-224 and CLIP-B/32; ``tiny``: the test models), saved and loaded with
``from_pretrained`` through ``make_perception``, so nothing is downloaded and the figures cover the whole path:
RGB conversion, the processor, the forward pass, the cache write. Images are 64 px sketch-world samples.

    python benchmarks/perception_throughput.py --family siglip --size base --n 2048 --device cuda
    python benchmarks/perception_throughput.py --size tiny --n 256 --device cpu

Figures: ``preprocess_cpu`` (the processor alone, on the CPU), ``model_{gpu,cpu}_preprocess`` (processor and
forward pass, no cache, preprocessing on the accelerator or the CPU), ``embed`` (first presence call end to end:
hashing, every image through the model, the cache write), ``cached`` (second call: every image from the on-disk
cache). Ends with one ``key=value`` line.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sae_lab.backends.perception import make_perception  # noqa: E402
from sae_lab.backends.perception.base import to_rgb  # noqa: E402
from sae_lab.backends.perception.hub import batches  # noqa: E402
from sae_lab.data.world import CLASSES, PRIMITIVES, SketchWorld  # noqa: E402
from tests.backends.perception.tiny_models import save_clip, save_siglip, tokenizer  # noqa: E402


def save_base(family: str, path: Path) -> Path:
    """A model of the default (base) size with random weights and the test tokenizer."""
    import transformers as tf

    torch.manual_seed(0)
    if family == "siglip":
        tf.SiglipModel(tf.SiglipConfig()).save_pretrained(path)
        tf.SiglipProcessor(image_processor=tf.SiglipImageProcessor(), tokenizer=tokenizer()).save_pretrained(path)
    else:
        tf.CLIPModel(tf.CLIPConfig(text_config={"bos_token_id": 2, "eos_token_id": 3})).save_pretrained(path)
        tf.CLIPProcessor(image_processor=tf.CLIPImageProcessor(), tokenizer=tokenizer()).save_pretrained(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=["siglip", "clip"], default="siglip")
    ap.add_argument("--size", choices=["base", "tiny"], default="base")
    ap.add_argument("--n", type=int, default=1024, help="images")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()

    world = SketchWorld(image_size=64, seed=0)
    images = [Image.fromarray(world.sample(i).image, mode="L") for i in range(args.n)]
    concepts = list(PRIMITIVES) + list(CLASSES)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.size == "base":
            path = save_base(args.family, tmp / "model")
        else:
            path = (save_siglip if args.family == "siglip" else save_clip)(tmp / "model")
        vlm = make_perception(f"hf:{path}", cache_dir=tmp / "cache", device=args.device, dtype=args.dtype,
                              batch_size=args.batch_size)  # fmt: skip
        params = sum(p.numel() for p in vlm.net.parameters())
        vlm.presence(images[: args.batch_size], concepts)  # warm-up: kernels, allocator, text embeddings
        start = time.perf_counter()
        vlm.processor(images=[to_rgb(im) for im in images], return_tensors="pt")
        preprocess = time.perf_counter() - start
        model_only = {}
        for on_device in (True, False) if vlm.hf.device.type == "cuda" else (False,):
            vlm.hf.preprocess_on_device = on_device
            start = time.perf_counter()
            for chunk in batches(images, args.batch_size):
                vlm._embed_images(chunk)  # no cache: processor + forward only
            model_only[on_device] = time.perf_counter() - start
        vlm.hf.preprocess_on_device = True
        start = time.perf_counter()
        p = vlm.presence(images, concepts)
        embed = time.perf_counter() - start
        start = time.perf_counter()
        vlm.presence(images, concepts)
        cached = time.perf_counter() - start
    assert p.shape == (args.n, len(concepts)) and np.all((p >= 0) & (p <= 1))
    name = torch.cuda.get_device_name() if vlm.hf.device.type == "cuda" else "cpu"
    print(f"{args.family}-{args.size} ({params / 1e6:.1f}M parameters) on {name}, {vlm.hf.dtype_name}, "
          f"{args.n} images x {len(concepts)} concepts, batch {args.batch_size}")  # fmt: skip
    print(f"family={args.family} size={args.size} device={vlm.hf.device.type} dtype={vlm.hf.dtype_name} "
          f"preprocess_cpu_images_per_s={args.n / preprocess:.0f} "
          + "".join(f"model_{'gpu' if k else 'cpu'}_preprocess_images_per_s={args.n / v:.0f} "
                    for k, v in model_only.items())
          + f"embed_images_per_s={args.n / embed:.0f} cached_images_per_s={args.n / cached:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
