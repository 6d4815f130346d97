"""The error boundary in-process: which errors are expected, their one line, ``--debug``, the shared checks, and
the loaders' messages for bad model files (the subprocess view of the same is tests/commands/test_fuzz.py)."""

from __future__ import annotations

import argparse
import io
import json
import pickle
from dataclasses import dataclass

import pytest
import torch
from safetensors import SafetensorError

from sae_lab import __main__ as cli_main
from sae_lab.commands import COMMANDS
from sae_lab.errors import (
    MAX_CHARS,
    UsageError,
    check_checkpoint,
    check_config_args,
    check_device,
    check_model_source,
    check_template,
    is_expected,
    one_line,
    parse_error_line,
    split_debug,
)
from sae_lab.models.classifier_io import load_classifier
from sae_lab.models.sae import SaeConfig, TopKSAE
from sae_lab.run.files import SAE_CFG, SAE_WEIGHTS
from tests.helpers.common import REPO
from tests.helpers.threads import one_thread  # noqa: F401

CONFIG = REPO / "configs" / "quickstart" / "classifier.yaml"


def safetensor_error() -> SafetensorError:
    try:
        from safetensors.torch import load

        load(b"\x00" * 4)
    except SafetensorError as e:
        return e
    raise AssertionError("safetensors read 4 zero bytes")


def misconfiguration() -> Exception:
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    return MisconfigurationException("`max_epochs` must be a non-negative integer or -1. You passed in -5.")


@pytest.mark.parametrize(
    "exc",
    [
        UsageError("x"),
        ValueError("x"),
        json.JSONDecodeError("x", "{", 0),
        PermissionError(13, "Permission denied", "/r"),
        IsADirectoryError(21, "Is a directory", "/r"),
        pickle.UnpicklingError("Weights only load failed"),
        safetensor_error(),
        misconfiguration(),
        argparse.ArgumentError(None, "unrecognized arguments: --bogus"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_user_errors_are_expected(exc):
    assert is_expected(exc)


@pytest.mark.parametrize("exc", [KeyError("k"), TypeError("t"), AttributeError("a"), RuntimeError("r")])
def test_bugs_are_not_expected(exc):
    assert not is_expected(exc)


def test_one_line_names_the_file_of_an_os_error_and_never_advises_unpickling():
    assert one_line(PermissionError(13, "Permission denied", "/runs/a/labels.jsonl")).startswith(
        "permission denied: /runs/a/labels.jsonl"
    )
    assert one_line(IsADirectoryError(21, "Is a directory", "/x")) == "/x is a folder, expected a file"
    assert one_line(FileNotFoundError("no SAE for run r: looked in a, b")) == "no SAE for run r: looked in a, b"
    advice = "Weights only load failed.\nRe-running `torch.load` with `weights_only` set to `False` will likely succeed"
    line = one_line(pickle.UnpicklingError(advice))
    assert "weights_only" not in line and "safely" in line


def test_one_line_is_one_bounded_line():
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    long = one_line(ValueError("x" * (MAX_CHARS + 500)))
    assert len(long) < MAX_CHARS + 80 and "--debug" in long and "\n" not in long
    assert one_line(ValueError()) == "ValueError"


def test_debug_flag_anywhere_before_double_dash_or_env():
    assert split_debug(["why", "--debug", "a.png"], {}) == (True, ["why", "a.png"])
    assert split_debug(["why", "a.png", "--", "--debug"], {}) == (False, ["why", "a.png", "--", "--debug"])
    assert split_debug(["why"], {"SAE_LAB_DEBUG": "1"}) == (True, ["why"])
    assert split_debug(["why"], {"SAE_LAB_DEBUG": "0"}) == (False, ["why"])


@dataclass
class Raises:
    """A command that raises ``exc`` when called."""

    exc: BaseException
    help: str = "raises"

    def call(self, argv):
        raise self.exc


@pytest.fixture
def command(monkeypatch):
    monkeypatch.delenv("SAE_LAB_DEBUG", raising=False)
    monkeypatch.setenv("JSONARGPARSE_DEBUG", "false")  # main sets it under --debug; keep this process unchanged

    def install(exc: BaseException) -> str:
        monkeypatch.setitem(COMMANDS, "boom", Raises(exc))
        return "boom"

    return install


def test_main_turns_an_expected_error_into_one_line_and_exit_2(command, capsys):
    name = command(PermissionError(13, "Permission denied", "/runs/r/.locks"))
    assert cli_main.main([name]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {one_line(PermissionError(13, 'Permission denied', '/runs/r/.locks'))}"]


def test_main_reraises_with_debug_and_keeps_bugs(command, monkeypatch):
    name = command(ValueError("bad value"))
    with pytest.raises(ValueError, match="bad value"):
        cli_main.main([name, "--debug"])
    monkeypatch.setenv("SAE_LAB_DEBUG", "1")
    with pytest.raises(ValueError):
        cli_main.main([name])
    monkeypatch.delenv("SAE_LAB_DEBUG")
    command(KeyError("boom"))
    with pytest.raises(KeyError):  # a bug: its traceback is shown
        cli_main.main([name])
    command(KeyboardInterrupt())
    assert cli_main.main([name]) == 130


def test_check_device():
    check_device(None)
    check_device("cpu")
    with pytest.raises(UsageError, match="'banana' is not a device"):
        check_device("banana")
    bad = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    with pytest.raises(UsageError, match="cuda"):
        check_device(bad)


@pytest.mark.parametrize(
    "template, message",
    [
        ("a {concept} and {other}", r"uses \{other\}: the only placeholder allowed is \{concept\}"),
        ("a drawing of {}", r"uses \{\}"),
        ("no placeholder", r"needs the placeholder \{concept\}"),
        ("a {concept", "not a valid template"),
    ],
)
def test_check_template_names_the_bad_field_and_the_allowed_one(template, message):
    with pytest.raises(UsageError, match=message):
        check_template(template)


def test_check_template_accepts_concept_and_literal_braces():
    check_template("a {concept} in {{braces}}")


def test_check_model_source_and_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="'/nonexistent/model' not found.*download"):
        check_model_source("/nonexistent/model")
    check_model_source("owner/name")  # a Hub id: transformers' to resolve
    check_model_source(str(tmp_path))
    for word in ("best", "last", "s3://bucket/x.ckpt"):
        check_checkpoint(word)
    with pytest.raises(UsageError, match="is a folder"):
        check_checkpoint(tmp_path)
    with pytest.raises(UsageError, match="missing.ckpt': no such checkpoint file"):
        check_checkpoint(tmp_path / "missing.ckpt")


def test_check_config_args_names_the_file_and_line(tmp_path):
    bad, listed, good = tmp_path / "bad.yaml", tmp_path / "list.yaml", tmp_path / "good.yaml"
    bad.write_text("out: w\nn_train: [1\n")
    listed.write_text("- out\n")
    good.write_text("out: w\n")
    with pytest.raises(UsageError, match=r"bad.yaml is not valid YAML: .* at line 3"):
        check_config_args(["--config", str(bad)])
    with pytest.raises(UsageError, match="list.yaml must hold a mapping"):
        check_config_args([f"--config={listed}"])
    check_config_args(["-c", str(good), "--config", "{inline: yaml}", "--config", "missing.yaml"])


def test_parse_error_line():
    assert parse_error_line("Parser key \"n_train\":\n  Expected a <class 'int'>. Got value: abc") == (
        "--n_train: Expected a <class 'int'>. Got value: abc"
    )


# --- the loaders' own messages --------------------------------------------------------------------------------


def test_classifier_loader_names_a_folder_a_text_file_a_pickle_and_a_cut_file(tmp_path, classifier_ckpt):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_classifier(tmp_path)
    (tmp_path / "t.ckpt").write_text("hello")
    with pytest.raises(ValueError, match="t.ckpt is not a PyTorch checkpoint"):
        load_classifier(tmp_path / "t.ckpt")
    buf = io.BytesIO()
    torch.save({"state_dict": {}, "obj": io.StringIO}, buf)
    (tmp_path / "p.ckpt").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="not a checkpoint sae_lab can load safely") as info:
        load_classifier(tmp_path / "p.ckpt")
    assert "weights_only=False" not in str(info.value) and info.value.__cause__ is None
    (tmp_path / "cut.ckpt").write_bytes(classifier_ckpt.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cut.ckpt is not a PyTorch checkpoint \\(or is truncated\\)"):
        load_classifier(tmp_path / "cut.ckpt")


@pytest.fixture
def sae_dir(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "sae"
    TopKSAE(SaeConfig(d_in=8, num_latents=16, k=4), layer="layer4", classifier="abc").save_to_disk(path)
    return path


def edit_cfg(path, **changes):
    info = json.loads((path / SAE_CFG).read_text())
    (path / SAE_CFG).write_text(json.dumps({**info, **changes}))


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda p: (p / SAE_CFG).write_text("{nope"), "cfg.json is not valid JSON"),
        (lambda p: (p / SAE_CFG).write_text("[1, 2]"), "cfg.json must hold a JSON object, got list"),
        (lambda p: edit_cfg(p, metadata=[1]), "'metadata' must be a JSON object"),
        (lambda p: edit_cfg(p, d_in="8"), "'d_in' must be an integer"),
        (lambda p: edit_cfg(p, k=99), "k=99 exceeds num_latents=16"),
        (lambda p: edit_cfg(p, num_latents=15), "'W_enc' has shape \\[16, 8\\]"),
        (lambda p: (p / SAE_WEIGHTS).write_bytes((p / SAE_WEIGHTS).read_bytes()[:-40]), "not a readable safetensors"),
    ],
    ids=["bad json", "a list", "metadata a list", "d_in a string", "k too large", "wrong shape", "cut data"],
)
def test_sae_loader_names_the_file_and_the_field(sae_dir, tamper, message):
    tamper(sae_dir)
    with pytest.raises(ValueError, match=message):
        TopKSAE.load_from_disk(sae_dir)


def test_resolve_run_reads_a_tampered_cfg_json_with_a_clear_message(sae_dir):
    from sae_lab.run.load import resolve_run

    (sae_dir / SAE_CFG).write_text("[1]")
    with pytest.raises(ValueError, match="cfg.json must hold a JSON object"):
        resolve_run(sae=sae_dir)


def test_union_messages_keep_the_errors_and_the_value():
    message = (
        'Parser key "trainer.max_epochs":\n  Does not validate against any of the Union subtypes\n'
        "  Subtypes: [<class 'int'>, <class 'NoneType'>]\n  Errors:\n    - Expected a <class 'int'>\n"
        "    - Expected a <class 'NoneType'>\n  Given value type: <class 'str'>\n  Given value: abc"
    )
    assert parse_error_line(message) == "--trainer.max_epochs: Expected a <class 'int'> (given: abc)"
    wrapped = ValueError("Does not validate against any of the Union subtypes\nSubtypes: [...]\nGiven value: ...")
    wrapped.__cause__ = FileNotFoundError("data path '/d' does not exist")
    assert one_line(wrapped) == "data path '/d' does not exist"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--trainer.accelerator", "banana"], ("accelerator", "banana")),  # Lightning's ValueError
        (["--trainer.max_epochs", "-5"], ("max_epochs", "-5")),  # MisconfigurationException
        (["--trainer.max_epochs", "abc"], ("--trainer.max_epochs", "abc")),  # a type error in the parser
        (["--trainer.bogus", "1"], ("unrecognized", "--trainer.bogus")),
        (["--data.init_args.data", "no_such_dir"], ("no_such_dir", "does not exist")),  # the class's own error
    ],
    ids=["accelerator", "max_epochs", "type", "unknown", "data"],
)
def test_lightning_errors_are_one_line(args, words, tmp_path, monkeypatch, capsys):
    """``fit`` in-process (Lightning is imported already): each error is one line, exit code 2, no traceback."""
    monkeypatch.chdir(tmp_path)
    for var in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # seed_everything sets them; put them back afterwards
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("SAE_LAB_DEBUG", raising=False)
    try:
        code = cli_main.main(["fit", "--config", str(CONFIG), *args])
    except SystemExit as e:  # jsonargparse exits on a bad command line
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
