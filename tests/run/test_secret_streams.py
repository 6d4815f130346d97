"""Secrets never reach the process's own output or Lightning's saved config (issue 19, item 6)."""

import io
from types import SimpleNamespace

from jsonargparse import ArgumentParser

from sae_lab.cli import ScrubbedSaveConfig
from sae_lab.run.secrets import MASK, ScrubbingStream

KEY = "sk-live4f9Q2xLm7Tz81VbN"


def test_a_key_in_any_argument_is_masked_in_every_line_the_cli_prints(cli, tmp_path):
    r = cli("why", f"http://user:{KEY}@host/x.png", f"/tmp/{KEY}.png", "--run", str(tmp_path / "missing"), cwd=tmp_path)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert KEY not in out and "Traceback" not in out
    assert f"error: http://user:{MASK}@host/x.png" in out  # the error line is there, masked by the stream


def test_the_stream_wrapper_masks_writes_and_passes_the_rest_through():
    raw = io.StringIO()
    stream = ScrubbingStream(raw)
    assert stream.write(f"token {KEY}\n") == len(f"token {KEY}\n")  # the caller's count, as a stream returns it
    stream.writelines(["Authorization: Bearer abcdefgh12345678\n"])
    assert raw.getvalue() == f"token {MASK}\nAuthorization: Bearer {MASK}\n"
    assert stream.getvalue() is not None and not stream.closed  # other attributes: the wrapped stream's


def test_lightnings_saved_config_has_no_key(tmp_path):
    parser = ArgumentParser()
    parser.add_argument("--llm", type=str)
    config = parser.parse_args([f"--llm=openai:m@http://u:{KEY}@host/v1"])
    callback = ScrubbedSaveConfig(parser, config, overwrite=True)
    trainer = SimpleNamespace(log_dir=str(tmp_path), is_global_zero=True,
                              strategy=SimpleNamespace(broadcast=lambda x: x))  # fmt: skip
    callback.save_config = lambda *a: None
    callback.setup(trainer, None, "fit")
    text = (tmp_path / "config.yaml").read_text()
    assert KEY not in text and f"u:{MASK}@host" in text
