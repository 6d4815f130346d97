"""SAE + classifier identities in the run layer: the digest, report.json's record, the check, and the filter every
explanation reader applies (issue 19, item 4)."""

from __future__ import annotations

import logging

import pytest
import torch

from sae_lab.models.sae import SaeConfig, TopKSAE
from sae_lab.run import ExplanationRecord, ExplanationStore, RunFiles, preferred_texts, read_explanations
from sae_lab.run.identity import (
    IDENTITY_KEY,
    Identity,
    IdentityError,
    check_identity,
    identity_of,
    keep_matching,
    recorded_identity,
    sae_digest,
)
from sae_lab.run.io import write_json, write_jsonl
from sae_lab.run.load import file_digest
from tests.helpers.threads import one_thread  # noqa: F401

D_IN = 8
NUM_LATENTS = 6
MINE = Identity("aaaaaaaaaaaaaaaa", "c0ffee0000000000")
OTHER = Identity("bbbbbbbbbbbbbbbb", "c0ffee0000000000")


def tiny_sae(seed: int = 0) -> TopKSAE:
    torch.manual_seed(seed)
    return TopKSAE(SaeConfig(d_in=D_IN, num_latents=NUM_LATENTS, k=2))


def report_run(tmp_path, identity: Identity | None, name: str = "run") -> RunFiles:
    """A run folder with a finished report (neurons.jsonl) whose report.json records ``identity`` (or none)."""
    files = RunFiles(tmp_path / name)
    write_jsonl(files.neurons, [{"latent": i} for i in range(NUM_LATENTS)])
    write_json(files.report, {"run": name, **({IDENTITY_KEY: identity.to_json()} if identity else {})})
    return files


def explain(files: RunFiles, method: str, texts: dict[int, tuple[str, Identity | None]]) -> None:
    with ExplanationStore(files, method) as store:
        store.append([ExplanationRecord.single(k, method, t, backends={"sae": i.id} if i else {})
                      for k, (t, i) in texts.items()])  # fmt: skip


def test_the_digest_is_the_export_files_digest_and_permuting_latents_changes_it(tmp_path):
    sae = tiny_sae()
    sae.save_to_disk(tmp_path / "sae")
    loaded = TopKSAE.load_from_disk(tmp_path / "sae")
    assert sae_digest(sae) == sae_digest(loaded) == file_digest(tmp_path / "sae/sae.safetensors")
    perm = torch.roll(torch.arange(NUM_LATENTS), 1)
    with torch.no_grad():  # the same latents in another order: same shapes, another SAE
        for p in (loaded.W_enc, loaded.W_dec, loaded.b_enc):
            p.copy_(p[perm])
    assert sae_digest(loaded) != sae_digest(sae)
    ident = identity_of(sae, "f" * 16)
    assert ident.id == f"{'f' * 16}-{sae_digest(sae)}" and Identity.parse(ident.id) == ident
    assert Identity.from_json(ident.to_json()) == ident and Identity.from_json({"sae": 3}) is None


def test_check_accepts_the_same_models_and_refuses_others_naming_both(tmp_path):
    files = report_run(tmp_path, MINE)
    assert recorded_identity(files) == MINE
    assert check_identity(files, MINE) == MINE
    with pytest.raises(IdentityError) as e:
        check_identity(files, OTHER, sae_dir="checkpoints/run/sae")
    msg = str(e.value)
    assert MINE.sae in msg and OTHER.sae in msg and "another SAE" in msg and "classifier" in msg
    assert f"report --sae checkpoints/run/sae --run {files.root} --overwrite" in msg
    other_clf = Identity(MINE.sae, "0123456789abcdef")
    with pytest.raises(ValueError, match="another classifier"):  # IdentityError is a ValueError: one clear line
        check_identity(files, other_clf)


def test_a_run_without_an_identity_is_accepted_with_one_warning(tmp_path, caplog):
    files = report_run(tmp_path, None)
    with caplog.at_level(logging.WARNING):
        assert check_identity(files, MINE) is None
        assert check_identity(files, OTHER) is None
    assert caplog.text.count("records no SAE/classifier identity") == 1


def test_explanations_of_another_sae_are_left_out_with_one_warning_naming_method_and_count(tmp_path, caplog):
    files = report_run(tmp_path, MINE)
    explain(files, "le-label", {0: ("circle", MINE), 1: ("square", OTHER), 2: ("star", OTHER), 3: ("arc", None)})
    explain(files, "labels", {0: ("old circle", OTHER), 1: ("round", MINE)})
    with caplog.at_level(logging.WARNING):
        latest = ExplanationStore(files, "le-label").latest()
        texts = preferred_texts(files)
        every = read_explanations(files)
    assert sorted(latest) == [0, 3]  # no identity (older writer): kept
    assert texts == {0: ("circle", "le-label"), 1: ("round", "labels"), 3: ("arc", "le-label")}
    assert sorted(every["labels"]) == [1]
    warned = [r.getMessage() for r in caplog.records if "another SAE" in r.getMessage()]
    assert len(warned) == 2  # one per method, however often it is read
    assert any("le-label.jsonl: 2 of 4 explanations" in w and OTHER.id in w for w in warned)
    assert any("labels.jsonl: 1 of 2" in w for w in warned)
    # an explicit identity (the loaded SAE's) narrows further: a record must match it and the report
    assert preferred_texts(files, identity=OTHER.id) == {3: ("arc", "le-label")}


def test_without_a_recorded_identity_every_record_is_kept(tmp_path):
    files = report_run(tmp_path, None)
    explain(files, "line", {0: ("circle", MINE), 1: ("square", OTHER)})
    assert sorted(ExplanationStore(files, "line").latest()) == [0, 1]
    assert keep_matching(ExplanationStore(files, "line").latest(), files, "line", MINE.id).keys() == {0}
