"""`python -m sae_lab why`: the real command line, table and JSON lines, folders and globs, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from sae_lab.__main__ import main
from tests.helpers.common import assert_latents_close
from tests.inference.test_lab import bomb_png, make_run, png_bytes, rgba_and_16bit, world_images

DESIGN_KEYS = {"image", "predicted", "top5", "latents", "sentence"}


@pytest.fixture(scope="module")
def workspace(classifier_ckpt, tmp_path_factory) -> Path:
    """A run (reports/tiny + checkpoints/tiny/sae) and a folder of good and bad pictures."""
    root = tmp_path_factory.mktemp("why_cli")
    make_run(root, classifier_ckpt)
    pics = root / "pics"
    (pics / "more").mkdir(parents=True)
    for i, sketch in enumerate(world_images(3)):
        Image.fromarray(sketch).save(pics / f"good{i}.png")
    for i, sketch in enumerate(world_images(2, first=10)):
        Image.fromarray(sketch).save(pics / "more" / f"extra{i}.png")
    rgba, gray16 = rgba_and_16bit(world_images(1, first=20)[0])
    rgba.save(pics / "more" / "rgba.png")
    (pics / "more" / "gray16.png").write_bytes(png_bytes(gray16))
    bad = root / "bad"
    bad.mkdir()
    (bad / "notes.png").write_text("this is not an image")
    (bad / "truncated.png").write_bytes(png_bytes(Image.fromarray(world_images(1)[0]))[:100])
    (bad / "empty.png").write_bytes(b"")
    (bad / "bomb.png").write_bytes(bomb_png())
    return root


def test_json_lines_for_folders_globs_and_bad_files(workspace, cli):
    bad = ["bad/notes.png", "bad/truncated.png", "bad/empty.png", "bad/bomb.png", "bad/missing.png"]
    r = cli("why", "pics", "pics/more/*.png", *bad, "--run", "reports/tiny", "--json", "--top", "3", cwd=workspace)
    assert r.returncode == 1, r.stderr  # some inputs failed; the good ones were still explained
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    answers = {row["image"]: row for row in rows if "error" not in row}
    errors = {row["image"]: row["error"] for row in rows if "error" in row}
    expected = [f"pics/good{i}.png" for i in range(3)] + [f"pics/more/{n}" for n in ("extra0.png", "extra1.png",
                                                                                     "gray16.png", "rgba.png")]  # fmt: skip
    assert sorted(answers) == sorted(expected)
    for row in answers.values():
        assert DESIGN_KEYS <= set(row) and len(row["latents"]) == 3
        assert set(row["predicted"]) == {"index", "class", "prob"} and len(row["top5"]) == 5
        assert all(set(lat) == {"id", "activation", "contribution", "label"} for lat in row["latents"])
        assert abs(row["latent_sum"] + row["error_term"] + row["bias_term"] - row["logit"]) < 1e-4
    labelled = [lat for row in answers.values() for lat in row["latents"] if lat["id"] in (0, 1, 2, 3)]
    names = {0: "line zero", 1: "stats one", 2: "new two", 3: "line three"}
    assert all(lat["label"] == names[lat["id"]] for lat in labelled)
    # RGBA and 16-bit versions of one sketch are converted to the same ink: the same answer.
    assert_latents_close(answers["pics/more/rgba.png"]["latents"], answers["pics/more/gray16.png"]["latents"])
    assert "empty" in errors["bad/empty.png"] and "truncated" in errors["bad/truncated.png"]
    assert "cannot decode" in errors["bad/notes.png"] and "too large" in errors["bad/bomb.png"]
    assert errors["bad/missing.png"] == "no such file"
    for name in errors:
        assert f"error: {name}:" in r.stderr
    assert "Traceback" not in r.stderr


def test_table_output_without_labels(workspace, classifier_ckpt, tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path, classifier_ckpt, labels=False)
    monkeypatch.chdir(workspace)
    assert main(["why", "pics/good0.png", "--run", str(run), "--top", "4"]) == 0
    out = capsys.readouterr().out
    head, top5, columns, *rest = out.strip().splitlines()
    assert head.startswith("pics/good0.png: ") and "(p=" in head
    assert top5.split()[0] == "top-5" and columns.split() == ["latent", "activation", "contribution", "label"]
    table = rest[:4]
    assert all(line.split()[-1] == "–" for line in table)  # no labels: shown as a dash, null in JSON
    assert "SAE error" in rest[4] and rest[5].strip().startswith("It is")


def test_run_without_sae_is_a_clear_error(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports" / "ghost").mkdir(parents=True)
    assert main(["why", str(workspace / "pics" / "good0.png"), "--run", "ghost"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no SAE for run reports/ghost") and "checkpoints/ghost/sae" in err


def test_help_lists_why_and_serve(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "  why " in out and "  serve " in out
    with pytest.raises(SystemExit):
        main(["why", "--help"])
    assert "--json" in capsys.readouterr().out


def test_explanations_pick_the_methods_that_label_the_latents(workspace, classifier_ckpt, tmp_path, capsys):
    from sae_lab.run import ExplanationRecord, ExplanationStore

    run = make_run(tmp_path, classifier_ckpt, labels=False)
    argv = ["why", str(workspace / "pics" / "good0.png"), "--run", str(run), "--json", "--top", "2"]

    def labels(*options: str) -> dict:
        assert main([*argv, *options]) == 0
        return {lat["id"]: lat["label"] for lat in json.loads(capsys.readouterr().out)["latents"]}

    a, b = labels()  # the two latents shown: explained by both methods (a) and by labels only (b)
    ExplanationStore(run, "labels").append([ExplanationRecord(a, "labels", "labels a"),
                                            ExplanationRecord(b, "labels", "labels b")])  # fmt: skip
    ExplanationStore(run, "line").append([ExplanationRecord(a, "line", "line a")])
    assert labels() == {a: "line a", b: "labels b"}  # DEFAULT_PREFERENCE: line before labels
    assert labels("--explanations", "labels") == {a: "labels a", b: "labels b"}
    assert labels("--explanations", "line") == {a: "line a", b: None}
    assert labels("--explanations", "dnd,labels,line") == {a: "labels a", b: "labels b"}
