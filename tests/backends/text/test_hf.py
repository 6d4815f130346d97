"""The transformers backend end to end on a tiny random Llama with a locally trained tokenizer (no hub access)."""

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from sae_lab.backends.text import ChatRequest, make_backend
from sae_lab.backends.text.hf import HFBackend

VOCAB = 300
HIDDEN = 32
LAYERS = 2
HEADS = 2
MAX_NEW = 6
CORPUS = [
    "a simple line drawing of a sun with spokes",
    "the wheel and the circle share a round part",
    "user: assistant:",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
PROMPTS = ["name the concept", "a wheel with many spokes and a long round rim drawn twice", "sun"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A byte-level BPE tokenizer trained here and a random 2-layer Llama, saved like a hub checkpoint."""
    path = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    return HFBackend(str(tiny_model_dir), device="cpu", dtype="float32", batch_size=4, local_files_only=True)


def requests(**kwargs):
    kwargs.setdefault("max_new_tokens", MAX_NEW)
    return [ChatRequest.from_prompt(p, system="answer briefly", **kwargs) for p in PROMPTS]


def test_batch_generates_text(llm, tiny_model_dir):
    results = llm.generate(requests())
    assert len(results) == 3
    assert all(r.ok and r.text and r.attempts == 1 for r in results)
    assert llm.name == f"transformers:{tiny_model_dir}"
    assert llm.tokenizer.padding_side == "left"


def test_greedy_is_deterministic_and_batch_equals_single(llm):
    batch = [r.text for r in llm.generate(requests())]
    assert batch == [r.text for r in llm.generate(requests())]
    assert batch == [llm.generate_one(r).text for r in requests()]


def test_seeded_sampling_is_reproducible(llm):
    first = [r.text for r in llm.generate(requests(temperature=1.0, seed=7))]
    assert first == [r.text for r in llm.generate(requests(temperature=1.0, seed=7))]
    assert first != [r.text for r in llm.generate(requests(temperature=1.0, seed=8))]
    state = torch.get_rng_state()
    llm.generate(requests(temperature=1.0, seed=7))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_mixed_settings_keep_order(llm):
    mixed = [
        ChatRequest.from_prompt("sun", max_new_tokens=3),
        ChatRequest.from_prompt("sun", max_new_tokens=MAX_NEW),
        ChatRequest.from_prompt("sun", max_new_tokens=3),
    ]
    texts = [r.text for r in llm.generate(mixed)]
    assert texts[0] == texts[2] == llm.generate_one(mixed[0]).text
    assert texts[1] == llm.generate_one(mixed[1]).text


def test_chat_template_and_plain_fallback(llm):
    request = ChatRequest.from_prompt("hi", system="sys")
    assert llm.prompt(request) == "<s>system: sys\n<s>user: hi\nassistant:"
    template, llm.tokenizer.chat_template = llm.tokenizer.chat_template, None
    try:
        assert llm.prompt(request) == "system: sys\nuser: hi\nassistant:"
        assert llm.generate_one(request).ok
    finally:
        llm.tokenizer.chat_template = template


def test_images_are_dropped_with_warning(llm, caplog):
    result = llm.generate_one(ChatRequest.from_prompt("sun", images=[Image.new("L", (4, 4))], max_new_tokens=2))
    assert result.ok and "does not accept images" in caplog.text


def test_dtype_option_and_spec(tiny_model_dir):
    llm = make_backend(f"hf:{tiny_model_dir}", device="cpu", dtype="bfloat16")
    assert isinstance(llm, HFBackend) and next(llm.model.parameters()).dtype == torch.bfloat16
    assert llm.generate_one(ChatRequest.from_prompt("sun", max_new_tokens=2)).ok
    with pytest.raises(ValueError, match="dtype"):
        HFBackend(str(tiny_model_dir), device="cpu", dtype="float8")
