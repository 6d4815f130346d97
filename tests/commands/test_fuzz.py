"""Every command given bad arguments and bad files, through the real CLI (issue 19, item 8).

Each case runs ``python -m sae_lab ...`` in a subprocess and must end with a non-zero exit code, exactly one
``error:`` line on stderr naming the problem (its key words below), and no ``Traceback``. Cases that tamper with a
run work on their own copy of one tiny run; the list favours commands that fail before heavy work (each start
imports torch, the Lightning ones Lightning too), so the file stays near a minute on two busy cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sae_lab.run.files import SAE_CFG, SAE_WEIGHTS
from sae_lab.run.io import read_json, write_json
from tests.helpers.common import REPO, TESTS
from tests.helpers.runs import make_tiny_run
from tests.helpers.threads import one_thread  # noqa: F401

CONFIG = REPO / "configs" / "quickstart" / "classifier.yaml"
NAME = "tiny"
MAX_LINE = 600
"""Longest acceptable error line (paths included): one readable line, not a dump."""


@dataclass(frozen=True)
class Ctx:
    """The paths a case's command line is built from."""

    root: Path
    """The tiny run's root: ``checkpoints/tiny/sae`` and ``reports/tiny``."""
    ckpt: Path
    """The test classifier checkpoint."""
    tmp: Path
    """A fresh empty folder for the case (outputs, bad files)."""

    @property
    def run(self) -> str:
        return str(self.root / "reports" / NAME)

    @property
    def sae(self) -> Path:
        return self.root / "checkpoints" / NAME / "sae"

    def file(self, name: str, content: bytes | str) -> str:
        path = self.tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)


@dataclass(frozen=True)
class Case:
    """One bad command line."""

    args: Callable[[Ctx], list[str]]
    """The command line after ``python -m sae_lab``."""
    words: tuple[str, ...]
    """What the error line must name (case-insensitive)."""
    tamper: Callable[[Ctx], None] | None = None
    """Changes a private copy of the tiny run before the command runs."""
    read_only: bool = False
    """Run with the run folder read-only (as root: inside a user namespace, where root's files are not ours)."""


def edit_cfg(change: Callable[[dict], object]) -> Callable[[Ctx], None]:
    def tamper(c: Ctx) -> None:
        write_json(c.sae / SAE_CFG, change(read_json(c.sae / SAE_CFG)))

    return tamper


def edit_weights(change: Callable[[Path], None]) -> Callable[[Ctx], None]:
    return lambda c: change(c.sae / SAE_WEIGHTS)


def narrow_w_enc(path: Path) -> None:
    tensors = load_file(path)
    tensors["W_enc"] = tensors["W_enc"][:, :3].contiguous()
    save_file(tensors, path)


def drop_mu(path: Path) -> None:
    tensors = load_file(path)
    del tensors["mu"]
    save_file(tensors, path)


def torch_pickle() -> bytes:
    """A torch checkpoint holding a Python object that ``weights_only`` loading refuses (datetime)."""
    import datetime
    import io

    buf = io.BytesIO()
    torch.save({"state_dict": {}, "when": datetime.datetime(2024, 1, 1)}, buf)
    return buf.getvalue()


def no_cuda_device() -> str:
    """``cuda`` on a machine without CUDA, else a CUDA index past the last device."""
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


def export(c: Ctx) -> list[str]:
    """The lightest command that loads the SAE."""
    return ["export", "--sae", str(c.sae), "--format", "sparsify", "--out", str(c.tmp / "out")]


CASES: dict[str, Case] = {
    # tampered SAE exports (cfg.json and sae.safetensors)
    "cfg.json wrong d_in": Case(export, ("cfg.json", "d_in=7", "W_enc"), edit_cfg(lambda i: {**i, "d_in": 7})),
    "cfg.json missing key": Case(
        export, ("cfg.json", "num_latents"), edit_cfg(lambda i: {k: v for k, v in i.items() if k != "num_latents"})
    ),
    "cfg.json a list": Case(export, ("cfg.json", "JSON object"), edit_cfg(lambda i: [i])),
    "safetensors wrong shape": Case(export, ("sae.safetensors", "W_enc", "shape"), edit_weights(narrow_w_enc)),
    "safetensors missing tensor": Case(export, ("sae.safetensors", "'mu'", "missing"), edit_weights(drop_mu)),
    "safetensors truncated": Case(
        export, ("sae.safetensors", "not a readable"), edit_weights(lambda p: p.write_bytes(p.read_bytes()[:200]))
    ),
    "safetensors a pickle": Case(
        export, ("sae.safetensors", "not a readable"), edit_weights(lambda p: p.write_bytes(torch_pickle()))
    ),
    # classifier checkpoints that are not ones
    "classifier a text file": Case(
        lambda c: ["cache-tokens", "--classifier", c.file("c.ckpt", "hello"), "--out", str(c.tmp / "t")],
        ("c.ckpt", "not a PyTorch checkpoint"),
    ),
    "classifier a pickle": Case(
        lambda c: ["cache-tokens", "--classifier", c.file("p.ckpt", torch_pickle()), "--out", str(c.tmp / "t")],
        ("p.ckpt", "not a checkpoint sae_lab can load safely"),
    ),
    # devices, models, templates
    "device banana": Case(
        lambda c: ["cache-tokens", "--classifier", str(c.ckpt), "--device", "banana"], ("device", "banana")
    ),
    "device cuda without one": Case(
        lambda c: ["why", c.file("a.png", "x"), "--run", c.run, "--device", no_cuda_device()], ("device", "cuda")
    ),
    "hf model path missing": Case(
        lambda c: ["explain", "labels", "--run", c.run, "--llm", "hf:/nonexistent/model"],
        ("/nonexistent/model", "not found"),
    ),
    "diffusers path missing": Case(
        lambda c: ["explain", "dnd", "--run", c.run, "--images", "diffusers:/nonexistent"],
        ("/nonexistent", "download"),
    ),
    "template with {other}": Case(
        lambda c: ["evaluate", "--run", c.run, "--template", "a sketch of {concept} and {other}"],
        ("template", "{other}", "{concept}"),
    ),
    # out-of-range settings
    "cache-tokens --splits bogus": Case(
        lambda c: ["cache-tokens", "--classifier", str(c.ckpt), "--splits", "bogus"], ("splits", "bogus")
    ),
    "cache-tokens --batch-size 0": Case(
        lambda c: ["cache-tokens", "--classifier", str(c.ckpt), "--batch-size", "0"], ("batch_size", "0")
    ),
    "world --image-size 100000": Case(
        lambda c: ["world", "--out", str(c.tmp / "w"), "--image-size", "100000"], ("image_size", "100000")
    ),
    "latents 0-99999999999": Case(
        lambda c: ["explain", "labels", "--run", c.run, "--latents", "0-99999999999"], ("99999999999",)
    ),
    "why --top -1": Case(lambda c: ["why", c.file("a.png", "x"), "--run", c.run, "--top", "-1"], ("top", "-1")),
    # runs and files
    "read-only run folder": Case(
        lambda c: ["explain", "labels", "--run", c.run], ("permission denied", NAME), read_only=True
    ),
    "missing run folder": Case(lambda c: ["explain", "labels", "--run", str(c.tmp / "nope")], ("nope",)),
    "config not YAML": Case(lambda c: ["world", "--config", c.file("bad.yaml", "out: [unclosed\n")], ("bad.yaml",)),
    "unknown option": Case(lambda c: ["world", "--out", str(c.tmp / "w"), "--bogus", "1"], ("--bogus",)),
    "unknown command": Case(lambda c: ["frobnicate"], ("frobnicate",)),
    # every other command, once each
    "report without its SAE": Case(
        lambda c: ["report", "--run", str(c.tmp / "r"), "--sae", str(c.tmp / "nosae")], ("nosae", "does not exist")
    ),
    "label on a folder without a report": Case(lambda c: ["label", "--run", str(c.tmp / "nope")], ("nope", "report")),
    "serve --max-bytes -1": Case(lambda c: ["serve", "--run", c.run, "--max-bytes", "-1"], ("max_bytes", "-1")),
    "quickstart --smoke=maybe": Case(lambda c: ["quickstart", "--root", str(c.tmp), "--smoke=maybe"], ("smoke",)),
    "export --format bogus": Case(
        lambda c: ["export", "--sae", str(c.sae), "--format", "bogus", "--out", str(c.tmp / "o")], ("bogus", "sparsify")
    ),
    "unknown method": Case(lambda c: ["explain", "bogus", "--run", c.run], ("bogus", "labels")),
    # Lightning's commands (each start imports Lightning; its parser and Trainer errors are also tested in-process
    # in tests/test_errors.py)
    "fit --trainer.max_epochs -5": Case(
        lambda c: ["fit", "--config", str(CONFIG), "--trainer.max_epochs", "-5"], ("max_epochs", "-5")
    ),
    "validate --ckpt_path missing.ckpt": Case(
        lambda c: ["validate", "--config", str(CONFIG), "--ckpt_path", "missing.ckpt"], ("missing.ckpt",)
    ),
    "test --ckpt_path missing.ckpt": Case(
        lambda c: ["test", "--config", str(CONFIG), "--ckpt_path", "missing.ckpt"], ("missing.ckpt",)
    ),
    "predict --ckpt_path missing.ckpt": Case(
        lambda c: ["predict", "--config", str(CONFIG), "--ckpt_path", "missing.ckpt"], ("missing.ckpt",)
    ),
}


def run_cli(args: list[str], cwd: Path, prefix: tuple[str, ...] = (), env_extra: dict | None = None):
    """``python -m sae_lab ARGS`` as a user runs it (tests importable, one thread), optionally under ``prefix``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("SAE_LAB_DEBUG", None)
    env.update(env_extra or {})
    return subprocess.run([*prefix, sys.executable, "-m", "sae_lab", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def read_only_prefix() -> tuple[str, ...]:
    """How to run a command that cannot write a mode-0555 folder: as is, or as root in a user namespace (root's
    files are then not the process's own, so the mode applies); skips when neither works."""
    if os.geteuid() != 0:
        return ()
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--user", "true"], capture_output=True).returncode == 0:
        return (unshare, "--user")
    pytest.skip("running as root without user namespaces: a read-only folder cannot be made")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory, classifier_ckpt) -> Path:
    """One tiny run (random SAE + neurons.jsonl) shared by every case that does not change it."""
    root = tmp_path_factory.mktemp("fuzz_run")
    make_tiny_run(root, classifier_ckpt, name=NAME)
    return root


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_ends_in_one_clear_error_line(name, tiny_root, classifier_ckpt, tmp_path):
    case = CASES[name]
    root = tiny_root
    if case.tamper or case.read_only:
        root = tmp_path / "run"
        shutil.copytree(tiny_root, root)
    (tmp_path / "case").mkdir()
    ctx = Ctx(root, classifier_ckpt, tmp_path / "case")
    if case.tamper:
        case.tamper(ctx)
    prefix = read_only_prefix() if case.read_only else ()
    locked = Path(ctx.run)
    if case.read_only:
        locked.chmod(0o555)
    try:
        r = run_cli(case.args(ctx), cwd=ctx.tmp, prefix=prefix)
    finally:
        locked.chmod(0o755)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    line = errors[0]
    assert len(line) <= MAX_LINE, line
    for word in case.words:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"
    assert "weights_only=False" not in out  # never advise unpickling arbitrary objects


def test_debug_shows_the_traceback(tmp_path):
    args = ["world", "--out", str(tmp_path / "w"), "--image-size", "100000"]
    for extra, env in (([], {"SAE_LAB_DEBUG": "1"}), (["--debug"], None)):
        r = run_cli([*args[:2], *extra, *args[2:]], cwd=tmp_path, env_extra=env)
        assert r.returncode != 0
        assert "Traceback" in r.stderr and "image_size" in r.stderr.splitlines()[-1], r.stderr[-2000:]
