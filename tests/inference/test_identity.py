"""Issue 19, item 4: explanations belong to another SAE. The reproduction: a run whose report and explanations were
made with one SAE, then its SAE replaced by the same latents permuted (same shapes). ``why`` and ``explain --sae
OTHER`` used to go on with the old labels and ground truth; now they refuse, naming both identities."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_lab.inference import SaeLab
from sae_lab.run import ExplanationRecord, ExplanationStore, IdentityError, RunFiles, load_run, recorded_identity
from tests.helpers.runs import make_tiny_run
from tests.helpers.threads import one_thread  # noqa: F401

NUM_LATENTS = 12
RUN = "tiny"
TEXTS = {1: "circle", 2: "square", 3: "star"}


@pytest.fixture(scope="module")
def base(classifier_ckpt, tmp_path_factory) -> Path:
    """A tiny run with LE-style explanations of its own SAE (records carry its identity)."""
    run = make_tiny_run(tmp_path_factory.mktemp("identity"), classifier_ckpt, name=RUN, num_latents=NUM_LATENTS)
    sae_id = recorded_identity(run).id
    with ExplanationStore(run, "le-label") as store:
        store.append([ExplanationRecord.single(k, "le-label", t, backends={"sae": sae_id}) for k, t in TEXTS.items()])
    return run.parents[1]


@pytest.fixture
def root(base, tmp_path) -> Path:
    """A fresh copy of the run (the tests change its SAE)."""
    shutil.copytree(base, tmp_path / "root")
    return tmp_path / "root"


def permute_latents(sae_dir: Path) -> None:
    """The same latents in another order: every shape unchanged, so only an identity tells them apart."""
    path = sae_dir / "sae.safetensors"
    tensors = load_file(path)
    perm = torch.roll(torch.arange(NUM_LATENTS), 1)
    for name in ("W_enc", "W_dec", "b_enc"):
        tensors[name] = tensors[name][perm].contiguous()
    save_file(tensors, path)


def test_the_unchanged_sae_still_explains_with_its_labels(root):
    lab = SaeLab.load(root / "reports" / RUN)
    assert lab.labels == {k: (t, "le-label") for k, t in TEXTS.items()}
    assert lab.identity == recorded_identity(root / "reports" / RUN)
    assert load_run(root / "reports" / RUN).sae_id == lab.identity.id


def test_why_with_the_sae_replaced_in_place_is_refused_naming_both_identities(root, cli):
    run = root / "reports" / RUN
    before = recorded_identity(run)
    permute_latents(root / "checkpoints" / RUN / "sae")
    with pytest.raises(IdentityError) as e:
        SaeLab.load(run)
    after = load_run(run, check=False).identity
    assert before.sae != after.sae and before.classifier == after.classifier
    assert before.sae in str(e.value) and after.sae in str(e.value) and "report" in str(e.value)
    # Through the real CLI: one clear line, exit 2, no traceback.
    image = root / "x.png"
    from PIL import Image

    Image.new("L", (32, 32), 255).save(image)
    r = cli("why", str(image), "--run", str(run), cwd=root)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and before.sae in errors[0] and after.sae in errors[0] and "--overwrite" in errors[0]


def test_explain_and_evaluate_with_another_sae_are_refused(root):
    from sae_lab.evaluate import EvaluateSettings, evaluate
    from sae_lab.explainers.base import get_explainer

    other = root / "other_sae"
    shutil.copytree(root / "checkpoints" / RUN / "sae", other)
    permute_latents(other)
    run = str(root / "reports" / RUN)
    for method in ("le", "line", "dnd", "patches", "labels"):
        explainer = get_explainer(method)
        given = {"run": run, "sae": str(other), "device": "cpu", "latents": "1-3"}
        if "progress" in explainer.settings.__dataclass_fields__:
            given["progress"] = False
        with pytest.raises(IdentityError, match="another SAE"):
            explainer.run(explainer.settings(**given))
    written = sorted(p.name for p in Path(run).iterdir() if not p.name.startswith("."))
    assert written == ["explanations", "neurons.jsonl", "report.json"], written  # refused before writing
    with pytest.raises(IdentityError, match="another SAE"):
        evaluate(EvaluateSettings(run=run, sae=str(other), device="cpu", progress=False))
    assert json.loads(RunFiles(run).explanations("le-label").read_text().splitlines()[0])["text"] == "circle"
    # A copy of the same SAE elsewhere is the same SAE: accepted.
    same = root / "same_sae"
    shutil.copytree(root / "checkpoints" / RUN / "sae", same)
    assert SaeLab.load(run, sae=same).labels[1] == ("circle", "le-label")


@pytest.mark.slow
def test_explain_le_with_another_sae_through_the_cli_is_one_error_line(root, cli):
    other = root / "other_sae"
    shutil.copytree(root / "checkpoints" / RUN / "sae", other)
    permute_latents(other)
    run = root / "reports" / RUN
    r = cli("explain", "le", "--run", str(run), "--sae", str(other), "--device", "cpu", cwd=root)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another SAE" in errors[0] and str(other) in errors[0]
    assert recorded_identity(run).sae in errors[0]


def test_labels_record_the_reports_identity(root):
    from sae_lab.explainers.base import get_explainer

    run = root / "reports" / RUN
    labels = get_explainer("labels")
    labels.run(labels.settings(run=str(run), latents="1-3", progress=False))
    sae_id = recorded_identity(run).id
    lines = [json.loads(x) for x in RunFiles(run).labels.read_text().splitlines()]
    assert lines and all(x["sae"] == sae_id for x in lines)
    records = ExplanationStore(run, "labels").latest()
    assert sorted(records) == [1, 2, 3] and all(r.backends["sae"] == sae_id for r in records.values())


def test_an_old_run_without_identity_is_accepted_with_one_warning(root, caplog):
    run = root / "reports" / RUN
    RunFiles(run).report.write_text(json.dumps({"run": RUN}))  # a report.json from before identities
    with caplog.at_level(logging.WARNING):
        lab = SaeLab.load(run)
        lab.reload_labels()
    assert lab.labels[1] == ("circle", "le-label")
    assert caplog.text.count("records no SAE/classifier identity") == 1


def test_labels_of_another_sae_are_not_used_after_a_new_report(root, caplog):
    """The report re-made for the new SAE (as the refusal says): ``why`` works, the old SAE's explanations are left
    out with one warning naming the method and how many."""
    run = root / "reports" / RUN
    permute_latents(root / "checkpoints" / RUN / "sae")
    new = load_run(run, check=False).identity
    report = json.loads(RunFiles(run).report.read_text())
    RunFiles(run).report.write_text(json.dumps({**report, "identity": new.to_json()}))
    with caplog.at_level(logging.WARNING):
        lab = SaeLab.load(run)
    assert lab.labels == {}
    warned = [r.getMessage() for r in caplog.records if "another SAE" in r.getMessage()]
    assert len(warned) == 1 and "le-label.jsonl: 3 of 3" in warned[0]


def test_a_report_records_the_identity_its_readers_compute(root):
    from sae_lab.report import run_report

    sae_dir = root / "checkpoints" / RUN / "sae"
    run = root / "reports" / "fresh"
    run_report(sae_dir, run, progress=False, n_exemplars=1, knockout_latents=0, batch_size=64)
    report = json.loads(RunFiles(run).report.read_text())
    loaded = load_run(run, sae_dir)
    assert report["identity"] == {"sae": loaded.identity.sae, "classifier": loaded.classifier.fingerprint,
                                  "id": loaded.sae_id}  # fmt: skip
    permute_latents(sae_dir)
    with pytest.raises(IdentityError):
        load_run(run, sae_dir)
