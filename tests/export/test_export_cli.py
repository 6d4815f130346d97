"""`python -m sae_lab export`: the command, and the inputs it refuses (each with a one-line error, exit code 2)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_lab.__main__ import main
from sae_lab.export import export_sae
from tests.helpers.threads import one_thread  # noqa: F401


def export(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["export", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt, weights", [("sparsify", "sae.safetensors"), ("saelens", "sae_weights.safetensors")])
def test_the_command_writes_the_format_and_prints_a_block(sae_dir, tmp_path, capsys, fmt, weights):
    out = tmp_path / fmt
    code, stdout, err = export(capsys, "--sae", str(sae_dir), "--format", fmt, "--out", str(out))
    assert code == 0, err
    assert json.loads(stdout) == {"format": fmt, "out": str(out), "sae": str(sae_dir)}
    assert (out / "cfg.json").is_file() and (out / weights).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_an_unknown_format_is_refused_naming_the_formats(sae_dir, tmp_path, capsys):
    code, _, err = export(capsys, "--sae", str(sae_dir), "--format", "onnx", "--out", str(tmp_path / "o"))
    assert code == 2 and "unknown format 'onnx'" in err and "sparsify, saelens" in err
    assert not (tmp_path / "o").exists()


def test_an_existing_output_folder_is_refused_unless_overwrite(sae_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--sae", str(sae_dir), "--out", str(out)]
    assert export(capsys, *args, "--format", "sparsify")[0] == 0
    code, _, err = export(capsys, *args, "--format", "saelens")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert (out / "sae.safetensors").is_file()  # untouched
    assert export(capsys, *args, "--format", "saelens", "--overwrite")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "sae_weights.safetensors"]  # the old files gone


def test_overwrite_never_replaces_a_folder_that_is_not_an_export_or_the_sae_itself(sae_dir, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    code, _, err = export(capsys, "--sae", str(sae_dir), "--format", "sparsify", "--out", str(precious), "--overwrite")
    assert code == 2 and "not an SAE export" in err and (precious / "notes.txt").is_file()
    code, _, err = export(capsys, "--sae", str(sae_dir), "--format", "sparsify", "--out", str(sae_dir), "--overwrite")
    assert code == 2 and "holds the SAE being exported" in err
    assert (sae_dir / "sae.safetensors").is_file()


def tamper_cfg(sae_dir, **changes):
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    (sae_dir / "cfg.json").write_text(json.dumps({**cfg, **changes}))


def rewrite_tensor(sae_dir, name, value=None):
    tensors = load_file(str(sae_dir / "sae.safetensors"))
    if value is None:
        del tensors[name]
    else:
        tensors[name] = value
    save_file(tensors, str(sae_dir / "sae.safetensors"))


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda d: tamper_cfg(d, d_in=16), "tensor 'W_enc' has shape [64, 32], but"),
        (lambda d: tamper_cfg(d, num_latents=80), "tensor 'W_enc' has shape [64, 32]"),
        (lambda d: tamper_cfg(d, k=65), "SaeConfig.k=65 exceeds num_latents=64"),
        (lambda d: tamper_cfg(d, d_in="32"), "'d_in' must be an integer"),
        (lambda d: (d / "cfg.json").write_text("{not json"), "cfg.json is not valid JSON"),
        (lambda d: rewrite_tensor(d, "W_dec", torch.zeros(64, 31)), "tensor 'W_dec' has shape [64, 31]"),
        (lambda d: rewrite_tensor(d, "b_enc", torch.zeros(63)), "tensor 'b_enc' has shape [63]"),
        (lambda d: rewrite_tensor(d, "sigma"), "tensor 'sigma' is missing"),
        (lambda d: rewrite_tensor(d, "extra", torch.zeros(3)), "unexpected tensor 'extra'"),
        (lambda d: rewrite_tensor(d, "sigma", torch.zeros(32)), "tensor 'sigma' of the SAE has 32 non-positive"),
        (lambda d: (d / "sae.safetensors").write_bytes(b"\x00" * 7), "not a readable safetensors file"),
    ],
    ids=[
        "cfg-d_in",
        "cfg-num_latents",
        "cfg-k",
        "cfg-type",
        "cfg-json",
        "W_dec-shape",
        "b_enc-shape",
        "missing-sigma",
        "extra-tensor",
        "zero-sigma",
        "truncated",
    ],  # fmt: skip
)
def test_a_tampered_sae_folder_is_a_clear_one_line_error(sae_dir, tmp_path, capsys, tamper, message):
    tamper(sae_dir)
    code, _, err = export(capsys, "--sae", str(sae_dir), "--format", "sparsify", "--out", str(tmp_path / "o"))
    assert code == 2 and message in err, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_missing_sae_folder_is_named(tmp_path, capsys):
    code, _, err = export(
        capsys, "--sae", str(tmp_path / "nowhere"), "--format", "saelens", "--out", str(tmp_path / "o")
    )
    assert code == 2 and "nowhere" in err and "does not exist" in err


def test_the_python_api_takes_a_model_in_memory(sae, tmp_path):
    out = export_sae(sae, tmp_path / "o", "saelens")
    meta = json.loads((out / "cfg.json").read_text())["metadata"]["sae_lab"]
    assert meta["source"] == "a TopKSAE in memory" and meta["format"] == "saelens"
