"""SaeLab: exact logit contributions, batching, labels, run layout and inputs (in process, tiny models)."""

from __future__ import annotations

import dataclasses
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sae_lab.backends.text import GenerationResult, TextBackend
from sae_lab.data.images import ImageDecodeError
from sae_lab.data.world import SketchWorld
from sae_lab.inference import (
    LatentContribution,
    SaeLab,
    read_labels,
    rewrite_sentences,
    run_why_stage,
    template_sentence,
)
from sae_lab.models.sae import SaeConfig, TopKSAE

NUM_LATENTS = 32
K = 4
RUN = "tiny"
N_IMAGES = 64


# ------------------------------------------------------------------------------------------------ helpers
def make_sae(ckpt: Path, out: Path, classifier: str | None = None, seed: int = 0) -> Path:
    """A random SAE on the test classifier's layer4, with non-trivial μ, σ and b_dec."""
    from sae_lab.models.classifier_io import load_classifier

    torch.manual_seed(seed)
    clf = load_classifier(ckpt)
    sae = TopKSAE(SaeConfig(d_in=512, num_latents=NUM_LATENTS, k=K), layer="layer4",
                  classifier=clf.fingerprint if classifier is None else classifier,
                  metadata={"classifier_checkpoint": str(ckpt), "class_names": clf.class_names,
                            "image_size": clf.image_size})  # fmt: skip
    with torch.no_grad():
        sae.set_standardization(torch.rand(512) * 0.5, 0.5 + torch.rand(512))
        sae.b_dec.normal_(0, 0.3)
        sae.b_enc.normal_(0, 0.5)
    sae.save_to_disk(out)
    return out


def write_labels(run_dir: Path) -> None:
    """labels.jsonl + line/summary.jsonl exercising every precedence rule."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        {"latent": 0, "label": "stats zero", "status": "ok"},
        {"latent": 1, "label": "stats one", "status": "ok"},
        {"latent": 1, "label": None, "status": "failed"},  # a later failure keeps the last ok label
        {"latent": 2, "label": "old two", "status": "ok"},
        {"latent": 2, "label": "new two", "status": "ok"},  # the last ok line wins
        {"latent": 4, "label": "never ok", "status": "failed"},
    ]
    text = "\n".join(json.dumps(r) for r in rows) + "\nnot json\n"
    (run_dir / "labels.jsonl").write_text(text)
    (run_dir / "line").mkdir(exist_ok=True)
    line = [{"latent": 0, "best_concept": "line zero", "best_score": 0.9},
            {"latent": 3, "best_concept": "line three", "best_score": 0.8},
            {"latent": 2, "best_concept": None, "best_score": None}]  # fmt: skip
    (run_dir / "line" / "summary.jsonl").write_text("\n".join(json.dumps(r) for r in line) + "\n")


def make_run(root: Path, ckpt: Path, labels: bool = True) -> Path:
    """``root/checkpoints/tiny/sae`` + ``root/reports/tiny`` (labels optional); returns the report folder."""
    make_sae(ckpt, root / "checkpoints" / RUN / "sae")
    run_dir = root / "reports" / RUN
    run_dir.mkdir(parents=True, exist_ok=True)
    if labels:
        write_labels(run_dir)
    return run_dir


def world_images(n: int, size: int = 32, first: int = 0) -> list[np.ndarray]:
    world = SketchWorld(image_size=size)
    return [world.sample(first + i, "test").image for i in range(n)]


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG of side² pixels (400 M by default) that compresses to ~50 kB: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    comp, row = zlib.compressobj(9), bytes(1 + (side + 7) // 8)
    idat = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def rgba_and_16bit(sketch: np.ndarray) -> tuple[Image.Image, Image.Image]:
    """The same sketch as RGBA (ink as alpha over transparent) and as a 16-bit grey image."""
    rgba = np.zeros((*sketch.shape, 4), np.uint8)
    rgba[..., 3] = 255 - sketch
    return Image.fromarray(rgba, "RGBA"), Image.fromarray(sketch.astype(np.uint16) * 257)


@pytest.fixture(scope="module")
def run_dir(classifier_ckpt, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("why_run"), classifier_ckpt)


@pytest.fixture(scope="module")
def lab(run_dir) -> SaeLab:
    return SaeLab.load(run_dir)


# ------------------------------------------------------------------------------------------------ the maths
def test_contributions_error_and_bias_add_up_to_the_logit(lab):
    images = world_images(N_IMAGES)
    batched = lab.why(images, top=None)
    single = [lab.why(img, top=None) for img in images]
    logits = lab.net(torch.stack([lab.to_tensor(i) for i in images]))
    for b, s, row in zip(batched, single, logits):
        for why in (b, s):
            assert abs(why.latent_sum + why.error_term + why.bias_term - why.logit) < 1e-4
            assert abs(sum(lat.contribution for lat in why.latents) - why.latent_sum) < 1e-4  # all latents listed
            assert why.logit == pytest.approx(float(row[why.predicted.index]), abs=1e-5)  # the classifier's logit
            assert why.predicted.index == int(row.argmax())
            js = why.to_json()
            assert abs(js["latent_sum"] + js["error_term"] + js["bias_term"] - js["logit"]) < 1e-4


def test_terms_match_a_dense_reference(lab):
    """Recompute every term on another path: dense decode, un-standardise, error per token, head weights."""
    images = world_images(8, first=100)
    whys = lab.why(images, top=None)
    with torch.no_grad():
        fmap = lab.net.features(torch.stack([lab.to_tensor(i) for i in images]))
        w_out, b_out = (t.double() for t in lab.net.logit_weights())
        for j, why in enumerate(whys):
            x = fmap[j].flatten(1).T.double()  # (T, C)
            acts, idx = lab.sae.encode(lab.sae.standardize(x.float()))
            codes = torch.zeros(len(x), NUM_LATENTS, dtype=torch.float64).scatter(1, idx, acts.double())
            x_hat = lab.sae.unstandardize(lab.sae.decode_dense(acts, idx)).double()
            c = why.predicted.index
            lens = (lab.sae.W_dec.double() * lab.sae.sigma.double()) @ w_out[c]  # w_i[c]
            assert why.error_term == pytest.approx(float(w_out[c] @ (x - x_hat).mean(0)), abs=1e-4)
            for lat in why.latents:
                assert lat.contribution == pytest.approx(float(codes[:, lat.id].mean() * lens[lat.id]), abs=1e-6)
                assert lat.activation == pytest.approx(float(codes[:, lat.id].max()), abs=1e-5)
            const = w_out[c] @ (lab.sae.sigma.double() * lab.sae.b_dec.double() + lab.sae.mu.double()) + b_out[c]
            assert why.bias_term == pytest.approx(float(const), abs=1e-5)


def test_batched_equals_single_and_ranking(lab):
    images = world_images(12, first=200)
    batched = lab.why(images, top=5, batch_size=5)  # several forward passes
    for img, b in zip(images, batched):
        s = lab.why(img, top=5)
        assert [lat.id for lat in s.latents] == [lat.id for lat in b.latents]
        # a batch of 5 and a batch of 1 take different kernels: same classes, probabilities to float32 rounding
        assert [t.index for t in s.top5] == [t.index for t in b.top5]
        assert [t.prob for t in s.top5] == pytest.approx([t.prob for t in b.top5], abs=1e-5)
        assert s.logit == pytest.approx(b.logit, abs=1e-5)
        contributions = [lat.contribution for lat in b.latents]
        assert contributions == sorted(contributions, reverse=True)
        assert len(b.top5) == 5 and b.top5[0].index == b.predicted.index
    by_abs = lab.why(images[0], top=5, rank_by="abs")
    magnitudes = [abs(lat.contribution) for lat in by_abs.latents]
    assert magnitudes == sorted(magnitudes, reverse=True)


def test_json_follows_the_design_schema(lab):
    js = lab.why(world_images(1)[0], top=3, names=["sketch.png"]).to_json()
    assert js["image"] == "sketch.png"
    assert set(js["predicted"]) == {"index", "class", "prob"} and len(js["top5"]) == 5
    assert all(set(t) == {"index", "class", "prob"} for t in js["top5"])
    assert len(js["latents"]) <= 3
    assert all(set(lat) == {"id", "activation", "contribution", "label"} for lat in js["latents"])
    assert isinstance(js["sentence"], str) and js["sentence"]
    assert {"logit", "latent_sum", "error_term", "bias_term"} <= set(js)
    json.dumps(js)


# ------------------------------------------------------------------------------------------------ labels, runs
def test_label_precedence_line_then_stats_then_none(run_dir, lab):
    labels = read_labels(run_dir)
    assert labels[0] == ("line zero", "line")  # LINE beats the stats label
    assert labels[1] == ("stats one", "labels")  # a later failure keeps the last ok label
    assert labels[2] == ("new two", "labels")  # last ok line wins; LINE's null concept does not override
    assert labels[3] == ("line three", "line")
    assert 4 not in labels and 5 not in labels
    why = lab.why(world_images(4), top=None)
    for w in why:
        for lat in w.latents:
            assert lat.label == labels.get(lat.id, (None, None))[0]


def test_explanations_choose_the_labels(classifier_ckpt, tmp_path):
    """Labels come from explanations/<method>.jsonl; `explanations=` picks the method, else the preference order."""
    from sae_lab.run import ExplanationRecord, ExplanationStore, Term

    run = make_run(tmp_path, classifier_ckpt)  # also an old-style labels.jsonl + line/summary.jsonl
    with ExplanationStore(run, "le-vlm") as store:
        store.append([ExplanationRecord(0, "le-vlm", "0.60*circle + 0.10", [Term("circle", 0.6)], bias=0.1),
                      ExplanationRecord(7, "le-vlm", "0.50*spokes + 0.00", [Term("spokes", 0.5)], bias=0.0),
                      ExplanationRecord(8, "le-vlm", None, reason="latent never fires")])  # fmt: skip
    assert read_labels(run, "le-vlm") == {0: ("0.60*circle + 0.10", "le-vlm"), 7: ("0.50*spokes + 0.00", "le-vlm")}
    default = read_labels(run)
    assert default[0] == ("line zero", "line") and default[7] == ("0.50*spokes + 0.00", "le-vlm")
    lab = SaeLab.load(run, explanations=["le-vlm"])
    assert lab.labels == read_labels(run, "le-vlm")
    assert read_labels(run, "nothing-here") == {}


def test_missing_labels_answer_with_null(classifier_ckpt, tmp_path):
    run = make_run(tmp_path, classifier_ckpt, labels=False)
    js = SaeLab.load(run).why(world_images(1)[0], top=None).to_json()
    assert js["latents"] and all(lat["label"] is None for lat in js["latents"])


def test_run_name_and_report_json_resolve_the_sae(classifier_ckpt, tmp_path, monkeypatch):
    run = make_run(tmp_path, classifier_ckpt)
    monkeypatch.chdir(tmp_path)
    assert SaeLab.load(RUN).paths.sae_dir.resolve() == (tmp_path / "checkpoints" / RUN / "sae").resolve()
    moved = tmp_path / "elsewhere" / "sae"
    moved.parent.mkdir()
    (tmp_path / "checkpoints" / RUN / "sae").rename(moved)
    (run / "report.json").write_text(json.dumps({"sae": {"dir": "elsewhere/sae"}}))
    assert SaeLab.load(run).paths.sae_dir.resolve() == moved.resolve()


def test_run_without_sae_is_a_clear_error(tmp_path):
    (tmp_path / "reports" / "nothing").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"checkpoints/nothing/sae.*--sae"):
        SaeLab.load(tmp_path / "reports" / "nothing")


def test_sae_of_another_classifier_is_refused(classifier_ckpt, tmp_path):
    sae = make_sae(classifier_ckpt, tmp_path / "sae", classifier="0123456789abcdef")
    with pytest.raises(ValueError, match="do not belong together"):
        SaeLab.load(None, sae=sae)


# ------------------------------------------------------------------------------------------------ inputs
def test_every_input_kind_gives_the_same_answer(lab, tmp_path):
    sketch = world_images(1, first=7)[0]
    path = tmp_path / "s.png"
    Image.fromarray(sketch).save(path)
    rgba, gray16 = rgba_and_16bit(sketch)
    inputs = [
        sketch,
        path,
        str(path),
        path.read_bytes(),
        Image.open(path),
        rgba,
        png_bytes(gray16),
        lab.to_tensor(sketch),
    ]
    whys = lab.why(inputs)
    assert len({w.predicted.index for w in whys}) == 1
    assert max(w.logit for w in whys) - min(w.logit for w in whys) < 1e-4
    assert whys[1].image == str(path) and whys[3].image == "<bytes>"


@pytest.mark.parametrize(
    "data, match",
    [(b"", "empty"), (b"GIF89a not really", "cannot decode"), ("truncated", "truncated"), ("bomb", "too large")],
)
def test_bad_images_raise_image_decode_error(lab, data, match):
    if data == "truncated":
        data = png_bytes(Image.fromarray(world_images(1)[0]))[:120]
    elif data == "bomb":
        data = bomb_png()
    with pytest.raises(ImageDecodeError, match=match):
        lab.why(data)


# ------------------------------------------------------------------------------------------------ sentence, stage
class FakeBackend(TextBackend):
    name = "fake"

    def __init__(self, answers):
        self.answers, self.requests = answers, []

    def generate(self, requests):
        self.requests += requests
        return [GenerationResult(a) if a else GenerationResult(None, "boom") for a in self.answers]


def test_sentence_template_and_llm_rewrite(lab):
    a, b = lab.why(world_images(2), top=3)
    assert a.sentence == template_sentence(a) and f'"{a.predicted.name}"' in a.sentence
    lats = [LatentContribution(1, 2.0, 0.1, 0.5, "circle"), LatentContribution(2, 2.0, 0.1, 0.3, "star"),
            LatentContribution(3, 2.0, 0.1, 0.4, "circle"), LatentContribution(4, 2.0, 0.1, -0.2, None)]  # fmt: skip
    merged = template_sentence(dataclasses.replace(a, latents=lats))
    assert merged.endswith('"circle" (latents 1, 3, +0.90) and "star" (latent 2, +0.30), despite an unnamed feature '
                           "(latent 4, -0.20).")  # fmt: skip
    backend = FakeBackend(["The drawing looks like a house because of its roof.\nextra", None])
    out = rewrite_sentences([a, b], backend)
    assert out == ["The drawing looks like a house because of its roof.", b.sentence]  # a failure keeps the template
    assert a.predicted.name in backend.requests[0].messages[-1]["content"]


def test_why_stage_block(classifier_ckpt, tmp_path):
    run = make_run(tmp_path, classifier_ckpt, labels=False)
    sae_dir = tmp_path / "checkpoints" / RUN / "sae"
    block = run_why_stage(run, sae_dir, n_images=4, print_fn=None)
    assert block["images"] == 4 and block["top_latent_gt_rate"] is None and block["seconds"] >= 0
    # Every latent "detects circle": the rate is the share of images with a circle in them.
    rows = [{"id": i, "ground_truth": {"primitive": "circle", "image_auc": 0.95}} for i in range(NUM_LATENTS)]
    (run / "neurons.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    printed = []
    block = run_why_stage(run, sae_dir, n_images=6, first_index=0, print_fn=printed.append)
    world = SketchWorld(image_size=32)
    has_circle = [world.sample(i, "test").primitives[world.primitives.index("circle")] for i in range(6)]
    assert block["top_latent_gt_rate"] == pytest.approx(float(np.mean(has_circle)), abs=1e-4)
    assert len([p for p in printed if p.startswith("world test #")]) == 6
