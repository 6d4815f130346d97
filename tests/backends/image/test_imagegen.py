"""Image backends: the renderer, a tiny random Stable Diffusion pipeline loaded with from_pretrained, Replicate
against a loopback fake (PNG served over HTTP), the spec grammar, and the on-disk image cache."""

from __future__ import annotations

import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sae_lab.backends.image.imagegen import (
    DiffusersBackend,
    ImageCache,
    RendererBackend,
    ReplicateImageBackend,
    image_seed,
    make_image_backend,
)
from sae_lab.backends.text.remote import RetryPolicy
from sae_lab.explainers.line import LineConfig, LineSession
from tests.explainers.line.line_fixtures import *  # noqa: F403 -- the LINE fixtures (autouse ones included)

SIZE = 32
PROMPTS = ["a simple line drawing of a spiral", "a simple line drawing of a star", "a simple line drawing of a cat"]


# ------------------------------------------------------------------------------------------------ renderer
def test_renderer_draws_what_the_prompt_names_deterministically():
    r = RendererBackend(image_size=SIZE)
    a, b, c = r.generate(PROMPTS, [1, 1, 1])
    assert a.size == (SIZE, SIZE) and a.mode == "L"
    assert np.array_equal(np.asarray(a), np.asarray(r.generate(PROMPTS[:1], [1])[0]))
    assert not np.array_equal(np.asarray(a), np.asarray(r.generate(PROMPTS[:1], [2])[0]))
    assert r.identity == f"renderer(size={SIZE},world_seed=0)"
    with pytest.raises(ValueError, match="seeds"):
        r.generate(PROMPTS, [1])


def test_spec_grammar():
    assert isinstance(make_image_backend("renderer", image_size=SIZE), RendererBackend)
    for bad in ("dalle", "renderer:big", "diffusers:", "replicate:"):
        with pytest.raises(ValueError):
            make_image_backend(bad)


def test_cache_generates_each_image_once(tmp_path):
    class Counting(RendererBackend):
        calls: list[int] = []

        def generate(self, prompts, seeds):
            self.calls.append(len(prompts))
            return super().generate(prompts, seeds)

    backend = Counting(image_size=SIZE)
    cache = ImageCache(tmp_path, backend, "a drawing of {concept}", seed=3)
    assert cache.ensure(["star", "wave"], 4) == 8 and backend.calls == [8]  # one call for both concepts
    assert cache.ensure(["star", "wave", "dots"], 4) == 4 and backend.calls == [8, 4]
    assert cache.ensure(["dots"], 4) == 0 and cache.generated == 12
    assert len(list(tmp_path.glob("*.png"))) == 12 and len(cache.load("star", 4)) == 4
    other = ImageCache(tmp_path, backend, "a photo of {concept}", seed=3)  # another template: other images
    assert other.missing(["star"], 4) == [("star", i) for i in range(4)]
    assert image_seed(3, "star", 0) != image_seed(4, "star", 0) < 2**31
    with pytest.raises(ValueError, match="placeholder"):
        ImageCache(tmp_path, backend, "no placeholder", 0)


# ------------------------------------------------------------------------------------------------ diffusers
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


# ------------------------------------------------------------------------------------------------ replicate
class FakeReplicateImages:
    """Replicate's predictions API plus a file host on one loopback server; answers 429 to the first POST and
    makes predictions whose prompt contains 'slow' finish on the second poll."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.posts: list[dict] = []
        self.predictions: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.files: dict[str, bytes] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.posts.append({"path": self.path, "auth": self.headers.get("Authorization"), **data})
                    first = len(fake.posts) == 1
                    pid = f"p{len(fake.predictions)}"
                if first:
                    return self._send(429, b'{"title":"Too Many Requests","status":429}', "application/json",
                                      {"Retry-After": "0"})  # fmt: skip
                inp = data["input"]
                png = io.BytesIO()
                RendererBackend(SIZE).generate([inp["prompt"]], [inp["seed"]])[0].save(png, format="PNG")
                fake.files[pid] = png.getvalue()
                slow = "slow" in inp["prompt"]
                pred = fake.prediction(pid, inp, "starting" if slow else "succeeded")
                fake.predictions[pid] = pred
                self._send(201, json.dumps(pred).encode(), "application/json")

            def do_GET(self) -> None:
                if m := re.fullmatch(r"/files/(\w+)\.png", self.path):
                    return self._send(200, fake.files[m[1]], "image/png")
                pid = self.path.rsplit("/", 1)[-1]
                with fake.lock:
                    fake.polls[pid] = fake.polls.get(pid, 0) + 1
                    if fake.polls[pid] >= 2:
                        fake.predictions[pid].update(status="succeeded", output=[fake.url + f"/files/{pid}.png"])
                self._send(200, json.dumps(fake.predictions[pid]).encode(), "application/json")

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def prediction(self, pid: str, inp: dict, status: str) -> dict:
        output = [f"{self.url}/files/{pid}.png"] if status == "succeeded" else None
        return {"id": pid, "model": "acme/t2i", "version": "v1", "status": status, "input": inp, "output": output,
                "logs": "", "error": None, "metrics": {}, "created_at": "2025-01-01T00:00:00Z",
                "urls": {"get": f"/v1/predictions/{pid}", "cancel": f"/v1/predictions/{pid}/cancel"}}  # fmt: skip


@pytest.fixture
def fake_replicate():
    fake = FakeReplicateImages()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def test_replicate_images_are_fetched_through_the_client(fake_replicate, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test_token_123456")
    backend = ReplicateImageBackend("acme/t2i", base_url=fake_replicate.url, steps=4, concurrency=1,
                                    retry=RetryPolicy(max_retries=2, backoff_s=0.01), poll_interval_s=0.01)  # fmt: skip
    prompts = [PROMPTS[0], PROMPTS[1] + " slow"]
    images = backend.generate(prompts, [11, 12])
    expected = RendererBackend(SIZE).generate(prompts, [11, 12])
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, expected))
    first, *rest = fake_replicate.posts
    assert first["path"] == "/v1/models/acme/t2i/predictions" and len(rest) == 2  # the 429 was retried
    assert rest[0]["input"] == {"prompt": PROMPTS[0], "seed": 11, "num_outputs": 1, "output_format": "png",
                                "num_inference_steps": 4}  # fmt: skip
    assert rest[0]["auth"] == "Bearer r8_test_token_123456"
    assert fake_replicate.polls == {"p1": 2}  # the slow one was polled until done
    assert "replicate:acme/t2i" in backend.identity
    backend.close()


def test_replicate_needs_a_token(monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="REPLICATE_API_TOKEN"):
        make_image_backend("replicate:acme/t2i")
