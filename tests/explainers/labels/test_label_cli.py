"""The `label` command (= `explain labels`): options, errors, a tiny random Llama end to end, and a kill mid-run
followed by a re-run.

The command runs through its registry entry (``COMMANDS["label"]``: ``parser()``, ``parse(argv)``, ``call(argv)``),
in-process or in a subprocess. It prints the summary block as one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sae_lab.commands import COMMANDS
from tests.explainers.labels.test_labeller import LIVE, OpenAILike, read_labels, server, write_run  # noqa: F401 -- `server` is a fixture

REPO = Path(__file__).resolve().parents[2]
RUNNER = "import sys; from sae_lab.commands import COMMANDS; sys.exit(COMMANDS['label'].call(sys.argv[1:]))"
KILL_LATENTS = 12
KILL_DELAY = 0.2
VOCAB = 300
HIDDEN = 32
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def label(*argv: str) -> int:
    return COMMANDS["label"].call(list(argv))


def block(out: str) -> dict:
    """The summary block the command printed (its last line)."""
    return json.loads(out.strip().splitlines()[-1])


def test_registered_with_its_options():
    cmd = COMMANDS["label"]
    assert "labels.jsonl" in cmd.help
    text = cmd.parser().format_help()
    for option in ("--run", "--llm", "--latents", "--include-dead", "--images", "--no-images", "--concurrency",
                   "--max-retries", "--timeout", "--overwrite", "--vision", "--api-key-env"):  # fmt: skip
        assert option in text
    args = cmd.parse(["--run", "r"])
    assert (args.llm, args.images, args.concurrency, args.max_retries, args.timeout) == ("offline", True, 8, 2, 120.0)


def test_offline_through_the_command(tmp_path, capsys):
    run = write_run(tmp_path)
    assert label("--run", str(run), "--no-progress") == 0
    assert block(capsys.readouterr().out)["labelled"] == len(LIVE)
    before = read_labels(run)
    assert label("--run", str(run), "--latents", "0-2", "--no-images", "--no-progress") == 0
    assert (block(capsys.readouterr().out)["labelled"], read_labels(run)) == (3, before)  # up to date: not redone


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"empty/neurons\.jsonl not found: run `python -m sae_lab report"):
        label("--run", str(tmp_path / "empty"))
    run = write_run(tmp_path)
    with pytest.raises(ValueError, match="unknown LLM backend spec 'chatgpt'"):
        label("--run", str(run), "--llm", "chatgpt")
    with pytest.raises(ValueError, match="bad latent range '7-3'"):
        label("--run", str(run), "--latents", "0-2,7-3")
    with pytest.raises(ValueError, match="does not take"):
        label("--run", str(run), "--vision")
    with pytest.raises(SystemExit):
        COMMANDS["label"].parse(["--run", str(run), "--concurrency", "many"])


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A random 2-layer Llama with a locally trained byte-level BPE tokenizer, saved like a hub checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    bpe.train_from_iterator(["a line drawing of a sun with spokes", "latent statistics class"] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_tiny_random_llama_end_to_end(tmp_path, tiny_llama, monkeypatch, capsys):
    """A random model never writes SHORT ANSWER: every latent is asked 1 + 1 times, then recorded as failed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = write_run(tmp_path, num_latents=2, dead=())
    code = label("--run", str(run), "--llm", f"hf:{tiny_llama}", "--max-new-tokens", "6", "--max-retries", "1",
                 "--no-progress")  # fmt: skip
    out = block(capsys.readouterr().out)
    assert code == 1 and out["failed"] == 2 and out["errors"]["0"].startswith("no SHORT ANSWER")
    rows = read_labels(run)
    assert [r["latent"] for r in rows] == [0, 1]
    for r in rows:
        assert r["status"] == "failed" and r["label"] is None and r["attempts"] == 2
        assert r["error"].startswith("no SHORT ANSWER") and r["source"] == f"transformers:{tiny_llama}"


def test_killed_run_resumes_labelling_each_latent_once(tmp_path, server):  # noqa: F811
    run = write_run(tmp_path, num_latents=KILL_LATENTS, dead=())
    fake = OpenAILike(delay=KILL_DELAY)
    url = server(fake).url
    argv = [sys.executable, "-c", RUNNER, "--run", str(run), "--llm", f"openai:slow@{url}/v1", "--concurrency", "2",
            "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(var, None)
    labels = run / "labels.jsonl"

    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if labels.exists() and labels.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = {json.loads(line)["latent"] for line in labels.read_text().splitlines()}
    assert 4 <= len(done) < KILL_LATENTS, "the run must be killed part-way"
    with open(labels, "a") as f:
        f.write('{"latent": 11, "label": "half a li')  # as if killed mid-write
    before = dict(fake.counts)

    finished = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert (block(finished.stdout)["labelled"], block(finished.stdout)["failed"]) == (KILL_LATENTS, 0)
    rows = read_labels(run)
    assert [r["latent"] for r in rows] == list(range(KILL_LATENTS))  # compacted: one line each
    assert all(r["status"] == "ok" and r["label"] == f"concept {r['latent']}" for r in rows)
    assert all(fake.counts[i] == 1 for i in done)  # labelled before the kill: never asked again
    assert all(fake.counts[i] == before.get(i, 0) + 1 for i in range(KILL_LATENTS) if i not in done)
